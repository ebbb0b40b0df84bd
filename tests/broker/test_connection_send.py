"""The send side of a connection for responses made of parts (bytes and file slices), over a real
socket pair and asyncio's own selector transport: bytes in order, slices copied from their files
and closed, a slice that shrank aborting the connection, a peer that goes away releasing them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from odradek.broker.connection import KafkaConnection
from odradek.broker.connection_limits import ConnectionLimits, Connections
from odradek.broker.memory_pool import RequestMemoryPool
from odradek.protocol.fetch_response import ResponseParts
from odradek.storage.file_records import FileRecords

Answer = Callable[[bytes], Any]


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _parts(path: Path, tag: bytes, regions: list[tuple[int, int]]) -> ResponseParts:
    """A response: a size prefix and ``tag``, then each region of ``path`` behind a marker."""
    parts: list[Any] = [tag]
    for pos, size in regions:
        parts.append(FileRecords.open(path, pos, size, -1))
        parts.append(b"|")
    body = sum(len(p) for p in parts)
    parts[0] = struct.pack(">i", body) + tag
    return ResponseParts(tuple(parts), body + 4)


def _connection(answer: Answer) -> KafkaConnection:
    limits = ConnectionLimits(
        max_connections=100, max_connections_per_ip=100, idle_s=None, request_timeout_s=30
    )
    return KafkaConnection(
        lambda frame: answer(bytes(frame)), 1 << 20, Connections(limits),
        RequestMemoryPool(64 << 20),
    )


async def _serve(answer: Answer) -> tuple[socket.socket, KafkaConnection, asyncio.Transport]:
    loop = asyncio.get_running_loop()
    server_sock, client_sock = socket.socketpair()
    # Small buffers, so a large slice cannot go out before the peer reads.
    for s in (server_sock, client_sock):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    client_sock.setblocking(False)
    conn = _connection(answer)
    transport, _ = await loop.connect_accepted_socket(lambda: conn, server_sock)
    assert isinstance(transport, asyncio.Transport)
    return client_sock, conn, transport


async def _read(sock: socket.socket, n: int, timeout: float = 10) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, min(1 << 20, n - len(out))), timeout)
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} bytes")
        out += chunk
    return bytes(out)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    return path, data


def test_parts_go_out_in_order_and_their_slices_are_closed(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    made: list[ResponseParts] = []

    def answer(frame: bytes) -> Any:
        if frame == b"small":
            return _frame(b"plain answer")
        r = _parts(path, frame, [(0, 2_000_000), (5, 0), (2_500_000, 100_000)])
        made.append(r)
        return r

    async def run() -> None:
        sock, _conn, transport = await _serve(answer)
        loop = asyncio.get_running_loop()
        # Pipelined: the second big answer and the small one wait for the first to be sent.
        await loop.sock_sendall(sock, _frame(b"A") + _frame(b"B") + _frame(b"small"))
        for tag in (b"A", b"B"):
            (size,) = struct.unpack(">i", await _read(sock, 4))
            body = await _read(sock, size)
            assert body == tag + data[:2_000_000] + b"|" + b"|" + data[2_500_000:2_600_000] + b"|"
        (size,) = struct.unpack(">i", await _read(sock, 4))
        assert await _read(sock, size) == b"plain answer"
        transport.close()
        sock.close()

    asyncio.run(run())
    assert len(made) == 2
    assert all(region.closed for r in made for region in r.regions)  # type: ignore[attr-defined]


def test_a_slice_shorter_than_promised_aborts_the_connection(
    data_file: tuple[Path, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path, _data = data_file
    made: list[ResponseParts] = []

    def answer(frame: bytes) -> Any:
        made.append(_parts(path, b"T", [(0, 3 * 1024 * 1024)]))
        return made[-1]

    async def run() -> int:
        sock, _conn, _transport = await _serve(answer)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, _frame(b"go"))
        (size,) = struct.unpack(">i", await _read(sock, 4))
        os.truncate(path, 1_000_000)  # while the send is stalled on the full socket
        with pytest.raises(ConnectionError) as e:
            await _read(sock, size)
        sock.close()
        return int(str(e.value).split()[2])

    with caplog.at_level(logging.ERROR, logger="odradek.connection"):
        received = asyncio.run(run())
    assert received < 3 * 1024 * 1024
    assert any("bytes promised" in r.getMessage() for r in caplog.records)
    assert made[0].regions[0].closed  # type: ignore[attr-defined]


def test_a_slice_already_short_when_sent_aborts_at_once(
    data_file: tuple[Path, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path, _data = data_file
    made: list[ResponseParts] = []

    def answer(frame: bytes) -> Any:
        made.append(_parts(path, b"T", [(0, 100_000)]))
        os.truncate(path, 50_000)  # between the read and the send
        return made[-1]

    async def run() -> bytes:
        sock, _conn, _transport = await _serve(answer)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, _frame(b"go"))
        out = bytearray()
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10):
            out += chunk
        sock.close()
        return bytes(out)

    with caplog.at_level(logging.ERROR, logger="odradek.connection"):
        received = asyncio.run(run())
    (size,) = struct.unpack(">i", received[:4])
    assert len(received) < 4 + size
    assert any("bytes promised" in r.getMessage() for r in caplog.records)
    assert made[0].regions[0].closed  # type: ignore[attr-defined]


def test_a_peer_that_goes_away_mid_send_releases_the_slices(
    data_file: tuple[Path, bytes]
) -> None:
    path, _data = data_file
    made: list[ResponseParts] = []

    def answer(frame: bytes) -> Any:
        made.append(_parts(path, b"T", [(0, 3 * 1024 * 1024), (0, 10)]))
        return made[-1]

    async def run() -> None:
        sock, conn, _transport = await _serve(answer)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, _frame(b"go"))
        await _read(sock, 100)
        sock.close()
        for _ in range(200):
            if all(r.closed for r in made[0].regions):  # type: ignore[attr-defined]
                return
            await asyncio.sleep(0.01)
        raise AssertionError("slices still open after the peer left")

    asyncio.run(run())


def test_a_transport_without_sendfile_gets_the_bytes(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file

    class Memory(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.sent = bytearray()

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return default

        def write(self, data: Any) -> None:
            self.sent += data

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    made: list[ResponseParts] = []

    def answer(frame: bytes) -> Any:
        made.append(_parts(path, b"M", [(10, 70_000)]))
        return made[-1]

    async def run() -> bytes:
        transport = Memory()
        conn = _connection(answer)
        conn.connection_made(transport)
        request = _frame(b"go")
        buf = conn.get_buffer(-1)
        buf[: len(request)] = request
        conn.buffer_updated(len(request))
        for _ in range(100):
            await asyncio.sleep(0)
            if made and made[0].regions[0].closed:  # type: ignore[attr-defined]
                break
        return bytes(transport.sent)

    sent = asyncio.run(run())
    assert sent[4:] == b"M" + data[10:70_010] + b"|"
