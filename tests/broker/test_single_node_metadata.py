"""The single node's cluster metadata: its in-process store survives restarts, a data dir of the
earlier format is migrated, and the broker's view shows it as the one live broker and the
controller."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

from odradek.broker.app import Broker
from odradek.broker.runner import local_config
from odradek.clock import ManualClock


def _broker(data: Path) -> Broker:
    return Broker(local_config(data), clock=ManualClock(1_700_000_000_000))


def test_topics_and_producer_ids_survive_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def first() -> tuple[uuid.UUID, int]:
        async with _broker(data) as broker:
            view = broker.cluster
            assert [b.info.node_id for b in view.live_brokers()] == [broker.node_id]
            assert view.controller_id == broker.node_id
            assert view.cluster_id == broker.metadata.cluster_id
            meta = await broker.topics.create("kept", num_partitions=3,
                                              configs={"retention.ms": "60000"})
            await broker.topics.create("dropped", num_partitions=1)
            await broker.topics.delete("dropped")
            await broker.topics.create_partitions("kept", 4, validate_only=False)
            # Housekeeping forgets the store's history; the image and later changes go on.
            await broker._maybe_compact_cluster_store()
            await broker._maybe_compact_cluster_store()
            await broker.topics.create("after", num_partitions=1)
            await broker.topics.delete("after")
            return meta.topic_id, broker.producer_ids.allocate()

    async def second(topic_id: uuid.UUID) -> int:
        async with _broker(data) as broker:
            kept = broker.topics.topic("kept")
            assert kept is not None and kept.topic_id == topic_id
            assert kept.partitions == 4 and kept.configs == {"retention.ms": "60000"}
            assert broker.topics.topic("dropped") is None
            assert broker.topics.log("kept", 3).log_end_offset == 0
            info = broker.cluster.topic("kept")
            assert info is not None
            assert {p.leader for p in info.partitions} == {broker.node_id}
            return broker.producer_ids.allocate()

    topic_id, pid = asyncio.run(first())
    assert asyncio.run(second(topic_id)) > pid


def test_a_data_dir_of_the_earlier_format_is_migrated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    meta = data / "__cluster_metadata"
    meta.mkdir(parents=True)
    topic_id = uuid.uuid4()
    (meta / "topics.json").write_text(json.dumps({"version": 1, "topics": [
        {"name": "old", "topic_id": str(topic_id), "partitions": 2, "configs": {}},
    ]}))
    (meta / "producer-ids.json").write_text(json.dumps({"next_producer_id": 3000}))
    (data / "meta.properties").write_text("version=1\ncluster.id=OLDCLUSTERIDxxxxxxxxxx\nnode.id=1\n")

    async def run() -> None:
        async with _broker(data) as broker:
            old = broker.topics.topic("old")
            assert old is not None and old.topic_id == topic_id and old.partitions == 2
            assert broker.topics.log("old", 1).log_end_offset == 0
            assert broker.cluster.cluster_id == "OLDCLUSTERIDxxxxxxxxxx"
            assert broker.producer_ids.allocate() >= 3000

    asyncio.run(run())
    asyncio.run(run())  # and again, from the store alone


def test_a_start_that_fails_before_registering_shuts_its_logs_down(tmp_path: Path) -> None:
    """The listener's port is taken: start-up fails after the logs were found. They are shut
    down as at a clean stop (the next start needs no recovery) and the data dir is free again."""
    data = tmp_path / "data"

    async def write() -> None:
        async with _broker(data) as broker:
            await broker.topics.create("kept", num_partitions=2)

    asyncio.run(write())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def fail() -> None:
            broker = Broker(local_config(data, listen=f"127.0.0.1:{port}"),
                            clock=ManualClock(1_700_000_000_000))
            try:
                await broker.start()
            except OSError:
                return
            await broker.stop()
            raise AssertionError("the broker started on a port in use")

        asyncio.run(fail())
    assert (data / ".kafka_cleanshutdown").exists()

    async def again() -> None:
        async with _broker(data) as broker:
            assert broker.logs.had_clean_shutdown
            assert broker.topics.log("kept", 1).log_end_offset == 0

    asyncio.run(again())
