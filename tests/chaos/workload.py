"""The clients: idempotent producers (acks as configured), a transactional producer that
commits some transactions and aborts others, consumers (read_uncommitted and read_committed)
that follow every partition from the beginning, and the members of a consumer group that
subscribe, commit offsets, and join and leave all through the run (so rebalances happen during
the faults), all recording to the history; then the final reads and the replica logs read from
the stopped brokers' data dirs.

Every worker is a thread owned by :class:`Workload`; each client object is used only by its
own thread (confluent-kafka's callbacks run in that thread's ``poll``/``flush``).
"""

from __future__ import annotations

import os
import random
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from chaos.history import History
from odradek.clock import SystemClock
from odradek.protocol.records import decode_records, read_batch_header
from odradek.storage import LogConfig, PartitionLog

__all__ = ["Workload", "final_reads", "replica_logs", "COMMITTED", "UNCOMMITTED"]

COMMITTED = "read_committed"
UNCOMMITTED = "read_uncommitted"


def _epoch(msg: Any) -> int:
    try:
        epoch = msg.leader_epoch()
    except (AttributeError, RuntimeError):
        return -1
    return -1 if epoch is None else int(epoch)


def _client_debug() -> dict[str, Any]:
    """``CHAOS_CLIENT_DEBUG=eos,msg,protocol`` (librdkafka's debug contexts): the producers
    log them to stderr, to see what a broker answered when the checker finds a duplicate."""
    contexts = os.environ.get("CHAOS_CLIENT_DEBUG")
    return {"debug": contexts, "log_level": 7} if contexts else {}


