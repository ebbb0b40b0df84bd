"""Three broker processes while their etcd fails: one member of a 3-member etcd killed (produce,
consume and topic creation go on), and etcd stopped entirely (admin requests answer
REQUEST_TIMED_OUT within their timeout, every broker stops acknowledging writes once its lease
could have expired, reads go on, and everything recovers by itself when etcd returns)."""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)
from kio.schema.create_partitions.v3 import request as create_partitions_req
from kio.schema.create_topics.v7 import request as create_topics_req
from kio.schema.delete_topics.v6 import request as delete_topics_req
from kio.schema.fetch.v12 import request as fetch_req
from rawclient import RawClient
from test_cluster_clients import _consume_all, _create, _leaders, _produce, _wait
from test_leadership import _raw_produce

from odradek.cluster.local import LocalCluster
from odradek.errors import ErrorCode
from odradek.testing.etcd import EtcdCluster, etcd_binary

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _create_topics(bootstrap: str, name: str, timeout_ms: int, *, validate_only: bool = False,
                   partitions: int = 3) -> tuple[Any, float]:
    """One CreateTopics v7 through the raw client: the topic's result and the seconds it took."""
    body = create_topics_req.CreateTopicsRequest(
        topics=(create_topics_req.CreatableTopic(
            name=name, num_partitions=partitions, replication_factor=1, assignments=(),
            configs=(),
        ),),
        timeout=datetime.timedelta(milliseconds=timeout_ms),
        validate_only=validate_only,
    )
    with RawClient(bootstrap) as c:
        c.sock.settimeout(60)
        began = time.monotonic()
        response = c.request(body)
        return response.topics[0], time.monotonic() - began


def _delete_topic(bootstrap: str, name: str, timeout_ms: int) -> tuple[Any, float]:
    body = delete_topics_req.DeleteTopicsRequest(
        topics=(delete_topics_req.DeleteTopicState(name=name, topic_id=None),),
        timeout=datetime.timedelta(milliseconds=timeout_ms),
    )
    with RawClient(bootstrap) as c:
        c.sock.settimeout(60)
        began = time.monotonic()
        response = c.request(body)
        return response.responses[0], time.monotonic() - began


def _create_partitions(bootstrap: str, name: str, count: int, timeout_ms: int) -> tuple[Any, float]:
    body = create_partitions_req.CreatePartitionsRequest(
        topics=(create_partitions_req.CreatePartitionsTopic(
            name=name, count=count, assignments=None
        ),),
        timeout=datetime.timedelta(milliseconds=timeout_ms),
        validate_only=False,
    )
    with RawClient(bootstrap) as c:
        c.sock.settimeout(60)
        began = time.monotonic()
        response = c.request(body)
        return response.results[0], time.monotonic() - began


def _fetch_codes(address: str, topic: str, partition: int, offset: int) -> int:
    """The error code of one Fetch v12 of ``partition`` at ``offset``, answered at once."""
    body = fetch_req.FetchRequest(
        cluster_id=None, replica_id=-1, max_wait=datetime.timedelta(0), min_bytes=0,
        max_bytes=1 << 20, isolation_level=0, session_id=0, session_epoch=-1,
        topics=(fetch_req.FetchTopic(topic=topic, partitions=(
            fetch_req.FetchPartition(partition=partition, current_leader_epoch=-1,
                                     fetch_offset=offset, last_fetched_epoch=-1,
                                     log_start_offset=-1, partition_max_bytes=1 << 20),
        )),),
        forgotten_topics_data=(), rack_id="",
    )
    with RawClient(address) as c:
        c.sock.settimeout(30)
        response = c.request(body)
    return int(response.responses[0].partitions[0].error_code)


# -- one member of three killed --------------------------------------------------------------------


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server; `make system-deps` installs it)")
    cluster = EtcdCluster(tmp_path / "etcd", 3)
    cluster.start()
    try:
        yield cluster
    finally:
        for member in cluster.members:
            member.kill()


def test_brokers_go_on_when_one_of_three_etcd_members_is_killed(
    etcd3: EtcdCluster, tmp_path: Path
) -> None:
    cluster = LocalCluster(
        tmp_path / "brokers", 3, etcd_endpoints=etcd3.endpoints,
        broker_properties={"broker.session.timeout.ms": "6000"},
    )
    cluster.start()
    try:
        one, two = cluster.broker(1).address, cluster.broker(2).address
        before = f"before-{uuid.uuid4().hex[:6]}"
        _create(one, before, PARTITIONS)
        first = _produce(one, before, [f"a{i}" for i in range(200)])
        # Every broker talks to the first endpoint while it answers: kill that member.
        etcd3.kill(0)

        # Topic creation, produce and consume go on through the two members left.
        after = f"after-{uuid.uuid4().hex[:6]}"
        _create(two, after, PARTITIONS)
        leaders = _wait(
            lambda: (lambda ls: ls if len(ls) == PARTITIONS and -1 not in ls.values() else None)(
                _leaders(one, after)
            ),
            "the new topic's leaders",
        )
        assert set(leaders.values()) == {1, 2, 3}
        second = _produce(two, after, [f"b{i}" for i in range(200)])
        more = _produce(one, before, [f"c{i}" for i in range(200)])
        got = _consume_all(two, before, 400)
        for part in range(PARTITIONS):
            assert got[part] == first.get(part, []) + more.get(part, [])
        assert _consume_all(one, after, 200) == second

        # No broker lost its registration: all three are still listed, none was fenced.
        md = AdminClient({"bootstrap.servers": one}).list_topics(timeout=10)
        assert sorted(md.brokers) == [1, 2, 3]
        for node in (1, 2, 3):
            assert "fenced" not in cluster.broker(node).output()
    finally:
        cluster.stop()


