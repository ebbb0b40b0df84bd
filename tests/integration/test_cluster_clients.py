"""Real clients against a cluster of three broker processes on a real etcd: topics spread over
every broker, produce and consume through a bootstrap that does not lead, a broker killed and
restarted (its partitions leaderless meanwhile, nothing acknowledged lost), a broker that
loses etcd refusing writes until it returns, and consumer groups and transactions whose
coordinators sit on another broker than the bootstrap and the data."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as CTP
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from rawclient import RawClient, request_class
from test_leadership import _raw_produce

from odradek.cluster.local import LocalCluster
from odradek.errors import ErrorCode
from waiting import wait as _wait

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # alive until the answer is in
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def _produce(bootstrap: str, topic: str, values: list[str]) -> dict[int, list[str]]:
    """Keyed records through ``bootstrap``, acks=all; every delivery by partition, in order."""
    delivered: dict[int, list[str]] = defaultdict(list)
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.partition()].append(msg.value().decode())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True})
    for v in values:
        p.produce(topic, key=v.encode(), value=v.encode(), on_delivery=report)
    assert p.flush(30) == 0
    assert errors == []
    return delivered


def _consume_all(bootstrap: str, topic: str, count: int) -> dict[int, list[str]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=20_000,
    )
    consumer.assign([KafkaTopicPartition(topic, p) for p in range(PARTITIONS)])
    got: dict[int, list[str]] = defaultdict(list)
    try:
        seen = 0
        for record in consumer:
            got[record.partition].append(record.value.decode())
            seen += 1
            if seen >= count:
                break
    finally:
        consumer.close()
    return got


def test_topics_spread_and_clients_follow_leaders(odradek_cluster: LocalCluster) -> None:
    cluster = odradek_cluster
    one, two = cluster.broker(1).address, cluster.broker(2).address
    topic = f"spread-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)

    # Every broker tells the same story: three live brokers, a controller, and leaders on all.
    for node in (1, 2, 3):
        md = AdminClient({"bootstrap.servers": cluster.broker(node).address}).list_topics(
            topic, timeout=10
        )
        assert sorted(md.brokers) == [1, 2, 3]
        assert md.controller_id in (1, 2, 3)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS else None)(_leaders(two, topic)),
        "every partition's leader",
    )
    assert set(leaders.values()) == {1, 2, 3}

    # Produce through broker 1 only, consume through broker 2 only: both follow the leaders.
    values = [f"v{i}" for i in range(600)]
    delivered = _produce(one, topic, values)
    assert sum(map(len, delivered.values())) == len(values)
    got = _consume_all(two, topic, len(values))
    assert dict(got) == dict(delivered)  # nothing lost or duplicated, order kept per partition


def test_killed_broker_leaves_its_partitions_leaderless_until_it_returns(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=2000)
    one = cluster.broker(1).address
    topic = f"kill-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS else None)(_leaders(one, topic)),
        "every partition's leader",
    )
    delivered = _produce(one, topic, [f"a{i}" for i in range(300)])
    victim = next(n for n in (2, 3) if n in leaders.values())
    cluster.broker(victim).kill()
    orphaned = {p for p, leader in leaders.items() if leader == victim}

    def leaderless() -> bool:
        now = _leaders(one, topic)
        return all(now[p] == -1 for p in orphaned) and all(
            now[p] == leaders[p] for p in set(leaders) - orphaned
        )

    _wait(leaderless, f"broker {victim}'s partitions without a leader")
    # The others' partitions still take writes.
    survivors = [p for p in range(PARTITIONS) if p not in orphaned]
    p = Producer({"bootstrap.servers": one, "acks": "all"})
    for part in survivors:
        p.produce(topic, value=b"meanwhile", partition=part)
    assert p.flush(30) == 0

    cluster.broker(victim).restart()
    _wait(lambda: _leaders(one, topic) == leaders, f"broker {victim} leading again")
    got = _consume_all(one, topic, 300 + len(survivors))
    for part, values in delivered.items():
        assert got[part][: len(values)] == values  # every acknowledged record is back


def test_broker_without_etcd_refuses_writes_until_it_returns(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=1, session_timeout_ms=1000)
    bootstrap = cluster.bootstrap
    topic = f"fence-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, 1)

    def produce_code() -> int:
        r = _raw_produce(bootstrap, topic, (0,))
        return int(r.responses[0].partition_responses[0].error_code)

    assert produce_code() == ErrorCode.none
    assert cluster.etcd is not None
    cluster.etcd.kill()
    # Once its lease could have expired, the broker stops accepting writes.
    _wait(lambda: produce_code() == ErrorCode.not_leader_or_follower, "the broker fenced")
    cluster.etcd.start()
    _wait(lambda: produce_code() == ErrorCode.none, "writes accepted again", timeout=60)


# Small internal topics: a cluster test creates them and every partition must find a leader.
# One replica each: these tests follow a coordinator's partition to the one broker that holds
# it, across that broker's restart (with min(3, brokers) replicas another would take over).
_INTERNAL = {
    "offsets_topic_num_partitions": "6",
    "transaction_state_log_num_partitions": "6",
    "offsets_topic_replication_factor": "1",
    "transaction_state_log_replication_factor": "1",
    "group_initial_rebalance_delay_ms": "0",
}


def _coordinator(bootstrap: str, key: str, key_type: int) -> int:
    """The node FindCoordinator (v3) names for ``key``, asked until it names one."""

    def ask() -> int | None:
        with RawClient(bootstrap) as c:
            r = c.request(request_class(10, 3)(key=key, key_type=key_type))
        return int(r.node_id) if r.error_code == ErrorCode.none else None

    return _wait(lambda: (lambda n: n if n is not None else None)(ask()), f"a coordinator of {key}")


def _key_coordinated_elsewhere(bootstrap: str, prefix: str, key_type: int, avoid: int) -> tuple[str, int]:
    """A key (group or transactional id) whose coordinator is not broker ``avoid``."""
    for i in range(100):
        key = f"{prefix}-{i}"
        node = _coordinator(bootstrap, key, key_type)
        if node != avoid:
            return key, node
    raise AssertionError(f"every {prefix} key is coordinated by broker {avoid}")


def _heartbeat_code(bootstrap: str, group: str) -> int:
    body = request_class(12, 3)(group_id=group, generation_id=1, member_id="m",
                                group_instance_id=None)
    with RawClient(bootstrap) as c:
        return int(c.request(body).error_code)


def _group_consume(bootstrap: str, topic: str, group: str, count: int) -> list[str]:
    """``count`` records through a confluent-kafka group member, committed synchronously."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": 10_000,
    })
    got: list[str] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            got.append(msg.value().decode())
        consumer.commit(asynchronous=False)
        committed = consumer.committed(
            [CTP(topic, p) for p in range(PARTITIONS)], timeout=10
        )
        assert sum(max(tp.offset, 0) for tp in committed) == count
    finally:
        consumer.close()
    return got