class Workload:
    """Producers, a transactional producer and consumers on ``topic`` (plain records) and
    ``txn_topic`` (transactions), until :meth:`stop`."""

    def __init__(
        self, history: History, bootstrap: str, topic: str, txn_topic: str | None,
        partitions: int, *, producers: int, rate: float, acks: str, seed: int,
        group_members: int = 0,
    ) -> None:
        self.history = history
        self.bootstrap = bootstrap
        self.topic = topic
        self.txn_topic = txn_topic
        self.partitions = partitions
        self._acks = acks
        self._rate = rate
        self._seed = seed
        self._stop = threading.Event()
        self.errors: list[str] = []
        #: Workers that died of an exception (a harness bug or a client refusing its config).
        self.crashed: list[str] = []
        workers: list[tuple[str, Callable[[], None]]] = [
            (f"p{i}", lambda n=f"p{i}": self._produce(n)) for i in range(producers)
        ]
        if txn_topic is not None:
            workers.append(("txn", self._transactions))
        for i, iso in enumerate((UNCOMMITTED, COMMITTED)):
            workers.append((f"c{i}", lambda n=f"c{i}", i_=iso: self._consume(n, i_)))
        #: The consumer group's id (its members are ``g<i>.<life>``).
        self.group = f"chaos-group-{seed}"
        workers += [(f"g{i}", lambda n=f"g{i}": self._group_slot(n))
                    for i in range(group_members)]
        self._threads = [
            threading.Thread(target=self._guard, args=(name, work), name=f"chaos-{name}",
                             daemon=True)
            for name, work in workers
        ]

    @property
    def idempotent(self) -> bool:
        """Kafka allows idempotence only with acks=all."""
        return self._acks in ("all", "-1")

    def _guard(self, name: str, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            error = traceback.format_exc()
            self.crashed.append(f"{name}: {error}")
            self.history.record("workload", "fail", worker=name, error=error)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(1.0, deadline - time.monotonic()))

    # -- producers -------------------------------------------------------------------------------

    def _producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap, "acks": self._acks,
            "enable.idempotence": self.idempotent, "linger.ms": 5, "message.timeout.ms": 30_000,
            "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 1000,
            # shorter than the slow-broker fault's delay (chaos.faults), so sends are retried
            "request.timeout.ms": 5000,
            "topic.metadata.refresh.interval.ms": 1000,
            # librdkafka logs every refused connection during the faults; the history has it all
            "log_level": 2,
            **_client_debug(),
        }

    def _produce(self, name: str) -> None:
        rng = random.Random(f"{self._seed}-{name}")
        producer = Producer(self._producer_config())
        history = self.history

        def report(invoked: float, value: str, err: KafkaError | None, msg: Any) -> None:
            if err is None:
                history.record("send", "ok", topic=msg.topic(), partition=msg.partition(),
                               value=value, offset=msg.offset(), epoch=_epoch(msg),
                               invoked=invoked)
            else:
                # An idempotent send that failed may still have been written: indeterminate.
                history.record("send", "info", topic=self.topic, value=value, error=str(err))

        seq = 0
        try:
            while not self._stop.is_set():
                value = f"{name}-{seq}"
                seq += 1
                partition = rng.randrange(self.partitions)
                invoked = history.record("send", "invoke", topic=self.topic,
                                         partition=partition, value=value)["t"]
                try:
                    producer.produce(
                        self.topic, value=value.encode(), partition=partition,
                        on_delivery=lambda err, msg, v=value, t=invoked: report(t, v, err, msg),
                    )
                except BufferError:
                    history.record("send", "fail", topic=self.topic, value=value,
                                   error="local queue full")
                    producer.poll(0.5)
                    continue
                producer.poll(0)
                time.sleep(1.0 / self._rate)
        finally:
            left = producer.flush(40)
            if left:
                self.errors.append(f"{name}: {left} sends never answered")

    def _transactions(self) -> None:
        assert self.txn_topic is not None
        rng = random.Random(f"{self._seed}-txn")
        history, topic = self.history, self.txn_topic
        number = 0
        producer: Producer | None = None
        while not self._stop.is_set():
            if producer is None:
                producer = Producer({**self._producer_config(), "acks": "all",
                                     "enable.idempotence": True,
                                     "transactional.id": f"chaos-txn-{self._seed}",
                                     "transaction.timeout.ms": 30_000})
                try:
                    producer.init_transactions(30)
                except KafkaException as e:
                    history.record("txn", "fail", txn=None, error=str(e), step="init")
                    producer = None
                    time.sleep(1)
                    continue
            number += 1
            txn = f"x{self._seed}-{number}"
            values = [f"{txn}-{i}" for i in range(rng.randint(1, 5))]
            commit = rng.random() < 0.6
            # Half the aborts come after the records are written (flushed), so that ABORT
            # markers and read_committed's filtering of aborted records are exercised; an
            # abort called at once mostly has nothing written (librdkafka drops records whose
            # partitions are not registered with the transaction yet).
            flush_first = not commit and rng.random() < 0.5
            history.record("txn", "invoke", txn=txn, values=values,
                           outcome="commit" if commit else "abort")

            def report(invoked: float, err: KafkaError | None, msg: Any, t: str = txn) -> None:
                if err is None:
                    history.record("send", "ok", topic=msg.topic(), partition=msg.partition(),
                                   value=msg.value().decode(), offset=msg.offset(),
                                   epoch=_epoch(msg), invoked=invoked, txn=t)

            try:
                producer.begin_transaction()
                for v in values:
                    invoked = history.record("send", "invoke", topic=topic, value=v,
                                             txn=txn)["t"]
                    producer.produce(
                        topic, value=v.encode(), partition=rng.randrange(self.partitions),
                        on_delivery=lambda err, msg, i=invoked: report(i, err, msg),
                    )
                if commit:
                    producer.commit_transaction(30)
                else:
                    if flush_first:
                        producer.flush(30)
                    producer.abort_transaction(30)
                history.record("txn", "ok", txn=txn, values=values,
                               outcome="commit" if commit else "abort")
            except KafkaException as e:
                error = e.args[0] if e.args else None
                abortable = isinstance(error, KafkaError) and error.txn_requires_abort()
                if abortable:
                    try:
                        producer.abort_transaction(30)
                        history.record("txn", "ok", txn=txn, values=values, outcome="abort",
                                       error=str(e))
                        continue
                    except KafkaException:
                        pass
                if commit:
                    # Unknown: the commit may or may not have happened; start over.
                    history.record("txn", "info", txn=txn, values=values, error=str(e))
                else:
                    # Nothing can commit a transaction the application aborts (the next
                    # producer's init_transactions fences and aborts whatever is left open):
                    # certainly aborted, even when the call failed. librdkafka fails it with
                    # a fatal INVALID_TXN_STATE when it sent EndTxn(abort) for a transaction
                    # the coordinator never opened (docs/CHAOS.md).
                    history.record("txn", "ok", txn=txn, values=values, outcome="abort",
                                   error=str(e))
                producer = None
                time.sleep(0.5)
        if producer is not None:
            producer.flush(10)

    # -- consumers -------------------------------------------------------------------------------

    def _consume(self, name: str, isolation: str) -> None:
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": f"chaos-{name}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": isolation, "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 2,
        })
        topics = [t for t in (self.topic, self.txn_topic) if t is not None]
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                         for p in range(self.partitions)])
        try:
            while not self._stop.is_set():
                _record_batch(self.history, "poll", consumer.consume(500, 0.5), isolation,
                              consumer=name)
        finally:
            consumer.close()


    # -- a consumer group whose members come and go ---------------------------------------------

    def _group_slot(self, slot: str) -> None:
        """One member at a time: it lives GROUP_LIFE_S, leaves, and a new one joins after
        GROUP_PAUSE_S, so the group rebalances all through the run."""
        rng = random.Random(f"{self._seed}-{slot}")
        life = 0
        while not self._stop.is_set():
            life += 1
            self._group_member(f"{slot}.{life}", rng.uniform(*GROUP_LIFE_S))
            self._stop.wait(rng.uniform(*GROUP_PAUSE_S))

    def _group_member(self, member: str, life_s: float) -> None:
        """Subscribe to every topic (read_committed), record each assignment (``assign``;
        polls are named ``<member>#<assignment>``), commit what was consumed after every
        batch and when partitions are revoked (``commit``), and leave after ``life_s``."""
        history, group = self.history, self.group
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": COMMITTED, "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 1000,
            "log_level": 2,
        })
        name = ""
        assignments = 0
        commits = 0
        consumed: dict[tuple[str, int], int] = {}  # next offset, consumed in this assignment
        committed: dict[tuple[str, int], int] = {}  # what this member last committed

        def commit(why: str) -> None:
            nonlocal commits
            todo = {tp: o for tp, o in consumed.items() if committed.get(tp) != o}
            if not todo:
                return
            commits += 1
            cid = f"{member}-{commits}"
            offsets = [[t, p, o] for (t, p), o in sorted(todo.items())]
            history.record("commit", "invoke", group=group, member=member, commit=cid,
                           consumer=name, offsets=offsets, why=why)
            try:
                answer = consumer.commit(
                    offsets=[TopicPartition(t, p, o) for t, p, o in offsets],
                    asynchronous=False,
                )
            except KafkaException as e:
                # In doubt whatever the error: librdkafka retries a commit internally (after a
                # timeout or a coordinator error), and an earlier attempt may have been stored
                # before the last one was refused (the chaos runs saw UNKNOWN_MEMBER_ID so).
                history.record("commit", "info", group=group, member=member, commit=cid,
                               offsets=offsets, error=str(e))
                return
            done = [[tp.topic, tp.partition, tp.offset] for tp in answer or ()
                    if tp.error is None]
            refused = [[tp.topic, tp.partition, tp.offset, str(tp.error)] for tp in answer or ()
                       if tp.error is not None]
            history.record("commit", "ok", group=group, member=member, commit=cid,
                           offsets=done, refused=refused)
            for t, p, o in done:
                committed[(t, p)] = o

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            nonlocal name, assignments
            assignments += 1
            name = f"{member}#{assignments}"
            consumed.clear()
            history.record("assign", "ok", group=group, member=member, consumer=name,
                           partitions=[[tp.topic, tp.partition] for tp in partitions])

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            commit("revoke")
            history.record("revoke", "ok", group=group, member=member, consumer=name,
                           partitions=[[tp.topic, tp.partition] for tp in partitions])
            consumed.clear()

        def on_lost(c: Consumer, partitions: list[TopicPartition]) -> None:
            history.record("revoke", "ok", group=group, member=member, consumer=name,
                           lost=True,
                           partitions=[[tp.topic, tp.partition] for tp in partitions])
            consumed.clear()

        topics = [t for t in (self.topic, self.txn_topic) if t is not None]
        consumer.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        history.record("member", "invoke", group=group, member=member)
        deadline = time.monotonic() + life_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                msgs = consumer.consume(200, 0.5)
                batch = _record_batch(history, "poll", msgs, COMMITTED, consumer=name,
                                      group=group)
                for tp, records in batch.items():
                    consumed[tp] = records[-1][0] + 1
                if batch:
                    commit("batch")
        finally:
            consumer.close()  # revokes (and so commits) what it holds, and leaves the group
            history.record("member", "ok", group=group, member=member)


