"""max.broker.partitions, log.max.open.files and shutting down many partitions, with real
clients against real brokers (in-process, and `odradek serve` for signals and /proc)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kio.schema.metadata.v12 import request as metadata_v12
from rawclient import RawClient

from odradek.broker.runner import BrokerThread, local_config

pytestmark = pytest.mark.integration


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _refusal(future: object) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(timeout=30)  # type: ignore[attr-defined]
    err = info.value.args[0]
    assert isinstance(err, KafkaError)
    return err


def test_topics_and_partitions_beyond_the_limit_are_refused_with_a_reason(
    tmp_path: Path,
) -> None:
    config = local_config(tmp_path / "data", max_broker_partitions="10", num_partitions="2")
    with BrokerThread(config) as b:
        admin = _admin(b.bootstrap)
        admin.create_topics([NewTopic("a", 7, 1)])["a"].result(timeout=30)

        err = _refusal(admin.create_topics([NewTopic("b", 5, 1)])["b"])
        assert err.code() == KafkaError.POLICY_VIOLATION
        assert "max.broker.partitions is 10" in err.str() and "holds 7" in err.str()

        err = _refusal(admin.create_partitions([NewPartitions("a", 12)])["a"])
        assert err.code() == KafkaError.INVALID_PARTITIONS
        assert "max.broker.partitions is 10" in err.str() and "to 12" in err.str()

        # What fits is still accepted, up to the limit exactly.
        admin.create_partitions([NewPartitions("a", 8)])["a"].result(timeout=30)

        # An automatically created topic (2 partitions) fits once, then is refused too.
        def auto_create(name: str) -> int:
            with RawClient(b.bootstrap) as raw:
                answer = raw.request(metadata_v12.MetadataRequest(
                    topics=(metadata_v12.MetadataRequestTopic(topic_id=None, name=name),),
                    allow_auto_topic_creation=True,
                    include_topic_authorized_operations=False,
                ))
            return int(answer.topics[0].error_code)

        assert auto_create("auto-1") == 0
        assert auto_create("auto-2") == KafkaError.POLICY_VIOLATION
        md = admin.list_topics(timeout=10)
        assert sum(len(t.partitions) for t in md.topics.values()) == 10
        assert "auto-2" not in md.topics and "b" not in md.topics


def test_more_partitions_on_disk_than_the_limit_start_and_are_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    with BrokerThread(local_config(data)) as b:
        admin = _admin(b.bootstrap)
        admin.create_topics([NewTopic("big", 12, 1)])["big"].result(timeout=30)
    caplog.set_level(logging.WARNING, logger="odradek.broker")
    with BrokerThread(local_config(data, max_broker_partitions="5")) as b:
        assert "holds 12 partitions, more than max.broker.partitions (5)" in caplog.text
        p = Producer({"bootstrap.servers": b.bootstrap})
        p.produce("big", b"still served", partition=11)
        assert p.flush(30) == 0
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition("big", 11, 0)])
        msg = c.poll(30)
        assert msg is not None and msg.error() is None and msg.value() == b"still served"
        c.close()
        admin = _admin(b.bootstrap)
        err = _refusal(admin.create_topics([NewTopic("more", 1, 1)])["more"])
        assert err.code() == KafkaError.POLICY_VIOLATION


def _serve(data: Path, props: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    config = data.with_suffix(".properties")
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0", "--data-dir",
         str(data), "--config", str(config), "--log-level", "INFO"],
        stdout=subprocess.PIPE, stderr=open(data.with_suffix(".log"), "a"),  # noqa: SIM115
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("odradek listening on "), line
    return proc, line.split()[-1]


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_2000_partitions_keep_fds_flat_and_sigterm_leaves_a_clean_shutdown(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    cap = 40
    proc, bootstrap = _serve(data, {"log.max.open.files": str(cap)})
    try:
        admin = _admin(bootstrap)
        admin.list_topics(timeout=10)
        idle = _fds(proc.pid)
        topics = [f"many-{t}" for t in range(20)]
        for f in admin.create_topics([NewTopic(t, 100, 1) for t in topics]).values():
            f.result(timeout=120)
        # Connections (admin, producer, consumer: a few each) come on top of the cap.
        assert _fds(proc.pid) <= idle + cap + 10
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        for t in topics:
            for part in range(100):
                p.produce(t, f"{t}/{part}".encode(), partition=part)
        assert p.flush(120) == 0
        assert _fds(proc.pid) <= idle + cap + 10
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(t, part, 0) for t in topics for part in range(100)])
        seen: set[bytes] = set()
        deadline = time.monotonic() + 120
        while len(seen) < 2000 and time.monotonic() < deadline:
            for m in c.consume(500, timeout=1):
                if m.error() is None:
                    seen.add(m.value())
        c.close()
        assert seen == {f"{t}/{part}".encode() for t in topics for part in range(100)}
        assert _fds(proc.pid) <= idle + cap + 10
        del p, admin
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = data.with_suffix(".log").read_text()
    # 2,000 and __consumer_offsets.
    assert re.search(r"closed 20\d\d partition logs", log_text)

    proc, bootstrap = _serve(data, {"log.max.open.files": str(cap)})
    try:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "g2"})
        low, high = c.get_watermark_offsets(TopicPartition("many-19", 99), timeout=30)
        assert (low, high) == (0, 1)
        c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = data.with_suffix(".log").read_text()
    assert re.search(r"found 20\d\d partition logs from .* \(after a clean shutdown\)", log_text)
    assert "unclean shutdown" not in log_text
