"""Brokers of one simulated cluster: started, crashed and restarted inside one process.

Each broker is the real :class:`~odradek.broker.app.Broker` (its ReplicaManager, replica
fetchers, controller candidacy, coordinators) on its own data directory, given

- the cluster's one :class:`~odradek.cluster.inprocess.InProcessStore` through a
  :class:`~odradek.sim.store.NodeStore` (its own client over the simulated network),
- a :class:`SimClock` on the loop's virtual time, as its clock and its session clock,
- a seeded ``random.Random`` for its random choices,

and runs in a context whose :data:`~odradek.sim.loop.current_node` is its
:class:`~odradek.sim.loop.Incarnation`, so everything it starts belongs to that life. A crash
(:meth:`SimCluster.crash`) is a ``kill -9``: the incarnation dies (the network and the store
refuse it from then on), its connections are reset from the peers' side, its tasks are
cancelled, its files are let go of without a write (the bytes it appended stay, as in the page
cache) and its data directory's lock is released, as the kernel would. A restart is a new
incarnation and a new ``Broker`` on the same directory, which recovers its logs.

Owned by the simulation's loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from odradek.broker.app import Broker
from odradek.cluster.inprocess import InProcessStore
from odradek.config import BrokerConfig
from odradek.sim.loop import START_TIME_S, Incarnation, SimLoop, current_node
from odradek.sim.network import SimNetwork
from odradek.sim.store import NodeStore

__all__ = ["BROKER_PORT", "SimBroker", "SimClock", "SimCluster", "broker_node"]

log = logging.getLogger("odradek.sim")

BROKER_PORT = 9092
#: The wall clock's reading at the start of every simulation (2026-01-01T00:00:00Z).
_EPOCH_MS = 1_767_225_600_000


def broker_node(node_id: int) -> str:
    """A broker's node name (and host) on the simulated network."""
    return f"b{node_id}"


