"""Compacted topics through real clients: librdkafka, kafka-python and aiokafka read the log
from the beginning while the broker's cleaner rewrites it (and a producer keeps writing) and
after; keyless records are refused; switching a topic to ``compact`` at run time starts
cleaning; ``__consumer_offsets`` is compacted too."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTP
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTP

from odradek.broker.runner import BrokerThread, local_config
from odradek.storage.cleaner import read_cleaner_checkpoint

pytestmark = pytest.mark.integration

COMPACT = {"cleanup.policy": "compact", "segment.bytes": "16384",
           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "600000"}
KEYS = 300  # keys written at first
HOT_KEYS = 30  # keys that the concurrent producer keeps updating
TIMEOUT = 60.0

Read = list[tuple[int, bytes, bytes | None]]


@pytest.fixture
def cleaning_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    config = local_config(tmp_path / "data", log_cleaner_backoff_ms="100",
                          log_cleaner_dedupe_buffer_size=str(4 << 20),
                          offsets_topic_num_partitions="1")
    with BrokerThread(config) as b:
        yield b


def _create(bootstrap: str, name: str, config: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(timeout=10)


def _checkpoint(broker: BrokerThread, topic: str, partition: int = 0) -> int:
    """The partition's first dirty offset as the cleaner last wrote it (0: never cleaned)."""
    directory = Path(broker.config.data_dir) / f"{topic}-{partition}"
    return read_cleaner_checkpoint(directory) or 0


@dataclass
class Writer:
    """Keyed updates (every seventh a tombstone) through librdkafka; the broker's offsets come
    back in the delivery reports."""

    bootstrap: str
    topic: str
    written: dict[int, tuple[bytes, bytes | None]] = field(default_factory=dict)
    count: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 2,
                                   "batch.num.messages": 25, "acks": "all"})

    def _on_delivery(self, err: KafkaError | None, msg: object) -> None:
        assert err is None, err
        self.written[msg.offset()] = (msg.key(), msg.value())  # type: ignore[attr-defined]

    def write(self, n: int, keys: int = KEYS) -> None:
        for _ in range(n):
            i = self.count
            self.count += 1
            key = b"key-%03d" % (i % keys if i % 3 else (i * 7) % keys)
            value = None if i % 7 == 3 else b"value-%06d-" % i + b"x" * 60
            self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
            if i % 50 == 49:
                self._producer.poll(0)
        assert self._producer.flush(30) == 0

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self.write(100, HOT_KEYS)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        assert self._producer.flush(30) == 0


def _end_offset(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        c.close()


# -- readers: everything below ``end``, from the beginning -----------------------------------


def read_confluent(bootstrap: str, topic: str, end: int) -> Read:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "max.partition.fetch.bytes": 65536})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: Read = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while c.position([TopicPartition(topic, 0)])[0].offset < end:
            assert time.monotonic() < deadline, f"confluent read stalled at {len(out)}"
            for m in c.consume(500, timeout=0.5):
                assert m.error() is None, m.error()
                if m.offset() < end:
                    out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return out


