"""DescribeTopicPartitions (KIP-966) paging and fields, on a view with several brokers."""

from __future__ import annotations

import types
import uuid
from typing import Any

import pytest
from kio.schema.describe_topic_partitions.v0 import request as REQ

from odradek.broker.handlers import describe_topic_partitions as dtp
from odradek.cluster.model import NO_LEADER, PartitionState, TopicInfo
from odradek.errors import ErrorCode, InvalidRequestError
from odradek.protocol.build import response_module
from odradek.protocol.messages import encode_response
from staticview import StaticView, registered

MOD = response_module(75, 0)


def _view() -> StaticView:
    def topic(name: str, n: int, leader: int = 1) -> TopicInfo:
        states = tuple(
            PartitionState((leader, 3), (leader,), leader=leader, leader_epoch=p) for p in range(n)
        )
        return TopicInfo(name, uuid.uuid4(), {}, states)

    topics = [topic("a", 3), topic("b", 7, leader=2), topic("c", 0), topic("d", 2, leader=3),
              topic("__consumer_offsets", 1)]
    return StaticView("cid", 1, (registered(1), registered(2, rack="r2")),
                      {t.name: t for t in topics})


def _ask(view: StaticView, names: list[str], limit: int = 2000,
         cursor: tuple[str, int] | None = None) -> Any:
    body = REQ.DescribeTopicPartitionsRequest(
        topics=tuple(REQ.TopicRequest(name=n) for n in names),
        response_partition_limit=limit,
        cursor=None if cursor is None else REQ.Cursor(topic_name=cursor[0],
                                                      partition_index=cursor[1]),
    )
    response = dtp.handle(types.SimpleNamespace(cluster=view),  # type: ignore[arg-type]
                          types.SimpleNamespace(body=body, api_version=0))  # type: ignore[arg-type]
    encode_response(75, 1, response)  # encodable as it is
    return response


def _pages(view: StaticView, names: list[str], limit: int) -> list[list[tuple[str, list[int]]]]:
    """Every page until NextCursor is null: (topic, partition indexes) per topic."""
    pages, cursor = [], None
    while True:
        r = _ask(view, names, limit, cursor)
        pages.append([(t.name, [p.partition_index for p in t.partitions]) for t in r.topics])
        if r.next_cursor is None:
            return pages
        cursor = (r.next_cursor.topic_name, r.next_cursor.partition_index)


def test_all_topics_by_name_and_partition_in_pages() -> None:
    pages = _pages(_view(), [], 3)
    assert pages == [
        [("__consumer_offsets", [0]), ("a", [0, 1])],
        [("a", [2]), ("b", [0, 1])],
        [("b", [2, 3, 4])],
        # c has no partitions: it is listed, and takes nothing from the limit.
        [("b", [5, 6]), ("c", []), ("d", [0])],
        [("d", [1])],
    ]


def test_limit_reached_at_a_topic_end_points_at_the_next_topic() -> None:
    r = _ask(_view(), ["a", "b"], limit=3)
    assert [t.name for t in r.topics] == ["a"]
    assert (r.next_cursor.topic_name, r.next_cursor.partition_index) == ("b", 0)
    r = _ask(_view(), ["a", "b"], limit=10)
    assert [len(t.partitions) for t in r.topics] == [3, 7] and r.next_cursor is None


def test_named_topics_missing_and_invalid() -> None:
    r = _ask(_view(), ["zz", "a", "bad name!", "a"])
    assert [(t.name, t.error_code) for t in r.topics] == [
        ("a", ErrorCode.none),
        ("bad name!", ErrorCode.invalid_topic_exception),
        ("zz", ErrorCode.unknown_topic_or_partition),
    ]
    assert r.topics[2].topic_id == uuid.UUID(int=0) and r.topics[2].partitions == ()


def test_fields_from_the_view() -> None:
    view = _view()
    r = _ask(view, ["d", "b", "__consumer_offsets"])
    d = next(t for t in r.topics if t.name == "d")
    assert d.topic_id == view.topic_infos["d"].topic_id and not d.is_internal
    assert d.topic_authorized_operations == dtp.TOPIC_OPERATIONS
    # d's leader (3) is not live: leader -1, no error, 3 offline.
    p = d.partitions[1]
    assert (p.error_code, p.leader_id, p.leader_epoch, p.replica_nodes, p.isr_nodes,
            p.offline_replicas, p.eligible_leader_replicas, p.last_known_elr) == (
        ErrorCode.none, NO_LEADER, 1, (3, 3), (3,), (3, 3), (), ())
    b = next(t for t in r.topics if t.name == "b").partitions[6]
    assert (b.leader_id, b.leader_epoch, b.offline_replicas) == (2, 6, (3,))
    assert next(t for t in r.topics if t.name == "__consumer_offsets").is_internal


def test_cursor_must_be_requested_and_valid() -> None:
    with pytest.raises(InvalidRequestError):
        _ask(_view(), ["a"], cursor=("b", 0))
    with pytest.raises(InvalidRequestError):
        _ask(_view(), [], cursor=("a", -1))
    # A cursor beyond a topic's partitions gives the topic with none.
    r = _ask(_view(), ["a", "b"], limit=2, cursor=("a", 9))
    assert [(t.name, len(t.partitions)) for t in r.topics] == [("a", 0), ("b", 2)]
    assert (r.next_cursor.topic_name, r.next_cursor.partition_index) == ("b", 2)


def test_limit_is_capped_and_at_least_one() -> None:
    big = TopicInfo("big", uuid.uuid4(), {}, (PartitionState((1,), (1,), 1),) * 2500)
    view = StaticView("cid", 1, (registered(1),), {"big": big})
    r = _ask(view, [], limit=100_000)
    assert len(r.topics[0].partitions) == dtp.MAX_PARTITIONS_PER_RESPONSE
    assert r.next_cursor.partition_index == 2000
    r = _ask(view, [], limit=0)
    assert len(r.topics[0].partitions) == 1


def test_whole_request_error_names_every_topic() -> None:
    body = REQ.DescribeTopicPartitionsRequest(
        topics=(REQ.TopicRequest(name="x"), REQ.TopicRequest(name="y")),
        response_partition_limit=5, cursor=None,
    )
    r = dtp.error_response(types.SimpleNamespace(body=body, api_version=0),  # type: ignore[arg-type]
                           ErrorCode.invalid_request)
    assert [(t.name, t.error_code) for t in r.topics] == [
        ("x", ErrorCode.invalid_request), ("y", ErrorCode.invalid_request)]
    assert MOD.DescribeTopicPartitionsResponse is type(r)
