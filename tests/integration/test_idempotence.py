"""Idempotent producers under injected faults: every record exactly once, in order.

A :class:`~faultproxy.FaultProxy` between the clients and the broker withholds Produce responses
after the broker has appended the batches, and severs the connection. The client cannot know
whether its batches were written and retries them with the same producer id, epoch and sequence
numbers; the broker must recognise the retries and answer with the original offsets instead of
appending again. Without idempotence the same fault must produce duplicates (which shows that the
fault does hit after the append). Producer state must also survive a broker restart between a
send and its retry, whether it comes back from the shutdown snapshot, from an older snapshot plus
the log tail, or from the log alone. Finally the sequence and epoch errors
(OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH) are provoked with raw Produce requests,
which well-behaved clients never send, and a hypothesis test drives random retry / gap / epoch
sequences against a model of Kafka's rules.

kafka-python runs in a child process (see ``_KAFKA_PYTHON_PRODUCER``); the broker, the proxy,
confluent-kafka and aiokafka run in the test process.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from faultproxy import PRODUCE, FaultProxy, Seen
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.create_topics.v7 import request as create_req
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_req
from kio.schema.init_producer_id.v4 import request as init_req
from rawclient import RawClient

from odradek.broker.runner import BrokerThread, local_config
from odradek.protocol.messages import peek_preamble
from odradek.protocol.produce import decode_produce_request
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    BatchHeader,
    Record,
    SimpleRecord,
    decode_records,
    encode_batch,
    read_batch_header,
)
from odradek.storage.log_manager import CLEAN_SHUTDOWN_FILE
from odradek.storage.producer_state import SNAPSHOT_SUFFIX

pytestmark = pytest.mark.integration

N = 300
PARTITIONS = 3
TIMEOUT = 30.0
TS = 1_700_000_000_000

# -- a broker behind the proxy ----------------------------------------------------------------


class ProxiedBroker:
    """A broker that advertises a fault proxy in front of it; restartable on its first port.

    Owned by the test thread; a test may hand :meth:`restart` to one helper thread while it
    only talks to the proxy (whose address never changes). The data directory is the broker's.
    """

    def __init__(self, data_dir: Path, **properties: str) -> None:
        self.data_dir = data_dir
        self.properties = properties
        self.proxy = FaultProxy().start()
        self.port = 0
        self.broker: BrokerThread | None = None
        self.restarts = 0
        try:
            self.start()
        except BaseException:
            self.proxy.stop()
            raise

    def start(self) -> None:
        config = local_config(
            self.data_dir,
            listen=f"127.0.0.1:{self.port}",
            advertised_listeners=f"PLAINTEXT://{self.proxy.address}",
            **self.properties,
        )
        broker = BrokerThread(config).start()
        self.port = broker.broker.port
        self.proxy.upstream = ("127.0.0.1", self.port)
        self.broker = broker

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def restart(self, *, crash: bool = False) -> None:
        self.stop()
        if crash:
            simulate_crash(self.data_dir)
        self.start()
        self.restarts += 1

    @property
    def bootstrap(self) -> str:
        """Through the proxy."""
        return self.proxy.address

    @property
    def direct(self) -> str:
        """Straight to the broker, for set-up and read-back."""
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stop()
        self.proxy.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProxiedBroker]:
    c = ProxiedBroker(tmp_path / "data")
    try:
        yield c
    finally:
        c.close()


def simulate_crash(data_dir: Path) -> None:
    """After a clean stop, make the data look like a crash right after the last append: no
    clean-shutdown marker and no shutdown snapshot (the newest one, at each log end), so producer
    state must be rebuilt from an older snapshot plus the log tail, or from the whole log."""
    (data_dir / CLEAN_SHUTDOWN_FILE).unlink()
    for snapshots in _snapshots(data_dir).values():
        if snapshots:
            (data_dir / snapshots[-1][1]).unlink()


def _snapshots(data_dir: Path) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for d in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        found = sorted(
            (int(f.name[: -len(SNAPSHOT_SUFFIX)]), f"{d.name}/{f.name}")
            for f in d.glob("*" + SNAPSHOT_SUFFIX)
        )
        out[d.name] = found
    return out


# -- raw requests -----------------------------------------------------------------------------


def create_topic(address: str, name: str, partitions: int) -> None:
    body = create_req.CreateTopicsRequest(
        topics=(
            create_req.CreatableTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                assignments=(),
                configs=(),
            ),
        ),
        timeout=datetime.timedelta(seconds=10),
    )
    with RawClient(address) as c:
        result = c.request(body).topics[0]
    assert result.error_code == ErrorCode.none, result.error_message


def init_producer_id(c: RawClient) -> int:
    resp = c.request(
        init_req.InitProducerIdRequest(
            transactional_id=None,
            transaction_timeout=datetime.timedelta(seconds=60),
            producer_id=-1,
            producer_epoch=-1,
        )
    )
    assert resp.error_code == ErrorCode.none
    assert resp.producer_epoch == 0
    return int(resp.producer_id)


def idempotent_batch(pid: int, epoch: int, seq: int, count: int) -> bytes:
    """``count`` records whose values are their sequence numbers."""
    records = [SimpleRecord(str(seq + i).encode(), timestamp=TS) for i in range(count)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def produce(c: RawClient, topic: str, records: bytes, *, version: int = 9) -> Any:
    """One acks=all Produce request to partition 0; returns its partition response."""
    mod = importlib.import_module(f"kio.schema.produce.v{version}.request")
    body = mod.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            mod.TopicProduceData(
                name=topic, partition_data=(mod.PartitionProduceData(index=0, records=records),)
            ),
        ),
    )
    return c.request(body).responses[0].partition_responses[0]


def read_partition(address: str, topic: str, partition: int) -> list[tuple[BatchHeader, list[Record]]]:
    """Every batch of the partition up to its high watermark, with its records."""
    out: list[tuple[BatchHeader, list[Record]]] = []
    offset = 0
    with RawClient(address) as c:
        while True:
            body = fetch_req.FetchRequest(
                max_wait=datetime.timedelta(0),
                min_bytes=0,
                topics=(
                    fetch_req.FetchTopic(
                        topic=topic,
                        partitions=(
                            fetch_req.FetchPartition(
                                partition=partition,
                                fetch_offset=offset,
                                partition_max_bytes=1 << 20,
                            ),
                        ),
                    ),
                ),
                forgotten_topics_data=(),
                rack_id="",
            )
            data = c.request(body).responses[0].partitions[0]
            assert data.error_code == ErrorCode.none
            if offset >= data.high_watermark:
                return out
            blob = memoryview(data.records or b"")
            pos = 0
            start = offset
            while pos + BATCH_HEADER_SIZE <= len(blob):
                h = read_batch_header(blob, pos)
                if pos + h.size > len(blob):
                    break
                if h.last_offset >= offset:
                    out.append((h, decode_records(blob[pos : pos + h.size])))
                    offset = h.next_offset
                pos += h.size
            assert offset > start, f"no progress reading {topic}-{partition} at offset {offset}"


def values_of(batches: list[tuple[BatchHeader, list[Record]]]) -> list[int]:
    return [int(r.value or b"") for _, records in batches for r in records]


# -- producing with each client -----------------------------------------------------------------


def produce_confluent(
    bootstrap: str, topic: str, n: int, idempotent: bool, partitions: int = PARTITIONS
) -> None:
    errors: list[object] = []
    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": idempotent,
        "acks": "all",
        "linger.ms": 1,
        "batch.num.messages": 7,
        "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        "message.timeout.ms": int(TIMEOUT * 1000),
        "log_level": 3,
    })

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    for i in range(n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions, on_delivery=on_delivery)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0
    assert errors == []


# kafka-python's sender thread spins while its in-flight limit is reached (sender.py polls with
# a zero timeout whenever a node has sendable data but is "not ready"). In this process it would
# hog the GIL and starve the broker thread for seconds, so the producer runs in a child process.
_KAFKA_PYTHON_PRODUCER = """
import sys

