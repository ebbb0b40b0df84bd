"""One simulation run: a seed in, a trace, a history and the checker's findings out.

:func:`run` builds a :class:`~odradek.sim.loop.SimLoop`, the network, the store and the brokers
(:class:`~odradek.sim.cluster.SimCluster`), creates a replicated topic, and runs the workload
(idempotent ``acks=all`` producers and a reader; a transactional producer and a read_committed
reader on a second topic, :mod:`odradek.sim.workload`) while the nemesis
injects the faults its seed chooses. Then it heals the network, restarts every broker that is
down, lets the cluster settle, reads every partition back through the protocol and from every
replica's log, and hands it all to :func:`odradek.sim.checker.check`.

Every random choice comes from one ``random.Random(seed)`` (fault choices, latencies, the
brokers' own random sources, and ``uuid.uuid4``, which is replaced for the length of the run:
topic ids and member ids are drawn from it). Time is the loop's virtual time. So a seed
determines the run: :attr:`SimResult.digest` is the same every time it is run, in this process
or another, whatever its ``PYTHONHASHSEED`` (code on the simulated path must not let the order
of a ``set`` of strings, or of objects hashed by address, decide anything; tests/sim checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import hashlib
import logging
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odradek.errors import KafkaError
from odradek.sim.checker import check, check_members, check_transactions
from odradek.sim.cluster import BROKER_PORT, SimCluster, broker_node
from odradek.sim.loop import Incarnation, SimLoop, current_node
from odradek.sim.network import NetworkFaults, SimNetwork
from odradek.sim.store import STORE_NODE
from odradek.sim.workload import (
    GroupMember,
    History,
    Producer,
    Reader,
    SimClient,
    TxnProducer,
    create_topic,
    decode_committed,
    decode_values,
    fetch_committed,
)

__all__ = ["SimConfig", "SimResult", "run", "replay_command"]

TOPIC = "sim"
#: The transactional producer's topic, read by a read_committed reader.
TXN_TOPIC = "sim-txn"
#: The reader's group: its commits go through the group coordinator and __consumer_offsets.
GROUP = "sim-reader"
#: The consumer group whose members join, sync, heartbeat and leave.
MEMBERS_GROUP = "sim-members"


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What one run does; everything else follows from ``seed``."""

    seed: int
    brokers: int = 3
    partitions: int = 2
    producers: int = 2
    #: Transactional producers (``t0``..) writing to ``TXN_TOPIC``; with none, no such topic.
    txn_producers: int = 1
    #: Members of ``MEMBERS_GROUP`` (``m0``..), holding ``TOPIC``'s partitions.
    members: int = 2
    #: Whether the transactional topic's reader reads committed records only (False: the
    #: positive control of the transaction checks, which must then find aborted reads).
    read_committed: bool = True
    #: Virtual seconds of workload (with faults when ``faults``).
    duration_s: float = 20.0
    faults: bool = True
    #: The kinds of fault the nemesis picks from (``_Nemesis.kinds``); empty: all of them.
    fault_kinds: tuple[str, ...] = ()
    #: Chance that a delivered chunk resets its connection (only with ``faults``).
    reset_probability: float = 0.002
    #: Virtual seconds the cluster gets to settle after the faults end.
    settle_s: float = 60.0
    produce_interval_s: float = 0.05
    #: Broker properties over the simulation's defaults (``cluster.SimCluster``).
    broker_properties: tuple[tuple[str, str], ...] = ()


@dataclass
class SimResult:
    config: SimConfig
    trace: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: What reached the loop's exception handler (an exception nobody retrieved, a callback
    #: that raised): not part of the digest; each is also an anomaly (``loop-error``).
    loop_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.anomalies

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for line in self.trace:
            h.update(line.encode() + b"\n")
        h.update(b"--\n")
        for line in self.history:
            h.update(line.encode() + b"\n")
        return h.hexdigest()

    def summary(self) -> str:
        s = self.stats
        head = (f"seed {self.config.seed}: {'ok' if self.ok else 'FAILED'}; "
                f"{s.get('acked', 0)} acknowledged, {s.get('faults', 0)} faults, "
                f"{s.get('virtual_s', 0):.1f} s virtual, digest {self.digest[:16]}")
        if self.ok:
            return head
        lines = [head, *self.anomalies[:20], f"replay: {replay_command(self.config)}"]
        return "\n".join(lines)


