"""Shared helpers for the classic consumer-group integration tests.

- :func:`group_broker_config`: a broker tuned for fast rebalances (no initial delay, short
  session timeouts allowed, a small ``__consumer_offsets``).
- :class:`ChildConsumer`: a group member (confluent-kafka, kafka-python or aiokafka) in a child
  process, so it can be killed with SIGKILL and so that kafka-python's busy sender loop cannot
  starve the in-process broker through the GIL. It reports, one JSON line each, every record it
  processed, every assignment change, every rebalance callback and every commit.
- :func:`commit_history`: every offset commit of a group in the order the broker stored it,
  read back from ``__consumer_offsets``.
- polling with a deadline (:func:`wait_until`), topic set-up, producing, DescribeGroups views.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.broker.runner import BrokerThread, local_config
from odradek.config import BrokerConfig
from odradek.coordinator.group.records import OffsetCommitKey, OffsetCommitValue, decode
from odradek.coordinator.group.records import partition_for as offsets_partition_for

OFFSETS_PARTITIONS = 5
#: Short enough that a killed member is noticed quickly, long enough for a loaded CI machine.
CRASH_SESSION_MS = 3000
HEARTBEAT_MS = 300
DEADLINE_S = 45.0

TP = tuple[str, int]  # topic, partition
Key = tuple[int, int]  # partition, offset: a record of the one topic a test uses


def group_broker_config(data_dir: Path, **properties: str) -> BrokerConfig:
    props = {
        "group_initial_rebalance_delay_ms": "0",
        "group_min_session_timeout_ms": "1000",
        "offsets_topic_num_partitions": str(OFFSETS_PARTITIONS),
        **properties,
    }
    return local_config(data_dir, **props)


def start_broker(data_dir: Path, port: int = 0, **properties: str) -> BrokerThread:
    """A started broker; ``port`` reuses the port of an earlier broker (restart)."""
    config = group_broker_config(data_dir, listen=f"127.0.0.1:{port}", **properties)
    return BrokerThread(config).start()


# -- waiting ------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = DEADLINE_S,
    step: Callable[[], object] | None = None,
    interval: float = 0.05,
    detail: Callable[[], object] | None = None,
) -> None:
    """Call ``step`` (e.g. poll consumers) until ``condition()`` holds; fail after ``timeout``
    (with ``detail()`` in the message). Without a step, waits on the condition with a short
    interval between checks."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        if step is not None:
            step()
        else:
            threading.Event().wait(interval)


# -- topics and records -------------------------------------------------------------------


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=10)


def produce(
    bootstrap: str, topic: str, values: Sequence[str], partitions: int
) -> dict[Key, str]:
    """Produce ``values`` round-robin over the partitions; returns (partition, offset) ->
    value of each acknowledged record."""
    acked: dict[Key, str] = {}
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = msg.value().decode()

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "log_level": 3})
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % partitions, on_delivery=on_delivery)
        p.poll(0)
    assert p.flush(15) == 0
    assert not errors, errors[:3]
    return {(part, off): v for (part, off), v in acked.items()}


def decode_assignment(data: bytes) -> set[TP]:
    """ConsumerProtocolAssignment (any version): the topic partitions it lists."""
    import struct

    out: set[TP] = set()
    if not data:
        return out
    pos = 2
    (n_topics,) = struct.unpack_from(">i", data, pos)
    pos += 4
    for _ in range(n_topics):
        (n,) = struct.unpack_from(">h", data, pos)
        pos += 2
        topic = data[pos : pos + n].decode()
        pos += n
        (n_parts,) = struct.unpack_from(">i", data, pos)
        pos += 4
        for _ in range(n_parts):
            (p,) = struct.unpack_from(">i", data, pos)
            pos += 4
            out.add((topic, p))
    return out


def assert_disjoint_and_complete(
    assignments: Iterable[Iterable[int]], partitions: int, what: str = ""
) -> None:
    parts = [sorted(a) for a in assignments]
    flat = [p for a in parts for p in a]
    assert len(flat) == len(set(flat)), f"{what} overlapping assignments {parts}"
    assert set(flat) == set(range(partitions)), f"{what} not every partition assigned {parts}"


