"""Fetch responses sent from the segment files: byte-exact for every version and client,
``fetch.max.bytes`` honoured, a segment deleted mid-send still sent whole, a file that shrank
mid-send closing the connection, and the broker's memory flat under huge fetches."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import struct
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from rawclient import RawClient, request_class

from odradek.broker.runner import BrokerThread, local_config
from odradek.protocol.build import build
from odradek.protocol.records import read_batch_header

pytestmark = pytest.mark.integration

INT32_MAX = 2**31 - 1
FETCH_VERSIONS = range(4, 17)


# -- helpers ---------------------------------------------------------------------------------------


def produce_values(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1,
                   **conf: Any) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "message.max.bytes": 1_000_000, "enable.idempotence": False, **conf})
    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, value=v, key=str(i).encode(), partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


def fetch_request(version: int, topic: str, topic_id: uuid.UUID, offset: int = 0, *,
                  max_bytes: int = INT32_MAX, partition_max_bytes: int = INT32_MAX,
                  partitions: tuple[int, ...] = (0,)) -> Any:
    cls = request_class(1, version)
    mod = sys.modules[cls.__module__]
    parts = tuple(
        build(mod.FetchPartition, partition=p, current_leader_epoch=-1, fetch_offset=offset,
              last_fetched_epoch=-1, log_start_offset=-1, partition_max_bytes=partition_max_bytes)
        for p in partitions
    )
    return build(cls, replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=1,
                 max_bytes=max_bytes, isolation_level=0, session_id=0, session_epoch=-1,
                 topics=(build(mod.FetchTopic, topic=topic, topic_id=topic_id,
                               partitions=parts),),
                 forgotten_topics_data=(), rack_id="")


def topic_id_of(bootstrap: str, topic: str) -> uuid.UUID:
    from kio.schema.metadata.v12 import request as metadata_v12

    with RawClient(bootstrap) as c:
        body = c.request(metadata_v12.MetadataRequest(
            topics=(metadata_v12.MetadataRequestTopic(topic_id=None, name=topic),),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    (t,) = body.topics
    return t.topic_id  # type: ignore[no-any-return]


def records_of(body: Any, partition: int = 0) -> bytes:
    (t,) = body.responses
    for p in t.partitions:
        if p.partition_index == partition:
            assert p.error_code == 0, p.error_code
            return p.records or b""
    raise AssertionError(f"partition {partition} missing")


def batch_offsets(data: bytes) -> list[int]:
    return [offset for offset, _pos, _size in batches(data)]


def batches(data: bytes) -> list[tuple[int, int, int]]:
    """(base offset, position, size) of each batch."""
    out, pos = [], 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.append((h.base_offset, pos, h.size))
        pos += h.size
    return out


def expected_read(stored: bytes, offset: int, max_bytes: int) -> bytes:
    """What a fetch from ``offset`` may return: whole batches from the one holding it, within
    ``max_bytes``, or that first one alone if it is larger."""
    every = batches(stored)
    first = max(i for i, (o, _p, _n) in enumerate(every) if o <= offset)
    found = every[first:]
    start = end = found[0][1]
    for _o, p, n in found:
        if p + n - start > max_bytes:
            break
        end = p + n
    if end == start:
        end = start + found[0][2]
    return stored[start:end]


def segment_files(data_dir: Path, topic: str, partition: int = 0) -> list[Path]:
    return sorted((data_dir / f"{topic}-{partition}").glob("*.log"))


def slow_reader(bootstrap: str) -> RawClient:
    """A raw client whose socket takes little at a time, so the broker's send stalls."""
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(20)
    sock.connect((host, int(port)))
    client = RawClient.__new__(RawClient)
    client.sock = sock
    client.client_id = "slow"
    client.correlation_id = 0
    return client


# -- byte-exact through every version and client ---------------------------------------------------


@pytest.fixture
def big_topic(bootstrap: str) -> tuple[str, list[bytes]]:
    topic = f"files-{uuid.uuid4().hex[:6]}"
    rnd = os.urandom(300_000)
    # Values from 1 byte to 300 KB: batches both below and far above the inline limit.
    values = [rnd[: (i * 7919) % 300_000 + 1] for i in range(60)]
    produce_values(bootstrap, topic, values, **{"compression.type": "none"})
    return topic, values


def test_every_fetch_version_sends_the_stored_bytes(
    broker: BrokerThread, big_topic: tuple[str, list[bytes]]
) -> None:
    topic, _values = big_topic
    (segment,) = segment_files(broker.config.data_dir, topic)
    stored = segment.read_bytes()
    assert len(stored) > 4 * 1024 * 1024
    topic_id = topic_id_of(broker.bootstrap, topic)
    with RawClient(broker.bootstrap) as c:
        for version in FETCH_VERSIONS:
            body = c.request(fetch_request(version, topic, topic_id))
            assert records_of(body) == stored, f"Fetch v{version}"
            # From the middle of the log, capped by the request's max_bytes.
            offsets = batch_offsets(stored)
            for offset in (offsets[len(offsets) // 2], offsets[-1]):
                for max_bytes in (1, 70_000, 1_000_000):
                    part = records_of(c.request(
                        fetch_request(version, topic, topic_id, offset, max_bytes=max_bytes)))
                    assert part == expected_read(stored, offset, max_bytes), (version, offset)


def test_confluent_kafka_consumes_large_batches_byte_exact(
    bootstrap: str, big_topic: tuple[str, list[bytes]]
) -> None:
    topic, values = big_topic
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "fetch.max.bytes": 52_428_800,
                  "max.partition.fetch.bytes": 10_485_760})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < len(values) and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == values


