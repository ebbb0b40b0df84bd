"""What every coordinator's runtime needs from the broker: an internal topic to persist to and
read back at start-up, and a task that fires the coordinator's timers.

A write is one batch appended as the coordinator (``AppendOrigin.COORDINATOR``) and counts as
done once the high watermark covers it (one replica); a failed write raises
COORDINATOR_NOT_AVAILABLE so the coordinator changes nothing and the client retries, except a
batch too large to store, which retrying cannot fix: UNKNOWN_SERVER_ERROR, as in Kafka.
Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from odradek.clock import Clock
from odradek.coordinator.timer import Timer
from odradek.errors import (
    CoordinatorNotAvailableError,
    KafkaError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from odradek.protocol.records import (
    BatchHeader,
    Record,
    SimpleRecord,
    decode_records,
    encode_batch,
    read_batch_header,
)
from odradek.storage.log import AppendOrigin

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["InternalTopic", "TimerTask"]

log = logging.getLogger("odradek.broker")


class InternalTopic:
    """``name`` with ``partitions`` partitions and ``configs``, created on first use."""

    def __init__(
        self, broker: BrokerServices, name: str, partitions: int, configs: Mapping[str, str]
    ) -> None:
        self._broker = broker
        self.name = name
        self.partitions = partitions
        self._configs = dict(configs)

    def exists(self) -> bool:
        return self._broker.topics.topic(self.name) is not None

    def ensure(self) -> None:
        if self.exists():
            return
        self._broker.topics.create(
            self.name,
            num_partitions=self.partitions,
            replication_factor=1,
            configs=self._configs,
        )
        log.info("created %s with %d partitions", self.name, self.partitions)

    def append(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None = None,
    ) -> int:
        """Append ``records`` as one batch (transactional when ``producer`` = (id, epoch));
        returns the offset of its first record."""
        try:
            self.ensure()
            now = self._broker.clock.milliseconds()
            simple = [SimpleRecord(value, key, timestamp=now) for key, value in records]
            if producer is None:
                batch = encode_batch(simple)
            else:
                batch = encode_batch(
                    simple, producer_id=producer[0], producer_epoch=producer[1],
                    is_transactional=True,
                )
            info = self._broker.replicas.append_as_leader(
                self.name, partition, batch, origin=AppendOrigin.COORDINATOR
            )
            return info.first_offset
        except (RecordTooLargeError, RecordListTooLargeError) as e:
            # Retrying cannot help (Kafka answers these as UNKNOWN_SERVER_ERROR too).
            raise KafkaError(f"{self.name}: {e}") from e
        except KafkaError as e:
            log.warning("writing to %s-%d failed: %s", self.name, partition, e)
            raise CoordinatorNotAvailableError(f"{self.name} is not writable: {e}") from e

    def read(self, partition: int) -> Iterator[tuple[BatchHeader, list[Record]]]:
        """Every batch of ``partition`` up to the high watermark, with its records."""
        plog = self._broker.topics.log(self.name, partition)
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
                yield header, decode_records(batch)


class TimerTask:
    """Advances ``timer`` at each of its deadlines, on the event loop."""

    def __init__(self, timer: Timer, clock: Clock, name: str) -> None:
        self._timer = timer
        self._clock = clock
        self._name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        timer.on_schedule = lambda _deadline: self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        timer = self._timer
        while True:
            self._wake.clear()
            try:
                timer.advance(self._clock.milliseconds())
            except Exception:
                log.exception("%s: a timer failed", self._name)
            deadline = timer.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(deadline - self._clock.milliseconds(), 0) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
