"""A topic grown by more partitions than one etcd transaction holds keeps its data: the
controller must not take the first batches of new partition states (written before the record
with the new count) for leftovers, and no broker may see the topic vanish meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from odradek.broker.app import Broker
from odradek.broker.runner import local_config
from odradek.cluster.image import TopicsChange
from odradek.testing.etcd import EtcdProcess
from odradek.topic_names import OFFSETS_TOPIC


def test_growing_a_topic_past_one_transaction_keeps_its_data(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    prefix = f"/grow-{uuid.uuid4().hex[:8]}"
    config = local_config(tmp_path / "data", etcd_endpoints=shared_etcd.endpoint,
                          etcd_prefix=prefix, broker_session_timeout_ms="3000")

    async def scenario() -> None:
        async with Broker(config) as broker:
            await broker.topics.create("t", num_partitions=2)
            info = broker.cluster.topic("t")
            assert info is not None
            log = broker.topics.log("t", 0)
            before = log.log_end_offset
            removed: list[str] = []

            def watch(change: TopicsChange) -> None:
                removed.extend(i.name for i in change.removed)

            broker.cluster.add_topics_listener(watch)
            await broker.topics.create_partitions("t", 300, validate_only=False)
            grown = broker.cluster.topic("t")
            assert grown is not None and len(grown.partitions) == 300
            assert grown.topic_id == info.topic_id
            assert grown.partitions[:2] == info.partitions  # the old states untouched
            # Let the controller plan over the grown topic (one round trip through etcd).
            await broker.topics.create("after", num_partitions=1)
            assert [n for n in removed if n != OFFSETS_TOPIC] == []
            assert broker.topics.log("t", 0) is log and log.log_end_offset == before
            assert (tmp_path / "data" / "t-0").is_dir()

    asyncio.run(scenario())