#: How long a group member lives, and how long its slot stays empty before the next joins.
GROUP_LIFE_S = (3.0, 12.0)
GROUP_PAUSE_S = (0.5, 3.0)


def _record_batch(history: History, kind: str, msgs: Iterable[Any], isolation: str,
                  **fields: Any) -> dict[tuple[str, int], list[list[Any]]]:
    by_tp: dict[tuple[str, int], list[list[Any]]] = defaultdict(list)
    for m in msgs:
        if m.error() is not None:
            continue
        by_tp[(m.topic(), m.partition())].append([m.offset(), m.value().decode(), _epoch(m)])
    for (topic, partition), records in by_tp.items():
        history.record(kind, "ok", topic=topic, partition=partition, isolation=isolation,
                       records=records, **fields)
    return by_tp


def final_reads(history: History, bootstrap: str, topics: Iterable[str], partitions: int,
                *, idle_s: float = 2.0, timeout_s: float = 60.0) -> None:
    """Read every partition from the beginning to its high watermark, at both isolations:
    until the client has reached each partition's end (its end-of-partition event, which
    also passes transaction markers at the end), or nothing came for ``idle_s``."""
    tps = [(t, p) for t in topics for p in range(partitions)]
    for isolation in (UNCOMMITTED, COMMITTED):
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"chaos-final-{isolation}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": isolation, "enable.partition.eof": True, "log_level": 2,
        })
        try:
            ends = {tp: _high_watermark(consumer, tp) for tp in tps}
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in tps])
            got: dict[tuple[str, int], list[list[Any]]] = defaultdict(list)
            reached: dict[tuple[str, int], int] = {}  # where the client last hit the end
            last = time.monotonic()
            deadline = last + timeout_s
            while time.monotonic() < deadline and time.monotonic() - last < idle_s:
                batch = consumer.consume(1000, 0.5)
                for m in batch:
                    error = m.error()
                    if error is None:
                        got[(m.topic(), m.partition())].append(
                            [m.offset(), m.value().decode(), _epoch(m)])
                        last = time.monotonic()
                    elif error.code() == KafkaError._PARTITION_EOF:
                        reached[(m.topic(), m.partition())] = m.offset()
                if all(reached.get(tp, -1) >= ends[tp] for tp in tps if ends[tp] >= 0):
                    break
            for (topic, partition) in tps:
                history.record("read", "ok", topic=topic, partition=partition,
                               isolation=isolation, records=got[(topic, partition)],
                               end=ends[(topic, partition)])
        finally:
            consumer.close()


