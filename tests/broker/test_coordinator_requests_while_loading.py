"""Every request about a group or a transactional id answers COORDINATOR_LOAD_IN_PROGRESS while
the internal-topic partition it belongs to loads; FindCoordinator and ApiVersions answer at once.

The broker is started on a loop the test drives (its handlers are synchronous) and its loading
is held with the broker's load hook, then released.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer

from odradek.broker.app import Broker
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.runner import local_config
from odradek.clock import ManualClock
from odradek.errors import ErrorCode
from odradek.protocol.messages import request_schema, response_schema

LOADING = ErrorCode.coordinator_load_in_progress
GROUP = "g"
TXN = "tx"
TOPIC = "t"
_MINUTE = datetime.timedelta(minutes=1)


def _module(api_key: int, version: int) -> ModuleType:
    schema = request_schema(api_key, version)
    assert schema is not None
    return sys.modules[schema.__module__]


def _frame(body: Any, correlation_id: int) -> bytes:
    schema = type(body)
    header_cls = schema.__header_schema__
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(
        request_api_key=schema.__api_key__,
        request_api_version=schema.__version__,
        correlation_id=correlation_id,
        client_id="test",
    ))
    entity_writer(schema)(buf, body)
    return buf.getvalue()


class Node:
    """A started broker (not serving) whose coordinators wait at a gate before loading."""

    def __init__(self, data_dir: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.gate = asyncio.Event()
        self.held: list[tuple[str, int]] = []

        async def hook(topic: str, partition: int) -> None:
            self.held.append((topic, partition))
            await self.gate.wait()

        self.broker = Broker(
            local_config(data_dir), clock=ManualClock(1_700_000_000_000),
            coordinator_load_hook=hook,
        )
        loop.run_until_complete(self.broker.start())
        self.dispatcher = Dispatcher(self.broker)
        self.correlation_id = 0

    def call(self, body: Any) -> Any:
        schema = type(body)
        self.correlation_id += 1
        answer = self.dispatcher(_frame(body, self.correlation_id))
        if not isinstance(answer, bytes):  # an awaitable answer (JoinGroup, SyncGroup)
            answer = self.loop.run_until_complete(answer)
        (size,) = struct.unpack_from(">i", answer)
        response_cls = response_schema(schema.__api_key__, schema.__version__)
        # ApiVersions answers with header v0 whatever its version.
        header_cls = ResponseHeaderV0 if schema.__api_key__ == 18 else (
            response_cls.__header_schema__ if hasattr(response_cls, "__header_schema__")
            else ResponseHeaderV1
        )
        header, n = entity_reader(header_cls)(answer[4:], 0)
        response, _ = entity_reader(response_cls)(answer[4:], n)
        assert header.correlation_id == self.correlation_id
        return response

    def release(self) -> None:
        self.gate.set()

        async def loaded() -> None:
            while self.broker.groups.is_loading() or self.broker.transactions.is_loading():
                await asyncio.sleep(0)

        self.loop.run_until_complete(asyncio.wait_for(loaded(), 30))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    data = tmp_path / "data"
    loop = asyncio.new_event_loop()
    first = Broker(local_config(data), clock=ManualClock(1_700_000_000_000))
    loop.run_until_complete(first.start())
    loop.run_until_complete(first.topics.create(TOPIC, num_partitions=1))
    loop.run_until_complete(first.groups.ensure_offsets_topic())
    loop.run_until_complete(first.transactions.topic.ensure())
    loop.run_until_complete(first.stop())
    node = Node(data, loop)
    try:
        yield node
    finally:
        node.gate.set()
        loop.run_until_complete(node.broker.stop())
        loop.close()


def _requests() -> list[tuple[str, Any, Callable[[Any], set[ErrorCode]]]]:
    """(name, request, the error codes of its answer) for every coordinator API."""
    join = _module(11, 5)
    sync = _module(14, 3)
    heartbeat = _module(12, 3)
    leave = _module(13, 3)
    commit = _module(8, 8)
    fetch = _module(9, 7)
    delete_offsets = _module(47, 0)
    describe = _module(15, 5)
    list_groups = _module(16, 4)
    delete_groups = _module(42, 2)
    cg_heartbeat = _module(68, 0)
    cg_describe = _module(69, 0)
    txn_commit = _module(28, 3)
    init = _module(22, 4)
    add_partitions = _module(24, 3)
    add_offsets = _module(25, 3)
    end = _module(26, 3)
    describe_txns = _module(65, 0)
    list_txns = _module(66, 0)

    def top(r: Any) -> set[ErrorCode]:
        return {r.error_code}

    def partitions(r: Any) -> set[ErrorCode]:
        return {p.error_code for t in r.topics for p in t.partitions}

    return [
        ("JoinGroup", join.JoinGroupRequest(
            group_id=GROUP, session_timeout=datetime.timedelta(seconds=10),
            rebalance_timeout=_MINUTE, member_id="", group_instance_id=None,
            protocol_type="consumer",
            protocols=(join.JoinGroupRequestProtocol(name="range", metadata=b""),),
        ), top),
        ("SyncGroup", sync.SyncGroupRequest(
            group_id=GROUP, generation_id=1, member_id="m", group_instance_id=None,
            assignments=(),
        ), top),
        ("Heartbeat", heartbeat.HeartbeatRequest(
            group_id=GROUP, generation_id=1, member_id="m", group_instance_id=None
        ), top),
        ("LeaveGroup", leave.LeaveGroupRequest(
            group_id=GROUP, members=(leave.MemberIdentity(member_id="m", group_instance_id=None),)
        ), top),
        ("OffsetCommit", commit.OffsetCommitRequest(
            group_id=GROUP, generation_id_or_member_epoch=-1, member_id="",
            group_instance_id=None,
            topics=(commit.OffsetCommitRequestTopic(name=TOPIC, partitions=(
                commit.OffsetCommitRequestPartition(
                    partition_index=0, committed_offset=1, committed_leader_epoch=-1,
                    committed_metadata="",
                ),
            )),),
        ), partitions),
        ("OffsetFetch", fetch.OffsetFetchRequest(
            group_id=GROUP,
            topics=(fetch.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=(0,)),),
            require_stable=False,
        ), top),
        ("OffsetDelete", delete_offsets.OffsetDeleteRequest(
            group_id=GROUP,
            topics=(delete_offsets.OffsetDeleteRequestTopic(name=TOPIC, partitions=(
                delete_offsets.OffsetDeleteRequestPartition(partition_index=0),
            )),),
        ), top),
        ("DescribeGroups", describe.DescribeGroupsRequest(
            groups=(GROUP,), include_authorized_operations=False
        ), lambda r: {g.error_code for g in r.groups}),
        ("ListGroups", list_groups.ListGroupsRequest(states_filter=()), top),
        ("DeleteGroups", delete_groups.DeleteGroupsRequest(groups_names=(GROUP,)),
         lambda r: {g.error_code for g in r.results}),
        ("ConsumerGroupHeartbeat", cg_heartbeat.ConsumerGroupHeartbeatRequest(
            group_id=GROUP, member_id=str(uuid.uuid4()), member_epoch=0, instance_id=None,
            rack_id=None, rebalance_timeout=_MINUTE, subscribed_topic_names=(TOPIC,),
            server_assignor=None, topic_partitions=(),
        ), top),
        ("ConsumerGroupDescribe", cg_describe.ConsumerGroupDescribeRequest(
            group_ids=(GROUP,), include_authorized_operations=False
        ), lambda r: {g.error_code for g in r.groups}),
        ("TxnOffsetCommit", txn_commit.TxnOffsetCommitRequest(
            transactional_id=TXN, group_id=GROUP, producer_id=1, producer_epoch=0,
            generation_id=-1, member_id="", group_instance_id=None,
            topics=(txn_commit.TxnOffsetCommitRequestTopic(name=TOPIC, partitions=(
                txn_commit.TxnOffsetCommitRequestPartition(
                    partition_index=0, committed_offset=1, committed_leader_epoch=-1,
                    committed_metadata="",
                ),
            )),),
        ), partitions),
        ("InitProducerId", init.InitProducerIdRequest(
            transactional_id=TXN, transaction_timeout=_MINUTE, producer_id=-1,
            producer_epoch=-1,
        ), top),
        ("AddPartitionsToTxn", add_partitions.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=TXN, v3_and_below_producer_id=1,
            v3_and_below_producer_epoch=0,
            v3_and_below_topics=(add_partitions.AddPartitionsToTxnTopic(
                name=TOPIC, partitions=(0,)
            ),),
        ), lambda r: {
            p.partition_error_code
            for t in r.results_by_topic_v3_and_below for p in t.results_by_partition
        }),
        ("AddOffsetsToTxn", add_offsets.AddOffsetsToTxnRequest(
            transactional_id=TXN, producer_id=1, producer_epoch=0, group_id=GROUP
        ), top),
        ("EndTxn", end.EndTxnRequest(
            transactional_id=TXN, producer_id=1, producer_epoch=0, committed=True
        ), top),
        ("DescribeTransactions", describe_txns.DescribeTransactionsRequest(
            transactional_ids=(TXN,)
        ), lambda r: {s.error_code for s in r.transaction_states}),
        ("ListTransactions", list_txns.ListTransactionsRequest(
            state_filters=(), producer_id_filters=()
        ), top),
    ]


def test_coordinator_requests_wait_for_loading_and_find_coordinator_does_not(
    node: Node,
) -> None:
    node.loop.run_until_complete(asyncio.sleep(0))  # let the loading tasks reach the gate
    assert {t for t, _ in node.held} == {"__consumer_offsets", "__transaction_state"}
    versions = node.call(_module(18, 3).ApiVersionsRequest(
        client_software_name="test", client_software_version="1"
    ))
    assert versions.error_code == ErrorCode.none
    find = _module(10, 4)
    found = node.call(find.FindCoordinatorRequest(key_type=0, coordinator_keys=(GROUP, TXN)))
    assert {c.error_code for c in found.coordinators} == {ErrorCode.none}
    found = node.call(find.FindCoordinatorRequest(key_type=1, coordinator_keys=(TXN,)))
    assert {c.error_code for c in found.coordinators} == {ErrorCode.none}
    answers = {name: codes(node.call(request)) for name, request, codes in _requests()}
    assert answers == {name: {LOADING} for name, _, _ in _requests()}

    node.release()
    # (DescribeTransactions is left out: kio cannot decode the start time -1 of an id with no
    # open transaction, which InitProducerId has just created.)
    after = {
        name: codes(node.call(request))
        for name, request, codes in _requests()
        if name != "DescribeTransactions"
    }
    assert all(LOADING not in codes for codes in after.values()), after
    fetch = _module(9, 7)
    fetched = node.call(fetch.OffsetFetchRequest(
        group_id=GROUP,
        topics=(fetch.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=(0,)),),
        require_stable=False,
    ))
    assert fetched.error_code == ErrorCode.none
