"""A reassignment carried out by replication itself: three broker processes on a real etcd; a
topic on broker 1 alone, written with acks=all, is moved to brokers 2 and 3 with
``odradek cluster reassign``. The new replicas fetch from the leader, the leader adds them to
the ISR once caught up, the controller completes the move (broker 1 leaves, 2 leads), and every
acknowledged record is read back from the new leader. Then the preferred replica is made to lead
again with ``odradek cluster elect-leaders``.

Runs only where followers fetch (``odradek.broker.replica_fetcher``, issue 13's replication);
until then the ISR changes are written by hand in tests/cluster/test_reassignment*.py."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.cluster.local import LocalCluster
from waiting import wait

pytest.importorskip("odradek.broker.replica_fetcher", reason="followers do not fetch yet")

_wait = functools.partial(wait, timeout=60.0)


pytestmark = pytest.mark.integration


def _partition(bootstrap: str, topic: str) -> Any:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return md.topics[topic].partitions[0]


def _cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "odradek", "cluster", *args],
                            capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout.decode()


def test_a_topic_moves_to_other_brokers(
    odradek_cluster_factory: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=3000)
    bootstrap = cluster.bootstrap
    topic = f"move-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, replica_assignment=[[1]])])[topic].result(30)
    _wait(lambda: _partition(bootstrap, topic).leader == 1, "broker 1 to lead")

    acked: list[bytes] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    for i in range(3000):
        producer.produce(topic, f"r-{i}".encode() * 10, partition=0,
                         on_delivery=lambda err, msg: acked.append(msg.value()) if err is None
                         else None)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert len(acked) == 3000

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [2, 3]},
    ]}))
    out = _cli("reassign", "--bootstrap-server", bootstrap,
               "--reassignment-json-file", str(plan), "--execute")
    assert f"Successfully started partition reassignments for {topic}-0" in out
    _wait(lambda: f"Reassignment of partition {topic}-0 is completed." in _cli(
        "reassign", "--bootstrap-server", bootstrap, "--reassignment-json-file", str(plan),
        "--verify"), "the reassignment to complete", timeout=90)
    p = _partition(bootstrap, topic)
    assert (p.leader, sorted(p.replicas), sorted(p.isrs)) == (2, [2, 3], [2, 3])
    _wait(lambda: not (cluster.broker(1).data_dir / f"{topic}-0").exists(),
          "broker 1 to delete its log")

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"c-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while len(values) < 3000 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                values.append(msg.value())
    finally:
        consumer.close()
    assert sorted(values) == sorted(acked)

    # A reordering completes at once and leaves the leader be; the preferred replica (3) is
    # then elected on request (the automatic check is 300 s away).
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "replicas": [3, 2]},
    ]}))
    _cli("reassign", "--bootstrap-server", bootstrap, "--reassignment-json-file", str(plan),
         "--execute")
    out = _cli("elect-leaders", "--bootstrap-server", bootstrap, "--election-type",
               "preferred", "--topic", topic, "--partition", "0")
    assert out == f"Successfully completed leader election (PREFERRED) for partitions {topic}-0\n"
    assert _partition(bootstrap, topic).leader == 3
