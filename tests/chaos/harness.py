"""The cluster under test: a 3-member etcd (:class:`~odradek.cluster.etcd_process.EtcdCluster`)
and broker processes (:class:`~odradek.cluster.local.BrokerProcess`) on loopback, each broker
and etcd member in a cgroup of its own when network faults are available (:mod:`chaos.net`),
plus an observer
thread that polls etcd and records every change of a partition's leader or epoch, of the live
brokers and of the controller into the history (``state`` and ``members`` events).

:class:`ChaosCluster` is owned by the thread that runs the test; the observer thread only
reads etcd and writes the history and its own snapshot (behind a lock).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.history import History
from chaos.net import NetFaults
from chaos.proxy import DelayProxy
from odradek.cluster.etcd import EtcdStore
from odradek.cluster.etcd_process import EtcdCluster, free_ports
from odradek.cluster.local import BrokerProcess
from odradek.cluster.membership import ClusterKeys, current_controller, live_brokers
from odradek.cluster.model import NO_LEADER, PartitionState
from waiting import wait

__all__ = ["ChaosConfig", "ChaosCluster", "DEFAULTS", "Snapshot", "wait_for"]


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """What a run does. ``faults`` are names from :data:`chaos.faults.FAULTS`."""

    brokers: int = 3
    etcd_members: int = 3
    # The configuration: three replicas, two of them needed to acknowledge.
    replication_factor: int = 3
    min_insync_replicas: int = 2
    acks: str = "all"
    partitions: int = 6
    session_timeout_ms: int = 2000
    faults: tuple[str, ...] = ()
    rounds: int = 0  # 0: one round of every fault
    duration_s: float = 0.0  # > 0: rounds until this much time has passed
    seed: int = 1
    producers: int = 2
    produce_rate: float = 100.0  # records/s per producer
    transactional: bool = True
    # Members of a consumer group that subscribe, commit, and come and go (chaos.workload).
    group_members: int = 3
    # Each broker behind a latency proxy (chaos.proxy) that it advertises, for ``slow-broker``.
    proxies: bool = True
    broker_properties: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "brokers": self.brokers, "etcd_members": self.etcd_members,
            "replication_factor": self.replication_factor,
            "min_insync_replicas": self.min_insync_replicas, "acks": self.acks,
            "partitions": self.partitions, "session_timeout_ms": self.session_timeout_ms,
            "faults": list(self.faults), "rounds": self.rounds, "duration_s": self.duration_s,
            "seed": self.seed, "producers": self.producers, "produce_rate": self.produce_rate,
            "transactional": self.transactional, "group_members": self.group_members,
            "proxies": self.proxies,
            "broker_properties": dict(self.broker_properties),
        }


#: The configuration ``make test`` and ``make chaos`` run with.
DEFAULTS = ChaosConfig()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """:func:`waiting.wait` raising TimeoutError, which the run's callers catch."""
    return wait(condition, what, timeout, error=TimeoutError)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the observer last read from etcd."""

    partitions: Mapping[tuple[str, int], PartitionState]
    brokers: frozenset[int]
    controller: int | None
    at: float


class ChaosCluster:
    def __init__(
        self, directory: Path, config: ChaosConfig, history: History,
        net: NetFaults | None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.history = history
        self.net = net
        self.prefix = "/odradek"
        self.etcd = EtcdCluster(
            directory / "etcd", config.etcd_members,
            launch_prefixes=[net.launch_prefix(f"etcd-{i}") for i in range(config.etcd_members)]
            if net is not None else (),
        )
        ports = free_ports(2 * config.brokers)
        self.proxies = {
            i: DelayProxy(ports[config.brokers + i - 1], ports[i - 1])
            for i in range(1, config.brokers + 1)
        } if config.proxies else {}
        self.brokers = {
            i: BrokerProcess(
                i, ports[i - 1], directory / f"broker-{i}", directory / f"broker-{i}.properties",
                launch_prefix=net.launch_prefix(f"broker-{i}") if net is not None else (),
            )
            for i in range(1, config.brokers + 1)
        }
        self._lock = threading.Lock()
        self._snapshot = Snapshot({}, frozenset(), None, 0.0)
        self._stop = threading.Event()
        self._observer: threading.Thread | None = None

    # -- processes -------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.advertised_ports().values())

    def advertised_ports(self) -> dict[int, int]:
        """The port each broker is known by (its proxy's, when there are proxies)."""
        return {n: (self.proxies[n].port if self.proxies else b.port)
                for n, b in self.brokers.items()}

    def ports_of(self, node: int) -> list[int]:
        """Every port that reaches broker ``node`` (its own and its proxy's)."""
        return sorted({self.brokers[node].port, self.advertised_ports()[node]})

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for proxy in self.proxies.values():
            proxy.start()
        self.etcd.start()
        for broker in self.brokers.values():
            self._write_config(broker)
            broker.launch()
        for broker in self.brokers.values():
            broker.wait_serving(90)
        self._observer = threading.Thread(target=self._observe, name="chaos-observer",
                                          daemon=True)
        self._observer.start()
        wait_for(lambda: len(self.snapshot().brokers) == len(self.brokers),
                 "every broker registered")

    def _write_config(self, broker: BrokerProcess) -> None:
        c = self.config
        props = {
            "node.id": str(broker.node_id),
            "etcd.endpoints": ",".join(self.etcd.endpoints),
            "etcd.prefix": self.prefix,
            "broker.session.timeout.ms": str(c.session_timeout_ms),
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.num.partitions": "3",
            "min.insync.replicas": str(c.min_insync_replicas),
            "default.replication.factor": str(c.replication_factor),
        }
        if c.replication_factor > 1:
            props["offsets.topic.replication.factor"] = str(c.replication_factor)
            props["transaction.state.log.replication.factor"] = str(c.replication_factor)
            props["transaction.state.log.min.isr"] = str(c.min_insync_replicas)
        if self.proxies:
            port = self.proxies[broker.node_id].port
            props["advertised.listeners"] = f"PLAINTEXT://127.0.0.1:{port}"
        props.update(c.broker_properties)
        broker.config_path.parent.mkdir(parents=True, exist_ok=True)
        broker.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()),
                                      encoding="utf-8")

    def stop(self) -> None:
        """SIGTERM every broker (SIGKILL after 10 s), then the observer and etcd."""
        for broker in self.brokers.values():
            broker.terminate()
        for broker in self.brokers.values():
            broker.stop()
        self._stop.set()
        if self._observer is not None:
            self._observer.join(10)
        self.etcd.stop()
        for proxy in self.proxies.values():
            proxy.stop()

    def kill_everything(self) -> None:
        for broker in self.brokers.values():
            broker.kill()
        self._stop.set()
        for member in self.etcd.members:
            member.kill()
        for proxy in self.proxies.values():
            proxy.stop()

    # -- what etcd says --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def leader_of(self, topic: str, partition: int) -> int:
        state = self.snapshot().partitions.get((topic, partition))
        return state.leader if state is not None else NO_LEADER

    def settled(self, topics: tuple[str, ...]) -> bool:
        """Every broker registered and every partition of ``topics`` led by a live broker."""
        snap = self.snapshot()
        if len(snap.brokers) != len(self.brokers) or snap.controller is None:
            return False
        mine = [s for (t, _), s in snap.partitions.items() if t in topics]
        return bool(mine) and all(s.leader in snap.brokers for s in mine)

    def _observe(self) -> None:
        asyncio.run(self._observe_loop())

    async def _observe_loop(self) -> None:
        keys = ClusterKeys(prefix=self.prefix)
        store = EtcdStore(self.etcd.endpoints, request_timeout_s=1)
        seen: dict[tuple[str, int], PartitionState] = {}
        members: tuple[frozenset[int], int | None] | None = None
        try:
            while not self._stop.is_set():
                try:
                    result = await store.range(keys.partitions, prefix=True)
                    _, registered = await live_brokers(store, keys)
                    controller = await current_controller(store, keys)
                except Exception:  # noqa: BLE001 - etcd down or partitioned: try again
                    await asyncio.sleep(0.1)
                    continue
                now = time.time()
                states: dict[tuple[str, int], PartitionState] = {}
                for kv in result.kvs:
                    topic, _, number = kv.key[len(keys.partitions):].rpartition("/")
                    if number.isdigit():
                        states[(topic, int(number))] = PartitionState.decode(kv.value)
                for (topic, p), state in sorted(states.items()):
                    old = seen.get((topic, p))
                    if old is None or (old.leader, old.leader_epoch, old.isr) != (
                        state.leader, state.leader_epoch, state.isr
                    ):
                        self.history.record(
                            "state", topic=topic, partition=p, leader=state.leader,
                            leader_epoch=state.leader_epoch, isr=list(state.isr),
                            replicas=list(state.replicas),
                        )
                seen = states
                live = frozenset(b.info.node_id for b in registered)
                node = controller[0] if controller is not None else None
                if members != (live, node):
                    members = (live, node)
                    self.history.record("members", brokers=sorted(live), controller=node,
                                        epochs={str(b.info.node_id): b.epoch
                                                for b in registered})
                with self._lock:
                    self._snapshot = Snapshot(states, live, node, now)
                await asyncio.sleep(0.1)
        finally:
            await store.close()