def read_kafka_python(bootstrap: str, topic: str, end: int) -> Read:
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      fetch_max_bytes=65536)
    tp = KpTP(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out: Read = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while c.position(tp) < end:
            assert time.monotonic() < deadline, f"kafka-python read stalled at {len(out)}"
            for records in c.poll(timeout_ms=500).values():
                out.extend((r.offset, r.key, r.value) for r in records if r.offset < end)
    finally:
        c.close()
    return out


def read_aiokafka(bootstrap: str, topic: str, end: int) -> Read:
    async def run() -> Read:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=65536)
        await c.start()
        tp = AioTP(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        out: Read = []
        deadline = time.monotonic() + TIMEOUT
        try:
            while await c.position(tp) < end:
                assert time.monotonic() < deadline, f"aiokafka read stalled at {len(out)}"
                for records in (await c.getmany(timeout_ms=500)).values():
                    out.extend((r.offset, r.key, r.value) for r in records if r.offset < end)
        finally:
            await c.stop()
        return out

    return asyncio.run(run())


READERS: dict[str, Callable[[str, str, int], Read]] = {
    "confluent": read_confluent, "kafka-python": read_kafka_python, "aiokafka": read_aiokafka,
}


def check_read(read: Read, written: dict[int, tuple[bytes, bytes | None]], end: int,
               log_end: int | None = None) -> None:
    """A read of a compacted log below ``end`` that was over when the log ended at
    ``log_end``: increasing offsets, each record as written, and the latest value of every key
    that had no later record by then (its tombstone may be there or gone)."""
    offsets = [o for o, _k, _v in read]
    assert offsets == sorted(set(offsets)), "offsets repeat or go backwards"
    for offset, key, value in read:
        assert written[offset] == (key, value), offset
    latest: dict[bytes, int] = {}
    for offset in sorted(o for o in written if o < (log_end or end)):
        latest[written[offset][0]] = offset
    got = set(offsets)
    for key, offset in latest.items():
        if offset < end and written[offset][1] is not None:
            assert offset in got, f"latest value of {key!r} (offset {offset}) missing"


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", list(READERS))
def test_reads_during_and_after_cleaning(cleaning_broker: BrokerThread, client: str) -> None:
    bootstrap = cleaning_broker.bootstrap
    topic = f"compact-{client}-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, COMPACT)
    writer = Writer(bootstrap, topic)
    writer.write(3000)
    # The cleaner catches up with the closed segments: fewer records than offsets below there.
    deadline = time.monotonic() + TIMEOUT
    while _checkpoint(cleaning_broker, topic) == 0:
        assert time.monotonic() < deadline, "the cleaner never ran"
        read_confluent(bootstrap, topic, 1)  # paces the loop on a real request
    read = READERS[client]
    # During: a producer keeps writing and the cleaner keeps rewriting while the client reads.
    reads: list[tuple[Read, int, int]] = []
    passes_during_reads = 0
    writer.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while passes_during_reads < 2:
            assert time.monotonic() < deadline, "no cleaning pass overlapped a read"
            before = _checkpoint(cleaning_broker, topic)
            end = _end_offset(bootstrap, topic)
            got = read(bootstrap, topic, end)
            reads.append((got, end, _end_offset(bootstrap, topic)))
            passes_during_reads += _checkpoint(cleaning_broker, topic) != before
    finally:
        writer.stop()
    for got, end, log_end in reads:
        check_read(got, writer.written, end, log_end)
        # The keys nobody wrote to meanwhile are all there.
        assert len({k for _o, k, _v in got}) > (KEYS - HOT_KEYS) * 0.8
    # After: the producer has stopped; once the cleaner has caught up, a key has at most one
    # record below the cleaning point.
    end = _end_offset(bootstrap, topic)
    deadline = time.monotonic() + TIMEOUT
    while True:
        point = _checkpoint(cleaning_broker, topic)
        got = read(bootstrap, topic, end)
        check_read(got, writer.written, end)
        below = [k for o, k, _v in got if o < point]
        if point > end - 2000 and len(below) == len(set(below)):
            break
        assert time.monotonic() < deadline, "cleaning did not catch up"
    assert len(got) < len(writer.written)
    assert len(set(below)) <= KEYS


def test_keyless_record_is_refused_with_invalid_record(cleaning_broker: BrokerThread) -> None:
    bootstrap = cleaning_broker.bootstrap
    topic = f"compact-keyless-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, COMPACT)
    errors: list[KafkaError] = []
    p = Producer({"bootstrap.servers": bootstrap, "retries": 0})
    p.produce(topic, b"no key", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(10) == 0
    p.produce(topic, b"keyed", b"k", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(10) == 0
    assert [e.code() if e is not None else None for e in errors] == [
        KafkaError.INVALID_RECORD, None]
    assert _end_offset(bootstrap, topic) == 1  # only the keyed record went in


KEYLESS = (1, 4)  # positions of the keyless records in a mixed batch of six


def _mixed(i: int) -> tuple[bytes | None, bytes]:
    return (None if i in KEYLESS else b"k%d" % i), b"v%d" % i


def test_keyless_records_fail_alone_in_a_mixed_batch_confluent(
    cleaning_broker: BrokerThread,
) -> None:
    """KIP-467: the answer names the keyless records, so librdkafka fails those with
    INVALID_RECORD and the rest of the batch with its own "an invalid record in the same batch"
    error (which an application may resend), instead of failing every record alike."""
    bootstrap = cleaning_broker.bootstrap
    topic = f"compact-mixed-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, COMPACT)
    reports: dict[bytes, KafkaError | None] = {}
    # A long linger keeps the six records in one batch until flush sends it.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5000, "retries": 0})
    for i in range(6):
        key, value = _mixed(i)
        p.produce(topic, value, key, partition=0,
                  on_delivery=lambda err, msg: reports.__setitem__(msg.value(), err))
    assert p.flush(10) == 0
    codes = {v: (e.code() if e is not None else None) for v, e in reports.items()}
    assert codes == {
        b"v%d" % i: (KafkaError.INVALID_RECORD if i in KEYLESS
                     else KafkaError._INVALID_DIFFERENT_RECORD)
        for i in range(6)
    }
    assert _end_offset(bootstrap, topic) == 0  # a batch is written whole or not at all
    # The records refused only for their company go in when sent again.
    for i in range(6):
        if i not in KEYLESS:
            key, value = _mixed(i)
            p.produce(topic, value, key, partition=0,
                      on_delivery=lambda err, msg: reports.__setitem__(msg.value(), err))
    assert p.flush(10) == 0
    assert all(reports[b"v%d" % i] is None for i in range(6) if i not in KEYLESS)
    assert _end_offset(bootstrap, topic) == 4


def test_keyless_records_fail_alone_in_a_mixed_batch_kafka_python(
    cleaning_broker: BrokerThread,
) -> None:
    """kafka-python reads KIP-467 record errors too: InvalidRecordError with the broker's
    message for the keyless records, a plain KafkaError for the others."""
    from kafka import KafkaProducer
    from kafka.errors import InvalidRecordError
    from kafka.errors import KafkaError as KpError

    bootstrap = cleaning_broker.bootstrap
    topic = f"compact-mixed-kp-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, COMPACT)
    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5000, retries=0)
    try:
        futures = [p.send(topic, value=_mixed(i)[1], key=_mixed(i)[0], partition=0)
                   for i in range(6)]
        p.flush(10)
        errors = [f.exception for f in futures]
    finally:
        p.close(timeout=10)
    for i, e in enumerate(errors):
        if i in KEYLESS:
            assert isinstance(e, InvalidRecordError), (i, e)
            assert "key" in str(e)
        else:
            assert isinstance(e, KpError) and not isinstance(e, InvalidRecordError), (i, e)
    assert _end_offset(bootstrap, topic) == 0


def test_switching_to_compact_starts_cleaning(cleaning_broker: BrokerThread) -> None:
    bootstrap = cleaning_broker.bootstrap
    topic = f"to-compact-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, {"cleanup.policy": "delete", "segment.bytes": "16384",
                               "min.cleanable.dirty.ratio": "0.01"})
    writer = Writer(bootstrap, topic)
    writer.write(2000)
    end = _end_offset(bootstrap, topic)
    assert len(read_confluent(bootstrap, topic, end)) == end  # a delete topic keeps all
    assert _checkpoint(cleaning_broker, topic) == 0
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)
    deadline = time.monotonic() + TIMEOUT
    while _checkpoint(cleaning_broker, topic) == 0:
        assert time.monotonic() < deadline, "switching to compact did not start cleaning"
        read_confluent(bootstrap, topic, 1)
    got = read_confluent(bootstrap, topic, end)
    check_read(got, writer.written, end)
    assert len(got) < end