def replay_command(config: SimConfig) -> str:
    """The command that runs ``config`` again, alone, and prints its trace."""
    defaults = SimConfig(seed=config.seed)
    args = [f"--seed {config.seed}"]
    if config.duration_s != defaults.duration_s:
        args.append(f"--duration {config.duration_s:g}")
    if not config.faults:
        args.append("--no-faults")
    if config.fault_kinds:
        args.append(f"--fault-kinds {','.join(config.fault_kinds)}")
    if config.txn_producers != defaults.txn_producers:
        args.append(f"--txn-producers {config.txn_producers}")
    if config.members != defaults.members:
        args.append(f"--members {config.members}")
    if not config.read_committed:
        args.append("--read-uncommitted")
    args.extend(f"--property {key}={value}" for key, value in config.broker_properties)
    return "python -m odradek.sim " + " ".join(args) + " --trace"


@contextlib.contextmanager
def _seeded_uuid4(rng: random.Random) -> Iterator[None]:
    """``uuid.uuid4`` drawn from ``rng`` for the length of the run (topic ids, member ids)."""
    real = uuid.uuid4

    def uuid4() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    uuid.uuid4 = uuid4
    try:
        yield
    finally:
        uuid.uuid4 = real


def run(config: SimConfig, *, workdir: Path | None = None, log_level: int | str | None = None
        ) -> SimResult:
    """Run ``config`` (see the module docstring) in a fresh temporary directory under
    ``workdir`` (removed afterwards). The brokers' logging is silenced unless ``log_level``
    is given: then their lines go to stderr, stamped with virtual time and their broker."""
    result = SimResult(config)
    loop = SimLoop()
    loop.set_exception_handler(
        lambda _loop, context: result.loop_errors.append(
            f"{context.get('message')}: {context.get('exception')!r}"
        )
    )

    def trace(line: str) -> None:
        result.trace.append(f"{loop.time() - 10_000:.6f} {line}")

    rng = random.Random(config.seed)
    faults = NetworkFaults(reset_probability=config.reset_probability if config.faults else 0.0)
    network = SimNetwork(loop, random.Random(rng.getrandbits(64)), faults, trace)
    root = Path(tempfile.mkdtemp(prefix=f"odradek-sim-{config.seed}-",
                                 dir=workdir or _default_workdir()))
    quiet = logging.getLogger("odradek")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL if log_level is None else log_level)
    handler: logging.Handler | None = None
    if log_level is not None:
        handler = logging.StreamHandler()
        handler.addFilter(_VirtualStamp(loop))
        handler.setFormatter(logging.Formatter("%(virtual)s %(node)s %(name)s: %(message)s"))
        quiet.addHandler(handler)
        quiet.propagate = False
    try:
        with _seeded_uuid4(random.Random(rng.getrandbits(64))):
            history = History(loop)

            async def main() -> None:
                cluster = SimCluster(loop, network, random.Random(rng.getrandbits(64)), root,
                                     brokers=config.brokers,
                                     properties=dict(config.broker_properties))
                await _main(config, cluster, history, random.Random(rng.getrandbits(64)),
                            result)

            loop.run(main())
            # What nobody retrieved is reported when collected: collect now, so that it counts.
            gc.collect()
        result.anomalies.extend(f"loop-error: {e}" for e in result.loop_errors)
        result.history = history.lines()
        result.stats["virtual_s"] = loop.time() - 10_000
    finally:
        quiet.setLevel(level)
        if handler is not None:
            quiet.removeHandler(handler)
            quiet.propagate = True
        shutil.rmtree(root, ignore_errors=True)
    return result


