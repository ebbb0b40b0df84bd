"""DescribeProducers (key 61) and WriteTxnMarkers (key 27) as raw requests through the
dispatcher: what each partition reports, and how an operator's marker ends a hanging
transaction (or is refused) in storage.

Each test starts a broker on a loop that is not running with a manual clock, hands encoded
request frames to its dispatcher as a connection would (running an awaitable answer on the
broker's loop), and looks at the partition logs directly.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import struct
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.schema.response_header.v1.header import ResponseHeader
from kio.serial import entity_reader, entity_writer

from odradek.broker.app import Broker
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.handlers import describe_producers, write_txn_markers
from odradek.broker.runner import local_config
from odradek.clock import ManualClock
from odradek.errors import ErrorCode
from odradek.protocol.messages import (
    Request,
    decode_request,
    encode_response,
    peek_preamble,
    request_schema,
    response_schema,
)
from odradek.protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    SimpleRecord,
    control_type,
    decode_records,
    encode_batch,
    read_batch_header,
)
from odradek.storage.log import PartitionLog
from odradek.storage.txn_index import AbortedTxn

NONE = ErrorCode.none
T0_MS = 1_700_000_000_000


def _write(cls: type[Any], value: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(cls)(buf, value)
    return buf.getvalue()


def _module(api_key: int, version: int) -> ModuleType:
    schema = request_schema(api_key, version)
    assert schema is not None
    return sys.modules[schema.__module__]


@dataclass
class Node:
    """A started broker (not serving), its dispatcher and its clock."""

    broker: Broker
    dispatcher: Dispatcher
    clock: ManualClock
    loop: asyncio.AbstractEventLoop
    correlation_id: int = 0

    def call(self, body: Any) -> Any:
        """Dispatch one request body and decode the answer, checking the framing."""
        schema = type(body)
        self.correlation_id += 1
        answer = self.dispatcher(_frame(body, self.correlation_id))
        if not isinstance(answer, bytes):  # FindCoordinator creating __transaction_state
            answer = self.loop.run_until_complete(answer)  # type: ignore[arg-type]
        assert isinstance(answer, bytes)
        (size,) = struct.unpack_from(">i", answer)
        assert size == len(answer) - 4
        response_cls = response_schema(schema.__api_key__, schema.__version__)
        header, n = entity_reader(ResponseHeader)(answer[4:], 0)
        response, m = entity_reader(response_cls)(answer[4:], n)
        assert header.correlation_id == self.correlation_id
        assert n + m == size
        return response

    def topic(self, partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.loop.run_until_complete(self.broker.topics.create(name, num_partitions=partitions))
        return name

    def log(self, topic: str, partition: int = 0) -> PartitionLog:
        return self.broker.topics.log(topic, partition)

    def produce(
        self,
        topic: str,
        producer_id: int,
        epoch: int,
        sequence: int,
        *,
        transactional: bool,
        partition: int = 0,
        count: int = 1,
    ) -> int:
        """Append ``count`` records of a producer as a client would; returns the base offset."""
        now = self.clock.milliseconds()
        batch = encode_batch(
            [SimpleRecord(b"v%d" % i, timestamp=now) for i in range(count)],
            producer_id=producer_id,
            producer_epoch=epoch,
            base_sequence=sequence,
            is_transactional=transactional,
        )
        plog = self.log(topic, partition)
        info = plog.append_as_leader(batch, leader_epoch=0)
        plog.update_high_watermark(plog.log_end_offset)
        return info.first_offset

    # -- requests ---------------------------------------------------------------------------

    def describe_producers(self, *topics: tuple[str, tuple[int, ...]]) -> Any:
        m = _module(61, 0)
        return self.call(m.DescribeProducersRequest(topics=tuple(
            m.TopicRequest(name=name, partition_indexes=parts) for name, parts in topics
        )))

    def producers(self, topic: str, partition: int = 0) -> tuple[Any, ...]:
        answer = self.describe_producers((topic, (partition,)))
        (p,) = answer.topics[0].partitions
        assert p.error_code == NONE, p
        return tuple(p.active_producers)

    def markers(self, *markers: tuple[int, int, bool, int, dict[str, tuple[int, ...]]]) -> Any:
        """WriteTxnMarkers v1 of (producer id, epoch, commit, coordinator epoch, partitions)."""
        m = _module(27, 1)
        return self.call(m.WriteTxnMarkersRequest(markers=tuple(
            m.WritableTxnMarker(
                producer_id=pid,
                producer_epoch=epoch,
                transaction_result=commit,
                coordinator_epoch=coordinator_epoch,
                topics=tuple(
                    m.WritableTxnMarkerTopic(name=name, partition_indexes=parts)
                    for name, parts in partitions.items()
                ),
            )
            for pid, epoch, commit, coordinator_epoch, partitions in markers
        )))

    def abort(self, topic: str, pid: int, epoch: int, coordinator_epoch: int = 0,
              partition: int = 0) -> ErrorCode:
        answer = self.markers((pid, epoch, False, coordinator_epoch, {topic: (partition,)}))
        return _codes(answer)[(pid, topic, partition)]


def _codes(answer: Any) -> dict[tuple[int, str, int], ErrorCode]:
    out = {}
    for marker in answer.markers:
        for t in marker.topics:
            for p in t.partitions:
                key = (marker.producer_id, t.name, p.partition_index)
                assert key not in out, f"{key} answered twice"
                out[key] = p.error_code
    return out


def _frame(body: Any, correlation_id: int = 1) -> bytes:
    schema = type(body)
    header_cls = schema.__header_schema__
    return _write(header_cls, header_cls(
        request_api_key=schema.__api_key__,
        request_api_version=schema.__version__,
        correlation_id=correlation_id,
        client_id="operator",
    )) + _write(schema, body)


def _decoded(body: Any) -> Request:
    frame = _frame(body)
    return decode_request(frame, peek_preamble(frame), type(body))


def _start(data_dir: Path) -> Iterator[Node]:
    loop = asyncio.new_event_loop()
    clock = ManualClock(T0_MS)
    broker = Broker(local_config(data_dir), clock=clock)
    loop.run_until_complete(broker.start())
    try:
        yield Node(broker, Dispatcher(broker), clock, loop)
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from _start(tmp_path / "data")


def _batches(plog: PartitionLog) -> list[tuple[Any, list[Any]]]:
    """Every batch of a partition with its records."""
    data = memoryview(plog.read(plog.log_start_offset, max_bytes=1 << 20).records)
    out = []
    pos = 0
    while pos < len(data):
        header = read_batch_header(data, pos)
        out.append((header, decode_records(data[pos : pos + header.size])))
        pos += header.size
    return out


# -- DescribeProducers --------------------------------------------------------------------------


def test_describe_producers_reports_each_producer(node: Node) -> None:
    topic = node.topic()
    assert node.producers(topic) == ()
    node.produce(topic, 7, 0, 0, transactional=False, count=3)
    node.clock.advance(500)
    first = node.produce(topic, 5, 2, 0, transactional=True)
    node.produce(topic, 5, 2, 1, transactional=True, count=2)
    txn, idem = node.producers(topic)  # by producer id
    assert (txn.producer_id, txn.producer_epoch, txn.last_sequence) == (5, 2, 2)
    assert txn.last_timestamp == T0_MS + 500
    assert (txn.coordinator_epoch, txn.current_txn_start_offset) == (-1, first)
    assert (idem.producer_id, idem.producer_epoch, idem.last_sequence) == (7, 0, 2)
    assert (idem.last_timestamp, idem.current_txn_start_offset) == (T0_MS, -1)


def test_describe_producers_errors_per_partition(node: Node) -> None:
    topic = node.topic(partitions=2)
    node.produce(topic, 3, 0, 0, transactional=False, partition=1)
    answer = node.describe_producers(
        (topic, (1, 2, -1)), ("no-such-topic", (0,)), ("bad/name", (0, 1))
    )
    by_topic = {t.name: t.partitions for t in answer.topics}
    ok, beyond, negative = by_topic[topic]
    assert (ok.partition_index, ok.error_code, ok.error_message) == (1, NONE, None)
    assert [p.producer_id for p in ok.active_producers] == [3]
    for p in (beyond, negative):
        assert p.error_code == ErrorCode.unknown_topic_or_partition
        assert p.active_producers == ()
    assert [(p.partition_index, p.error_code) for p in by_topic["no-such-topic"]] == [
        (0, ErrorCode.unknown_topic_or_partition)
    ]
    invalid = by_topic["bad/name"]
    assert [p.error_code for p in invalid] == [ErrorCode.invalid_topic_exception] * 2
    assert "illegal" in (invalid[0].error_message or "")


def test_describe_producers_of_an_internal_topic(node: Node) -> None:
    """Internal topics are described like any other (the coordinators' producers live there)."""
    group = "g"
    topic = node.topic()
    coordinator = node.broker.group_coordinator
    # As FindCoordinator would (a write to a missing offsets topic is COORDINATOR_NOT_AVAILABLE).
    node.loop.run_until_complete(node.broker.groups.ensure_offsets_topic())
    node.broker.groups.write(group, lambda: coordinator.txn_commit_offsets(
        group, producer_id=11, producer_epoch=4, member_id="", generation_id=-1,
        instance_id=None, offsets=[(topic, 0, 5, -1, None)],
    ))
    partition = coordinator.partition_for(group)
    (p,) = node.producers("__consumer_offsets", partition)
    assert (p.producer_id, p.producer_epoch) == (11, 4)
    assert p.current_txn_start_offset >= 0


def test_describe_producers_error_response_encodes() -> None:
    m = _module(61, 0)
    request = m.DescribeProducersRequest(
        topics=(m.TopicRequest(name="a", partition_indexes=(0, 3)),)
    )
    body = describe_producers.API.error_response(
        _decoded(request), ErrorCode.not_leader_or_follower
    )
    frame = encode_response(61, 1, body)
    assert [(p.partition_index, p.error_code) for p in body.topics[0].partitions] == [
        (0, ErrorCode.not_leader_or_follower), (3, ErrorCode.not_leader_or_follower)
    ]
    assert len(frame) > 4


# -- WriteTxnMarkers ----------------------------------------------------------------------------


def test_abort_marker_ends_a_hanging_transaction(node: Node) -> None:
    topic = node.topic()
    plog = node.log(topic)
    node.produce(topic, 9, 0, 0, transactional=False)  # an unrelated idempotent record
    first = node.produce(topic, 4, 1, 0, transactional=True, count=2)
    assert plog.last_stable_offset == first  # read_committed consumers are stuck here
    end = plog.log_end_offset
    node.clock.advance(1000)

    assert node.abort(topic, 4, 1, coordinator_epoch=3) == NONE

    assert plog.log_end_offset == end + 1
    assert plog.last_stable_offset == plog.high_watermark == end + 1
    header, records = _batches(plog)[-1]
    assert header.is_control and header.is_transactional
    assert (header.base_offset, header.producer_id, header.producer_epoch) == (end, 4, 1)
    assert header.max_timestamp == T0_MS + 1000
    assert control_type(records[0].key) == CONTROL_ABORT
    assert plog.collect_aborted_transactions(0, plog.log_end_offset) == [
        AbortedTxn(4, first, end, end + 1)
    ]
    (p,) = [p for p in node.producers(topic) if p.producer_id == 4]
    assert (p.current_txn_start_offset, p.coordinator_epoch, p.producer_epoch) == (-1, 3, 1)


def test_commit_marker_and_a_marker_without_a_transaction(node: Node) -> None:
    topic = node.topic()
    plog = node.log(topic)
    node.produce(topic, 4, 0, 0, transactional=True)
    answer = node.markers((4, 0, True, 0, {topic: (0,)}))
    assert _codes(answer) == {(4, topic, 0): NONE}
    header, records = _batches(plog)[-1]
    assert control_type(records[0].key) == CONTROL_COMMIT
    assert plog.collect_aborted_transactions(0, plog.log_end_offset) == []
    assert plog.last_stable_offset == plog.log_end_offset
    # Nothing open any more: the next marker is written and only updates the epochs.
    end = plog.log_end_offset
    assert node.abort(topic, 4, 2, coordinator_epoch=1) == NONE
    assert plog.log_end_offset == end + 1
    (p,) = node.producers(topic)
    assert (p.producer_epoch, p.coordinator_epoch, p.current_txn_start_offset) == (2, 1, -1)
    # ...and fences the producer's older epoch.
    with pytest.raises(Exception, match="epoch"):
        node.produce(topic, 4, 0, 1, transactional=True)


def test_fenced_markers_change_nothing(node: Node) -> None:
    topic = node.topic()
    plog = node.log(topic)
    first = node.produce(topic, 4, 3, 0, transactional=True)
    assert node.abort(topic, 4, 3, coordinator_epoch=5) == NONE
    node.produce(topic, 4, 3, 1, transactional=True)
    end = plog.log_end_offset

    assert node.abort(topic, 4, 2, coordinator_epoch=5) == ErrorCode.invalid_producer_epoch
    assert node.abort(topic, 4, 3, coordinator_epoch=4) == ErrorCode.transaction_coordinator_fenced
    assert node.abort(topic, -1, 3) == ErrorCode.invalid_request
    assert node.abort(topic, 4, -1) == ErrorCode.invalid_request

    assert plog.log_end_offset == end
    (p,) = node.producers(topic)
    assert p.current_txn_start_offset == end - 1 != first
    assert plog.last_stable_offset == end - 1


def test_unknown_partitions_do_not_stop_the_others(node: Node) -> None:
    a, b = node.topic(partitions=2), node.topic()
    for partition in (0, 1):
        node.produce(a, 4, 0, 0, transactional=True, partition=partition)
    answer = node.markers(
        (4, 0, False, 0, {a: (0, 5, 1), "missing": (0,), b: (0,)}),
    )
    assert _codes(answer) == {
        (4, a, 0): NONE,
        (4, a, 5): ErrorCode.unknown_topic_or_partition,
        (4, a, 1): NONE,
        (4, "missing", 0): ErrorCode.unknown_topic_or_partition,
        (4, b, 0): NONE,  # no transaction there: written, changes only the epochs
    }
    for partition in (0, 1):
        assert node.log(a, partition).last_stable_offset == node.log(a, partition).log_end_offset


def test_results_are_grouped_by_producer_and_partitions_written_once(node: Node) -> None:
    topic = node.topic(partitions=2)
    node.produce(topic, 4, 0, 0, transactional=True)
    node.produce(topic, 6, 0, 0, transactional=True, partition=1)
    ends = [node.log(topic, p).log_end_offset for p in (0, 1)]
    answer = node.markers(
        (4, 0, False, 0, {topic: (0, 0)}),
        (6, 0, False, 0, {topic: (1,)}),
        (4, 0, False, 0, {"other": (0,)}),
    )
    assert [m.producer_id for m in answer.markers] == [4, 6]
    assert [t.name for t in answer.markers[0].topics] == [topic, "other"]
    assert _codes(answer) == {
        (4, topic, 0): NONE,
        (6, topic, 1): NONE,
        (4, "other", 0): ErrorCode.unknown_topic_or_partition,
    }
    assert [node.log(topic, p).log_end_offset for p in (0, 1)] == [e + 1 for e in ends]


def test_marker_in_consumer_offsets_completes_pending_offsets(node: Node) -> None:
    group, topic = "g", node.topic()
    coordinator = node.broker.group_coordinator
    node.loop.run_until_complete(node.broker.groups.ensure_offsets_topic())
    for pid, offset in ((11, 42), (12, 7)):
        node.broker.groups.write(group, functools.partial(
            coordinator.txn_commit_offsets,
            group, producer_id=pid, producer_epoch=0, member_id="", generation_id=-1,
            instance_id=None, offsets=[(topic, 0, offset, -1, None)],
        ))
    partition = coordinator.partition_for(group)
    assert coordinator.has_pending_offsets(group, topic, 0)

    answer = node.markers((12, 0, False, 0, {"__consumer_offsets": (partition,)}))
    assert _codes(answer) == {(12, "__consumer_offsets", partition): NONE}
    assert coordinator.fetch_offsets(group, [(topic, [0])])[0].offset == -1
    assert coordinator.has_pending_offsets(group, topic, 0)  # producer 11's are still open

    answer = node.markers((11, 0, True, 0, {"__consumer_offsets": (partition,)}))
    assert _codes(answer) == {(11, "__consumer_offsets", partition): NONE}
    assert coordinator.fetch_offsets(group, [(topic, [0])])[0].offset == 42
    assert not coordinator.has_pending_offsets(group, topic, 0)


def test_empty_request_and_error_response(node: Node) -> None:
    assert node.markers().markers == ()
    m = _module(27, 1)
    request = m.WriteTxnMarkersRequest(markers=(
        m.WritableTxnMarker(
            producer_id=1, producer_epoch=0, transaction_result=False, coordinator_epoch=0,
            topics=(m.WritableTxnMarkerTopic(name="a", partition_indexes=(0, 1)),),
        ),
    ))
    body = write_txn_markers.API.error_response(
        _decoded(request), ErrorCode.cluster_authorization_failed
    )
    assert _codes(body) == {
        (1, "a", 0): ErrorCode.cluster_authorization_failed,
        (1, "a", 1): ErrorCode.cluster_authorization_failed,
    }
    assert len(encode_response(27, 1, body)) > 4


# -- a property: every requested partition is answered once, with what storage did ---------------


@settings(
    max_examples=25,
    deadline=datetime.timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    requests=st.lists(
        st.tuples(
            st.sampled_from([4, 5]),  # producer id
            st.integers(0, 2),  # producer epoch
            st.booleans(),  # commit
            st.lists(st.integers(-1, 3), min_size=1, max_size=4),  # partitions (0-1 exist)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_markers_property(tmp_path_factory: pytest.TempPathFactory, requests: Any) -> None:
    for node in _start(tmp_path_factory.mktemp("prop") / "data"):
        topic = node.topic(partitions=2)
        epochs: dict[tuple[int, int], int] = {}  # (producer, partition) -> epoch seen
        for pid, epoch, commit, partitions in requests:
            ends = {p: node.log(topic, p).log_end_offset for p in (0, 1)}
            codes = _codes(node.markers((pid, epoch, commit, 0, {topic: tuple(partitions)})))
            assert set(codes) == {(pid, topic, p) for p in partitions}
            for p in set(partitions):
                code = codes[(pid, topic, p)]
                if p not in (0, 1):
                    assert code == ErrorCode.unknown_topic_or_partition
                    continue
                seen = epochs.get((pid, p), -1)
                if epoch < seen:
                    assert code == ErrorCode.invalid_producer_epoch
                    assert node.log(topic, p).log_end_offset == ends[p]
                else:
                    assert code == NONE
                    epochs[(pid, p)] = epoch
                    assert node.log(topic, p).log_end_offset == ends[p] + 1