from kafka import KafkaProducer

bootstrap, topic, n, partitions, idempotent, timeout = sys.argv[1:]
p = KafkaProducer(
    bootstrap_servers=bootstrap,
    enable_idempotence=idempotent == "1",
    acks="all",
    linger_ms=1,
    batch_size=60,  # about one record per batch: many requests, many chances to fail
    retry_backoff_ms=20,
    reconnect_backoff_ms=20,
)
futures = [
    p.send(topic, value=str(i).encode(), partition=i % int(partitions)) for i in range(int(n))
]
for f in futures:
    f.get(float(timeout))
p.close(10)
"""


def produce_kafka_python(
    bootstrap: str, topic: str, n: int, idempotent: bool, partitions: int = PARTITIONS
) -> None:
    args = [bootstrap, topic, str(n), str(partitions), "1" if idempotent else "0", str(TIMEOUT)]
    child = subprocess.run(
        [sys.executable, "-c", _KAFKA_PYTHON_PRODUCER, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 20,
    )
    assert child.returncode == 0, child.stderr[-3000:]


def produce_aiokafka(
    bootstrap: str, topic: str, n: int, idempotent: bool, partitions: int = PARTITIONS
) -> None:
    async def run() -> None:
        p = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=idempotent,
            acks="all",
            linger_ms=1,
            max_batch_size=100,
            retry_backoff_ms=20,
        )
        await p.start()
        try:
            futures = [
                await p.send(topic, value=str(i).encode(), partition=i % partitions)
                for i in range(n)
            ]
            await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
        finally:
            await p.stop()

    asyncio.run(run())


CLIENTS: dict[str, Callable[..., None]] = {
    "confluent": produce_confluent,
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
}


# -- checks ---------------------------------------------------------------------------------


def batch_keys(seen: Seen) -> list[tuple[str, int, int, int, int, int]]:
    """(topic, partition, producer id, epoch, base sequence, record count) of each batch in a
    recorded Produce request."""
    assert seen.frame is not None
    request = decode_produce_request(seen.frame, peek_preamble(seen.frame))
    out = []
    for topic in request.body.topic_data:
        for pd in topic.partition_data:
            assert pd.records is not None
            pos = 0
            while pos < len(pd.records):
                h = read_batch_header(pd.records, pos)
                out.append((topic.name, pd.index, h.producer_id, h.producer_epoch,
                            h.base_sequence, h.records_count))
                pos += h.size
    return out


def assert_dropped_batches_were_resent(proxy: FaultProxy) -> int:
    """Every batch whose response the proxy withheld reached the broker again later, unchanged
    in producer id, epoch, sequence and size; returns how many such batches there were."""
    seen = proxy.seen(PRODUCE)
    keys = [batch_keys(s) for s in seen]
    resent = 0
    for i, s in enumerate(seen):
        if s.outcome != "dropped":
            continue
        later = {k for ks in keys[i + 1 :] for k in ks}
        for k in keys[i]:
            assert k in later, f"batch {k} (response withheld) was never sent again"
            assert k[2] >= 0 and k[4] >= 0, f"batch {k} is not idempotent"
            resent += 1
    return resent


def assert_exactly_once_in_order(
    address: str, topic: str, n: int, partitions: int = PARTITIONS
) -> None:
    for p in range(partitions):
        batches = read_partition(address, topic, p)
        assert values_of(batches) == [i for i in range(n) if i % partitions == p], f"partition {p}"
        # The log holds one producer's batches with sequences 0.. and no repeats or holes.
        producers = {(h.producer_id, h.producer_epoch) for h, _ in batches}
        assert len(producers) == 1 and min(producers)[0] >= 0, producers
        expected_seq = 0
        for h, records in batches:
            assert h.base_sequence == expected_seq, (p, h)
            expected_seq += len(records)


# -- client tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("client", list(CLIENTS))
def test_retried_batches_are_written_once(cluster: ProxiedBroker, client: str) -> None:
    topic = f"idem-{client}"
    create_topic(cluster.direct, topic, PARTITIONS)
    cluster.proxy.drop_responses(PRODUCE, 3, pass_first=2, pass_between=3)
    CLIENTS[client](cluster.bootstrap, topic, N, True)
    assert cluster.proxy.dropped == 3
    assert assert_dropped_batches_were_resent(cluster.proxy) >= 3
    assert_exactly_once_in_order(cluster.direct, topic, N)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_a_batch_retried_several_times_is_written_once(cluster: ProxiedBroker, client: str) -> None:
    # Three responses in a row withheld: the retries' responses are withheld too. One
    # partition, so that the first request after reconnecting is the retry of the oldest batch.
    topic = f"again-{client}"
    create_topic(cluster.direct, topic, 1)
    cluster.proxy.drop_responses(PRODUCE, 3, pass_first=1)
    CLIENTS[client](cluster.bootstrap, topic, N, True, 1)
    assert cluster.proxy.dropped == 3
    assert_dropped_batches_were_resent(cluster.proxy)
    withheld = Counter(
        k for s in cluster.proxy.seen(PRODUCE) if s.outcome == "dropped" for k in batch_keys(s)
    )
    assert max(withheld.values()) >= 2, "no batch was retried more than once"
    assert_exactly_once_in_order(cluster.direct, topic, N, 1)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_without_idempotence_the_fault_duplicates(cluster: ProxiedBroker, client: str) -> None:
    # The control experiment: the withheld responses really come after the append.
    topic = f"dup-{client}"
    create_topic(cluster.direct, topic, PARTITIONS)
    cluster.proxy.drop_responses(PRODUCE, 3, pass_first=2, pass_between=3)
    CLIENTS[client](cluster.bootstrap, topic, N, False)
    assert cluster.proxy.dropped == 3
    counts: Counter[int] = Counter()
    for p in range(PARTITIONS):
        counts.update(values_of(read_partition(cluster.direct, topic, p)))
    assert set(counts) == set(range(N)), "a record acknowledged to the client is missing"
    assert max(counts.values()) >= 2, f"{client} retried nothing: no duplicates"


@pytest.mark.parametrize("crash", [False, True], ids=["clean-restart", "crash-restart"])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_restart_between_send_and_retry(tmp_path: Path, client: str, crash: bool) -> None:
    # Small segments: by the time of the fault the logs have rolled and written snapshots, so
    # after a "crash" the state comes from a roll snapshot plus the log tail.
    cluster = ProxiedBroker(tmp_path / "data", log_segment_bytes="1024")
    failures: list[BaseException] = []

    def restart_on_drop() -> None:
        try:
            if cluster.proxy.wait_for_drops(1, TIMEOUT):
                cluster.restart(crash=crash)
        except BaseException as e:  # reported by the test thread
            failures.append(e)
        finally:
            cluster.proxy.release()

    try:
        topic = f"restart-{client}"
        create_topic(cluster.direct, topic, PARTITIONS)
        # The withheld response also closes every connection and holds new ones until the
        # broker is back: the retry can only reach the restarted broker.
        cluster.proxy.drop_responses(PRODUCE, 1, pass_first=12, hold_after=True)
        restarter = threading.Thread(target=restart_on_drop, daemon=True)
        restarter.start()
        CLIENTS[client](cluster.bootstrap, topic, N, True)
        restarter.join(TIMEOUT)
        assert not failures, failures
        assert cluster.restarts == 1
        assert assert_dropped_batches_were_resent(cluster.proxy) >= 1
        assert_exactly_once_in_order(cluster.direct, topic, N)
    finally:
        cluster.proxy.release()
        cluster.close()


# -- raw requests: restart flavours and error codes -------------------------------------------


@pytest.mark.parametrize(
    "state_from",
    [
        "shutdown-snapshot",
        "snapshot-and-tail",
        "log-only",
        "damaged-snapshot",
    ],
)
def test_producer_state_rebuilt_after_restart(tmp_path: Path, state_from: str) -> None:
    props = {"log_segment_bytes": "300"} if state_from == "snapshot-and-tail" else {}
    cluster = ProxiedBroker(tmp_path / "data", **props)
    try:
        create_topic(cluster.direct, "dedup", 1)
        with RawClient(cluster.direct) as c:
            pid = init_producer_id(c)
            for k in range(7):  # seq 0..20 at offsets 0..20; the last one's response is "lost"
                r = produce(c, "dedup", idempotent_batch(pid, 0, 3 * k, 3))
                assert (r.error_code, r.base_offset) == (ErrorCode.none, 3 * k)
        cluster.stop()
        if state_from in ("snapshot-and-tail", "log-only"):
            simulate_crash(cluster.data_dir)
        left = [o for o, _ in _snapshots(cluster.data_dir)["dedup-0"]]
        if state_from == "snapshot-and-tail":
            assert left and left[-1] <= 18, left  # the lost batch must come from the tail
        elif state_from == "log-only":
            assert left == []
        else:
            assert left[-1] == 21
        if state_from == "damaged-snapshot":
            # A clean shutdown, but the disk damaged the only snapshot (it fails its CRC).
            path = cluster.data_dir / "dedup-0" / f"{21:020d}{SNAPSHOT_SUFFIX}"
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF
            path.write_bytes(bytes(data))
        cluster.start()
        with RawClient(cluster.direct) as c:
            retry = produce(c, "dedup", idempotent_batch(pid, 0, 18, 3))
            assert (retry.error_code, retry.base_offset) == (ErrorCode.none, 18)
            older = produce(c, "dedup", idempotent_batch(pid, 0, 6, 3))  # 5th newest batch
            assert (older.error_code, older.base_offset) == (ErrorCode.none, 6)
            # Like Kafka, only the last five batches are remembered: an older retry is refused.
            oldest = produce(c, "dedup", idempotent_batch(pid, 0, 0, 3))
            assert oldest.error_code == ErrorCode.out_of_order_sequence_number
            gap = produce(c, "dedup", idempotent_batch(pid, 0, 30, 3))
            assert gap.error_code == ErrorCode.out_of_order_sequence_number
            following = produce(c, "dedup", idempotent_batch(pid, 0, 21, 3))
            assert (following.error_code, following.base_offset) == (ErrorCode.none, 21)
            # Producer ids are never handed out twice, crash or not.
            other = init_producer_id(c)
            assert other != pid
            first = produce(c, "dedup", idempotent_batch(other, 0, 0, 1))
            assert (first.error_code, first.base_offset) == (ErrorCode.none, 24)
        assert values_of(read_partition(cluster.direct, "dedup", 0)) == [*range(24), 0]
    finally:
        cluster.close()


@pytest.mark.parametrize("version", [3, 9])
def test_out_of_order_sequence(cluster: ProxiedBroker, version: int) -> None:
    create_topic(cluster.direct, "seq", 1)
    with RawClient(cluster.direct) as c:
        pid = init_producer_id(c)

        def send(epoch: int, seq: int, count: int) -> tuple[ErrorCode, int]:
            r = produce(c, "seq", idempotent_batch(pid, epoch, seq, count), version=version)
            return r.error_code, r.base_offset

        assert send(0, 0, 3) == (ErrorCode.none, 0)
        assert send(0, 5, 1)[0] == ErrorCode.out_of_order_sequence_number  # a gap
        assert send(0, 2, 3)[0] == ErrorCode.out_of_order_sequence_number  # overlaps, no retry
        assert send(0, 0, 3) == (ErrorCode.none, 0)  # a retry: the original offset
        assert send(0, 3, 2) == (ErrorCode.none, 3)
        assert send(1, 4, 1)[0] == ErrorCode.out_of_order_sequence_number  # new epoch, seq != 0
        assert send(0, 5, 1) == (ErrorCode.none, 5)
    assert values_of(read_partition(cluster.direct, "seq", 0)) == list(range(6))


@pytest.mark.parametrize("version", [3, 9])
def test_stale_producer_epoch(cluster: ProxiedBroker, version: int) -> None:
    create_topic(cluster.direct, "epoch", 1)
    with RawClient(cluster.direct) as c:
        pid = init_producer_id(c)

        def send(epoch: int, seq: int, count: int) -> tuple[ErrorCode, int]:
            r = produce(c, "epoch", idempotent_batch(pid, epoch, seq, count), version=version)
            return r.error_code, r.base_offset

        assert send(0, 0, 2) == (ErrorCode.none, 0)
        assert send(1, 0, 2) == (ErrorCode.none, 2)  # the producer bumped its epoch
        assert send(0, 2, 1)[0] == ErrorCode.invalid_producer_epoch
        assert send(0, 0, 2)[0] == ErrorCode.invalid_producer_epoch  # even a retry of epoch 0
        assert send(1, 2, 1) == (ErrorCode.none, 4)
    assert values_of(read_partition(cluster.direct, "epoch", 0)) == [0, 1, 0, 1, 2]


def test_sequence_numbers_wrap_at_int32_max(cluster: ProxiedBroker) -> None:
    create_topic(cluster.direct, "wrap", 1)
    top = 2**31 - 1
    with RawClient(cluster.direct) as c:
        pid = init_producer_id(c)
        r = produce(c, "wrap", idempotent_batch(pid, 0, top - 3, 2))  # a new producer: any seq
        assert (r.error_code, r.base_offset) == (ErrorCode.none, 0)
        spanning = encode_batch(  # sequences top-1, top, 0
            [SimpleRecord(b"%d" % seq, timestamp=TS) for seq in (top - 1, top, 0)],
            producer_id=pid, producer_epoch=0, base_sequence=top - 1,
        )
        assert produce(c, "wrap", spanning).base_offset == 2
        assert produce(c, "wrap", spanning).base_offset == 2  # its retry
        after = produce(c, "wrap", idempotent_batch(pid, 0, 1, 2))
        assert (after.error_code, after.base_offset) == (ErrorCode.none, 5)
        assert produce(c, "wrap", idempotent_batch(pid, 0, 0, 1)).error_code == (
            ErrorCode.out_of_order_sequence_number
        )
    assert values_of(read_partition(cluster.direct, "wrap", 0)) == [
        top - 3, top - 2, top - 1, top, 0, 1, 2
    ]


def test_idempotent_batch_without_sequence_is_refused(cluster: ProxiedBroker) -> None:
    create_topic(cluster.direct, "noseq", 1)
    with RawClient(cluster.direct) as c:
        pid = init_producer_id(c)
        r = produce(c, "noseq", idempotent_batch(pid, 0, -1, 2))
    assert r.error_code == ErrorCode.invalid_record


# -- a model of Kafka's sequence rules, checked against the broker ------------------------------

_TOP = 2**31 - 1


class _ProducerModel:
    """What Kafka answers an idempotent producer's batches (KIP-98, with KIP-360's epoch bumps):
    a retry of one of the last five batches of the current epoch gets its original offset; an
    older epoch is INVALID_PRODUCER_EPOCH; a newer epoch must start at sequence 0; within an
    epoch each batch must follow the previous one (wrapping after 2**31-1); a producer the
    partition has never seen may start anywhere."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.batches: list[tuple[int, int, int]] = []  # first seq, last seq, first offset

    def expect(self, epoch: int, seq: int, count: int, log_end: int) -> tuple[ErrorCode, int]:
        last = (seq + count - 1) % (_TOP + 1)
        if self.epoch == epoch:
            for first_seq, last_seq, offset in self.batches:
                if (first_seq, last_seq) == (seq, last):
                    return ErrorCode.none, offset
        if self.epoch is not None:
            if epoch < self.epoch:
                return ErrorCode.invalid_producer_epoch, -1
            if epoch > self.epoch and seq != 0:
                return ErrorCode.out_of_order_sequence_number, -1
            if epoch == self.epoch:
                prev = self.batches[-1][1]
                if seq != (prev + 1) % (_TOP + 1):
                    return ErrorCode.out_of_order_sequence_number, -1
        if self.epoch != epoch:
            self.batches = []
        self.epoch = epoch
        self.batches = [*self.batches, (seq, last, log_end)][-5:]
        return ErrorCode.none, log_end

    def next_seq(self) -> int:
        return (self.batches[-1][1] + 1) % (_TOP + 1) if self.batches else 0