class _VirtualStamp(logging.Filter):
    """Stamps a log record with the virtual time and the simulated process logging it."""

    def __init__(self, loop: SimLoop) -> None:
        super().__init__()
        self._loop = loop

    def filter(self, record: logging.LogRecord) -> bool:
        record.virtual = f"{self._loop.time() - 10_000:.6f}"
        node = current_node.get()
        record.node = repr(node) if node is not None else "<sim>"
        return True


def _default_workdir() -> Path | None:
    """Memory-backed storage when there is some (fsyncs then cost nothing), else the default
    temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def _client_context(name: str) -> contextvars.Context:
    """A context for a client's task: a simulated process of its own, named ``name``."""
    ctx = contextvars.copy_context()
    ctx.run(current_node.set, Incarnation(name))
    return ctx


async def _main(config: SimConfig, cluster: SimCluster, history: History,
                rng: random.Random, result: SimResult) -> None:
    loop = asyncio.get_running_loop()
    network = cluster.network
    await cluster.start_all()
    bootstrap = [(broker_node(i), BROKER_PORT) for i in sorted(cluster.brokers)]
    admin = SimClient("sim-admin")
    await loop.create_task(
        create_topic(admin, bootstrap, TOPIC, config.partitions, config.brokers, history),
        context=_client_context("admin"),
    )
    producers = [
        Producer(f"p{i}", SimClient(f"producer-{i}"), bootstrap, TOPIC, config.partitions,
                 history, interval_s=config.produce_interval_s)
        for i in range(config.producers)
    ]
    # The reader reads its group's committed offsets back every few rounds, finding the
    # coordinator through a broker picked at random each time (a random source of its own, so
    # that the seed's other choices are drawn as before).
    reader = Reader(SimClient("reader"), bootstrap, TOPIC, config.partitions, history,
                    interval_s=0.2, group=GROUP,
                    fetch_rng=random.Random(f"offset-fetch-{config.seed}"))
    tasks = [loop.create_task(p.run(), context=_client_context(p.name)) for p in producers]
    tasks.append(loop.create_task(reader.run(), context=_client_context("reader")))
    txn_producers: list[TxnProducer] = []
    readers = [reader]
    if config.txn_producers:
        await loop.create_task(
            create_topic(admin, bootstrap, TXN_TOPIC, config.partitions, config.brokers,
                         history),
            context=_client_context("admin"),
        )
        txn_rng = random.Random(rng.getrandbits(64))
        txn_producers = [
            TxnProducer(f"t{i}", SimClient(f"txn-producer-{i}"), bootstrap, TXN_TOPIC,
                        config.partitions, history, txn_rng, interval_s=0.5)
            for i in range(config.txn_producers)
        ]
        tasks.extend(loop.create_task(t.run(), context=_client_context(t.name))
                     for t in txn_producers)
        txn_reader = Reader(SimClient("txn-reader"), bootstrap, TXN_TOPIC, config.partitions,
                            history, interval_s=0.5, read_committed=config.read_committed,
                            record_as="txn-read")
        readers.append(txn_reader)
        tasks.append(loop.create_task(txn_reader.run(), context=_client_context("txn-reader")))
    members_rng = random.Random(rng.getrandbits(64))
    # The members commit offsets of the partitions they hold (from counters they share, so
    # that a partition's commits only move forward) and read them back when assigned.
    counters = [0] * config.partitions
    members_fetch_rng = random.Random(f"member-offset-fetch-{config.seed}")
    members = [
        GroupMember(f"m{i}", SimClient(f"member-{i}", timeout_s=10.0), bootstrap, MEMBERS_GROUP,
                    config.partitions, history, members_rng, topic=TOPIC, counters=counters,
                    fetch_rng=members_fetch_rng)
        for i in range(config.members)
    ]
    tasks.extend(loop.create_task(m.run(), context=_client_context(m.name)) for m in members)
    nemesis = _Nemesis(cluster, rng, result, config.fault_kinds) if config.faults else None
    nemesis_task = loop.create_task(nemesis.run()) if nemesis else None
    await asyncio.sleep(config.duration_s)

    # The end: no more faults, every broker back, clients finish what they have under way.
    if nemesis is not None and nemesis_task is not None:
        nemesis_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await nemesis_task
        await nemesis.end()
    network.heal_all()
    for producer in producers:
        producer.stopping = True
    for txn_producer in txn_producers:
        txn_producer.stopping = True
    for each in readers:
        each.stopping = True
    for member in members:
        member.stopping = True
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(task, 30.0)
    result.stats["acked"] = sum(p.acked for p in producers)
    result.stats["txn_committed"] = sum(t.committed for t in txn_producers)
    result.stats["txn_aborted"] = sum(t.aborted for t in txn_producers)
    result.stats["generations"] = sum(m.generations for m in members)
    result.stats["settled"] = await _settle(cluster, config)
    history.record("settled", ok=result.stats["settled"])

    final, epochs = await loop.create_task(_final_read(bootstrap, config, history),
                                           context=_client_context("final-reader"))
    replicas = _replica_logs(cluster, config)
    committed = await loop.create_task(
        fetch_committed(SimClient("offset-reader"), bootstrap, GROUP, TOPIC, config.partitions),
        context=_client_context("offset-reader"),
    )
    history.record("committed", offsets=committed)
    result.anomalies = check(history.events, final, replicas, committed, epochs,
                             committed_group=GROUP)
    result.anomalies.extend(check_members(history.events))
    if txn_producers:
        txn_final, stable = await loop.create_task(
            _final_read_committed(bootstrap, config, history),
            context=_client_context("final-txn-reader"),
        )
        result.anomalies.extend(check_transactions(history.events, txn_final, TXN_TOPIC))
        if not stable:
            result.anomalies.append(
                f"unstable: {TXN_TOPIC}'s last stable offset stayed below its high watermark "
                f"(a transaction never ended)"
            )
    if committed is None:
        result.anomalies.append("unavailable: no coordinator answered OffsetFetch for the group")
    if not result.stats["settled"]:
        # Liveness: with every fault undone and every broker back, the replicas must converge.
        result.anomalies.append(
            f"unsettled: after {config.settle_s:g} s without faults the replicas' (high "
            f"watermark, log end offset) are {_ends(cluster, config)}"
        )
    await cluster.stop_all()


