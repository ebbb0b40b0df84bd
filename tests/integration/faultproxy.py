"""A Kafka-aware TCP proxy that injects connection faults, for tests.

:class:`FaultProxy` listens on ``127.0.0.1`` and forwards every client connection to an upstream
broker. It cuts both directions into Kafka frames (4-byte size prefix), remembers for each
connection which API every outstanding correlation id belongs to, and can be told to sever a
connection at the worst moment for a client: after the broker has processed a request and
answered it, but before that answer reaches the client (:meth:`FaultProxy.drop_responses`).
The client then sees a broken connection with requests of unknown outcome and must retry them.

The broker must advertise the proxy (``advertised.listeners=PLAINTEXT://127.0.0.1:<proxy port>``)
so clients that reconnect after their first Metadata request stay on the proxy; start the proxy
first (port 0), then the broker, then point the proxy at it (:attr:`FaultProxy.upstream`).

A *hold* (:meth:`FaultProxy.hold`, or ``hold_after=True`` on a drop rule) parks new client
connections before they reach the broker until :meth:`FaultProxy.release`, which lets a test
restart the broker between a request and its retry.

Ownership: the public methods may be called from any thread; all shared state is behind one
lock. The proxy runs one daemon accept thread plus one daemon thread per connection, and every
blocking call has a bounded timeout, so :meth:`FaultProxy.stop` returns promptly and a test can
never hang on the proxy. Nothing is persisted.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

__all__ = ["FaultProxy", "Seen", "PRODUCE", "FETCH", "METADATA", "INIT_PRODUCER_ID"]

PRODUCE = 0
FETCH = 1
METADATA = 3
INIT_PRODUCER_ID = 22

_SIZE = struct.Struct(">i")
_PREAMBLE = struct.Struct(">hhi")
_CORRELATION = struct.Struct(">i")

POLL_SECONDS = 0.05
CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0
HOLD_TIMEOUT = 30.0
JOIN_TIMEOUT = 5.0
MAX_FRAME = 256 * 1024 * 1024


@dataclass(slots=True)
class Seen:
    """One request that went through the proxy. ``outcome`` is ``"pending"`` until the response
    passes (``"answered"``) or is withheld (``"dropped"``); requests without a response (acks=0)
    or lost with a severed connection stay ``"pending"``. ``frame`` (without the size prefix) is
    kept only for the API keys named in ``FaultProxy(record=...)``."""

    conn: int
    api_key: int
    api_version: int
    correlation_id: int
    frame: bytes | None
    outcome: str = "pending"


@dataclass(slots=True)
class _DropRule:
    api_key: int
    remaining: int
    pass_between: int
    hold_after: bool
    to_pass: int


class _Frames:
    """Accumulates a byte stream and yields complete frames (without their size prefix)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (size,) = _SIZE.unpack_from(self.buf, 0)
            if size < 0 or size > MAX_FRAME:
                raise ValueError(f"implausible frame size {size}")
            if len(self.buf) < 4 + size:
                break
            out.append(bytes(self.buf[4 : 4 + size]))
            del self.buf[: 4 + size]
        return out


class _Connection:
    """One client connection and its upstream twin, pumped by a single daemon thread."""

    def __init__(self, proxy: FaultProxy, conn_id: int, client: socket.socket) -> None:
        self.proxy = proxy
        self.conn_id = conn_id
        self.client = client
        self.upstream: socket.socket | None = None
        self.severed = threading.Event()
        self.pending: dict[int, Seen] = {}
        self.thread = threading.Thread(
            target=self._run, name=f"faultproxy-conn-{conn_id}", daemon=True
        )

    def sever(self) -> None:
        """Ask the pump thread to close both sides (safe from any thread)."""
        self.severed.set()
        for s in (self.client, self.upstream):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _run(self) -> None:
        try:
            if not self.proxy._wait_for_gate(self):
                return
            target = self.proxy.upstream
            if target is None:
                return
            self.upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
            if self.severed.is_set():
                return
            self._pump(self.upstream)
        except (OSError, ValueError):
            pass
        finally:
            for s in (self.client, self.upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
            self.proxy._forget(self)

    def _pump(self, upstream: socket.socket) -> None:
        client = self.client
        for s in (client, upstream):
            s.settimeout(SEND_TIMEOUT)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        requests, responses = _Frames(), _Frames()
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, "client")
            sel.register(upstream, selectors.EVENT_READ, "upstream")
            while not self.severed.is_set() and not self.proxy._stopping.is_set():
                for key, _ in sel.select(POLL_SECONDS):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if key.data == "client":
                        for frame in requests.feed(data):
                            self._request(frame)
                            upstream.sendall(_SIZE.pack(len(frame)) + frame)
                    else:
                        for frame in responses.feed(data):
                            if not self._response(frame):
                                return
                            client.sendall(_SIZE.pack(len(frame)) + frame)

    def _request(self, frame: bytes) -> None:
        if len(frame) < _PREAMBLE.size:
            return  # not a request the broker will answer; forwarded untracked
        api_key, api_version, correlation_id = _PREAMBLE.unpack_from(frame, 0)
        keep = frame if api_key in self.proxy.record else None
        seen = Seen(self.conn_id, api_key, api_version, correlation_id, keep)
        self.pending[correlation_id] = seen
        self.proxy._log(seen)

    def _response(self, frame: bytes) -> bool:
        """Whether to forward this response; False means the connection is to be severed."""
        if len(frame) < _CORRELATION.size:
            return True
        (correlation_id,) = _CORRELATION.unpack_from(frame, 0)
        seen = self.pending.pop(correlation_id, None)
        if seen is None:
            return True
        if self.proxy._should_drop(seen):
            return False
        seen.outcome = "answered"
        return True