class SimClock:
    """The loop's virtual time as a :class:`~odradek.clock.Clock`: wall time starts at a fixed
    date, monotonic time is the loop's."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def milliseconds(self) -> int:
        return _EPOCH_MS + int((self._loop.time() - START_TIME_S) * 1000)

    def monotonic_ms(self) -> int:
        return int(self._loop.time() * 1000)

    def monotonic_ns(self) -> int:
        return int(self._loop.time() * 1_000_000_000)


@dataclass(eq=False)
class SimBroker:
    """One broker slot: its node id, directory and current life (None while down)."""

    node_id: int
    data_dir: Path
    generation: int = 0
    incarnation: Incarnation | None = None
    broker: Broker | None = None
    #: Started and serving (not merely an incarnation under way).
    serving: bool = False

    @property
    def node(self) -> str:
        return broker_node(self.node_id)

    @property
    def up(self) -> bool:
        return self.incarnation is not None


class SimCluster:
    """``brokers`` brokers over one store; see the module docstring."""

    def __init__(
        self, loop: SimLoop, network: SimNetwork, rng: random.Random, root: Path, *,
        brokers: int = 3, properties: dict[str, str] | None = None,
    ) -> None:
        self.loop = loop
        self.network = network
        self.rng = rng
        self.clock = SimClock(loop)
        self.properties = dict(properties or {})
        self.store = InProcessStore(self.clock, expiry_interval_s=0.5)
        self.brokers = {
            i: SimBroker(i, root / f"broker-{i}") for i in range(1, brokers + 1)
        }

    def _config(self, sb: SimBroker) -> BrokerConfig:
        props = {
            "node.id": str(sb.node_id),
            "cluster.id": "b2RyYWRlay1zaW11bGF0ZQ",
            "broker.session.timeout.ms": "6000",
            "default.replication.factor": str(len(self.brokers)),
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": str(len(self.brokers)),
            "transaction.state.log.replication.factor": str(len(self.brokers)),
            "transaction.state.log.min.isr": "2",
            "offsets.topic.num.partitions": "2",
            "transaction.state.log.num.partitions": "2",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.enable": "false",
            "log.scrubber.enable": "false",
            "log.page.cache.retain.bytes": "-1",  # its worker is a thread
            # A set SO_RCVBUF connects through getaddrinfo and raw sockets, which the simulated
            # loop does not have.
            "replica.socket.receive.buffer.bytes": "-1",
            "controlled.shutdown.enable": "false",
            "replica.lag.time.max.ms": "3000",
            "replica.socket.timeout.ms": "3000",
            "request.timeout.ms": "5000",
        }
        props.update(self.properties)
        return BrokerConfig.from_properties(props).with_overrides(
            listen=f"{sb.node}:{BROKER_PORT}", data_dir=str(sb.data_dir)
        )

    async def start(self, node_id: int) -> bool:
        """Start broker ``node_id`` (a new incarnation); whether it came up (a start that
        fails, as when the store is out of reach, leaves it down)."""
        sb = self.brokers[node_id]
        assert sb.incarnation is None, f"{sb.node} is already up"
        sb.generation += 1
        inc = Incarnation(sb.node, sb.generation)
        sb.incarnation = inc
        ctx = contextvars.copy_context()
        ctx.run(current_node.set, inc)
        broker = Broker(
            self._config(sb),
            clock=self.clock,
            session_clock=self.clock,
            cluster_store=NodeStore(self.store, self.network, inc),
            rng=random.Random(self.rng.getrandbits(64)),
        )
        sb.broker = broker
        self.network.trace(f"start {sb.node}#{sb.generation}")
        starting = self.loop.create_task(broker.start(), context=ctx)
        try:
            await starting
        except asyncio.CancelledError:
            if sb.incarnation is inc:  # not a crash of the broker: ours
                raise
            return False
        except Exception as e:
            self.network.trace(f"start of {sb.node}#{sb.generation} failed: {type(e).__name__}")
            if sb.incarnation is inc:
                self.crash(node_id)
            return False
        sb.serving = True
        return True

    async def start_all(self) -> None:
        for node_id in sorted(self.brokers):
            await self.start(node_id)

    def crash(self, node_id: int, *, power_loss: bool = False) -> None:
        """``kill -9`` broker ``node_id`` (see the module docstring); with ``power_loss`` its
        machine loses power instead: what its logs appended since their last fsync is cut at a
        random point (possibly inside a batch)."""
        sb = self.brokers[node_id]
        inc, broker = sb.incarnation, sb.broker
        if inc is None or broker is None:
            return
        self.network.trace(f"{'power loss' if power_loss else 'crash'} {sb.node}#{sb.generation}")
        if inc.paused:
            self.loop.resume(inc)  # kill -9 ends a stopped process too: its tasks unwind
        inc.alive = False
        self.network.kill(inc)
        for task in list(inc.tasks.values()):
            task.cancel()
        logs = getattr(broker, "_opened_logs", None)
        if logs is not None:
            logs.abandon(unsynced_kept=(lambda n: self.rng.randrange(n + 1)) if power_loss
                         else None)
            # A start under way that now fails must not shut them down cleanly.
            broker._opened_logs = None
        lock = broker._dir_lock
        if lock is not None:
            lock.release()
            broker._dir_lock = None
        sb.incarnation = None
        sb.broker = None
        sb.serving = False

    def pause(self, node_id: int) -> bool:
        """SIGSTOP broker ``node_id`` (see ``SimLoop.pause``); whether it was up to stop."""
        sb = self.brokers[node_id]
        if sb.incarnation is None or sb.incarnation.paused:
            return False
        self.network.trace(f"pause {sb.node}#{sb.generation}")
        self.loop.pause(sb.incarnation)
        return True

    async def resume(self, node_id: int, incarnation: Incarnation) -> None:
        """SIGCONT: ``incarnation`` of broker ``node_id`` runs again (if it still lives)."""
        if incarnation.paused:
            self.network.trace(f"resume {self.brokers[node_id].node}#{incarnation.generation}")
            self.loop.resume(incarnation)

    def paused(self) -> list[int]:
        return [i for i, sb in sorted(self.brokers.items())
                if sb.incarnation is not None and sb.incarnation.paused]

    async def restart(self, node_id: int) -> bool:
        sb = self.brokers[node_id]
        return sb.incarnation is not None or await self.start(node_id)

    async def stop_all(self) -> None:
        """Crash whatever is up (the end of a simulation needs nothing cleaner)."""
        for node_id in sorted(self.brokers):
            self.crash(node_id)
        await self.store.close()

    def up(self) -> list[int]:
        """The brokers with a live incarnation (serving or starting)."""
        return [i for i, sb in sorted(self.brokers.items()) if sb.up]

    def serving(self) -> list[int]:
        return [i for i, sb in sorted(self.brokers.items()) if sb.serving]

    def healthy(self) -> bool:
        """Every broker serving and, as every broker's image shows it, registered, and every
        partition of every topic led with its whole replica set in sync."""
        if len(self.serving()) < len(self.brokers):
            return False
        for sb in self.brokers.values():
            assert sb.broker is not None
            image = sb.broker.cluster
            if any(image.broker(i) is None for i in self.brokers):
                return False
            for info in image.topics():
                for p in range(len(info.partitions)):
                    state = image.partition(info.name, p)
                    if state is None or state.leader < 0 or set(state.isr) != set(state.replicas):
                        return False
        return True
