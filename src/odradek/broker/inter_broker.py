"""Requests from this broker to other brokers of the cluster, over the Kafka protocol.

The transaction coordinator sends WriteTxnMarkers to the leaders of the partitions of a
transaction it does not lead (:mod:`odradek.broker.transactions`). A destination is a node id,
looked up in the broker's :class:`~odradek.cluster.model.MetadataView` at each request, so a
broker that re-registered at another address is reached there. One connection per destination,
opened on first use and kept; requests on it are sent one at a time (each waits for its
response), which is all the coordinator's few requests need. A connection that fails or times
out (``request.timeout.ms``) is closed; the next request opens a new one, and the caller
decides whether to retry.

The replica fetchers use it too, each with clients of its own, for answers up to
``replica.fetch.response.max.bytes``: a large response frame is read straight into a buffer
of its own (:class:`_FrameReader`, one copy, by the kernel; the buffer is reused while nothing
holds a view of it), and a fetcher's sockets get ``replica.socket.receive.buffer.bytes`` as
SO_RCVBUF, set before connecting. Frames are built and decoded by
:mod:`odradek.protocol.client`, or, for the fetchers, by :mod:`odradek.protocol.replica_fetch`
(its own requests, and the zero-copy decoder a request names); only the socket is here.

Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import mmap
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from odradek.errors import CorruptFrameError, ErrorCode, KafkaError
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.framing import SPARE_BUFFER_BYTES, allocate, unshared
from odradek.protocol.replica_fetch import ReplicaFetchRequest

if TYPE_CHECKING:
    from odradek.cluster.model import MetadataView

__all__ = ["BrokerUnreachable", "INTER_BROKER_CLIENT_PREFIX", "InterBrokerClient"]

log = logging.getLogger("odradek.broker.inter_broker")

#: The client id of a broker's requests is this and its node id.
INTER_BROKER_CLIENT_PREFIX = "odradek-broker-"
_SIZE = struct.Struct(">i")
#: A response larger than this is not one the coordinator's requests get: the stream is off.
_MAX_RESPONSE_BYTES = 100 << 20
#: What a connection reads into before it knows a frame's size: frames up to this (with their
#: prefix) are read whole into it, larger ones into a buffer of their own.
_SMALL_READ_BYTES = 64 << 10


#: A response decoder other than ``kio``'s: (frame, api version) -> (correlation id, body).
Decoder = Callable[[bytes | memoryview, int], tuple[int, Any]]


class BrokerUnreachable(KafkaError):
    """The destination is not registered, or the connection to it failed or timed out."""

    code = ErrorCode.network_exception


class _FrameReader(asyncio.BufferedProtocol):
    """The socket's side of a :class:`_Connection`: reads size-prefixed response frames and
    hands them to the request waiting for one. Reads go into a small buffer (a small answer
    and its prefix take one read); a frame larger than what that buffer holds is read straight
    into a buffer of its own once its prefix is in (the kernel copies it there; nothing is
    copied again). A replica fetcher's answers are up to ``replica.fetch.response.max.bytes``:
    read through a stream they were copied twice more and gathered 256 KiB per wake-up, which
    made reading an answer that was already in the socket take milliseconds.

    A large frame's buffer is an anonymous map (:func:`odradek.protocol.framing.allocate`),
    handed out as a view; the last one is kept and reused for the next large frame once no view
    of it is left (the fetcher has appended the records it sliced from it), as the broker's
    request decoder does: a fresh megabyte each answer cost a zero fill and a page fault per
    page (the allocator gave the memory back between answers), a fifth of a follower's CPU in
    ``bench/run.py --only replication``."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._small = bytearray(_SMALL_READ_BYTES)  # prefixes and small frames
        self._small_view = memoryview(self._small)
        self._have = 0  # bytes in _small
        self._frame: mmap.mmap | None = None  # a large frame being read (after its prefix)
        self._frame_view: memoryview | None = None
        self._frame_size = 0
        self._got = 0  # bytes of the large frame read so far
        self._spare: mmap.mmap | None = None  # the last large frame's map, for the next one
        self._waiter: asyncio.Future[bytes | memoryview] | None = None
        self._ready: bytes | memoryview | None = None  # a whole frame nobody waited for yet
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame_view is not None:
            return self._frame_view[self._got : self._frame_size]
        return self._small_view[self._have:]

    def buffer_updated(self, nbytes: int) -> None:
        frame = self._frame
        if frame is not None:
            self._got += nbytes
            if self._got < self._frame_size:
                return
            view = self._frame_view
            assert view is not None
            self._frame = self._frame_view = None
            self._got = 0
            if len(frame) <= SPARE_BUFFER_BYTES:
                self._spare = frame
            self._deliver(view[: self._frame_size])
            view.release()
            return
        have = self._have = self._have + nbytes
        if have < 4:
            return
        size = _SIZE.unpack_from(self._small)[0]
        if not 0 <= size <= _MAX_RESPONSE_BYTES:
            self._fail(CorruptFrameError(f"response of {size} bytes"))
            return
        if 4 + size <= have:
            if have > 4 + size:  # only one answer is due at a time: the stream is off
                self._fail(CorruptFrameError("a response nobody asked for"))
                return
            self._have = 0
            self._deliver(bytes(self._small_view[4 : 4 + size]))
        elif 4 + size > len(self._small):
            # Too large for the small buffer: the rest goes straight into its own.
            spare, self._spare = self._spare, None
            if spare is not None and len(spare) >= size and unshared(spare):
                frame = spare
            else:
                frame = allocate(size)
            self._frame = frame
            self._frame_size = size
            self._frame_view = memoryview(frame)
            frame[: have - 4] = self._small_view[4:have]
            self._got = have - 4
            self._have = 0

    def _deliver(self, frame: bytes | memoryview) -> None:
        if self._ready is not None:  # a second answer to one request: the stream is off
            self._fail(CorruptFrameError("a response nobody asked for"))
            return
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        else:
            self._ready = frame
            if self._transport is not None:
                self._transport.pause_reading()  # nothing more is due until the next request

    def eof_received(self) -> bool:
        self._fail(asyncio.IncompleteReadError(b"", None))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc if exc is not None else asyncio.IncompleteReadError(b"", None))

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None
        if self._transport is not None:
            self._transport.abort()

    async def read_frame(self) -> bytes | memoryview:
        """The next response frame (without its size prefix)."""
        if self._ready is not None:
            frame, self._ready = self._ready, None
            if self._transport is not None:
                self._transport.resume_reading()
            return frame
        if self._lost is not None:
            raise self._lost
        self._waiter = asyncio.get_running_loop().create_future()
        return await self._waiter