def test_consumer_group_coordinated_by_another_broker_survives_its_restart(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=2000, **_INTERNAL)
    three = cluster.broker(3).address
    topic = f"group-{uuid.uuid4().hex[:6]}"
    _create(three, topic, PARTITIONS)
    values = [f"g{i}" for i in range(300)]
    _produce(three, topic, values)

    # A group coordinated by broker 1 or 2, reached through broker 3.
    group, coordinator = _key_coordinated_elsewhere(three, f"grp-{topic}", 0, avoid=3)
    assert _heartbeat_code(three, group) == ErrorCode.not_coordinator
    assert _heartbeat_code(cluster.broker(coordinator).address, group) != ErrorCode.not_coordinator

    got = _group_consume(three, topic, group, len(values))
    assert sorted(got) == sorted(values)

    # The coordinator's broker killed and restarted: its offsets partition has no leader
    # meanwhile (one replica), then it loads the group's committed offsets again.
    cluster.broker(coordinator).kill()
    cluster.broker(coordinator).restart()
    assert _coordinator(three, group, 0) == coordinator
    more = [f"h{i}" for i in range(60)]
    _produce(three, topic, more)

    consumer = KafkaConsumer(
        topic, bootstrap_servers=three, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=20_000,
    )
    resumed: list[str] = []
    try:
        for record in consumer:
            resumed.append(record.value.decode())
            if len(resumed) >= len(more):
                break
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(resumed) == sorted(more)  # from the committed offsets: nothing read twice