def test_consumer_offsets_is_compacted(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", log_cleaner_backoff_ms="100",
                          log_cleaner_dedupe_buffer_size=str(4 << 20),
                          offsets_topic_num_partitions="1")
    topic = f"committed-{uuid.uuid4().hex[:6]}"
    group = "g-compacted"
    with BrokerThread(config) as broker:
        bootstrap = broker.bootstrap
        _create(bootstrap, topic, {})
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)  # creates the topic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        resource = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["cleanup.policy"].value == "compact"
        # Small segments so that the same commit, made many times, soon makes it dirty.
        alter = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets",
                               incremental_configs=[
                                   ConfigEntry("segment.bytes", "16384",
                                               incremental_operation=AlterConfigOpType.SET),
                                   ConfigEntry("min.cleanable.dirty.ratio", "0.01",
                                               incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([alter])[alter].result(timeout=10)
        n = 0
        deadline = time.monotonic() + TIMEOUT
        while _checkpoint(broker, "__consumer_offsets") == 0:
            assert time.monotonic() < deadline, "__consumer_offsets was never cleaned"
            for _ in range(50):
                n += 1
                c.commit(offsets=[TopicPartition(topic, 0, n)], asynchronous=False)
        assert n > 50
        log = broker.broker.topics.log("__consumer_offsets", 0)
        assert log.log_end_offset > 100
        c.close()
    # The group's offset survives a restart that replays the compacted partition.
    with BrokerThread(config) as broker:
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                      "enable.auto.commit": False})
        (committed,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        c.close()
        assert committed.offset == n


def test_aborted_transactions_are_cleaned_away(cleaning_broker: BrokerThread) -> None:
    """librdkafka's read_committed reader still gets the latest committed value of every key
    once the cleaner has dropped the aborted data (markers and aborted index as it left them);
    a read_uncommitted one sees no aborted record below the cleaning point."""
    bootstrap = cleaning_broker.bootstrap
    topic = f"compact-txn-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, COMPACT)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2,
                  "transactional.id": f"tx-{uuid.uuid4().hex[:6]}"})
    p.init_transactions(10)
    committed: dict[bytes, bytes] = {}
    aborted_values: set[bytes] = set()
    for t in range(150):
        p.begin_transaction()
        # A few keys per transaction, so an aborted update is often a key's latest.
        values = {b"key-%02d" % ((t * 7 + i) % 40): b"txn-%03d-%03d-" % (t, i) + b"x" * 80
                  for i in range(12)}
        for key, value in values.items():
            p.produce(topic, value, key)
        if t % 3 == 1:
            assert p.flush(10) == 0  # so the aborted records reach the log
            p.abort_transaction(10)
            aborted_values |= set(values.values())
        else:
            p.commit_transaction(10)
            committed.update(values)
    end = _end_offset(bootstrap, topic)
    deadline = time.monotonic() + TIMEOUT
    while _checkpoint(cleaning_broker, topic) < end // 2:
        assert time.monotonic() < deadline, "the transactional log was not cleaned"
        read_confluent(bootstrap, topic, 1)

    def read(isolation: str) -> list[tuple[int, bytes, bytes]]:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, "isolation.level": isolation})
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + TIMEOUT
        while c.position([TopicPartition(topic, 0)])[0].offset < end:
            assert time.monotonic() < deadline, f"{isolation} read stalled at {len(out)}"
            for m in c.consume(500, timeout=0.5):
                assert m.error() is None, m.error()
                out.append((m.offset(), m.key(), m.value()))
        c.close()
        return out

    got = read("read_committed")
    assert {k: v for _o, k, v in got} == committed
    assert not {v for _o, _k, v in got} & aborted_values
    point = _checkpoint(cleaning_broker, topic)
    raw = read("read_uncommitted")
    assert not {v for o, _k, v in raw if o < point} & aborted_values
    assert len(raw) < end