def test_kafka_python_consumes_large_batches_byte_exact(
    bootstrap: str, big_topic: tuple[str, list[bytes]]
) -> None:
    topic, values = big_topic
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_bytes=52_428_800, max_partition_fetch_bytes=10_485_760,
                             consumer_timeout_ms=20_000)
    tp = KpTopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got: list[bytes] = []
    while len(got) < len(values):
        batch = consumer.poll(timeout_ms=20_000)
        assert batch, f"stalled after {len(got)} records"
        for records in batch.values():
            got.extend(r.value for r in records)
    consumer.close()
    assert got == values


def test_aiokafka_consumes_large_batches_byte_exact(
    bootstrap: str, big_topic: tuple[str, list[bytes]]
) -> None:
    topic, values = big_topic

    async def consume() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    fetch_max_bytes=52_428_800,
                                    max_partition_fetch_bytes=10_485_760)
        await consumer.start()
        try:
            tp = AioTopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got: list[bytes] = []
            while len(got) < len(values):
                batch = await asyncio.wait_for(consumer.getmany(timeout_ms=5000), 30)
                for records in batch.values():
                    got.extend(r.value for r in records)
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(consume()) == values


def test_mixed_partitions_and_pipelined_fetches_arrive_in_order(broker: BrokerThread) -> None:
    topic = f"mixed-{uuid.uuid4().hex[:6]}"
    big = os.urandom(400_000)
    values = []
    for i in range(30):  # partition 1 gets large records, 0 and 2 small ones
        values.append(b"s%d" % i if i % 3 != 1 else big[i:])
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(10)
    produce_values(broker.bootstrap, topic, values, partitions=3, **{"compression.type": "none"})
    stored = [segment_files(broker.config.data_dir, topic, p)[0].read_bytes() for p in range(3)]
    assert len(stored[1]) > 1_000_000 and len(stored[0]) < 10_000
    topic_id = topic_id_of(broker.bootstrap, topic)
    with RawClient(broker.bootstrap) as c:
        requests = [fetch_request(v, topic, topic_id, partitions=(0, 1, 2)) for v in (16, 4, 12)]
        requests.append(fetch_request(16, topic, topic_id, 5, partitions=(1,)))
        for r in requests:  # pipelined: every request before any response is read
            c.send(r)
        for r in requests[:3]:
            body = c.receive(1, type(r).__version__)
            assert [records_of(body, p) for p in range(3)] == stored
        body = c.receive(1, 16)
        assert records_of(body, 1) == expected_read(stored[1], 5, INT32_MAX)


# -- fetch.max.bytes ---------------------------------------------------------------------------------


def test_fetch_max_bytes_caps_a_response_but_never_the_first_batch(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", fetch_max_bytes="100000")
    with BrokerThread(config) as b:
        topic = f"cap-{uuid.uuid4().hex[:6]}"
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0,
                      "enable.idempotence": False, "compression.type": "none"})
        for i in range(20):
            # One batch each (flushed one by one): 30 KB, the last two 150 KB.
            p.produce(topic, value=bytes([i]) * (150_000 if i >= 18 else 30_000), partition=0)
            assert p.flush(10) == 0
        topic_id = topic_id_of(b.bootstrap, topic)
        with RawClient(b.bootstrap) as c:
            for version in (4, 11, 12, 16):
                # The broker's cap applies even when the request allows 2 GiB ...
                data = records_of(c.request(fetch_request(version, topic, topic_id)))
                assert batch_offsets(data) == [0, 1, 2], f"v{version}"
                # ... the request's own limit when it is lower ...
                data = records_of(c.request(
                    fetch_request(version, topic, topic_id, max_bytes=70_000)))
                assert batch_offsets(data) == [0, 1]
                # ... and a first batch larger than the cap still goes out whole.
                data = records_of(c.request(fetch_request(version, topic, topic_id, 18)))
                assert batch_offsets(data) == [18] and len(data) > 150_000


# -- segments that change while a response is being sent --------------------------------------------


