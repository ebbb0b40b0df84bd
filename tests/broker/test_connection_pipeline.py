"""Produce requests pipelined behind ones waiting for replication (acks=all), over a real socket
pair and asyncio's own transport: the next Produce is dispatched (appended) at once, up to
``MAX_PIPELINED_PRODUCES`` waiting; answers still go out in request order; any other request
waits until every Produce before it is answered."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from odradek.broker.connection import MAX_PIPELINED_PRODUCES, KafkaConnection
from odradek.broker.connection_limits import ConnectionLimits, Connections
from odradek.broker.contract import Replicating
from odradek.broker.memory_pool import RequestMemoryPool

_PRODUCE = b"\x00\x00"
_FETCH = b"\x00\x01"


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


class _Script:
    """The dispatcher's stand-in: notes the order requests are dispatched in; a Produce whose
    payload ends in ``wait`` is answered with a :class:`Replicating` the test completes."""

    def __init__(self) -> None:
        self.dispatched: list[bytes] = []
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}

    def __call__(self, frame: Any) -> Any:
        payload = bytes(frame)
        self.dispatched.append(payload)
        if payload.endswith(b"wait"):
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.pending[payload] = fut
            return Replicating(fut)
        return _frame(b"re:" + payload)

    def answer(self, payload: bytes) -> None:
        self.pending.pop(payload).set_result(_frame(b"re:" + payload))


async def _serve(script: _Script) -> tuple[socket.socket, asyncio.Transport]:
    loop = asyncio.get_running_loop()
    server_sock, client_sock = socket.socketpair()
    client_sock.setblocking(False)
    limits = ConnectionLimits(
        max_connections=10, max_connections_per_ip=10, idle_s=None, request_timeout_s=30
    )
    conn = KafkaConnection(script, 1 << 20, Connections(limits), RequestMemoryPool(64 << 20))
    transport, _ = await loop.connect_accepted_socket(lambda: conn, server_sock)
    assert isinstance(transport, asyncio.Transport)
    return client_sock, transport


async def _answers(sock: socket.socket, n: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    buf = bytearray()
    out: list[bytes] = []
    while len(out) < n:
        buf += await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack_from(">i", buf)[0]:
            size = struct.unpack_from(">i", buf)[0]
            out.append(bytes(buf[4 : 4 + size]))
            del buf[: 4 + size]
    assert not buf
    return out


async def _until(condition: Any) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def _nothing_sent(sock: socket.socket) -> bool:
    await asyncio.sleep(0.05)  # a response that was due would have been written by now
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return True


def test_produces_behind_a_replication_wait_are_appended_at_once_and_answered_in_order() -> None:
    script = _Script()

    async def run() -> None:
        sock, transport = await _serve(script)
        loop = asyncio.get_running_loop()
        requests = [_PRODUCE + b"1-wait", _PRODUCE + b"2-wait", _PRODUCE + b"3 acks=1"]
        await loop.sock_sendall(sock, b"".join(_frame(r) for r in requests))
        await _until(lambda: len(script.dispatched) == 3)
        assert script.dispatched == requests
        # The second is replicated first: nothing may overtake the first's answer.
        script.answer(requests[1])
        assert await _nothing_sent(sock)
        script.answer(requests[0])
        assert await _answers(sock, 3) == [b"re:" + r for r in requests]
        transport.close()
        sock.close()

    asyncio.run(run())


def test_another_request_waits_until_the_produces_before_it_are_answered() -> None:
    script = _Script()

    async def run() -> None:
        sock, transport = await _serve(script)
        loop = asyncio.get_running_loop()
        first, fetch, after = _PRODUCE + b"1-wait", _FETCH + b"fetch", _PRODUCE + b"2-wait"
        await loop.sock_sendall(sock, _frame(first) + _frame(fetch) + _frame(after))
        await _until(lambda: len(script.dispatched) == 1)
        assert await _nothing_sent(sock)
        assert script.dispatched == [first]
        script.answer(first)
        await _until(lambda: len(script.dispatched) == 3)
        assert script.dispatched == [first, fetch, after]
        script.answer(after)
        assert await _answers(sock, 3) == [b"re:" + first, b"re:" + fetch, b"re:" + after]
        transport.close()
        sock.close()

    asyncio.run(run())


def test_at_most_so_many_produces_wait_at_once() -> None:
    script = _Script()
    n = MAX_PIPELINED_PRODUCES + 2

    async def run() -> None:
        sock, transport = await _serve(script)
        loop = asyncio.get_running_loop()
        requests = [_PRODUCE + f"{i}-wait".encode() for i in range(n)]
        await loop.sock_sendall(sock, b"".join(_frame(r) for r in requests))
        await _until(lambda: len(script.dispatched) == MAX_PIPELINED_PRODUCES)
        assert await _nothing_sent(sock)
        assert len(script.dispatched) == MAX_PIPELINED_PRODUCES
        script.answer(requests[0])
        await _until(lambda: len(script.dispatched) == MAX_PIPELINED_PRODUCES + 1)
        for r in requests[1:]:
            await _until(lambda r=r: r in script.pending)  # type: ignore[misc]
            script.answer(r)
        assert await _answers(sock, n) == [b"re:" + r for r in requests]
        transport.close()
        sock.close()

    asyncio.run(run())


def test_a_request_whose_connection_closes_before_it_runs_is_not_left_unawaited() -> None:
    """The dispatcher answers a Fetch with a coroutine wrapping its long poll; the connection
    makes it a task. Closed in the same turn (the request and the close read together), the
    task was cancelled before its first step and the long poll never awaited (a
    RuntimeWarning, and its watch left behind)."""
    polled: list[str] = []

    async def long_poll() -> bytes:
        try:
            await asyncio.sleep(30)
        finally:
            polled.append("ended")
        return b""

    async def complete(pending: Any) -> bytes:
        return await pending

    def dispatch(frame: Any) -> Any:
        return complete(long_poll())

    async def main() -> None:
        limits = ConnectionLimits(
            max_connections=10, max_connections_per_ip=10, idle_s=None, request_timeout_s=30
        )
        conn = KafkaConnection(dispatch, 1 << 20, Connections(limits), RequestMemoryPool(1 << 20))

        class _Transport(asyncio.Transport):
            def get_extra_info(self, name: str, default: Any = None) -> Any:
                return ("127.0.0.1", 1) if name == "peername" else default

            def pause_reading(self) -> None:
                pass

        conn.connection_made(_Transport())
        frame = _frame(_FETCH + b"\x00\x0c" + b"\x00" * 8)
        buf = conn.get_buffer(len(frame))
        buf[: len(frame)] = frame
        conn.buffer_updated(len(frame))
        conn.connection_lost(None)  # in the same turn: the task has not started
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert polled == ["ended"]  # the long poll ran and was cancelled, not dropped
