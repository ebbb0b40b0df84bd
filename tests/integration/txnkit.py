"""Shared helpers for the transaction integration tests.

- :class:`TxnBroker`: an in-process broker (:class:`BrokerThread`) tuned for transactions,
  restartable on the same port and data directory, optionally behind a
  :class:`~faultproxy.FaultProxy`.
- :class:`ServeProcess`: ``python -m odradek serve`` as a child process, so the broker itself
  can be killed with SIGKILL and restarted on the same port and data directory.
- Reading back: :func:`consume` (a confluent-kafka consumer at a given isolation level),
  :func:`read_log` (every batch of a partition, control batches included, with raw Fetch) and
  :func:`settle` (read_committed computed on the client side from the markers in the log, so
  what the broker *wrote* can be checked independently of how it *serves* read_committed).
- Raw KIP-664 requests (:func:`describe_transaction`, :func:`list_transactions`) and the
  read_committed views of the broker (:func:`stable_fetch`, :func:`list_offset`).
"""

from __future__ import annotations

import datetime
import signal
import struct
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from faultproxy import FaultProxy
from groupkit import wait_until
from kio.schema.describe_transactions.v0 import request as describe_req
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_req
from kio.schema.list_offsets.v5 import request as list_offsets_req
from kio.schema.list_transactions.v1 import request as list_req
from rawclient import RawClient

from odradek.broker.runner import BrokerThread, local_config
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    Record,
    control_type,
    decode_records,
    read_batch_header,
)
from odradek.protocol.varint import read_uvarint

__all__ = [
    "BROKER_PROPERTIES",
    "READ_COMMITTED",
    "READ_UNCOMMITTED",
    "TIMEOUT",
    "Batch",
    "Marker",
    "Rec",
    "ServeProcess",
    "Settled",
    "StableView",
    "TxnBroker",
    "TxnView",
    "consume",
    "create_topic",
    "describe_transaction",
    "list_offset",
    "list_transactions",
    "markers",
    "read_log",
    "settle",
    "stable_fetch",
    "txn_producer",
    "wait_until",
]

TIMEOUT = 30.0
READ_UNCOMMITTED = 0
READ_COMMITTED = 1
LATEST = -1

#: Broker settings for every transaction test: timed-out transactions are found within 200 ms,
#: and the internal topics are small so that creating them is quick.
BROKER_PROPERTIES: Mapping[str, str] = {
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "200",
    "transaction.state.log.num.partitions": "3",
    "offsets.topic.num.partitions": "3",
    "group.initial.rebalance.delay.ms": "0",
}


def _kwargs(properties: Mapping[str, str]) -> dict[str, str]:
    return {k.replace(".", "_"): v for k, v in properties.items()}


# -- brokers ------------------------------------------------------------------------------------


