"""One client connection: bytes in, frames to the dispatcher, responses out in request order.

Requests on a connection are processed one at a time, as Kafka does: a request that has to wait
(a long-polling fetch) holds back the requests pipelined behind it, so side effects happen in the
order the client sent them, and the connection stops reading until it is answered. Requests that
complete at once are answered without any task switch. One exception: a Produce that has
appended and only waits for replication (acks=all, :class:`~odradek.broker.contract.Replicating`)
lets the Produce requests behind it be dispatched (up to :data:`MAX_PIPELINED_PRODUCES` waiting),
so the records a client pipelines (librdkafka and the Java client keep up to 5 requests in
flight) are appended at once and replicated in one round instead of one round each; their
answers still go out in request order, and any other request waits until they are all out. The socket reads straight into the frame
decoder's buffers (``asyncio.BufferedProtocol``) and each request is dispatched as a writable
view of the bytes the socket wrote, which it owns from then on: record batches go from there to
the segment file without a copy. A response that comes as
:class:`~odradek.protocol.fetch_response.ResponseParts` (a fetch with large reads) is written
part by part, its file slices with ``os.sendfile``: at once as far as the socket takes them,
the rest in the background while the connection reads nothing more; the slices are closed once
sent or when the connection goes. Owned by the broker's event loop.

Memory: a frame's full size is reserved from the broker's :class:`RequestMemoryPool` once its
size prefix has arrived and the rest has not (reading pauses until the pool grants it), and is
given back when its request has been answered. The receive chunk is allocated at the first read
and given back when the connection has been quiet a while. Admission and deadlines (idle,
stalled frames) are :class:`~odradek.broker.connection_limits.Connections`' business; this class
keeps the timestamps they are judged by: ``active_at`` (last read or response) and
``partial_since`` (when the frame being received began).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import CLIENT_HOST, Replicating
from odradek.broker.memory_pool import RequestMemoryPool
from odradek.broker.timings import RequestTimings
from odradek.errors import CorruptFrameError
from odradek.protocol.fetch_response import ResponseParts
from odradek.protocol.framing import NEED_DATA, Frame, FrameDecoder
from odradek.storage.file_records import FileRecords

__all__ = ["KafkaConnection", "Dispatch", "MAX_PIPELINED_PRODUCES"]

if TYPE_CHECKING:
    from odradek.broker.connection_limits import Connections

log = logging.getLogger("odradek.connection")
_now_ns = time.perf_counter_ns

#: Produce requests waiting for replication on one connection while the next is dispatched (the
#: clients' in-flight limit with idempotence); reading pauses beyond it.
MAX_PIPELINED_PRODUCES = 5
_PRODUCE = 0

# Returns the response frame (or its parts), None when no response is due (acks=0), or an
# awaitable of these.
Dispatch = Callable[
    [Frame], "bytes | ResponseParts | None | Awaitable[bytes | ResponseParts | None]"
]


class _Answer:
    """A pipelined request's answer, in request order: a future, or the response itself."""

    __slots__ = ("fut", "response", "api_key", "arrival", "reserved")

    def __init__(
        self, fut: asyncio.Future[Any] | None, response: bytes | None, api_key: int,
        arrival: int, reserved: int,
    ) -> None:
        self.fut = fut
        self.response = response
        self.api_key = api_key
        self.arrival = arrival
        self.reserved = reserved


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(
        self,
        dispatch: Dispatch,
        max_frame_bytes: int,
        connections: Connections,
        pool: RequestMemoryPool,
        timings: RequestTimings | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._timings = timings or RequestTimings()
        self._read_ns = 0  # when the last read arrived: the arrival of the frames it completed
        # The request being answered in the background (api key, arrival), for its timing.
        self._waiting_api = -1
        self._waiting_arrival = 0
        self._decoder = FrameDecoder(max_frame_bytes)
        self._connections = connections
        self._monotonic = connections.monotonic
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._waiting: asyncio.Future[Any] | None = None
        # Answers of Produce requests dispatched while earlier ones wait for replication, and
        # whatever was answered behind them, in request order (see the module docs).
        self._pipeline: deque[_Answer] = deque()
        # False once an answer in the pipeline is not a mere replication wait: nothing more
        # is dispatched until the pipeline is empty.
        self._pipeline_open = True
        # A frame read while the pipeline was busy that may not be dispatched before it is
        # empty: (frame, arrival, reservation).
        self._held: tuple[Any, int, int] | None = None
        self._write_paused = False
        self._closed = False
        self._reserved = 0  # pool bytes held for the frame being received
        self._answer_reserved = 0  # ... for the request being answered
        self._memory_wait = False  # reading paused until the pool grants a reservation
        self.active_at = 0.0  # monotonic time of the last read or response
        self.partial_since = 0.0  # when the frame being received began; 0.0: none is
        self.peer: str = "?"
        self.peer_host: str = ""

    @property
    def awaiting_response(self) -> bool:
        """A request is being answered (a long-polling fetch, say)."""
        return self._waiting is not None or bool(self._pipeline) or self._held is not None

    @property
    def waiting_for_memory(self) -> bool:
        return self._memory_wait

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.peer_host = str(peer[0])
        self.active_at = self._monotonic()
        refused = self._connections.admit(self)
        if refused is not None:
            log.warning("refusing connection from %s: %s", self.peer, refused)
            self._closed = True
            transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)
        self._read_ns = _now_ns()
        self.active_at = self._monotonic()
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.remove(self, self._decoder.close())
        if self._memory_wait:
            self._memory_wait = False
            self._pool.cancel(self)
        held = self._reserved + self._answer_reserved
        if self._held is not None:
            held += self._held[2]
            self._held = None
        pipeline, self._pipeline = self._pipeline, deque()
        for answer in pipeline:
            held += answer.reserved
            if answer.fut is not None:
                _cancel(answer.fut)
        if held:
            self._reserved = self._answer_reserved = 0
            self._pool.release(held)
        if self._waiting is not None:
            _cancel(self._waiting)
            self._waiting = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._may_read():
            assert self._transport is not None
            self._transport.resume_reading()
            self._process()

    # -- memory ---------------------------------------------------------------------------------

    def pool_granted(self, nbytes: int) -> None:
        self._memory_wait = False
        self._reserved = nbytes
        # The wait was ours, not the peer's: the frame's time starts now.
        self.partial_since = self._monotonic()
        if self._may_read():
            assert self._transport is not None
            self._transport.resume_reading()

    def release_idle_buffer(self) -> int:
        """Give the receive buffers back if nothing received is waiting in them; returns the
        heap bytes let go."""
        return self._decoder.release_buffer()

    def _track_partial(self) -> None:
        """Part of a frame is here: note when it began, and reserve its size before reading
        the rest (or stop reading until the pool can grant it)."""
        if not self.partial_since:
            self.partial_since = self.active_at
        if self._reserved:
            return
        claim = self._decoder.pending_claim()
        if not claim:
            return
        if self._pool.try_reserve(claim):
            self._reserved = claim
            return
        self._memory_wait = True
        assert self._transport is not None
        self._transport.pause_reading()
        self._pool.wait(self, claim)

    # -- processing -----------------------------------------------------------------------------

    def _may_read(self) -> bool:
        return (
            self._transport is not None
            and not self._closed
            and self._waiting is None
            and not self._write_paused
            and not self._memory_wait
            and self._may_pipeline()
        )

    def _may_pipeline(self) -> bool:
        """Whether the next request may be dispatched as far as the pipeline goes."""
        return not self._pipeline or (
            self._pipeline_open
            and self._held is None
            and len(self._pipeline) < MAX_PIPELINED_PRODUCES
        )

    def close(self, reason: str | None = None, level: int = logging.INFO) -> None:
        """Close the connection; ``reason``, if given, is logged with the peer."""
        if self._transport is not None and not self._closed:
            if reason is not None:
                log.log(level, "closing connection from %s: %s", self.peer, reason)
            self._transport.close()

    def _process(self) -> None:
        transport = self._transport
        if transport is None:
            return
        out: list[bytes] = []
        answered: list[int] = []  # api keys of the responses in ``out``
        timings = self._timings
        arrival = self._read_ns
        pipeline = self._pipeline
        try:
            while self._waiting is None and not self._write_paused and not self._closed:
                if self._held is not None:
                    if pipeline:
                        break
                    frame, frame_arrival, reserved = self._held
                    self._held = None
                    self._answer_reserved = reserved
                else:
                    if pipeline and not self._may_pipeline():
                        break
                    frame = self._decoder.next_frame()
                    if frame is NEED_DATA:
                        break
                    frame_arrival = arrival
                    # The frame's reservation (if it was received in parts) now belongs to its
                    # answer.
                    self._answer_reserved = self._reserved
                    self._reserved = 0
                    self.partial_since = 0.0
                # For the timings only; a frame too short for a header fails in dispatch.
                api_key = (frame[0] << 8) | frame[1] if len(frame) > 1 else -1
                if pipeline and api_key != _PRODUCE:
                    # Only Produce goes past Produce requests waiting for replication.
                    self._held = (frame, frame_arrival, self._answer_reserved)
                    self._answer_reserved = 0
                    transport.pause_reading()
                    break
                CLIENT_HOST.set(self.peer_host)
                timings.arrival_ns = frame_arrival
                result = self._dispatch(frame)
                if pipeline or isinstance(result, Replicating):
                    if out:  # answered before the pipeline began: they go first
                        self._write(out, answered, arrival)
                        out = []
                    self._pipelined(result, api_key, frame_arrival)
                    continue
                if result is None or isinstance(result, bytes):
                    self._release_answer()
                    if result is not None:
                        out.append(result)
                        answered.append(api_key)
                    continue
                if isinstance(result, ResponseParts):
                    self._release_answer()
                    if out:
                        self._write(out, answered, arrival)
                        out = []
                    self._waiting_api, self._waiting_arrival = api_key, frame_arrival
                    if not self._start_send(result):
                        break
                    timings.request_done(api_key, frame_arrival, _now_ns())
                    continue
                self._waiting_api, self._waiting_arrival = api_key, frame_arrival
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
            self._write(out, answered, arrival)
        if pipeline and not self._may_read() and not self._closed:
            transport.pause_reading()
        if self._decoder.buffered and self._waiting is None and not self._closed:
            self._track_partial()

    def _pipelined(self, result: Any, api_key: int, arrival: int) -> None:
        """Queue a request's answer behind the Produce requests waiting for replication."""
        reserved, self._answer_reserved = self._answer_reserved, 0
        if isinstance(result, ResponseParts):  # only Produce is dispatched here: never
            _release(result)
            raise RuntimeError("a file-backed response behind pipelined Produce requests")
        if result is None or isinstance(result, bytes):
            self._pipeline.append(_Answer(None, result, api_key, arrival, reserved))
            return
        if isinstance(result, Replicating):
            fut = asyncio.ensure_future(result.awaitable)
        else:
            # Not a mere replication wait (a transactional Produce being verified): nothing
            # more is dispatched before it is answered.
            fut = asyncio.ensure_future(result)
            self._pipeline_open = False
        self._pipeline.append(_Answer(fut, None, api_key, arrival, reserved))
        fut.add_done_callback(self._on_pipelined)

    def _on_pipelined(self, fut: asyncio.Future[Any]) -> None:
        """A pipelined answer is ready: write every answer at the head that is, in order."""
        pipeline = self._pipeline
        if self._closed or self._transport is None:
            if not fut.cancelled() and fut.exception() is None:
                _release(fut.result())
            return
        transport = self._transport
        sent_any = False
        while pipeline:
            head = pipeline[0]
            if head.fut is not None:
                if not head.fut.done():
                    break
                if head.fut.cancelled() or head.fut.exception() is not None:
                    exc = None if head.fut.cancelled() else head.fut.exception()
                    log.error("request failed on connection from %s", self.peer, exc_info=exc)
                    transport.close()
                    self._closed = True
                    return
                response = head.fut.result()
                if isinstance(response, ResponseParts):
                    _release(response)
                    log.error("closing connection from %s: a file-backed response to a "
                              "pipelined request", self.peer)
                    transport.close()
                    self._closed = True
                    return
            else:
                response = head.response
            pipeline.popleft()
            if head.reserved:
                self._pool.release(head.reserved)
            if response is not None:  # acks=0 has none, and no timing either
                transport.write(response)
                self._timings.request_done(head.api_key, head.arrival, _now_ns())
            sent_any = True
        if not sent_any:
            return
        self.active_at = self._monotonic()
        if not pipeline:
            self._pipeline_open = True
        if self._may_read():
            transport.resume_reading()
        self._process()

    def _write(self, out: list[bytes], answered: list[int], arrival: int) -> None:
        """Write the responses of synchronously answered requests and time them."""
        assert self._transport is not None
        self._transport.writelines(out)
        sent = _now_ns()
        timings = self._timings
        for api_key in answered:
            timings.request_done(api_key, arrival, sent)
        answered.clear()

    def _release_answer(self) -> None:
        """The request is answered: its frame's reservation goes back to the pool."""
        if self._answer_reserved:
            self._pool.release(self._answer_reserved)
            self._answer_reserved = 0

    def _on_response(self, fut: asyncio.Future[Any]) -> None:
        self._waiting = None
        self._release_answer()
        if fut.cancelled() or self._closed or self._transport is None:
            self._timings.forget(fut)
            if not fut.cancelled() and fut.exception() is None:
                _release(fut.result())
            return
        self.active_at = self._monotonic()
        exc = fut.exception()
        if exc is not None:
            self._timings.forget(fut)
            log.error("request failed on connection from %s", self.peer, exc_info=exc)
            self._transport.close()
            return
        response = fut.result()
        if isinstance(response, ResponseParts):
            if not self._start_send(response) or self._closed:
                self._timings.forget(fut)
                return
        elif response is not None:
            self._transport.write(response)
        sent = _now_ns()
        self._timings.request_done(self._waiting_api, self._waiting_arrival, sent)
        self._timings.response_sent(fut, sent)
        if self._may_read():
            self._transport.resume_reading()
        self._process()

    # -- responses sent from files ----------------------------------------------------------------

    def _start_send(self, response: ResponseParts) -> bool:
        """Send ``response``: at once as far as the socket takes it (bytes through the
        transport; file slices with ``os.sendfile`` straight to the socket while the transport
        has nothing buffered), the rest in the background, which like a waiting request holds
        back reading and the requests behind it (``_on_response`` resumes). Returns whether the
        response is done with (sent, or the connection closed)."""
        transport = self._transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        for i, part in enumerate(response.parts):
            if isinstance(part, bytes):
                transport.write(part)
                continue
            assert isinstance(part, FileRecords)
            done = 0
            if sock is not None and transport.get_write_buffer_size() == 0:
                done = self._sendfile_now(sock.fileno(), part)
                if done < 0:
                    _release(response)
                    return True
            if done < part.size:
                transport.pause_reading()
                self._waiting = asyncio.ensure_future(self._send_parts(response, i, done))
                self._waiting.add_done_callback(self._on_response)
                return False
        _release(response)
        return True

    def _sendfile_now(self, sock_fd: int, part: FileRecords) -> int:
        """Bytes of ``part`` the socket took without waiting; -1 if the connection was closed."""
        done = 0
        try:
            while done < part.size:
                n = os.sendfile(sock_fd, part.fd, part.position + done, part.size - done)
                if n == 0:
                    self._short_file(part, done)
                    return -1
                done += n
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self._send_failed(e)
            return -1
        return done

    async def _send_parts(self, response: ResponseParts, start: int, done: int) -> None:
        """Send ``response.parts[start:]``, of which the first (a file slice) has ``done``
        bytes out already."""
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            for part in response.parts[start:]:
                if isinstance(part, bytes):
                    transport.write(part)
                    continue
                assert isinstance(part, FileRecords)
                position, size, done = part.position + done, part.size - done, 0
                if size == 0:
                    continue
                if transport.is_closing():
                    return
                # loop.sendfile waits for the bytes written before it to drain, then copies
                # from the file to the socket in the kernel (os.sendfile).
                try:
                    with open(part.fd, "rb", closefd=False) as f:
                        sent = await loop.sendfile(transport, f, position, size)
                except RuntimeError:
                    if transport.is_closing():
                        return
                    # A transport that cannot sendfile (in-memory ones): the bytes, read.
                    data = os.pread(part.fd, size, position)
                    transport.write(data)
                    sent = len(data)
                if sent != size:
                    self._short_file(part, part.size - size + sent)
                    return
        except OSError as e:
            self._send_failed(e)
        finally:
            _release(response)

    def _short_file(self, part: FileRecords, sent: int) -> None:
        # The file shrank since the read: what the frame promised cannot be sent, so the client
        # must not get the rest of it as if it were whole.
        log.error("closing connection from %s: %s held %d of the %d bytes promised",
                  self.peer, part.path, sent, part.size)
        self._abort()

    def _send_failed(self, e: OSError) -> None:
        log.info("closing connection from %s: sending a fetch response failed: %s", self.peer, e)
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


def _release(response: Any) -> None:
    """Close the file slices of a response that will not be sent."""
    if isinstance(response, ResponseParts):
        for region in response.regions:
            if isinstance(region, FileRecords):
                region.close()


def _cancel(fut: asyncio.Future[Any]) -> None:
    """Cancel the answer under way of a connection that closed. A task whose coroutine has not
    taken its first step is cancelled one turn later, once it has: cancelled before, a
    coroutine never runs, and what the dispatcher handed it (a Fetch's long poll) is left never
    awaited (a request and the close that follows it read in one go; found by the
    simulation, a broker resumed after a stop)."""
    coro = fut.get_coro() if isinstance(fut, asyncio.Task) else None
    if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        fut.get_loop().call_soon(fut.cancel)
    else:
        fut.cancel()