async def _settle(cluster: SimCluster, config: SimConfig) -> bool:
    """Wait until every replica of every partition has the same log end offset and high
    watermark, equal to each other; whether that happened within ``settle_s``."""
    deadline = asyncio.get_running_loop().time() + config.settle_s
    while asyncio.get_running_loop().time() < deadline:
        ends = _ends(cluster, config)
        if ends is not None and all(len(set(v)) == 1 and v[0][0] == v[0][1]
                                    for v in ends.values()):
            return True
        await asyncio.sleep(0.5)
    return False


def _ends(cluster: SimCluster, config: SimConfig
          ) -> dict[tuple[str, int], list[tuple[int, int]]] | None:
    """Each partition's (high watermark, log end offset) on every broker, for the workload's
    topic and the internal ones; None while a broker or a log is missing."""
    out: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for _node, sb in sorted(cluster.brokers.items()):
        if sb.broker is None:
            return None
        for info in sorted(sb.broker.cluster.topics(), key=lambda t: t.name):
            for p in range(len(info.partitions)):
                try:
                    plog = sb.broker.topics.log(info.name, p)
                except KafkaError:
                    return None
                out.setdefault((info.name, p), []).append(
                    (plog.high_watermark, plog.log_end_offset)
                )
    return out if any(name == TOPIC for name, _ in out) else None