class FaultProxy:
    """A fault-injecting Kafka proxy (see the module docstring). Use as a context manager, or
    call :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        upstream: tuple[str, int] | None = None,
        *,
        record: frozenset[int] = frozenset({PRODUCE}),
    ) -> None:
        self.record = record
        self._upstream = upstream
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._open = True  # the gate for new connections
        self._rules: list[_DropRule] = []
        self._connections: dict[int, _Connection] = {}
        self._next_conn = 0
        self._seen: list[Seen] = []
        self._dropped = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="faultproxy-accept", daemon=True
        )

    # -- life cycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def upstream(self) -> tuple[str, int] | None:
        with self._lock:
            return self._upstream

    @upstream.setter
    def upstream(self, target: tuple[str, int] | None) -> None:
        with self._lock:
            self._upstream = target

    def start(self) -> FaultProxy:
        self._listener.listen(64)
        self._listener.settimeout(POLL_SECONDS)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection; returns within a few seconds at most."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
            connections = list(self._connections.values())
        for c in connections:
            c.sever()
        if self._accept_thread.is_alive():
            self._accept_thread.join(JOIN_TIMEOUT)
        try:
            self._listener.close()
        except OSError:
            pass
        deadline = time.monotonic() + JOIN_TIMEOUT
        for c in connections:
            c.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults -----------------------------------------------------------------------------

    def drop_responses(
        self,
        api_key: int,
        count: int = 1,
        *,
        pass_first: int = 0,
        pass_between: int = 0,
        hold_after: bool = False,
    ) -> None:
        """Withhold ``count`` responses to ``api_key`` requests, severing the connection each
        one was due on (both sides) instead of forwarding it. The first ``pass_first`` responses
        of that API are let through, and ``pass_between`` more after each drop. With
        ``hold_after`` the proxy also severs every other connection and holds new ones (see
        :meth:`hold`) once the last of the ``count`` drops happened."""
        if count < 1 or pass_first < 0 or pass_between < 0:
            raise ValueError("count must be positive, pass_first and pass_between non-negative")
        with self._lock:
            self._rules.append(_DropRule(api_key, count, pass_between, hold_after, pass_first))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def hold(self) -> None:
        """Park connections accepted from now on (they are not connected upstream) until
        :meth:`release`; a parked connection is closed after ``HOLD_TIMEOUT`` seconds."""
        with self._lock:
            self._open = False

    def release(self) -> None:
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def sever_all(self) -> None:
        """Close every current connection, as a broker crash or network partition would."""
        with self._lock:
            connections = list(self._connections.values())
        for c in connections:
            c.sever()

    # -- observation ------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    def wait_for_drops(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` responses were withheld; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._dropped < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return False
                self._changed.wait(left)
            return True

    def seen(self, api_key: int | None = None) -> list[Seen]:
        """Requests seen so far, in arrival order (optionally only those of ``api_key``)."""
        with self._lock:
            return [s for s in self._seen if api_key is None or s.api_key == api_key]

    # -- internals (called from the proxy's threads) ----------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    return
                conn = _Connection(self, self._next_conn, client)
                self._next_conn += 1
                self._connections[conn.conn_id] = conn
            conn.thread.start()

    def _wait_for_gate(self, conn: _Connection) -> bool:
        deadline = time.monotonic() + HOLD_TIMEOUT
        with self._changed:
            while not self._open:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set() or conn.severed.is_set():
                    return False
                self._changed.wait(min(left, POLL_SECONDS))
        return not conn.severed.is_set()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.pop(conn.conn_id, None)

    def _log(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _should_drop(self, seen: Seen) -> bool:
        sever_others = False
        with self._changed:
            for rule in self._rules:
                if rule.api_key != seen.api_key or rule.remaining <= 0:
                    continue
                if rule.to_pass > 0:
                    rule.to_pass -= 1
                    return False
                rule.remaining -= 1
                rule.to_pass = rule.pass_between
                seen.outcome = "dropped"
                self._dropped += 1
                if rule.hold_after and rule.remaining == 0:
                    self._open = False
                    sever_others = True
                self._changed.notify_all()
                break
            else:
                return False
            others = list(self._connections.values()) if sever_others else []
        for c in others:
            c.sever()
        return True