# -- etcd stopped entirely -------------------------------------------------------------------------

SESSION_MS = 2000


def test_etcd_stopped_entirely_refuses_changes_fences_writes_and_recovers(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=SESSION_MS)
    one, two = cluster.broker(1).address, cluster.broker(2).address
    topic = f"stopped-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS and -1 not in ls.values() else None)(
            _leaders(one, topic)
        ),
        "every partition's leader",
    )
    assert set(leaders.values()) == {1, 2, 3}
    delivered = _produce(one, topic, [f"v{i}" for i in range(300)])
    by_leader = {node: tuple(p for p, n in leaders.items() if n == node) for node in (1, 2, 3)}

    assert cluster.etcd is not None and cluster.etcd.pid is not None
    # First etcd hangs (SIGSTOP: connections open, nothing answers, as behind a partition).
    killed_at = time.monotonic()
    os.kill(cluster.etcd.pid, signal.SIGSTOP)

    # Metadata changes answer within the request's timeout with Kafka's retriable code.
    result, took = _create_topics(two, f"new-{uuid.uuid4().hex[:6]}", 1500)
    assert result.error_code == ErrorCode.request_timed_out
    assert "metadata store" in (result.error_message or "")
    assert 1.4 < took < 1.5 + 2
    result, took = _delete_topic(two, topic, 1500)
    assert result.error_code == ErrorCode.request_timed_out
    assert took < 1.5 + 2
    result, took = _create_partitions(two, topic, PARTITIONS + 2, 1500)
    assert result.error_code == ErrorCode.request_timed_out
    assert took < 1.5 + 2

    # Once a lease could have expired, no broker acknowledges a write: every produce sent later
    # than that to a partition's leader is refused. Polled until all three refuse.
    late_acks: list[tuple[int, float]] = []
    acked = 0  # one record per acknowledged partition
    refusing: set[int] = set()
    deadline = killed_at + SESSION_MS / 1000 + 30
    while refusing != {1, 2, 3} and time.monotonic() < deadline:
        for node, parts in by_leader.items():
            sent = time.monotonic()
            r = _raw_produce(cluster.broker(node).address, topic, parts)
            codes = {int(p.error_code) for p in r.responses[0].partition_responses}
            acked += sum(p.error_code == ErrorCode.none for p in r.responses[0].partition_responses)
            if ErrorCode.none in codes and sent - killed_at > SESSION_MS / 1000:
                late_acks.append((node, sent - killed_at))
            if codes == {ErrorCode.not_leader_or_follower}:
                refusing.add(node)
        time.sleep(0.05)
    assert refusing == {1, 2, 3}
    assert late_acks == []

    # A fenced leader still serves what it holds, but not "out of range" past its end: a
    # leader elected meanwhile may hold that offset, and OFFSET_OUT_OF_RANGE would send a
    # consumer back to its reset policy. Retriable NOT_LEADER_OR_FOLLOWER instead.
    node, parts = next((n, ps) for n, ps in by_leader.items() if ps)
    address = cluster.broker(node).address
    held = _fetch_codes(address, topic, parts[0], 0)
    assert held == ErrorCode.none
    assert _fetch_codes(address, topic, parts[0], 1 << 40) == ErrorCode.not_leader_or_follower

    # Then etcd is gone (connections refused): refused at once, with the cause.
    cluster.etcd.kill()
    result, took = _create_topics(two, f"new-{uuid.uuid4().hex[:6]}", 1500)
    assert result.error_code == ErrorCode.request_timed_out
    assert "metadata store is unreachable" in (result.error_message or "")
    # A request that only validates still gets its validation answer.
    result, _ = _create_topics(two, f"bad-{uuid.uuid4().hex[:6]}", 1500, validate_only=True,
                               partitions=0)
    assert result.error_code == ErrorCode.invalid_partitions
    # A real admin client sees the same refusal, not a hang.
    admin = AdminClient({"bootstrap.servers": two})
    future = admin.create_topics([NewTopic(f"c-{uuid.uuid4().hex[:6]}", 1, 1)],
                                 operation_timeout=2)
    with pytest.raises(KafkaException) as refused:
        next(iter(future.values())).result(30)
    assert refused.value.args[0].code() == ErrorCode.request_timed_out
    more = admin.create_partitions([NewPartitions(topic, PARTITIONS + 1)], operation_timeout=2)
    with pytest.raises(KafkaException):
        more[topic].result(30)
    change = ConfigResource("TOPIC", topic, incremental_configs=[
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)
    ])
    with pytest.raises(KafkaException) as refused:
        admin.incremental_alter_configs([change])[change].result(30)
    assert refused.value.args[0].code() == ErrorCode.request_timed_out
    assert "metadata store is unreachable" in refused.value.args[0].str()

    # Reads of what is there go on.
    got = _consume_all(two, topic, 300 + acked)
    for part, values in delivered.items():
        assert got[part][: len(values)] == values
    assert sum(map(len, got.values())) == 300 + acked

    # etcd returns: every broker takes writes again and metadata changes work, unaided.
    cluster.etcd.start()
    for node, parts in by_leader.items():
        address = cluster.broker(node).address
        _wait(
            lambda a=address, ps=parts: {
                int(p.error_code) for p in _raw_produce(a, topic, ps).responses[0]
                .partition_responses
            } == {ErrorCode.none},
            f"broker {node} taking writes again",
            timeout=60,
        )
    created = f"back-{uuid.uuid4().hex[:6]}"
    result, _ = _create_topics(two, created, 30_000)
    assert result.error_code == ErrorCode.none
    md = AdminClient({"bootstrap.servers": one}).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    final = _produce(one, topic, [f"w{i}" for i in range(60)])
    assert sum(map(len, final.values())) == 60
