"""One client connection: bytes in, frames to the dispatcher, responses out in request order.

Requests on a connection are processed one at a time, as Kafka does: a request that has to wait
(a long-polling fetch) holds back the requests pipelined behind it, so side effects happen in the
order the client sent them, and the connection stops reading until it is answered. Requests that
complete at once are answered without any task switch. The socket reads straight into the frame
decoder's buffers (``asyncio.BufferedProtocol``) and each request is dispatched as a writable
view of the bytes the socket wrote, which it owns from then on: record batches go from there to
the segment file without a copy. Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from odradek.broker.contract import CLIENT_HOST
from odradek.errors import CorruptFrameError
from odradek.protocol.framing import NEED_DATA, Frame, FrameDecoder

__all__ = ["KafkaConnection", "Dispatch"]

log = logging.getLogger("odradek.connection")

# Returns the response frame, None when no response is due (acks=0), or an awaitable of either.
Dispatch = Callable[[Frame], "bytes | None | Awaitable[bytes | None]"]


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
            return
        exc = fut.exception()
        if exc is not None:
            log.error("request failed on connection from %s", self.peer, exc_info=exc)
            self._transport.close()
            return
        response = fut.result()
        if response is not None:
            self._transport.write(response)
        if not self._write_paused:
            self._transport.resume_reading()
        self._process()