async def _final_read(bootstrap: list[tuple[str, int]], config: SimConfig, history: History
                      ) -> tuple[dict[int, dict[int, str]], dict[int, dict[int, int]]]:
    """Every partition read back to its high watermark: offset → value, and offset → the
    leader epoch its batch was written in."""
    reader = Reader(SimClient("final-reader"), bootstrap, TOPIC, config.partitions, history,
                    interval_s=0.2)
    final: dict[int, dict[int, str]] = {}
    epochs: dict[int, dict[int, int]] = {}
    for p in range(config.partitions):
        log = final[p] = {}
        written_in = epochs[p] = {}
        for _attempt in range(200):
            before = reader.positions[p]
            answer = await reader.poll(p, record=False)
            if answer is None:
                await asyncio.sleep(0.2)
                continue
            for offset, value, epoch in decode_values(answer.records):
                if offset >= before:
                    log[offset] = value
                    written_in[offset] = epoch
            if reader.positions[p] >= int(answer.high_watermark):
                break
        history.record("final", p=p, records=len(log), end=reader.positions[p])
    return final, epochs


async def _final_read_committed(bootstrap: list[tuple[str, int]], config: SimConfig,
                                history: History) -> tuple[dict[int, dict[int, str]], bool]:
    """Every partition of the transactional topic read under read_committed up to its high
    watermark, and whether every one got there (its last stable offset caught up: no
    transaction left open)."""
    reader = Reader(SimClient("final-txn-reader"), bootstrap, TXN_TOPIC, config.partitions,
                    history, interval_s=0.2, read_committed=True)
    final: dict[int, dict[int, str]] = {}
    stable = True
    for p in range(config.partitions):
        log = final[p] = {}
        done = False
        for _attempt in range(300):
            before = reader.positions[p]
            answer = await reader.poll(p, record=False)
            if answer is None:
                await asyncio.sleep(0.2)
                continue
            kept, _end = decode_committed(answer.records, answer.aborted_transactions)
            log.update((offset, value) for offset, value in kept if offset >= before)
            end = int(answer.high_watermark)
            if reader.positions[p] >= end and int(answer.last_stable_offset) >= end:
                done = True
                break
            if reader.positions[p] == before:
                await asyncio.sleep(0.2)
        stable = stable and done
        history.record("final-committed", p=p, records=len(log), end=reader.positions[p],
                       stable=done)
    return final, stable


def _replica_logs(cluster: SimCluster, config: SimConfig
                  ) -> dict[int, dict[int, tuple[dict[int, str], int, int]]]:
    out: dict[int, dict[int, tuple[dict[int, str], int, int]]] = {}
    for node_id, sb in sorted(cluster.brokers.items()):
        if sb.broker is None:
            continue
        for p in range(config.partitions):
            try:
                plog = sb.broker.topics.log(TOPIC, p)
            except KafkaError:
                continue
            records: dict[int, str] = {}
            offset = plog.log_start_offset
            while offset < plog.log_end_offset:
                info = plog.read(offset, max_bytes=1 << 20)
                data = info.records
                assert isinstance(data, bytes)
                values = decode_values(data)
                if not values:
                    break
                for o, v, _epoch in values:
                    records[o] = v
                offset = values[-1][0] + 1
            out.setdefault(node_id, {})[p] = (records, plog.high_watermark, plog.log_end_offset)
    return out


