"""The simulated network: TCP-like connections between simulated processes, in memory.

A connection is two :class:`_End` transports. Bytes written on one end reach the other after a
latency drawn from the seeded random source, in order (a chunk never overtakes the one before
it), and are handed to the protocol as a socket would hand them: in pieces while it reads, held
back while it has paused reading. What can go wrong is what goes wrong with TCP:

- **A cut link** (a network partition between two nodes): bytes sent over it vanish, and the
  connection is dead from then on without either end being told (as a real one stays silent
  until a timeout); when the link heals, both ends of such a connection are reset (the peer
  answers the retransmission with RST). A connect over a cut link fails after the connect
  timeout.
- **A reset**: with the fault probability per delivered chunk, the connection is reset; both
  ends see ``connection_lost(ConnectionResetError)`` and the bytes under way are lost.
- **A slow link** (:meth:`SimNetwork.slow`): every trip over it takes that much longer.
- **A crash** of a process (:meth:`SimNetwork.kill`): its listeners close, and the peers of its
  connections are reset one latency later (its kernel answers for the dead process).

Nodes are named by strings (``b1``, ``store``, ``client``); a listener's address is a
``(host, port)`` pair of the simulation's own naming. Owned by the :class:`SimLoop` it runs on.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import errno
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from odradek.sim.loop import Incarnation, SimLoop, current_node

__all__ = ["NetworkFaults", "SimNetwork"]

#: A FIN in a connection's stream of chunks.
_FIN = b""


@dataclass(frozen=True, slots=True)
class NetworkFaults:
    """How the network behaves. Latencies are one-way, in milliseconds, drawn uniformly."""

    min_latency_ms: float = 0.05
    max_latency_ms: float = 1.0
    #: Chance that a delivered chunk resets its connection instead.
    reset_probability: float = 0.0
    connect_timeout_s: float = 3.0


class _FakeSocket:
    """What a broker reads of its listening socket: the address."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address

    def getsockname(self) -> tuple[str, int]:
        return self._address


class _Listener(asyncio.AbstractServer):
    def __init__(
        self, network: SimNetwork, owner: Incarnation | None, address: tuple[str, int],
        factory: Callable[[], asyncio.BaseProtocol], serving: bool,
    ) -> None:
        self.network = network
        self.owner = owner
        self.address = address
        self.factory = factory
        self.context = contextvars.copy_context()
        self.sockets = (_FakeSocket(address),)  # type: ignore[assignment]
        self.serving = serving
        self.closed = False
        self._closed_event = asyncio.Event()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.serving = False
            self.network._unlisten(self)
            self._closed_event.set()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.network.loop

    def is_serving(self) -> bool:
        return self.serving

    async def start_serving(self) -> None:
        if not self.closed:
            self.serving = True

    async def serve_forever(self) -> None:
        await self.start_serving()
        await self._closed_event.wait()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    async def __aenter__(self) -> _Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Connection:
    """Both ends of one connection and whether the network has silently lost it."""

    __slots__ = ("number", "ends", "black_holed")

    def __init__(self, number: int) -> None:
        self.number = number
        self.ends: tuple[_End, _End] | None = None
        self.black_holed = False