def disjoint_and_complete(assignments: Iterable[Iterable[int]], partitions: int) -> bool:
    parts = [list(a) for a in assignments]
    flat = [p for a in parts for p in a]
    return all(parts) and len(flat) == len(set(flat)) == partitions and set(flat) == set(
        range(partitions)
    )


# -- the broker's view through the admin API ----------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    instance_id: str | None
    client_id: str
    partitions: frozenset[int]


@dataclass(frozen=True, slots=True)
class GroupView:
    state: str
    assignor: str
    members: tuple[MemberView, ...]

    def partitions(self) -> list[frozenset[int]]:
        return [m.partitions for m in self.members]


def describe(admin: AdminClient, group: str) -> GroupView:
    d = admin.describe_consumer_groups([group])[group].result(timeout=10)
    members = tuple(
        MemberView(
            m.member_id,
            m.group_instance_id,
            m.client_id,
            frozenset(tp.partition for tp in (m.assignment.topic_partitions or [])),
        )
        for m in d.members
    )
    return GroupView(d.state.name, d.partition_assignor, members)


def committed(admin: AdminClient, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Committed offset per partition (-1001, librdkafka's INVALID, when none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def commit_history(bootstrap: str, group: str) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of every offset commit of ``group``, in the order the broker
    stored them (tombstones excluded), read from ``__consumer_offsets``."""
    partition = offsets_partition_for(group, OFFSETS_PARTITIONS)
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "commit-history-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "log_level": 3,
    })
    out: list[tuple[str, int, int]] = []
    try:
        tp = TopicPartition("__consumer_offsets", partition)
        low, high = c.get_watermark_offsets(tp, timeout=10)
        if high == 0:
            return out
        c.assign([TopicPartition("__consumer_offsets", partition, low)])
        position = low
        deadline = time.monotonic() + 20
        while position < high:
            assert time.monotonic() < deadline, "reading __consumer_offsets stalled"
            msg: Any = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise KafkaException(msg.error())
            position = msg.offset() + 1
            key = msg.key()
            if key is None:
                continue
            record = decode(key, msg.value())
            if record is None:
                continue
            k, v = record
            if isinstance(k, OffsetCommitKey) and k.group_id == group and v is not None:
                assert isinstance(v, OffsetCommitValue)
                out.append((k.topic, k.partition, v.offset))
    finally:
        c.close()
    return out


def assert_commits_never_move_back(history: Sequence[tuple[str, int, int]]) -> None:
    last: dict[TP, int] = {}
    for topic, partition, offset in history:
        before = last.get((topic, partition), -1)
        assert offset >= before, (
            f"committed offset of {topic}-{partition} moved back from {before} to {offset}"
        )
        last[(topic, partition)] = offset


# -- group members in child processes -----------------------------------------------------


_CHILD = r'''
import json, logging, os, sys, threading, traceback

if os.environ.get("GROUPKIT_LOG"):  # e.g. GROUPKIT_LOG=DEBUG to see a client's own account
    logging.basicConfig(level=os.environ["GROUPKIT_LOG"], stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

spec = json.loads(sys.argv[1])
client = spec["client"]
topics = spec["topics"]
stop = threading.Event()
out_lock = threading.Lock()


def emit(**event):
    line = json.dumps(event)
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def control():
    for line in sys.stdin:
        if line.strip() == "close":
            stop.set()
            return
    stop.set()  # the parent went away


threading.Thread(target=control, daemon=True).start()
owned = None


def report(now):
    global owned
    now = sorted([list(tp) for tp in now])
    if now != owned:
        owned = now
        emit(e="owned", tps=now)


def run_confluent():
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": spec["bootstrap"],
        "group.id": spec["group"],
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": spec["session_ms"],
        "heartbeat.interval.ms": spec["heartbeat_ms"],
        "max.poll.interval.ms": spec["max_poll_ms"],
        "partition.assignment.strategy": spec["assignor"] or "range,roundrobin",
        "client.id": spec["name"],
        "log_level": 3,
    }
    if spec["instance"]:
        conf["group.instance.id"] = spec["instance"]
    c = Consumer(conf)
    c.subscribe(
        topics,
        on_assign=lambda _c, tps: emit(e="assign", tps=[[t.topic, t.partition] for t in tps]),
        on_revoke=lambda _c, tps: emit(e="revoke", tps=[[t.topic, t.partition] for t in tps]),
    )
    while not stop.is_set():
        msgs = c.consume(num_messages=200, timeout=0.1)
        report([(t.topic, t.partition) for t in c.assignment()])
        nxt = {}
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            emit(e="rec", t=m.topic(), p=m.partition(), o=m.offset(), v=m.value().decode())
            nxt[(m.topic(), m.partition())] = m.offset() + 1
        if nxt:
            try:
                c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in nxt.items()],
                         asynchronous=False)
                emit(e="commit", offsets=[[t, p, o] for (t, p), o in nxt.items()])
            except KafkaException as exc:
                emit(e="commit_failed", error=str(exc))
    c.close()


def run_kafka_python():
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.coordinator.consumer import ConsumerCoordinator

    # kafka-python 3.0.12 bug: join_group_async loops "while need_rejoin()", and a leader that
    # rejoined because the topic metadata changed stops needing a rejoin as soon as it has
    # computed the assignment. If poll() times out while its SyncGroup is in flight, the next
    # poll never awaits the join task again: the member never completes the join, never
    # heartbeats again and is expired by the broker. Count a join whose outcome nobody has
    # taken yet as a rejoin: join_group_async clears _join_task once it has taken the outcome,
    # so a task still set, running or finished between two polls, was never taken.
    need_rejoin = ConsumerCoordinator.need_rejoin

    def need_rejoin_while_joining(self):
        return getattr(self, "_join_task", None) is not None or need_rejoin(self)

    ConsumerCoordinator.need_rejoin = need_rejoin_while_joining
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
    if spec["assignor"] == "cooperative-sticky":
        from kafka.coordinator.assignors.cooperative_sticky import (
            CooperativeStickyAssignor,
        )
        strategy = (CooperativeStickyAssignor,)
    elif spec["assignor"]:
        strategy = tuple(assignors[a] for a in spec["assignor"].split(","))
    else:
        strategy = (RangePartitionAssignor, RoundRobinPartitionAssignor)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            emit(e="revoke", tps=[[t.topic, t.partition] for t in revoked])

        def on_partitions_assigned(self, assigned):
            emit(e="assign", tps=[[t.topic, t.partition] for t in assigned])

    c = KafkaConsumer(
        bootstrap_servers=spec["bootstrap"],
        group_id=spec["group"],
        group_instance_id=spec["instance"] or None,
        client_id=spec["name"],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=spec["session_ms"],
        heartbeat_interval_ms=spec["heartbeat_ms"],
        max_poll_interval_ms=spec["max_poll_ms"],
        partition_assignment_strategy=strategy,
    )
    c.subscribe(topics, listener=Listener())
    while not stop.is_set():
        batch = c.poll(timeout_ms=100, max_records=200)
        report([(t.topic, t.partition) for t in c.assignment()])
        nxt = {}
        for tp, records in batch.items():
            for r in records:
                emit(e="rec", t=r.topic, p=r.partition, o=r.offset, v=r.value.decode())
                nxt[tp] = r.offset + 1
        if nxt:
            try:
                c.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in nxt.items()})
                emit(e="commit", offsets=[[tp.topic, tp.partition, o] for tp, o in nxt.items()])
            except KafkaError as exc:
                emit(e="commit_failed", error=repr(exc))
    c.close()


def run_aiokafka():
    import asyncio

    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.errors import KafkaError

    assignors = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}
    strategy = tuple(assignors[a] for a in (spec["assignor"] or "range,roundrobin").split(","))

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            emit(e="revoke", tps=[[t.topic, t.partition] for t in revoked])

        async def on_partitions_assigned(self, assigned):
            emit(e="assign", tps=[[t.topic, t.partition] for t in assigned])

    async def main():
        c = AIOKafkaConsumer(
            bootstrap_servers=spec["bootstrap"],
            group_id=spec["group"],
            group_instance_id=spec["instance"] or None,
            client_id=spec["name"],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=spec["session_ms"],
            heartbeat_interval_ms=spec["heartbeat_ms"],
            max_poll_interval_ms=spec["max_poll_ms"],
            partition_assignment_strategy=strategy,
        )
        c.subscribe(topics, listener=Listener())
        await c.start()
        try:
            while not stop.is_set():
                batch = await c.getmany(timeout_ms=100, max_records=200)
                report([(t.topic, t.partition) for t in c.assignment()])
                nxt = {}
                for tp, records in batch.items():
                    for r in records:
                        emit(e="rec", t=r.topic, p=r.partition, o=r.offset, v=r.value.decode())
                        nxt[tp] = r.offset + 1
                if nxt:
                    try:
                        await c.commit(nxt)
                        emit(e="commit",
                             offsets=[[tp.topic, tp.partition, o] for tp, o in nxt.items()])
                    except KafkaError as exc:
                        emit(e="commit_failed", error=repr(exc))
        finally:
            await c.stop()

    asyncio.run(main())


try:
    {"confluent": run_confluent, "kafka-python": run_kafka_python,
     "aiokafka": run_aiokafka}[client]()
except BaseException:
    emit(e="error", trace=traceback.format_exc())
    sys.exit(1)
emit(e="closed")
'''


@dataclass
class ChildState:
    records: list[tuple[str, int, int, str]] = field(default_factory=list)
    owned: frozenset[TP] = frozenset()
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    closed: bool = False


class ChildConsumer:
    """A group member in a child process. Owned by the test thread; one reader thread parses
    the child's reports into :attr:`state` (read it under :attr:`lock`, or through the
    helpers)."""

    def __init__(
        self,
        client: str,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        *,
        name: str,
        assignor: str | None = None,
        instance: str | None = None,
        session_ms: int = CRASH_SESSION_MS,
        heartbeat_ms: int = HEARTBEAT_MS,
        max_poll_ms: int = 0,
    ) -> None:
        self.name = name
        self.client = client
        spec = {
            "client": client, "bootstrap": bootstrap, "group": group, "topics": list(topics),
            "name": name, "assignor": assignor, "instance": instance, "session_ms": session_ms,
            "heartbeat_ms": heartbeat_ms, "max_poll_ms": max_poll_ms or max(10_000, session_ms),
        }
        self.lock = threading.Lock()
        self.state = ChildState()
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, name=f"child-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.lock:
                s = self.state
                kind = event["e"]
                if kind == "rec":
                    s.records.append((event["t"], event["p"], event["o"], event["v"]))
                    continue
                s.events.append(event)
                if kind == "owned":
                    s.owned = frozenset((t, p) for t, p in event["tps"])
                elif kind == "error":
                    s.error = event["trace"]
                elif kind == "closed":
                    s.closed = True

    # -- views --------------------------------------------------------------------------

    def owned(self) -> frozenset[int]:
        self.check()
        with self.lock:
            return frozenset(p for _, p in self.state.owned)

    def records(self) -> list[tuple[str, int, int, str]]:
        with self.lock:
            return list(self.state.records)

    def events(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.state.events if e["e"] == kind]

    def check(self) -> None:
        """Fail with the child's traceback (or its stderr) if it died on its own."""
        with self.lock:
            error = self.state.error
        if error is not None:
            raise AssertionError(f"{self.name} ({self.client}) failed:\n{error}")
        if self.proc.poll() not in (None, 0, -signal.SIGKILL):
            raise AssertionError(f"{self.name} ({self.client}) exited {self.proc.returncode}:\n"
                                 f"{self.stderr()[-3000:]}")

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    # -- ending -------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Graceful close: the client leaves the group (unless it is a static member)."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("close\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout)
        self._reader.join(5)
        self.check()
        assert self.state.closed, f"{self.name} did not close cleanly:\n{self.stderr()[-3000:]}"

    def kill(self) -> None:
        """SIGKILL: no LeaveGroup, the broker notices only when the session expires."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(5)

    def __enter__(self) -> ChildConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


def unassigned_report(children: Iterable[ChildConsumer]) -> str:
    """The rebalance callbacks and the end of stderr of each member that owns nothing, for a
    failure message (run with GROUPKIT_LOG=DEBUG to get the clients' own logs there)."""
    return "\n".join(
        f"{c.name} ({c.client}): {c.events('assign')} {c.events('revoke')}\n"
        f"{c.stderr()[-20000:]}"
        for c in children
        if not c.owned()
    )


def processed(children: Iterable[ChildConsumer]) -> set[Key]:
    return {(p, o) for c in children for _, p, o, _ in c.records()}


def all_records_processed(
    children: Iterable[ChildConsumer], expected: Mapping[Key, str]
) -> bool:
    return set(expected) <= processed(children)


def assert_every_record_processed(
    children: Iterable[ChildConsumer], expected: Mapping[Key, str]
) -> None:
    got: dict[Key, str] = {}
    for c in children:
        for _, p, o, v in c.records():
            got[(p, o)] = v
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{len(missing)} records never processed, e.g. {missing[:5]}"
    wrong = [k for k, v in expected.items() if got[k] != v]
    assert not wrong, f"records with other values than produced: {wrong[:5]}"


# -- confluent-kafka members in this process -----------------------------------------------


class ConfluentMember:
    """A confluent-kafka group member polled from the test thread (librdkafka does its
    network I/O on its own threads, without the GIL). Records every processed record, every
    rebalance callback and commits what it processed after each batch."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        *,
        name: str,
        assignor: str = "range",
        instance: str | None = None,
        session_ms: int = CRASH_SESSION_MS,
        **config: Any,
    ) -> None:
        self.name = name
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "max.poll.interval.ms": max(10_000, session_ms),
            "partition.assignment.strategy": assignor,
            "log_level": 3,
            **config,
        }
        if instance is not None:
            conf["group.instance.id"] = instance
        self.records: list[tuple[int, int, str]] = []
        #: ("assign" | "revoke", partitions) in callback order (incremental when cooperative).
        self.callbacks: list[tuple[str, frozenset[int]]] = []
        self.commits: list[dict[int, int]] = []
        self.commit_errors: list[str] = []
        self.consumer = Consumer(conf)
        self.consumer.subscribe(
            list(topics),
            on_assign=lambda _c, tps: self.callbacks.append(
                ("assign", frozenset(t.partition for t in tps))
            ),
            on_revoke=lambda _c, tps: self.callbacks.append(
                ("revoke", frozenset(t.partition for t in tps))
            ),
        )
        self.closed = False

    def poll(self, timeout: float = 0.02) -> None:
        msgs: list[Any] = self.consumer.consume(num_messages=200, timeout=timeout)
        nxt: dict[tuple[str, int], int] = {}
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            self.records.append((m.partition(), m.offset(), m.value().decode()))
            nxt[(m.topic(), m.partition())] = m.offset() + 1
        if nxt:
            try:
                self.consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in nxt.items()],
                    asynchronous=False,
                )
                self.commits.append({p: o for (_, p), o in nxt.items()})
            except KafkaException as e:
                self.commit_errors.append(str(e))

    def owned(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self.consumer.assignment())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def poll_all(members: Iterable[ConfluentMember]) -> Callable[[], None]:
    live = list(members)

    def step() -> None:
        for m in live:
            if not m.closed:
                m.poll()

    return step


def records_of(members: Iterable[ConfluentMember | ChildConsumer]) -> dict[Key, str]:
    out: dict[Key, str] = {}
    for m in members:
        if isinstance(m, ChildConsumer):
            out.update({(p, o): v for _, p, o, v in m.records()})
        else:
            out.update({(p, o): v for p, o, v in m.records})
    return out
