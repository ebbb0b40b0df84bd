"""The broker coordinating a consumer group is killed while two confluent-kafka members consume
and commit (``__consumer_offsets`` with three replicas): another broker takes the coordinator
over within seconds, the group stays (or is again) Stable with both members, commits work
again, and no acknowledged commit is lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, Producer
from confluent_kafka import TopicPartition as CTP
from confluent_kafka.admin import AdminClient, NewTopic
from rawclient import RawClient, request_class

from odradek.cluster.local import LocalCluster
from odradek.errors import ErrorCode
from waiting import wait as _wait

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _coordinator(cluster: LocalCluster, group: str, avoid: int | None = None) -> int | None:
    """The node FindCoordinator names for ``group``, asked of the running brokers but
    ``avoid``."""
    for node_id, broker in cluster.brokers.items():
        if node_id == avoid or not broker.running:
            continue
        try:
            with RawClient(broker.address) as c:
                r = c.request(request_class(10, 3)(key=group, key_type=0))
        except OSError:
            continue
        if r.error_code == ErrorCode.none:
            return int(r.node_id)
    return None


class _Member(threading.Thread):
    """A group member that commits synchronously after every batch; ``acked`` holds what was
    acknowledged, with when."""

    def __init__(self, bootstrap: str, topic: str, group: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "log_level": 0,
        })
        self.topic = topic
        self.stop = stop
        self.acked: list[tuple[float, dict[int, int]]] = []
        self.assigned = threading.Event()

    def run(self) -> None:
        c = self.consumer
        c.subscribe([self.topic], on_assign=lambda _c, ps: self.assigned.set())
        try:
            while not self.stop.is_set():
                msgs = [m for m in c.consume(100, 0.2) if m.error() is None]
                if not msgs:
                    continue
                offsets = {}
                for m in msgs:
                    offsets[m.partition()] = m.offset() + 1
                try:
                    answer = c.commit(offsets=[CTP(self.topic, p, o) for p, o in offsets.items()],
                                      asynchronous=False)
                except Exception:
                    continue  # in doubt: not counted
                done = {tp.partition: tp.offset for tp in answer or () if tp.error is None}
                if done:
                    self.acked.append((time.monotonic(), done))
        finally:
            c.close()


def test_a_killed_group_coordinator_is_taken_over_within_seconds(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(
        brokers=3, session_timeout_ms=2000, offsets_topic_num_partitions="3",
        transaction_state_log_num_partitions="3", group_initial_rebalance_delay_ms="0",
        min_insync_replicas="2",
    )
    bootstrap = ",".join(b.address for b in cluster.brokers.values())
    topic, group = f"takeover-{uuid.uuid4().hex[:6]}", f"grp-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)

    stop = threading.Event()

    def produce() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 0})
        i = 0
        while not stop.is_set():
            producer.produce(topic, str(i).encode())
            producer.poll(0)
            i += 1
            time.sleep(0.01)
        producer.flush(10)

    producing = threading.Thread(target=produce, daemon=True)
    members = [_Member(bootstrap, topic, group, stop) for _ in range(2)]
    producing.start()
    for m in members:
        m.start()
    try:
        for m in members:
            assert m.assigned.wait(30), "a member got no assignment"
        _wait(lambda: all(m.acked for m in members), "both members to commit")
        coordinator = _wait(lambda: _coordinator(cluster, group), "the coordinator")

        cluster.broker(coordinator).kill()
        killed = time.monotonic()
        before: dict[int, int] = {}
        for m in members:
            for _t, done in m.acked:
                for p, o in done.items():
                    before[p] = max(before.get(p, -1), o)

        def committed_again() -> float | None:
            times = [t for m in members for t, _ in m.acked if t > killed]
            return min(times) - killed if times else None

        took = _wait(committed_again, "a commit after the takeover", timeout=30)
        new = _wait(lambda: (n := _coordinator(cluster, group, avoid=coordinator)) != coordinator
                    and n, "another coordinator")
        admin = AdminClient({"bootstrap.servers": cluster.broker(new).address})

        def stable() -> Any:
            d = admin.describe_consumer_groups([group])[group].result(timeout=10)
            return d.state == ConsumerGroupState.STABLE and len(d.members) == 2 and d

        _wait(stable, "the group to be Stable with both members", timeout=30)
        # Well within what a member tolerates (its session timeout is 6 s; the brokers' 2 s).
        assert took < 15, f"commits resumed {took:.1f} s after the coordinator was killed"
        stop.set()
        for m in members:
            m.join(30)
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            now = reader.committed([CTP(topic, p) for p in range(PARTITIONS)], timeout=10)
        finally:
            reader.close()
        for tp in now:
            assert tp.offset >= before.get(tp.partition, -1001), (tp, before)
    finally:
        stop.set()
        producing.join(30)
        for m in members:
            m.join(30)