@pytest.fixture
def segmented(tmp_path: Path) -> Any:
    # Segments of 16 MB: more than a loopback socket's send buffer ever grows to (4 MB by
    # default), so a response holding one cannot leave the broker while the client waits.
    config = local_config(tmp_path / "data", log_segment_bytes=str(16 << 20),
                          log_segment_delete_delay_ms="0")
    with BrokerThread(config) as b:
        topic = f"seg-{uuid.uuid4().hex[:6]}"
        rnd = os.urandom(500_000)
        produce_values(b.bootstrap, topic, [rnd[i:] + bytes([i]) for i in range(90)],
                       **{"compression.type": "none"})
        segments = segment_files(b.config.data_dir, topic)
        assert len(segments) >= 3
        yield b, topic, segments


def _start_stalled_fetch(b: BrokerThread, topic: str) -> tuple[RawClient, int]:
    client = slow_reader(b.bootstrap)
    client.send(fetch_request(12, topic, uuid.UUID(int=0)))
    size = struct.unpack(">i", client._exactly(4))[0]
    # The response has begun: its slice of the first segment is open. Stop reading for a while
    # so the broker's sendfile stalls on a full socket.
    return client, size


def test_a_segment_deleted_while_it_is_sent_arrives_intact(segmented: Any) -> None:
    b, topic, segments = segmented
    first = segments[0]
    stored = first.read_bytes()
    client, size = _start_stalled_fetch(b, topic)
    assert size > len(stored)  # the whole first segment is in this response
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    second_base = int(segments[1].name.split(".")[0])
    futures = admin.delete_records([TopicPartition(topic, 0, second_base)])
    futures[TopicPartition(topic, 0, second_base)].result(10)
    deadline = time.monotonic() + 10
    while first.exists() or first.with_name(first.name + ".deleted").exists():
        assert time.monotonic() < deadline, "the first segment was not deleted"
        time.sleep(0.05)
    frame = client._exactly(size)
    client.close()
    # correlation id, empty header tags, then the body: decode it as the client would.
    from kio.serial import entity_reader

    from odradek.protocol.messages import response_schema

    body, _ = entity_reader(response_schema(1, 12))(frame, 5)
    assert records_of(body) == stored


def test_a_segment_that_shrinks_while_it_is_sent_closes_the_connection(
    segmented: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b, topic, segments = segmented
    first = segments[0]
    client, size = _start_stalled_fetch(b, topic)
    os.truncate(first, 1000)
    received = 0
    with pytest.raises((ConnectionError, OSError)):
        while received < size:
            chunk = client.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            received += len(chunk)
    client.close()
    assert received < size
    assert any("bytes promised" in r.getMessage() for r in caplog.records)
    # The broker still serves others (the later segments are untouched).
    later = int(segments[1].name.split(".")[0])
    with RawClient(b.bootstrap) as c:
        data = records_of(c.request(fetch_request(12, topic, uuid.UUID(int=0), later,
                                                  max_bytes=1_000_000)))
        assert batch_offsets(data)[0] == later


# -- memory -----------------------------------------------------------------------------------------


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_three_huge_fetches_leave_the_broker_memory_flat(tmp_path: Path) -> None:
    from test_bad_input import start_server

    server = start_server(tmp_path / "srv")
    try:
        topic = f"huge-{uuid.uuid4().hex[:6]}"
        block = os.urandom(1 << 20)
        # ~200 MB in one partition: 400 records of 512 KB, each a slice of random bytes.
        values = [block[i * 1024 : i * 1024 + 512 * 1024] for i in range(400)]
        produce_values(server.bootstrap, topic, values, **{"compression.type": "none"})
        topic_id = topic_id_of(server.bootstrap, topic)
        with RawClient(server.bootstrap) as warm:  # load the codecs before measuring
            records_of(warm.request(fetch_request(12, topic, topic_id, max_bytes=1_000_000)))
        baseline = _rss_bytes(server.proc.pid)
        fds = _open_fds(server.proc.pid)
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_bytes(server.proc.pid))
                time.sleep(0.002)

        sizes: list[int] = []
        errors: list[BaseException] = []

        def fetch(version: int) -> None:
            try:
                with RawClient(server.bootstrap) as c:
                    c.sock.settimeout(120)
                    data = records_of(c.request(fetch_request(version, topic, topic_id)))
                    sizes.append(len(data))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        sampler = threading.Thread(target=sample)
        sampler.start()
        fetchers = [threading.Thread(target=fetch, args=(v,)) for v in (10, 12, 16)]
        for t in fetchers:
            t.start()
        for t in fetchers:
            t.join(180)
        done.set()
        sampler.join()
        assert not errors, errors
        # fetch.max.bytes (55 MiB by default) bounds each response, plus at most one batch.
        assert len(sizes) == 3
        for n in sizes:
            assert 50 * 1024 * 1024 < n <= 57_671_680 + 1024 * 1024
        growth = peak - baseline
        assert growth < 64 * 1024 * 1024, f"broker RSS grew by {growth / 1e6:.0f} MB"
        # Every slice's descriptor is closed once its response is sent.
        deadline = time.monotonic() + 10
        while _open_fds(server.proc.pid) > fds:
            assert time.monotonic() < deadline, "file descriptors left open"
            time.sleep(0.02)
    finally:
        server.stop()