class _Nemesis:
    """Faults chosen by its random source, one every few virtual seconds, each undone after a
    while: a link slowed by up to 2 s a trip; a broker crashed (``kill -9``) and restarted; a
    broker's machine losing power (the unsynced tails of its logs cut) and restarted; a broker
    stopped (SIGSTOP) for longer than its session timeout and resumed; a broker cut from the
    others, from the store or both; one link between two brokers cut; a client cut from a
    broker."""

    def __init__(self, cluster: SimCluster, rng: random.Random, result: SimResult,
                 kinds: tuple[str, ...] = ()) -> None:
        unknown = set(kinds) - set(self.kinds)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {self.kinds}")
        if kinds:
            self.kinds = list(kinds)
        self.cluster = cluster
        self.rng = rng
        self.result = result
        self.pending: list[asyncio.Task[Any]] = []

    def _later(self, delay_s: float, undo: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay_s)
            await undo()

        self.pending.append(asyncio.get_running_loop().create_task(run()))

    def _cut(self, a: str, others: list[str], heal_after: float) -> None:
        net = self.cluster.network
        for b in others:
            net.cut(a, b)

        async def heal() -> None:
            for b in others:
                net.heal(a, b)

        self._later(heal_after, heal)

    def _slow(self, a: str, b: str, extra_s: float, heal_after: float) -> None:
        net = self.cluster.network
        net.slow(a, b, extra_s)

        async def heal() -> None:
            net.slow(a, b, 0.0)

        self._later(heal_after, heal)

    async def run(self) -> None:
        cluster, rng = self.cluster, self.rng
        nodes = sorted(cluster.brokers)
        while True:
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            kind = rng.choice(self.kinds)
            node = rng.choice(nodes)
            name = broker_node(node)
            heal_after = rng.uniform(1.0, 10.0)
            now = asyncio.get_running_loop().time()
            if now < self.quiet_until:
                continue
            if kind == "crash":
                if len(cluster.up()) < 2 or node not in cluster.up():
                    continue
                cluster.crash(node)
                self._later(heal_after, functools.partial(cluster.restart, node))
            elif kind == "power":
                # An episode of its own: from a healthy cluster, and nothing else until the
                # machine has been back a while. With fsync left to replication (Kafka's
                # default), a record whose every in-sync copy loses its unsynced tail is lost
                # legitimately: so is one whose last in-sync replica lost power and is elected
                # again (Kafka before KIP-966 does the same: a broker fenced by the store leaves
                # the ISR, which may come down to the one that then loses power).
                if (cluster.network.cut_links or any(not t.done() for t in self.pending)
                        or cluster.paused() or not cluster.healthy()):
                    continue
                cluster.crash(node, power_loss=True)
                self.quiet_until = now + heal_after + 20.0
                self._later(heal_after, functools.partial(cluster.restart, node))
            elif kind == "pause":
                # SIGSTOP for longer than the session timeout (broker.session.timeout.ms): the
                # cluster fences it and moves on; when it resumes, whatever it had under way
                # (acknowledgements, leadership, its session) must not count.
                sb = cluster.brokers[node]
                if cluster.paused() or not sb.serving or sb.incarnation is None:
                    continue
                cluster.pause(node)
                self._later(rng.uniform(7.0, 12.0),
                            functools.partial(cluster.resume, node, sb.incarnation))
            elif kind == "isolate":
                others = [broker_node(n) for n in nodes if n != node]
                if rng.random() < 0.5:
                    others.append(STORE_NODE)
                self._cut(name, others, heal_after)
            elif kind == "store":
                self._cut(name, [STORE_NODE], heal_after)
            elif kind == "link":
                self._cut(name, [broker_node(rng.choice([n for n in nodes if n != node]))],
                          heal_after)
            elif kind == "slow":
                other = rng.choice([broker_node(n) for n in nodes if n != node]
                                   + [STORE_NODE, *self.clients])
                self._slow(name, other, rng.uniform(0.05, 2.0), heal_after)
            else:
                self._cut(rng.choice(self.clients), [name], heal_after)
            self.result.stats["faults"] = self.result.stats.get("faults", 0) + 1

    clients = ["p0", "p1", "reader", "t0", "txn-reader", "m0", "m1"]
    kinds = ["crash", "isolate", "store", "link", "client", "power", "slow", "pause"]
    #: No new fault before this (loop time): a power loss's episode.
    quiet_until = 0.0

    async def end(self) -> None:
        """Let the undo actions under way finish, then restart every broker still down."""
        await asyncio.gather(*self.pending, return_exceptions=True)
        for node in sorted(self.cluster.brokers):
            await self.cluster.restart(node)
