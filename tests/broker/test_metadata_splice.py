"""The Metadata handler's cached, spliced encoding equals kio's encoding of the whole body, and
says what the view says: every live broker, the controller, leaders, epochs, replicas, ISR,
offline replicas and LEADER_NOT_AVAILABLE."""

from __future__ import annotations

import types
import uuid
from typing import Any

import pytest
from kio.serial import entity_reader

from odradek.broker.handlers import metadata
from odradek.cluster.model import NO_LEADER, PartitionState, TopicInfo
from odradek.errors import ErrorCode
from odradek.protocol.build import response_module
from odradek.protocol.messages import encode_response, response_schema
from staticview import StaticView, registered


def _cluster_view() -> StaticView:
    states = (
        PartitionState((1, 2, 3), (1, 2), leader=1, leader_epoch=4, partition_epoch=9),
        PartitionState((2, 3), (2,), leader=2, leader_epoch=7),
        PartitionState((3,), (3,), leader=NO_LEADER, leader_epoch=2),  # broker 3 is gone
        PartitionState((4, 1), (4, 1), leader=4, leader_epoch=1),  # a leader no longer live
    )
    topics = {
        f"t{i}": TopicInfo(f"t{i}", uuid.uuid4(), {}, tuple(states[j % 4] for j in range(n)))
        for i, n in enumerate((1, 4, 200))
    }
    return StaticView(
        cluster_id="abc",
        controller_id=2,
        brokers=(registered(1, port=9092, rack="r1"), registered(2, "h2", 9093, None)),
        topic_infos=topics,
    )


def _broker(view: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(node_id=1, cluster=view)


def _request(version: int, ops: bool) -> types.SimpleNamespace:
    body = types.SimpleNamespace(
        topics=None, include_topic_authorized_operations=ops,
        include_cluster_authorized_operations=ops, allow_auto_topic_creation=False,
    )
    return types.SimpleNamespace(body=body, api_version=version)


def _check_splice(broker: Any, version: int, ops: bool) -> bytes:
    request = _request(version, ops)
    mod = response_module(3, version)
    topic_ops = metadata.TOPIC_OPERATIONS if ops else metadata.NOT_REQUESTED
    cluster_ops = metadata.CLUSTER_OPERATIONS if ops else metadata.NOT_REQUESTED
    live = frozenset(metadata.live_broker_ids(broker.cluster))
    for _ in range(2):  # the second answer comes from the cache
        spliced = encode_response(3, 7, metadata.handle(broker, request))
        whole = metadata._body(
            broker,
            version,
            tuple(metadata._topic(mod, i, topic_ops, live) for i in broker.cluster.topics()),
            cluster_ops,
        )
        assert spliced == encode_response(3, 7, whole)
    return spliced


@pytest.mark.parametrize("version", range(13))
@pytest.mark.parametrize("ops", [False, True])
def test_spliced_body_is_kios_encoding(version: int, ops: bool) -> None:
    _check_splice(_broker(_cluster_view()), version, ops)


def _decoded(view: Any, version: int) -> Any:
    frame = encode_response(3, 7, metadata.handle(_broker(view), _request(version, False)))
    body, _ = entity_reader(response_schema(3, version))(frame, 8 + (1 if version >= 9 else 0))
    return body


@pytest.mark.parametrize("version", [5, 7, 12])  # offline replicas from v5
def test_fields_come_from_the_view(version: int) -> None:
    view = _cluster_view()
    body = _decoded(view, version)
    assert [(b.node_id, b.host, b.port, b.rack) for b in body.brokers] == [
        (1, "127.0.0.1", 9092, "r1"), (2, "h2", 9093, None),
    ]
    assert body.controller_id == 2
    parts = {p.partition_index: p for p in next(t for t in body.topics if t.name == "t1").partitions}
    led = parts[0]
    assert (led.error_code, led.leader_id, led.replica_nodes, led.isr_nodes,
            led.offline_replicas) == (ErrorCode.none, 1, (1, 2, 3), (1, 2), (3,))
    assert (parts[1].leader_id, parts[1].offline_replicas) == (2, (3,))
    # No live leader: LEADER_NOT_AVAILABLE, leader -1, the rest as recorded.
    for gone in (parts[2], parts[3]):
        assert gone.error_code == ErrorCode.leader_not_available
        assert gone.leader_id == -1
    assert parts[3].offline_replicas == (4,)
    if version >= 7:
        assert (led.leader_epoch, parts[1].leader_epoch, parts[2].leader_epoch) == (4, 7, 2)


def test_entries_follow_the_live_brokers() -> None:
    """The cache is keyed by the live brokers too: a broker returning brings its partitions
    back without any topic change."""
    view = _cluster_view()
    before = _decoded(view, 12)
    back = StaticView(view.cluster_id, view.controller_id,
                      (*view.brokers, registered(3), registered(4)), view.topic_infos)
    after = _decoded(back, 12)
    p3 = next(t for t in before.topics if t.name == "t1").partitions[3]
    assert p3.error_code == ErrorCode.leader_not_available
    p3 = next(t for t in after.topics if t.name == "t1").partitions[3]
    assert (p3.error_code, p3.leader_id, p3.offline_replicas) == (ErrorCode.none, 4, ())


@pytest.mark.parametrize("version", [0, 5, 7, 9, 12])
def test_a_changed_partition_is_answered_anew(version: int) -> None:
    """Partitions that share leader, epoch, replicas and ISR share their encoded bytes; a
    partition whose leadership or ISR changes (a new TopicInfo) is answered with its new state,
    the others as before, and the whole still equals kio's encoding."""
    view = _cluster_view()
    _decoded(view, version)  # the topic's entry cached before the change
    old = view.topic_infos["t2"]
    changed = PartitionState((1, 2, 3), (2, 1), leader=2, leader_epoch=5, partition_epoch=10)
    states = list(old.partitions)
    states[8] = changed
    view = StaticView(view.cluster_id, view.controller_id, view.brokers, {
        **view.topic_infos, "t2": TopicInfo(old.name, old.topic_id, old.configs, tuple(states)),
    })
    _check_splice(_broker(view), version, False)
    parts = next(t for t in _decoded(view, version).topics if t.name == "t2").partitions
    assert [p.partition_index for p in parts] == list(range(200))
    p8 = parts[8]
    assert (p8.error_code, p8.leader_id, p8.replica_nodes, p8.isr_nodes) == (
        ErrorCode.none, 2, (1, 2, 3), (2, 1))
    if version >= 7:
        assert p8.leader_epoch == 5
        assert parts[0].leader_epoch == parts[4].leader_epoch == 4  # the state p8 had
    assert (parts[4].leader_id, parts[4].isr_nodes) == (1, (1, 2))


@pytest.mark.parametrize("version", [1, 8, 12])
def test_the_kept_body_follows_controller_brokers_and_cluster(version: int) -> None:
    """The bytes around the topic array are kept per brokers, cluster id and controller: an
    answer after any of them changes says the new ones."""
    view = _cluster_view()
    assert _decoded(view, version).controller_id == 2
    moved = StaticView("abc", 1, view.brokers, view.topic_infos)
    assert _decoded(moved, version).controller_id == 1
    joined = StaticView("abc", 1, (*view.brokers, registered(5, "h5", 9095, "r5")),
                        view.topic_infos)
    body = _decoded(joined, version)
    assert [(b.node_id, b.host, b.port) for b in body.brokers][-1] == (5, "h5", 9095)
    if version >= 2:
        other = StaticView("xyz", 1, view.brokers, view.topic_infos)
        assert _decoded(other, version).cluster_id == "xyz"
    _check_splice(_broker(joined), version, True)
