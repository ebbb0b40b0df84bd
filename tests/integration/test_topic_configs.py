"""Topic configs that change what the broker stores: LogAppendTime, retention."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from odradek.broker.runner import BrokerThread, local_config

pytestmark = pytest.mark.integration


def _create(bootstrap: str, name: str, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(timeout=10)


def test_log_append_time_topics_get_broker_timestamps(bootstrap: str) -> None:
    topic = f"lat-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, **{"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, value=b"x", timestamp=1_000_000_000_000)
    assert p.flush(10) == 0
    after = int(time.time() * 1000)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "u", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    m = c.poll(10)
    c.close()
    assert m is not None and m.error() is None
    kind, ts = m.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 5 <= ts <= after + 5


@pytest.fixture
def fast_retention_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    config = local_config(tmp_path / "data", log_retention_check_interval_ms="50")
    with BrokerThread(config) as b:
        yield b


def test_retention_deletes_old_segments_and_moves_log_start(
    fast_retention_broker: BrokerThread,
) -> None:
    bootstrap = fast_retention_broker.bootstrap
    topic = f"ret-{uuid.uuid4().hex[:6]}"
    _create(bootstrap, topic, **{"segment.bytes": "2000", "retention.ms": "100"})
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    old = int(time.time() * 1000) - 60_000  # record timestamps a minute in the past
    for i in range(50):
        p.produce(topic, value=b"v" * 200, timestamp=old + i)
        p.flush(10)  # one batch per request, so the log spans many segments
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "u"})
    deadline = time.monotonic() + 20
    low = 0
    while time.monotonic() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
        if low > 0:
            break
        time.sleep(0.05)
    c.close()
    assert high == 50
    assert 0 < low < 50  # old segments went, the active one stays


def test_empty_cleanup_policy_keeps_old_segments(fast_retention_broker: BrokerThread) -> None:
    bootstrap = fast_retention_broker.bootstrap
    kept, control = (f"{prefix}-{uuid.uuid4().hex[:6]}" for prefix in ("keep", "ctl"))
    settings = {"segment.bytes": "2000", "retention.ms": "100"}
    _create(bootstrap, kept, **settings)
    _create(bootstrap, control, **settings)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, kept, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT)
    ])
    admin.incremental_alter_configs([resource])[resource].result(10)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    old = int(time.time() * 1000) - 60_000
    for topic in (kept, control):  # kept first: a pass that trims control has seen its data
        for i in range(30):
            p.produce(topic, value=b"v" * 200, timestamp=old + i)
            p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "u"})
    try:
        deadline = time.monotonic() + 20
        while c.get_watermark_offsets(TopicPartition(control, 0), timeout=5)[0] == 0:
            assert time.monotonic() < deadline, "retention never ran"
            time.sleep(0.05)
        # Retention passes are atomic on the broker's loop: that one covered both topics.
        assert c.get_watermark_offsets(TopicPartition(kept, 0), timeout=5) == (0, 30)
    finally:
        c.close()