def _high_watermark(consumer: Consumer, tp: tuple[str, int]) -> int:
    """-1 when it cannot be had (the partition has no leader): the read then runs until idle,
    and the checker finds whatever is missing."""
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(*tp), timeout=30)[1])
    except KafkaException:
        return -1


def replica_logs(history: History, data_dirs: dict[int, Path], topics: Iterable[str]) -> None:
    """Every replica of ``topics`` on the stopped brokers' data dirs, through the storage
    layer: data records (not control batches) with their batch's leader epoch, producer id and
    producer epoch, the high watermark, log start and end offsets."""
    wanted = set(topics)
    for node, data_dir in sorted(data_dirs.items()):
        for path in sorted(data_dir.glob("*-*")):
            topic, _, number = path.name.rpartition("-")
            if topic not in wanted or not number.isdigit() or not path.is_dir():
                continue
            log = PartitionLog.open(path, topic, int(number), LogConfig(), SystemClock(),
                                    recover=True)
            try:
                records = []
                offset = log.log_start_offset
                while offset < log.log_end_offset:
                    data = bytes(log.read(offset, max_bytes=1 << 20).records)
                    if not data:
                        break
                    pos = 0
                    while pos < len(data):
                        header = read_batch_header(data, pos)
                        batch = data[pos:pos + header.size]
                        if not header.is_control:
                            for r in decode_records(batch):
                                if r.offset >= offset:
                                    records.append([r.offset, (r.value or b"").decode(),
                                                    header.partition_leader_epoch,
                                                    header.producer_id,
                                                    header.producer_epoch])
                        pos += header.size
                        offset = max(offset, header.next_offset)
                history.record("replica", "ok", node=node, topic=topic, partition=int(number),
                               high_watermark=log.high_watermark,
                               log_start_offset=log.log_start_offset,
                               log_end_offset=log.log_end_offset, records=records)
            finally:
                log.close()