def _read_committed(bootstrap: str, topic: str, until: Callable[[list[str]], bool]) -> list[str]:
    """Every record a read_committed confluent consumer sees, from the start, until ``until``
    holds and a further second brings nothing."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"rc-{uuid.uuid4().hex[:6]}",
        "isolation.level": "read_committed", "enable.auto.commit": False,
    })
    got: list[str] = []
    try:
        consumer.assign([CTP(topic, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg.value().decode())
                quiet_since = time.monotonic()
            elif until(got) and time.monotonic() - quiet_since > 1.0:
                break
    finally:
        consumer.close()
    return got


def test_transactions_coordinated_by_another_broker_than_their_partitions(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, **_INTERNAL)
    one = cluster.broker(1).address
    topic = f"txn-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS else None)(_leaders(one, topic)),
        "every partition's leader",
    )
    assert set(leaders.values()) == {1, 2, 3}
    # A transactional id coordinated by broker 2 or 3, reached through broker 1; its
    # transaction writes to every partition, so most markers go to other brokers.
    txn_id, coordinator = _key_coordinated_elsewhere(one, f"tx-{topic}", 1, avoid=1)
    assert any(leader != coordinator for leader in leaders.values())

    producer = Producer({
        "bootstrap.servers": one, "transactional.id": txn_id, "linger.ms": 5,
        "transaction.timeout.ms": 30_000,
    })
    producer.init_transactions(30)

    def transaction(prefix: str, commit: bool) -> list[str]:
        values = [f"{prefix}{i}" for i in range(60)]
        producer.begin_transaction()
        for i, v in enumerate(values):
            producer.produce(topic, value=v.encode(), partition=i % PARTITIONS)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.flush(30)
            producer.abort_transaction(30)
        return values

    committed = transaction("c", commit=True)
    aborted = transaction("a", commit=False)
    committed += transaction("d", commit=True)

    got = _read_committed(one, topic, lambda g: len(g) >= len(committed))
    assert sorted(got) == sorted(committed)
    assert not set(got) & set(aborted)


def test_offsets_sent_to_a_transaction_whose_coordinator_is_not_the_group_coordinator(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, **_INTERNAL)
    one = cluster.broker(1).address
    source, sink = f"src-{uuid.uuid4().hex[:6]}", f"dst-{uuid.uuid4().hex[:6]}"
    _create(one, source, PARTITIONS)
    _create(one, sink, PARTITIONS)
    values = [f"s{i}" for i in range(120)]
    _produce(one, source, values)
    group, group_coordinator = _key_coordinated_elsewhere(one, f"eos-{source}", 0, avoid=1)
    txn_id, _ = _key_coordinated_elsewhere(
        one, f"eos-tx-{source}", 1, avoid=group_coordinator
    )

    consumer = Consumer({
        "bootstrap.servers": one, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "isolation.level": "read_committed",
    })
    producer = Producer({"bootstrap.servers": one, "transactional.id": txn_id})
    producer.init_transactions(30)
    copied = 0
    try:
        consumer.subscribe([source])
        deadline = time.monotonic() + 60
        while copied < len(values) and time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(50, 0.5) if m.error() is None]
            if not msgs:
                continue
            producer.begin_transaction()
            for m in msgs:
                producer.produce(sink, value=m.value(), partition=m.partition())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
            copied += len(msgs)
        assert copied == len(values)
        # The offsets became visible with the COMMIT marker in the group's partition.
        committed = _wait(
            lambda: (lambda c: c if sum(max(tp.offset, 0) for tp in c) == len(values) else None)(
                consumer.committed([CTP(source, p) for p in range(PARTITIONS)], timeout=10)
            ),
            "the transaction's offsets committed",
        )
        assert sum(tp.offset for tp in committed) == len(values)
    finally:
        consumer.close()
    got = _read_committed(one, sink, lambda g: len(g) >= len(values))
    assert sorted(got) == sorted(values)


def _txn_state(bootstrap: str, txn_id: str) -> str:
    with RawClient(bootstrap) as c:
        r = c.request(request_class(65, 0)(transactional_ids=(txn_id,)))
    (state,) = r.transaction_states
    return str(state.transaction_state) if state.error_code == ErrorCode.none else ""


def test_a_commit_completes_only_once_a_killed_partition_leader_has_its_marker(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=2000, **_INTERNAL)
    one = cluster.broker(1).address
    topic = f"txk-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS else None)(_leaders(one, topic)),
        "every partition's leader",
    )
    txn_id, coordinator = _key_coordinated_elsewhere(one, f"txk-{topic}", 1, avoid=1)
    victim = next(n for n in (2, 3) if n != coordinator)
    assert victim in leaders.values()
    at_coordinator = cluster.broker(coordinator).address

    producer = Producer({"bootstrap.servers": one, "transactional.id": txn_id})
    producer.init_transactions(30)
    producer.begin_transaction()
    values = [f"k{i}" for i in range(60)]
    for i, v in enumerate(values):
        producer.produce(topic, value=v.encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    cluster.broker(victim).kill()
    producer.commit_transaction(30)  # answered once PrepareCommit is stored

    # The victim's partitions cannot take their marker: the transaction stays PrepareCommit.
    assert _txn_state(at_coordinator, txn_id) == "PrepareCommit"
    time.sleep(1.0)  # the coordinator retries meanwhile; nothing may complete it
    assert _txn_state(at_coordinator, txn_id) == "PrepareCommit"

    cluster.broker(victim).restart()
    _wait(lambda: _txn_state(at_coordinator, txn_id) == "CompleteCommit",
          "the commit completed", timeout=60)
    got = _read_committed(one, topic, lambda g: len(g) >= len(values))
    assert sorted(got) == sorted(values)