class _Connection:
    """One TCP connection to one broker; requests one at a time (``_lock``)."""

    def __init__(
        self,
        node_id: int,
        address: tuple[str, int],
        receive_buffer_bytes: int,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self._receive_buffer_bytes = receive_buffer_bytes
        self._transport: asyncio.Transport | None = None
        self._reader: _FrameReader | None = None
        self._lock = asyncio.Lock()
        self._correlation = 0
        self._closed = False

    async def request(self, body: Any, client_id: str, decode: Decoder | None = None) -> Any:
        async with self._lock:
            if self._closed:
                # Dropped while this request waited for the lock: a new socket here would be
                # one nobody closes.
                raise EOFError(f"connection to broker {self.node_id} was dropped")
            if self._transport is None:
                transport, reader = await self._connect()
                if self._closed:
                    transport.abort()
                    raise EOFError(f"connection to broker {self.node_id} was dropped")
                self._transport, self._reader = transport, reader
            assert self._reader is not None and self._transport is not None
            self._correlation += 1
            correlation = self._correlation
            if isinstance(body, ReplicaFetchRequest):
                self._transport.write(body.encode(correlation, client_id))
            else:
                self._transport.write(encode_request(body, correlation, client_id))
            frame = await self._reader.read_frame()
            if decode is not None:
                got, response = decode(frame, type(body).__version__)
            else:
                got, response = decode_response(
                    memoryview(frame), type(body).__api_key__, type(body).__version__
                )
            del frame
            if got != correlation:
                raise CorruptFrameError(
                    f"broker {self.node_id} answered request {got}, expected {correlation}"
                )
            return response

    async def _connect(self) -> tuple[asyncio.Transport, _FrameReader]:
        loop = asyncio.get_running_loop()
        if not 0 < self._receive_buffer_bytes <= _rmem_max():
            # Unset, or more than the kernel grants (net.core.rmem_max): a capped SO_RCVBUF
            # would also turn off the kernel's autotuning, which grows the buffer past the cap.
            transport, reader = await loop.create_connection(_FrameReader, *self.address)
            return transport, reader
        # The receive buffer is set before connecting, so that the window scale offered in the
        # handshake can use it.
        host, port = self.address
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"cannot resolve {host}")
        for family, type_, proto, _name, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer_bytes)
                sock.setblocking(False)
                await loop.sock_connect(sock, sockaddr)
            except OSError as e:
                sock.close()
                error = e
                continue
            except BaseException:
                sock.close()
                raise
            transport, reader = await loop.create_connection(_FrameReader, sock=sock)
            return transport, reader
        raise error

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        self._transport = self._reader = None