class TxnBroker:
    """A broker on a background thread, restartable on its first port with the same data
    directory. With ``proxied`` it advertises a fault proxy in front of it, so clients go
    through the proxy (whose address never changes) while :attr:`direct` reaches the broker.

    Owned by the test thread."""

    def __init__(self, data_dir: Path, *, proxied: bool = False, **properties: str) -> None:
        self.data_dir = data_dir
        self.properties = {**_kwargs(BROKER_PROPERTIES), **properties}
        self.proxy = FaultProxy().start() if proxied else None
        self.port = 0
        self.thread: BrokerThread | None = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        extra = {}
        if self.proxy is not None:
            extra["advertised_listeners"] = f"PLAINTEXT://{self.proxy.address}"
        config = local_config(
            self.data_dir, listen=f"127.0.0.1:{self.port}", **extra, **self.properties
        )
        thread = BrokerThread(config).start()
        self.port = thread.broker.port
        if self.proxy is not None:
            self.proxy.upstream = ("127.0.0.1", self.port)
        self.thread = thread

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    def restart(self) -> None:
        """A clean stop and a start on the same port and data directory."""
        self.stop()
        self.start()

    @property
    def direct(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        """What clients should use: the proxy when there is one."""
        return self.proxy.address if self.proxy is not None else self.direct

    def close(self) -> None:
        self.stop()
        if self.proxy is not None:
            self.proxy.stop()


class ServeProcess:
    """``python -m odradek serve`` in a child process on 127.0.0.1, with
    :data:`BROKER_PROPERTIES` in a properties file. :meth:`kill` is SIGKILL (no clean
    shutdown: the next start recovers the logs); :meth:`start` after it reuses the port and
    data directory. The broker's stderr goes to ``<work>/broker.log`` (see :meth:`log_tail`).

    Owned by the test thread."""

    def __init__(self, work: Path, **properties: str) -> None:
        self.work = work
        self.data_dir = work / "data"
        self.config = work / "server.properties"
        props = {**BROKER_PROPERTIES, **properties}
        self.config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log = work / "broker.log"
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self) -> ServeProcess:
        assert self.proc is None, "already running"
        with self.log.open("a") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "odradek", "serve", "--log-level", "WARNING",
                 "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
                 "--config", str(self.config)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the broker prints its address once it serves
        if not line.startswith("odradek listening on "):
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"broker did not start: {line!r}\n{self.log_tail()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.proc = proc
        self.starts += 1
        return self

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def stop(self) -> int:
        """SIGTERM and wait: the broker's exit status (0 after a clean shutdown)."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        return code

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text()[-chars:] if self.log.exists() else ""


# -- clients ------------------------------------------------------------------------------------


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=10)


def txn_producer(bootstrap: str, transactional_id: str, **config: Any) -> Producer:
    """A confluent-kafka transactional producer, initialised (InitProducerId done)."""
    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "linger.ms": 1,
        "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        "log_level": 0,  # fencing and restarts are expected; keep librdkafka quiet
        **config,
    })
    p.init_transactions(TIMEOUT)
    return p


Rec = tuple[int, int, bytes]  # partition, offset, value


def consume(
    bootstrap: str,
    topic: str,
    partitions: int,
    isolation: str,
    *,
    expect: int | None = None,
    timeout: float = TIMEOUT,
) -> list[Rec]:
    """Every record a consumer at ``isolation`` ("read_committed" / "read_uncommitted") gets
    from offset 0 until it reaches the end of every partition (for read_committed the end is
    the last stable offset), sorted by partition and offset. With ``expect``, keeps reading
    until at least that many records arrived and every partition is at its end."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "txnkit-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
        "fetch.wait.max.ms": 50,
        "log_level": 0,
    })
    out: list[Rec] = []
    at_end: set[int] = set()
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

        def done() -> bool:
            return len(at_end) == partitions and (expect is None or len(out) >= expect)

        def step() -> None:
            for m in c.consume(num_messages=500, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise KafkaException(err)
                at_end.discard(m.partition())
                out.append((m.partition(), m.offset(), m.value()))

        wait_until(done, f"{isolation} read of {topic}", timeout=timeout, step=step,
                   detail=lambda: f"{len(out)} records, at end: {sorted(at_end)}")
    finally:
        c.close()
    return sorted(out)


# -- the log as written -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    header: BatchHeader
    records: tuple[Record, ...]

    @property
    def marker(self) -> int:
        """CONTROL_COMMIT / CONTROL_ABORT for a control batch, -1 otherwise."""
        if not self.header.is_control or not self.records:
            return -1
        return control_type(self.records[0].key)


@dataclass(frozen=True, slots=True)
class Marker:
    offset: int
    producer_id: int
    producer_epoch: int
    commit: bool


def read_log(address: str, topic: str, partition: int) -> list[Batch]:
    """Every batch of the partition up to its high watermark (read_uncommitted raw Fetch),
    control batches included."""
    out: list[Batch] = []
    offset = 0
    with RawClient(address) as c:
        while True:
            data = _fetch(c, topic, partition, offset, READ_UNCOMMITTED)
            assert data.error_code == ErrorCode.none, data.error_code
            if offset >= data.high_watermark:
                return out
            blob = memoryview(data.records or b"")
            start, pos = offset, 0
            while pos + BATCH_HEADER_SIZE <= len(blob):
                h = read_batch_header(blob, pos)
                if pos + h.size > len(blob):
                    break
                if h.last_offset >= offset:
                    out.append(Batch(h, tuple(decode_records(blob[pos : pos + h.size]))))
                    offset = h.next_offset
                pos += h.size
            assert offset > start, f"no progress reading {topic}-{partition} at {offset}"


def markers(batches: Iterable[Batch]) -> list[Marker]:
    return [
        Marker(b.header.base_offset, b.header.producer_id, b.header.producer_epoch,
               b.marker == CONTROL_COMMIT)
        for b in batches
        if b.marker in (CONTROL_COMMIT, CONTROL_ABORT)
    ]


@dataclass(frozen=True, slots=True)
class Settled:
    """A partition's data records by the fate of their transaction, each in offset order."""

    committed: list[Record] = field(default_factory=list)  # and non-transactional ones
    aborted: list[Record] = field(default_factory=list)
    undecided: list[Record] = field(default_factory=list)  # no marker yet

    @property
    def committed_values(self) -> list[bytes]:
        return [r.value or b"" for r in self.committed]

    @property
    def aborted_values(self) -> list[bytes]:
        return [r.value or b"" for r in self.aborted]

    @property
    def undecided_values(self) -> list[bytes]:
        return [r.value or b"" for r in self.undecided]


def settle(batches: Iterable[Batch]) -> Settled:
    """What read_committed must deliver, computed from the log: a transactional batch belongs
    to the next marker of its producer id after it (COMMIT: delivered, ABORT: dropped)."""
    out = Settled()
    open_txns: dict[int, list[Record]] = {}
    for b in batches:
        h = b.header
        if h.is_control:
            pending = open_txns.pop(h.producer_id, [])
            (out.committed if b.marker == CONTROL_COMMIT else out.aborted).extend(pending)
        elif h.is_transactional:
            open_txns.setdefault(h.producer_id, []).extend(b.records)
        else:
            out.committed.extend(b.records)
    for pending in open_txns.values():
        out.undecided.extend(pending)
    for records in (out.committed, out.aborted, out.undecided):
        records.sort(key=lambda r: r.offset)
    return out


# -- raw requests -------------------------------------------------------------------------------


def _fetch(c: RawClient, topic: str, partition: int, offset: int, isolation: int) -> Any:
    body = fetch_req.FetchRequest(
        max_wait=datetime.timedelta(0),
        min_bytes=0,
        isolation_level=isolation,
        topics=(
            fetch_req.FetchTopic(
                topic=topic,
                partitions=(
                    fetch_req.FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )
    return c.request(body).responses[0].partitions[0]


@dataclass(frozen=True, slots=True)
class StableView:
    """A read_committed Fetch from offset 0: the broker's view of a partition."""

    high_watermark: int
    last_stable_offset: int
    aborted: tuple[tuple[int, int], ...]  # (producer id, first offset) of aborted txns
    data_offsets: tuple[int, ...]  # offsets of the data records returned


def stable_fetch(address: str, topic: str, partition: int) -> StableView:
    with RawClient(address) as c:
        data = _fetch(c, topic, partition, 0, READ_COMMITTED)
    assert data.error_code == ErrorCode.none, data.error_code
    offsets: list[int] = []
    blob = memoryview(data.records or b"")
    pos = 0
    while pos + BATCH_HEADER_SIZE <= len(blob):
        h = read_batch_header(blob, pos)
        if pos + h.size > len(blob):
            break
        if not h.is_control:
            offsets.extend(r.offset for r in decode_records(blob[pos : pos + h.size]))
        pos += h.size
    return StableView(
        int(data.high_watermark),
        int(data.last_stable_offset),
        tuple(sorted((int(a.producer_id), int(a.first_offset))
                     for a in data.aborted_transactions or ())),
        tuple(offsets),
    )


def list_offset(address: str, topic: str, partition: int, isolation: int) -> int:
    """ListOffsets "latest" at ``isolation`` (0: the high watermark, 1: the last stable
    offset)."""
    body = list_offsets_req.ListOffsetsRequest(
        replica_id=-1,
        isolation_level=isolation,
        topics=(
            list_offsets_req.ListOffsetsTopic(
                name=topic,
                partitions=(
                    list_offsets_req.ListOffsetsPartition(
                        partition_index=partition, current_leader_epoch=-1, timestamp=LATEST
                    ),
                ),
            ),
        ),
    )
    with RawClient(address) as c:
        resp = c.request(body).topics[0].partitions[0]
    assert resp.error_code == ErrorCode.none, resp.error_code
    return int(resp.offset)


@dataclass(frozen=True, slots=True)
class TxnView:
    """DescribeTransactions' answer for one transactional id."""

    error_code: ErrorCode
    state: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    partitions: frozenset[tuple[str, int]]


def describe_transaction(address: str, transactional_id: str) -> TxnView:
    """DescribeTransactions v0 for one id. The response is decoded here rather than by kio:
    Kafka sends a start time of -1 for an id with no transaction started, which kio's
    timestamp type refuses."""
    with RawClient(address) as c:
        c.send(describe_req.DescribeTransactionsRequest(transactional_ids=(transactional_id,)))
        (size,) = struct.unpack(">i", c._exactly(4))
        r = _Reader(c._exactly(size))
    r.signed(4)  # correlation id
    r.tags()  # flexible response header
    r.signed(4)  # throttle time
    assert r.uvarint() - 1 == 1, "one transactional id asked, one answered"
    error_code = ErrorCode(r.signed(2))
    assert r.string() == transactional_id
    state = r.string()
    timeout_ms = r.signed(4)
    r.signed(8)  # start time
    producer_id = r.signed(8)
    producer_epoch = r.signed(2)
    partitions = set()
    for _ in range(r.uvarint() - 1):
        topic = r.string()
        for _ in range(r.uvarint() - 1):
            partitions.add((topic, r.signed(4)))
        r.tags()
    r.tags()
    return TxnView(error_code, state, producer_id, producer_epoch, timeout_ms,
                   frozenset(partitions))


class _Reader:
    """Just enough of Kafka's flexible encoding to read DescribeTransactions v0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def signed(self, size: int) -> int:
        value = int.from_bytes(self.data[self.pos : self.pos + size], "big", signed=True)
        self.pos += size
        return value

    def uvarint(self) -> int:
        value, self.pos = read_uvarint(self.data, self.pos)
        return value

    def string(self) -> str:
        n = self.uvarint() - 1
        assert n >= 0, "unexpected null string"
        text = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return text

    def tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.pos += self.uvarint()  # size, then skip the value


def list_transactions(
    address: str, states: Iterable[str] = (), producer_ids: Iterable[int] = ()
) -> tuple[dict[str, tuple[int, str]], tuple[str, ...]]:
    """ListTransactions: transactional id -> (producer id, state), and the unknown state
    filters."""
    with RawClient(address) as c:
        resp = c.request(
            list_req.ListTransactionsRequest(
                state_filters=tuple(states), producer_id_filters=tuple(producer_ids)
            )
        )
    assert resp.error_code == ErrorCode.none, resp.error_code
    return (
        {t.transactional_id: (int(t.producer_id), t.transaction_state)
         for t in resp.transaction_states},
        tuple(resp.unknown_state_filters),
    )
