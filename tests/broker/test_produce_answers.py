"""Review (session 9): the Produce handler's answers, written with struct (7b77b3b), read back
by kio for every served version and acks: offsets, per-partition errors (unknown topic or
partition, a corrupt batch, KIP-467 record errors with their message), and no answer for
acks=0."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kio.serial import entity_reader, entity_writer

from odradek.broker.app import Broker
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.runner import local_config
from odradek.cluster.model import PartitionState
from odradek.errors import ErrorCode
from odradek.protocol.messages import request_schema, response_schema
from odradek.protocol.records import SimpleRecord, encode_batch
from staticview import reassigned, registered


def _frame(version: int, acks: int, topics: list[tuple[str, list[tuple[int, bytes]]]]) -> bytes:
    schema = request_schema(0, version)
    assert schema is not None
    mod = sys.modules[schema.__module__]
    body = schema(
        transactional_id=None, acks=acks, timeout=datetime.timedelta(seconds=5),
        topic_data=tuple(
            mod.TopicProduceData(name=name, partition_data=tuple(
                mod.PartitionProduceData(index=i, records=r) for i, r in parts))
            for name, parts in topics
        ),
    )
    header_cls = schema.__header_schema__
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(
        request_api_key=0, request_api_version=version, correlation_id=41, client_id="t"))
    entity_writer(schema)(buf, body)
    return buf.getvalue()


@contextlib.contextmanager
def _started(
    tmp_path: Path, topics: dict[str, tuple[int, dict[str, str]]]
) -> Iterator[tuple[asyncio.AbstractEventLoop, Broker]]:
    """A started single-node broker with ``topics`` (name -> partitions, configs), and the
    event loop it runs on; stopped afterwards."""
    loop = asyncio.new_event_loop()
    broker = Broker(local_config(tmp_path / "data"))
    try:
        loop.run_until_complete(broker.start())
        for name, (partitions, configs) in topics.items():
            loop.run_until_complete(
                broker.topics.create(name, num_partitions=partitions, configs=configs)
            )
        yield loop, broker
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()


def _read(version: int, answer: bytes) -> Any:
    cls = response_schema(0, version)
    assert cls is not None
    (size,) = struct.unpack_from(">i", answer)
    assert size == len(answer) - 4
    header, n = entity_reader(cls.__header_schema__)(answer[4:], 0)
    assert header.correlation_id == 41
    body, end = entity_reader(cls)(answer[4:], n)
    assert n + end == size  # the reader returns what it consumed
    return body


@pytest.mark.parametrize("version", range(3, 12))
def test_answers_read_back_by_kio(tmp_path: Path, version: int) -> None:
    with _started(tmp_path, {"t": (1, {}), "c": (1, {"cleanup.policy": "compact"})}) as (
        loop, broker
    ):
        dispatcher = Dispatcher(broker)
        good = encode_batch([SimpleRecord(b"v", b"k", timestamp=1)])
        corrupt = bytearray(good)
        corrupt[-1] ^= 0xFF  # the CRC no longer matches
        keyless = encode_batch([SimpleRecord(b"v", b"k", timestamp=1),
                                SimpleRecord(b"v", None, timestamp=1)])

        def produce(acks: int) -> Any:
            answer = dispatcher(_frame(version, acks, [
                ("t", [(0, good), (5, good)]), ("nope", [(0, good)]),
                ("t", [(0, bytes(corrupt))]), ("c", [(0, keyless)]),
            ]))
            if answer is not None and not isinstance(answer, bytes):
                answer = loop.run_until_complete(answer)
            return answer

        assert produce(0) is None
        for acks in (1, -1):
            body = _read(version, produce(acks))
            got = [(t.name, p.index, p.error_code) for t in body.responses
                   for p in t.partition_responses]
            assert got == [
                ("t", 0, ErrorCode.none), ("t", 5, ErrorCode.unknown_topic_or_partition),
                ("nope", 0, ErrorCode.unknown_topic_or_partition),
                ("t", 0, ErrorCode.corrupt_message), ("c", 0, ErrorCode.invalid_record),
            ]
            first = body.responses[0].partition_responses[0]
            assert first.base_offset == (1 if acks == 1 else 2)
            invalid = body.responses[3].partition_responses[0]
            if version >= 8:
                assert [e.batch_index for e in invalid.record_errors] == [1]
                assert invalid.error_message
        assert broker.topics.log("t", 0).log_end_offset == 3


def test_acks_all_on_one_replica_is_answered_at_once_with_the_high_watermark_past_it(
    tmp_path: Path,
) -> None:
    """Issue 11 review (session 10): on a partition whose only replica is the leader, acks=all
    is complete when the append is: the dispatcher answers at once (no replication wait), the
    records are in the log and the high watermark covers them, and a fetch waiting on the
    partition is woken by the append. With ``min.insync.replicas`` above the one replica,
    acks=all is refused (NOT_ENOUGH_REPLICAS) and nothing is written, while acks=1 is not."""
    with _started(tmp_path, {"t": (1, {}), "strict": (1, {"min.insync.replicas": "2"})}) as (
        loop, broker
    ):
        dispatcher = Dispatcher(broker)
        batch = encode_batch([SimpleRecord(b"v%d" % i, timestamp=1) for i in range(3)])
        plog = broker.topics.log("t", 0)
        for round_ in range(2):

            async def waiting_fetch() -> asyncio.Future[int]:
                return broker.append_watch.watch([("t", 0)])

            woken = loop.run_until_complete(waiting_fetch())
            answer = dispatcher(_frame(11, -1, [("t", [(0, batch)])]))
            # Answered by the handler itself: nothing was left to wait for.
            assert isinstance(answer, bytes)
            assert plog.log_end_offset == 3 * (round_ + 1)
            assert plog.high_watermark == plog.log_end_offset
            assert woken.done()
            part = _read(11, answer).responses[0].partition_responses[0]
            assert (part.error_code, part.base_offset) == (ErrorCode.none, 3 * round_)

        strict = broker.topics.log("strict", 0)
        answer = dispatcher(_frame(11, -1, [("strict", [(0, batch)])]))
        assert isinstance(answer, bytes)
        part = _read(11, answer).responses[0].partition_responses[0]
        assert part.error_code == ErrorCode.not_enough_replicas
        assert (strict.log_end_offset, strict.high_watermark) == (0, 0)
        answer = dispatcher(_frame(11, 1, [("strict", [(0, batch)])]))
        assert isinstance(answer, bytes)
        part = _read(11, answer).responses[0].partition_responses[0]
        assert (part.error_code, part.base_offset) == (ErrorCode.none, 0)
        assert (strict.log_end_offset, strict.high_watermark) == (3, 3)


@pytest.mark.parametrize("acks", [1, -1])
def test_each_partition_is_appended_in_its_own_leader_epoch(tmp_path: Path, acks: int) -> None:
    """Session 10 review: one request's partitions are each appended in their own leader
    epoch, a partition another broker leads is refused (NOT_LEADER_OR_FOLLOWER) without being
    written, and the partitions after it are appended as if it were not there."""
    with _started(tmp_path, {"t": (4, {})}) as (loop, broker):
        me = broker.node_id
        broker.cluster = reassigned(broker.cluster, {
            ("t", 1): PartitionState((me,), (me,), me, leader_epoch=7, partition_epoch=1),
            ("t", 2): PartitionState((99,), (99,), 99, leader_epoch=3, partition_epoch=1),
            ("t", 3): PartitionState((me,), (me,), me, leader_epoch=5, partition_epoch=1),
        }, extra_brokers=[registered(99)])
        dispatcher = Dispatcher(broker)
        batch = encode_batch([SimpleRecord(b"v", timestamp=1)])
        answer = dispatcher(_frame(11, acks, [("t", [(p, batch) for p in range(4)])]))
        assert isinstance(answer, bytes)
        got = [(p.index, p.error_code, p.base_offset)
               for p in _read(11, answer).responses[0].partition_responses]
        assert got == [(0, ErrorCode.none, 0), (1, ErrorCode.none, 0),
                       (2, ErrorCode.not_leader_or_follower, -1), (3, ErrorCode.none, 0)]
        logs = [broker.topics.log("t", p) for p in range(4)]
        assert [plog.log_end_offset for plog in logs] == [1, 1, 0, 1]
        assert [plog.high_watermark for plog in logs] == [1, 1, 0, 1]
        assert [logs[p].leader_epoch for p in (0, 1, 3)] == [0, 7, 5]