class InterBrokerClient:
    """Sends requests to other brokers by node id; see the module docs."""

    def __init__(
        self,
        cluster: MetadataView,
        node_id: int,
        *,
        request_timeout_ms: int = 30_000,
        receive_buffer_bytes: int = -1,
    ) -> None:
        """``receive_buffer_bytes``: the sockets' SO_RCVBUF (-1: the system's default, which
        the kernel grows by itself); a replica fetcher sets it (see its module docs)."""
        self._cluster = cluster
        self._receive_buffer_bytes = receive_buffer_bytes
        self._client_id = f"{INTER_BROKER_CLIENT_PREFIX}{node_id}"
        self._timeout_s = request_timeout_ms / 1000
        self._connections: dict[int, _Connection] = {}
        self._closed = False

    async def send(self, node_id: int, body: Any, decode: Decoder | None = None) -> Any:
        """``body``'s response from broker ``node_id``, decoded by ``decode`` (frame, version)
        -> (correlation id, response) when given, else by ``kio``. Raises
        :class:`BrokerUnreachable` (the connection is dropped) when the broker is not
        registered, or the request failed or timed out."""
        if self._closed:
            raise BrokerUnreachable("the broker is shutting down")
        broker = self._cluster.broker(node_id)
        if broker is None:
            raise BrokerUnreachable(f"broker {node_id} is not registered")
        address = (broker.info.host, broker.info.port)
        conn = self._connections.get(node_id)
        if conn is None or conn.address != address:
            if conn is not None:
                conn.close()
            conn = self._connections[node_id] = _Connection(
                node_id, address, self._receive_buffer_bytes
            )
        try:
            # asyncio.timeout, not wait_for: wait_for runs the request as a task of its own,
            # one more task step and timer per request (a replica fetcher sends one per answer).
            async with asyncio.timeout(self._timeout_s):
                return await conn.request(body, self._client_id, decode)
        except (OSError, EOFError, TimeoutError, CorruptFrameError) as e:
            # asyncio.IncompleteReadError is an EOFError: the broker closed the connection.
            conn.close()
            if self._connections.get(node_id) is conn:
                del self._connections[node_id]
            log.info("request to broker %d at %s:%d failed: %r", node_id, *address, e)
            raise BrokerUnreachable(f"broker {node_id} at {address[0]}:{address[1]}: {e!r}") from e
        except asyncio.CancelledError:
            # Cut off mid-request: what the stream holds next is not the next request's answer.
            conn.close()
            if self._connections.get(node_id) is conn:
                del self._connections[node_id]
            raise

    async def close(self) -> None:
        self._closed = True
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()


@functools.cache
def _rmem_max() -> int:
    """The largest SO_RCVBUF the kernel grants (``net.core.rmem_max``); unknown: unlimited."""
    try:
        with open("/proc/sys/net/core/rmem_max", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 62
