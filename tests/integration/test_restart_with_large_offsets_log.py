"""Coordinators load after the broker listens.

A broker restarted over a data directory with 200,000 offset commits serves at once: ApiVersions,
FindCoordinator and produce are answered while ``__consumer_offsets`` is still loading, requests
about a group (or a transactional id) of a partition not yet loaded get
COORDINATOR_LOAD_IN_PROGRESS, and a real consumer gets its committed offsets once loading is
done. Loading is held with the broker's load hook, so "still loading" is a state the test
controls, not a race it hopes to win.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.api_versions.v3 import request as api_versions_v3
from kio.schema.find_coordinator.v3 import request as find_coordinator_v3
from kio.schema.heartbeat.v4 import request as heartbeat_v4
from kio.schema.init_producer_id.v4 import request as init_producer_id_v4
from kio.schema.offset_fetch.v7 import request as offset_fetch_v7
from rawclient import RawClient

from odradek.broker.app import Broker
from odradek.broker.runner import BrokerThread, local_config
from odradek.config import BrokerConfig
from odradek.errors import ErrorCode

TOPIC = "loaded"
PARTITIONS = 4
GROUP = "the-group"
COMMITTED = 5
TXN_ID = "the-txn"
FILLER_GROUPS = 2000
FILLER_PARTITIONS = 100  # 2000 groups x 100 partitions = 200,000 offset commit records


class LoadGate:
    """The broker's ``coordinator_load_hook``: every internal-topic partition waits here before
    it loads, until :meth:`release` (called from the test's thread)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, topic: str, partition: int) -> None:
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            if self._released.is_set():
                self._event.set()
        self.reached.set()
        await self._event.wait()

    def release(self) -> None:
        self._released.set()
        if self._loop is not None and self._event is not None:
            self._loop.call_soon_threadsafe(self._event.set)


def _fill(config: BrokerConfig) -> None:
    """A first life of the broker: the topic, the group's commits, 200,000 commits of other
    groups, and a transactional id — all written through the coordinators' own API."""

    async def fill() -> None:
        async with Broker(config) as broker:
            await broker.topics.create(TOPIC, num_partitions=PARTITIONS)
            await broker.groups.ensure_offsets_topic()
            await broker.transactions.topic.ensure()
            groups = broker.group_coordinator
            for g in range(FILLER_GROUPS):
                group = f"filler-{g}"
                offsets = [("elsewhere", p, g, -1, None) for p in range(FILLER_PARTITIONS)]
                broker.groups.write(group, functools.partial(
                    groups.commit_offsets, group, member_id="", generation_or_epoch=-1,
                    instance_id=None, offsets=offsets, api_version=8,
                ))
            offsets = [(TOPIC, p, COMMITTED, -1, None) for p in range(PARTITIONS)]
            broker.groups.write(GROUP, functools.partial(
                groups.commit_offsets, GROUP, member_id="", generation_or_epoch=-1,
                instance_id=None, offsets=offsets, api_version=8,
            ))
            txns = broker.txn_coordinator
            broker.transactions.init_producer_id(
                TXN_ID, functools.partial(txns.init_producer_id, TXN_ID, 60_000)
            )

    asyncio.run(fill())


def test_a_restarted_broker_serves_while_its_coordinators_load(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", num_partitions="1")
    _fill(config)
    gate = LoadGate()
    with BrokerThread(config, coordinator_load_hook=gate) as broker:
        assert gate.reached.wait(timeout=30)
        assert broker.broker.groups.is_loading() and broker.broker.transactions.is_loading()
        with RawClient(broker.bootstrap) as raw:
            versions = raw.request(
                api_versions_v3.ApiVersionsRequest(
                    client_software_name="test", client_software_version="1"
                )
            )
            assert versions.error_code == ErrorCode.none
            # Kafka's FindCoordinator answers while the coordinator loads.
            found = raw.request(
                find_coordinator_v3.FindCoordinatorRequest(key=GROUP, key_type=0)
            )
            assert (found.error_code, found.node_id) == (ErrorCode.none, broker.broker.node_id)
            fetched = raw.request(
                offset_fetch_v7.OffsetFetchRequest(
                    group_id=GROUP,
                    topics=(offset_fetch_v7.OffsetFetchRequestTopic(
                        name=TOPIC, partition_indexes=(0,)
                    ),),
                    require_stable=False,
                )
            )
            assert fetched.error_code == ErrorCode.coordinator_load_in_progress
            beat = raw.request(
                heartbeat_v4.HeartbeatRequest(
                    group_id=GROUP, generation_id=1, member_id="m", group_instance_id=None
                )
            )
            assert beat.error_code == ErrorCode.coordinator_load_in_progress
            init = raw.request(
                init_producer_id_v4.InitProducerIdRequest(
                    transactional_id=TXN_ID, transaction_timeout=datetime.timedelta(minutes=1),
                    producer_id=-1,
                    producer_epoch=-1,
                )
            )
            assert init.error_code == ErrorCode.coordinator_load_in_progress
        # Produce is no coordinator's business: it is served while they load.
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for p in range(PARTITIONS):
            for i in range(2 * COMMITTED):
                producer.produce(TOPIC, value=f"{p}-{i}".encode(), partition=p)
        assert producer.flush(30) == 0

        consumer = Consumer({
            "bootstrap.servers": broker.bootstrap,
            "group.id": GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })
        try:
            tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
            with ThreadPoolExecutor(1) as pool:
                # Asked while loading: the client retries COORDINATOR_LOAD_IN_PROGRESS.
                committed = pool.submit(consumer.committed, tps, 60)
                gate.release()
                assert [tp.offset for tp in committed.result(timeout=90)] == (
                    [COMMITTED] * PARTITIONS
                )
            consumer.subscribe([TOPIC])
            first: dict[int, int] = {}
            for _ in range(600):
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    first.setdefault(message.partition(), message.offset())
                if len(first) == PARTITIONS:
                    break
            # Consumption resumes at the committed positions, not at the reset policy's.
            assert first == dict.fromkeys(range(PARTITIONS), COMMITTED)
        finally:
            consumer.close()
        coordinator = broker.broker.group_coordinator
        assert not broker.broker.groups.is_loading()
        assert len(coordinator.offsets) == FILLER_GROUPS + 1
        assert broker.broker.txn_coordinator.get(TXN_ID) is not None