_ops = st.lists(
    st.tuples(
        st.sampled_from(["next", "next", "next", "retry", "retry", "gap", "zero", "bump", "stale"]),
        st.integers(1, 3),  # records in the batch
        st.integers(0, 7),  # which earlier batch to retry / how far to jump
    ),
    min_size=4,
    max_size=20,
)


def test_broker_follows_kafka_sequence_rules(tmp_path: Path) -> None:
    with BrokerThread(local_config(tmp_path / "data")) as broker:
        address = f"127.0.0.1:{broker.broker.port}"
        create_topic(address, "model", 1)
        with RawClient(address) as c:
            log_end = [0]

            @settings(max_examples=150, deadline=None, database=None)
            @given(first_seq=st.sampled_from([0, 7, _TOP - 1]), ops=_ops)
            def run(first_seq: int, ops: list[tuple[str, int, int]]) -> None:
                pid = init_producer_id(c)
                model = _ProducerModel()
                sent: list[tuple[int, int, int]] = []  # every accepted (epoch, seq, count)
                for i, (kind, count, k) in enumerate(ops):
                    epoch = model.epoch or 0
                    seq = first_seq if i == 0 else model.next_seq()
                    if kind == "retry" and sent:
                        epoch, seq, count = sent[-1 - k % len(sent)]
                    elif kind == "gap":
                        seq = (seq + k + 1) % (_TOP + 1)
                    elif kind == "zero":
                        seq = 0
                    elif kind == "bump":
                        epoch, seq = epoch + 1, 0 if k % 2 == 0 else seq
                    elif kind == "stale":
                        epoch = max(0, epoch - 1)
                    expected = model.expect(epoch, seq, count, log_end[0])
                    r = produce(c, "model", idempotent_batch(pid, epoch, seq, count))
                    got = (r.error_code, r.base_offset if r.error_code == ErrorCode.none else -1)
                    assert got == expected, (kind, epoch, seq, count)
                    if got[0] == ErrorCode.none and got[1] == log_end[0]:
                        log_end[0] += count
                        sent.append((epoch, seq, count))

            run()
        assert len(read_partition(address, "model", 0)) >= 1
