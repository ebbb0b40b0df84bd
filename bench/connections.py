"""Connection benchmark: the broker's resident memory with no connections, with N idle ones, and
after they have closed.

Each connection sends one ApiVersions request and reads the answer (so it had a receive buffer),
then stays idle. The connections are held by client processes of their own (``python
connections.py hold HOST PORT N``), a few thousand each, so that neither side runs out of file
descriptors; each prints ``ready`` once its connections are open and answered, and closes them
when its stdin closes.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConnectionMemory", "idle_connections"]

_PER_CLIENT = 5000


@dataclass(frozen=True)
class ConnectionMemory:
    connections: int
    rss_none: int  # bytes, before any connection
    rss_open: int  # right after every connection had its answer
    rss_idle: int  # once idle connections have given their receive buffers back
    rss_closed: int  # after they all closed
    open_seconds: float


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _api_versions(correlation_id: int) -> bytes:
    header = struct.pack(">hhih", 18, 3, correlation_id, 1) + b"a\x00"
    body = b"\x01\x01\x00"
    return struct.pack(">i", len(header) + len(body)) + header + body


def _answered(sock: socket.socket) -> None:
    sock.sendall(_api_versions(1))
    (size,) = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))
    frame = sock.recv(size, socket.MSG_WAITALL)
    if struct.unpack_from(">ih", frame) != (1, 0):
        raise SystemExit("ApiVersions failed")


def _settled(address: tuple[str, int]) -> None:
    with socket.create_connection(address) as s:
        _answered(s)
        _answered(s)


def _stable_rss(pid: int, seconds: float) -> int:
    """The broker's RSS once it has stopped falling (idle buffers go after about a second)."""
    deadline = time.monotonic() + seconds
    last = _rss(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _rss(pid)
        if now >= last and time.monotonic() > deadline - seconds + 2.5:
            return now
        last = min(last, now)
    return last


def idle_connections(pid: int, bootstrap: str, n: int) -> ConnectionMemory:
    host, port = bootstrap.rsplit(":", 1)
    address = (host, int(port))
    _settled(address)
    rss_none = _rss(pid)
    t0 = time.perf_counter()
    clients = []
    remaining = n
    while remaining:
        count = min(remaining, _PER_CLIENT)
        remaining -= count
        clients.append(subprocess.Popen(
            [sys.executable, __file__, "hold", host, port, str(count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ))
    for c in clients:
        assert c.stdout is not None
        if c.stdout.readline().strip() != "ready":
            raise SystemExit("a client could not open its connections")
    open_seconds = time.perf_counter() - t0
    _settled(address)
    rss_open = _rss(pid)
    rss_idle = _stable_rss(pid, 10)
    for c in clients:
        assert c.stdin is not None
        c.stdin.close()
        c.wait(60)
    _settled(address)
    rss_closed = _stable_rss(pid, 5)
    return ConnectionMemory(n, rss_none, rss_open, rss_idle, rss_closed, open_seconds)


def _hold(host: str, port: int, n: int) -> None:
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=30)
        _answered(s)
        conns.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()


if __name__ == "__main__" and sys.argv[1:2] == ["hold"]:
    _hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
