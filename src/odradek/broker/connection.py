"""One client connection: bytes in, frames to the dispatcher, responses out in request order.

Requests on a connection are processed one at a time, as Kafka does: a request that has to wait
(a long-polling fetch) holds back the requests pipelined behind it, so side effects happen in the
order the client sent them, and the connection stops reading until it is answered. Requests that
complete at once are answered without any task switch. The socket reads straight into the frame
decoder's buffers (``asyncio.BufferedProtocol``) and each request is dispatched as a writable
view of the bytes the socket wrote, which it owns from then on: record batches go from there to
the segment file without a copy. A response that comes as
:class:`~odradek.protocol.fetch_response.ResponseParts` (a fetch with large reads) is written
part by part, its file slices with ``sendfile``, while the connection reads nothing more; the
slices are closed once sent or when the connection goes. Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from odradek.broker.contract import CLIENT_HOST
from odradek.errors import CorruptFrameError
from odradek.protocol.fetch_response import ResponseParts
from odradek.protocol.framing import NEED_DATA, Frame, FrameDecoder
from odradek.storage.file_records import FileRecords

__all__ = ["KafkaConnection", "Dispatch"]

log = logging.getLogger("odradek.connection")

# Returns the response frame (or its parts), None when no response is due (acks=0), or an
# awaitable of these.
Dispatch = Callable[
    [Frame], "bytes | ResponseParts | None | Awaitable[bytes | ResponseParts | None]"
]


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(
        self,
        dispatch: Dispatch,
        max_frame_bytes: int,
        connections: set[KafkaConnection],
    ) -> None:
        self._dispatch = dispatch
        self._decoder = FrameDecoder(max_frame_bytes)
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._waiting: asyncio.Future[Any] | None = None
        self._write_paused = False
        self._closed = False
        self.peer: str = "?"
        self.peer_host: str = ""

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.peer_host = str(peer[0])
        self._connections.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._closed and self._waiting is None:
            self._transport.resume_reading()
            self._process()

    # -- processing -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()

    def _process(self) -> None:
        transport = self._transport
        if transport is None:
            return
        out: list[bytes] = []
        try:
            while self._waiting is None and not self._write_paused and not self._closed:
                frame = self._decoder.next_frame()
                if frame is NEED_DATA:
                    break
                CLIENT_HOST.set(self.peer_host)
                result = self._dispatch(frame)
                if result is None:
                    continue
                if isinstance(result, bytes):
                    out.append(result)
                    continue
                if isinstance(result, ResponseParts):
                    if out:
                        transport.writelines(out)
                        out = []
                    self._start_send(result)
                    break
                self._waiting = asyncio.ensure_future(result)
                self._waiting.add_done_callback(self._on_response)
                transport.pause_reading()
        except Exception as e:
            if isinstance(e, CorruptFrameError):
                log.warning("closing connection from %s: %s", self.peer, e)
            else:
                log.error("closing connection from %s after an unexpected error", self.peer,
                          exc_info=e)
            if out:
                transport.writelines(out)
            transport.close()
            self._closed = True
            return
        if out:
            transport.writelines(out)

    def _on_response(self, fut: asyncio.Future[Any]) -> None:
        self._waiting = None
        if fut.cancelled() or self._closed or self._transport is None:
            if not fut.cancelled() and fut.exception() is None:
                _release(fut.result())
            return
        exc = fut.exception()
        if exc is not None:
            log.error("request failed on connection from %s", self.peer, exc_info=exc)
            self._transport.close()
            return
        response = fut.result()
        if isinstance(response, ResponseParts):
            self._start_send(response)
            return
        if response is not None:
            self._transport.write(response)
        if not self._write_paused:
            self._transport.resume_reading()
        self._process()

    # -- responses sent from files ----------------------------------------------------------------

    def _start_send(self, response: ResponseParts) -> None:
        """Send ``response`` in the background; like a waiting request, it holds back reading
        and the requests behind it until done (then ``_on_response`` resumes)."""
        assert self._transport is not None
        self._transport.pause_reading()
        self._waiting = asyncio.ensure_future(self._send_parts(response))
        self._waiting.add_done_callback(self._on_response)

    async def _send_parts(self, response: ResponseParts) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            for part in response.parts:
                if isinstance(part, bytes):
                    transport.write(part)
                    continue
                assert isinstance(part, FileRecords)
                if part.size == 0:
                    continue
                if transport.is_closing():
                    return
                # loop.sendfile waits for the bytes written before it to drain, then copies
                # from the file to the socket in the kernel (os.sendfile).
                try:
                    with open(part.fd, "rb", closefd=False) as f:
                        sent = await loop.sendfile(transport, f, part.position, part.size)
                except RuntimeError:
                    if transport.is_closing():
                        return
                    # A transport that cannot sendfile (in-memory ones): the bytes, read.
                    data = os.pread(part.fd, part.size, part.position)
                    transport.write(data)
                    sent = len(data)
                if sent != part.size:
                    # The file shrank since the read: what the frame promised cannot be sent, so
                    # the client must not get the rest of it as if it were whole.
                    log.error("closing connection from %s: %s held %d of the %d bytes promised",
                              self.peer, part.path, sent, part.size)
                    self._closed = True
                    transport.abort()
                    return
        except (ConnectionError, OSError) as e:
            log.info("closing connection from %s: sending a fetch response failed: %s",
                     self.peer, e)
            self._closed = True
            transport.abort()
        finally:
            _release(response)


def _release(response: Any) -> None:
    """Close the file slices of a response that will not be sent."""
    if isinstance(response, ResponseParts):
        for region in response.regions:
            if isinstance(region, FileRecords):
                region.close()
