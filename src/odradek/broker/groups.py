"""The group coordinator on the broker's event loop: its storage (``__consumer_offsets``), its
loading at start-up and its timers.

The coordinator itself (:mod:`odradek.coordinator.group`) is synchronous and clock-driven; this
module gives it a writer that appends to the internal topic (created on first use with
``offsets.topic.num.partitions`` partitions and ``cleanup.policy=compact``), replays that topic
before the broker serves, and runs a task that advances the coordinator's timer at each deadline.
A write is acknowledged once it is in the log and the high watermark covers it (one replica);
the coordinator applies a change only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from odradek.coordinator.group.context import GroupConfig, TopicInfo
from odradek.coordinator.group.coordinator import GroupCoordinator, StoredMarker, StoredRecord
from odradek.coordinator.pending import Pending
from odradek.errors import CoordinatorNotAvailableError, KafkaError
from odradek.protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    SimpleRecord,
    control_type,
    decode_records,
    encode_batch,
    read_batch_header,
)
from odradek.storage.log import AppendOrigin

if TYPE_CHECKING:
    from odradek.broker.app import Broker

__all__ = ["GroupRuntime", "OFFSETS_TOPIC"]

log = logging.getLogger("odradek.broker.groups")

OFFSETS_TOPIC = "__consumer_offsets"

T = TypeVar("T")


class GroupRuntime:
    """Owned by the broker's event loop, like everything in :mod:`odradek.broker`."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.config = GroupConfig.from_broker(broker.config)
        self.coordinator = GroupCoordinator(
            self.config, broker.clock, write=self._write, topics=self._topic_infos
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._topic_cache: tuple[int, dict[str, TopicInfo]] | None = None
        self.coordinator.timer.on_schedule = lambda _deadline: self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    def load(self) -> int:
        """Replay ``__consumer_offsets`` into the coordinator; returns the records applied."""
        meta = self._broker.topics.topic(OFFSETS_TOPIC)
        applied = 0
        if meta is not None:
            for partition in range(meta.partitions):
                applied += self.coordinator.load(partition, self._read_partition(partition))
        self.coordinator.loaded()
        if applied:
            log.info("group coordinator loaded %d records of %s", applied, OFFSETS_TOPIC)
        return applied

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_timers(), name="odradek-group-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run_timers(self) -> None:
        coordinator = self.coordinator
        while True:
            self._wake.clear()
            try:
                coordinator.poll()
            except Exception:
                log.exception("group coordinator timer failed")
            deadline = coordinator.timer.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(deadline - coordinator.now_ms(), 0) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    # -- storage ----------------------------------------------------------------------------

    def ensure_offsets_topic(self) -> None:
        topics = self._broker.topics
        if topics.topic(OFFSETS_TOPIC) is not None:
            return
        topics.create(
            OFFSETS_TOPIC,
            num_partitions=self.config.offsets_partitions,
            replication_factor=1,
            configs={
                "cleanup.policy": "compact",
                "segment.bytes": "104857600",
                "compression.type": "producer",
            },
        )
        log.info(
            "created %s with %d partitions", OFFSETS_TOPIC, self.config.offsets_partitions
        )

    def _write(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None,
    ) -> None:
        try:
            self.ensure_offsets_topic()
            plog = self._broker.topics.log(OFFSETS_TOPIC, partition)
            now = self._broker.clock.milliseconds()
            simple = [SimpleRecord(value, key, timestamp=now) for key, value in records]
            if producer is None:
                batch = encode_batch(simple)
            else:
                batch = encode_batch(
                    simple,
                    producer_id=producer[0],
                    producer_epoch=producer[1],
                    is_transactional=True,
                )
            plog.append_as_leader(batch, leader_epoch=0, origin=AppendOrigin.COORDINATOR)
            plog.update_high_watermark(plog.log_end_offset)
        except KafkaError as e:
            log.warning("writing to %s-%d failed: %s", OFFSETS_TOPIC, partition, e)
            raise CoordinatorNotAvailableError(f"{OFFSETS_TOPIC} is not writable: {e}") from e
        self._broker.append_watch.notify((OFFSETS_TOPIC, partition))

    def _read_partition(self, partition: int) -> Iterator[StoredRecord | StoredMarker]:
        plog = self._broker.topics.log(OFFSETS_TOPIC, partition)
        offset = plog.log_start_offset
        end = plog.high_watermark
        while offset < end:
            data = memoryview(plog.read(offset, max_bytes=1 << 20).records)
            if not data:
                break
            pos = 0
            while pos < len(data):
                header = read_batch_header(data, pos)
                batch = data[pos : pos + header.size]
                pos += header.size
                offset = header.next_offset
                records = decode_records(batch)
                if header.is_control:
                    for record in records:
                        marker = control_type(record.key)
                        if marker in (CONTROL_ABORT, CONTROL_COMMIT):
                            yield StoredMarker(header.producer_id, marker == CONTROL_COMMIT)
                    continue
                producer_id = header.producer_id if header.is_transactional else None
                for record in records:
                    yield StoredRecord(record.key, record.value, producer_id)

    def _topic_infos(self) -> Mapping[str, TopicInfo]:
        topics = self._broker.topics.topics()
        # Topic metadata changes rarely; rebuild the map only when it does.
        stamp = hash(tuple((t.name, t.topic_id, t.partitions) for t in topics))
        cached = self._topic_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, {t.name: TopicInfo(t.name, t.topic_id, t.partitions) for t in topics})
            self._topic_cache = cached
        return cached[1]


def then(pending: Pending[T], build: Callable[[T], Any]) -> Any:
    """``build(value)`` now if ``pending`` is complete, else an awaitable of it."""
    if pending.done:
        return build(pending.value)

    async def wait() -> Any:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        pending.on_done(lambda value: None if fut.done() else fut.set_result(value))
        return build(await fut)

    return wait()