class _End(asyncio.Transport):
    """One end of a simulated connection: a transport for its owner's protocol."""

    def __init__(
        self, network: SimNetwork, conn: _Connection, owner: Incarnation | None,
        local: tuple[str, int], remote: tuple[str, int], context: contextvars.Context,
    ) -> None:
        super().__init__()
        self._network = network
        self._conn = conn
        self.owner = owner
        self.node = owner.node if owner is not None else "sim"
        self._local = local
        self._remote = remote
        self.context = context
        self.peer: _End
        self._protocol: asyncio.BaseProtocol | None = None
        self._inbox: collections.deque[bytes] = collections.deque()
        self._paused = False
        self._closing = False
        self._lost = False
        #: When the last chunk sent from this end arrives (chunks never overtake each other).
        self._last_arrival = 0.0

    # -- asyncio.Transport ------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._remote
        if name == "sockname":
            return self._local
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def is_reading(self) -> bool:
        return not self._paused and not self.is_closing()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self._network.loop.call_soon(self._pump, context=self.context)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._lost or not data:
            return
        self._network._send(self, bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def write_eof(self) -> None:
        if not self._closing and not self._lost:
            self._network._send(self, _FIN)

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._network._send(self, _FIN)
        self._network.loop.call_soon(self._connection_lost, None, context=self.context)

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        self._network._reset_later(self.peer)
        self._network.loop.call_soon(self._connection_lost, None, context=self.context)

    # -- the network's side -------------------------------------------------------------------------

    def _arrive(self, data: bytes) -> None:
        net = self._network
        if self._lost or self._conn.black_holed:
            return
        if not net.reachable(self.peer.node, self.node) or not net.alive(self.owner):
            self._conn.black_holed = True
            return
        if data and net.faults.reset_probability and (
            net.rng.random() < net.faults.reset_probability
        ):
            net.trace(f"reset conn {self._conn.number} {self.peer.node}->{self.node}")
            net._reset_now(self._conn)
            return
        self._inbox.append(data)
        self._pump()

    def _pump(self) -> None:
        protocol = self._protocol
        while self._inbox and not self._paused and not self._lost and protocol is not None:
            data = self._inbox.popleft()
            if data is _FIN or not data:
                keep_open = protocol.eof_received()  # type: ignore[attr-defined]
                if not keep_open:
                    self._closing = True
                    self._connection_lost(None)
                return
            if isinstance(protocol, asyncio.BufferedProtocol):
                view = memoryview(data)
                while view and not self._paused and not self._lost:
                    buf = memoryview(protocol.get_buffer(len(view)))
                    n = min(len(buf), len(view))
                    buf[:n] = view[:n]
                    view = view[n:]
                    protocol.buffer_updated(n)
                if view:
                    self._inbox.appendleft(bytes(view))
            else:
                protocol.data_received(data)  # type: ignore[attr-defined]

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._inbox.clear()
        if self.peer._lost:
            self._network._connections.pop(self._conn.number, None)
        if self._protocol is not None:
            self._protocol.connection_lost(exc)


class SimNetwork:
    """The network between the simulation's processes (see the module docstring)."""

    def __init__(self, loop: SimLoop, rng: random.Random, faults: NetworkFaults,
                 trace: Callable[[str], None]) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self.trace = trace
        self._listeners: dict[tuple[str, int], _Listener] = {}
        self._connections: dict[int, _Connection] = {}
        self._cut: set[frozenset[str]] = set()
        self._slow: dict[frozenset[str], float] = {}
        self._next_connection = 0
        loop.network = self

    # -- topology and faults ------------------------------------------------------------------------

    def reachable(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self._cut

    @staticmethod
    def alive(incarnation: Incarnation | None) -> bool:
        return incarnation is None or incarnation.alive

    def cut(self, a: str, b: str) -> None:
        """Partition ``a`` from ``b`` (both directions)."""
        self._cut.add(frozenset((a, b)))
        self.trace(f"cut {a}|{b}")

    def heal(self, a: str, b: str) -> None:
        link = frozenset((a, b))
        if link not in self._cut:
            return
        self._cut.discard(link)
        self.trace(f"heal {a}|{b}")
        # Connections lost in the partition: the retransmissions now meet a peer that answers
        # with a reset.
        for conn in list(self._connections.values()):
            if conn.black_holed and conn.ends is not None and (
                frozenset((conn.ends[0].node, conn.ends[1].node)) == link
            ):
                self._reset_now(conn)

    def heal_all(self) -> None:
        for link in sorted(self._cut, key=sorted):
            a, b = sorted(link)
            self.heal(a, b)

    @property
    def cut_links(self) -> list[tuple[str, str]]:
        return sorted(tuple(sorted(link)) for link in self._cut)  # type: ignore[misc]

    def kill(self, incarnation: Incarnation) -> None:
        """A process died: close its listeners, reset its connections from the peers' side."""
        for listener in [x for x in self._listeners.values() if x.owner is incarnation]:
            listener.close()
        for conn in list(self._connections.values()):
            assert conn.ends is not None
            mine = [end for end in conn.ends if end.owner is incarnation]
            if mine:
                for end in conn.ends:
                    if end.owner is incarnation:
                        end._lost = True  # its protocol is gone with the process
                    else:
                        self._reset_later(end)
                self._connections.pop(conn.number, None)

    # -- listeners and connections ------------------------------------------------------------------

    def listen(
        self, factory: Callable[[], asyncio.BaseProtocol], host: Any, port: Any, *,
        start_serving: bool,
    ) -> _Listener:
        owner = current_node.get()
        address = (str(host or (owner.node if owner else "sim")), int(port or 9092))
        if address in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{address[0]}:{address[1]} is in use")
        listener = _Listener(self, owner, address, factory, start_serving)
        self._listeners[address] = listener
        return listener

    def _unlisten(self, listener: _Listener) -> None:
        if self._listeners.get(listener.address) is listener:
            del self._listeners[listener.address]

    def latency_s(self, a: str, b: str) -> float:
        """One trip's latency from ``a`` to ``b``: the seeded base, plus the link's slowness."""
        f = self.faults
        base = self.rng.uniform(f.min_latency_ms, f.max_latency_ms) / 1000
        return base + self._slow.get(frozenset((a, b)), 0.0)

    def slow(self, a: str, b: str, extra_s: float) -> None:
        """Add ``extra_s`` to every trip between ``a`` and ``b`` (0: back to normal)."""
        link = frozenset((a, b))
        if extra_s > 0:
            self._slow[link] = extra_s
        else:
            self._slow.pop(link, None)
        self.trace(f"slow {a}|{b} {extra_s:.3f}")

    async def connect(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        owner = current_node.get()
        src = owner.node if owner is not None else "sim"
        listener = self._listeners.get((host, port))
        dst = listener.owner.node if listener is not None and listener.owner else host
        if not self.reachable(src, dst):
            await asyncio.sleep(self.faults.connect_timeout_s)
            raise TimeoutError(f"connect {src}->{host}:{port} timed out")
        await asyncio.sleep(self.latency_s(src, dst))
        listener = self._listeners.get((host, port))
        if (
            listener is None or not listener.serving or not self.alive(listener.owner)
            or not self.reachable(src, dst) or not self.alive(owner)
        ):
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"{src}->{host}:{port} refused")
        self._next_connection += 1
        conn = _Connection(self._next_connection)
        self._connections[conn.number] = conn
        client_address = (src, 40000 + conn.number)
        client = _End(self, conn, owner, client_address, listener.address,
                      contextvars.copy_context())
        server = _End(self, conn, listener.owner, listener.address, client_address,
                      listener.context)
        client.peer, server.peer = server, client
        conn.ends = (client, server)
        self.trace(f"conn {conn.number} {src}->{dst}")

        def accept() -> None:
            if server._lost or not self.alive(listener.owner):
                return  # the process died before it accepted
            server_protocol = listener.factory()
            server.set_protocol(server_protocol)
            server_protocol.connection_made(server)
            server._pump()  # what arrived before the process accepted

        if listener.owner is not None and listener.owner.paused:
            # The kernel completed the handshake; the stopped process accepts once resumed.
            self.loop.call_soon(accept, context=listener.context)
        else:
            listener.context.run(accept)
        protocol = factory()
        client.set_protocol(protocol)
        protocol.connection_made(client)
        return client, protocol

    def _send(self, end: _End, data: bytes) -> None:
        conn = end._conn
        if conn.black_holed:
            return
        if not self.alive(end.owner):
            return
        if not self.reachable(end.node, end.peer.node):
            conn.black_holed = True
            return
        at = max(end._last_arrival, self.loop.time() + self.latency_s(end.node, end.peer.node))
        end._last_arrival = at
        self.loop.call_at(at, end.peer._arrive, data, context=end.peer.context)
        if data is _FIN and end.peer._lost:
            self._connections.pop(conn.number, None)

    def _reset_later(self, end: _End) -> None:
        self.loop.call_at(
            self.loop.time() + self.latency_s(end.node, end.peer.node), self._reset_end, end,
            context=end.context,
        )

    def _reset_end(self, end: _End) -> None:
        end._connection_lost(ConnectionResetError(errno.ECONNRESET, "connection reset by peer"))
        if end.peer._lost:
            self._connections.pop(end._conn.number, None)

    def _reset_now(self, conn: _Connection) -> None:
        """Reset both ends: nothing more arrives from now on; each protocol learns it on the
        next turn of the loop, in its own context."""
        assert conn.ends is not None
        conn.black_holed = True
        for end in conn.ends:
            end._closing = True
            self.loop.call_soon(
                end._connection_lost,
                ConnectionResetError(errno.ECONNRESET, "connection reset by peer"),
                context=end.context,
            )
        self._connections.pop(conn.number, None)
