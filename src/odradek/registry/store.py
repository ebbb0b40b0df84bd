"""The ``_schemas`` topic read and written with confluent-kafka.

:class:`KafkaStore` keeps a :class:`~odradek.registry.state.RegistryState` equal to the topic: a
reader thread polls the topic's single partition from the start and hands each batch of records
to the event loop, which applies them in order. Writes go through an idempotent ``acks=all``
producer; a write is complete when the reader has applied it, so the state never runs ahead of
the log (persist before apply). :meth:`KafkaStore.read_to_end` captures the partition's high
watermark at call time and waits until everything below it is applied: what a request answers
from includes every write acknowledged before it began, by any instance.

Owned by the registry's event loop (state, waiters); the reader thread only polls and posts.
Nothing is kept on disk: a restart replays the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.registry.errors import RegistryError, store_error, store_timeout
from odradek.registry.records import (
    Key,
    RecordFormatError,
    Value,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from odradek.registry.state import RegistryState

__all__ = ["DEFAULT_TOPIC", "KafkaStore"]

DEFAULT_TOPIC = "_schemas"
_log = logging.getLogger("odradek.registry.store")


class KafkaStore:
    """The registry's state and its log. ``timeout`` bounds each wait on Kafka, in seconds."""

    def __init__(
        self, bootstrap: str, *, topic: str = DEFAULT_TOPIC, timeout: float = 30.0
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self.state = RegistryState()
        self._tp = TopicPartition(topic, 0)
        self._applied = 0  # the offset after the last record applied
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Any = None
        self._watermarks: Any = None
        self._producer: Any = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        #: Writes are serialised: each reads to the end, decides, appends and waits.
        self.write_lock = asyncio.Lock()

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._ensure_topic)
        # librdkafka's own log lines go to Python logging, not to stderr.
        common: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": "odradek-registry",
            "logger": _log,
        }
        self._consumer = Consumer({
            **common,
            # Assigned, never subscribed: the group id only satisfies the client.
            "group.id": f"odradek-registry-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
        })
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        # A second handle for the end offset: librdkafka's offset query blocks on a consumer
        # another thread is polling.
        self._watermarks = Consumer({
            **common,
            "group.id": f"odradek-registry-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        })
        self._producer = Producer({
            **common,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
        })
        self._reader = threading.Thread(target=self._read_loop, name="registry-reader", daemon=True)
        self._reader.start()
        await self.read_to_end()
        _log.info(
            "registry state loaded from %s: %d subjects, max id %d, offset %d",
            self.topic, len(self.state.subjects), self.state.max_id, self._applied,
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 5)
        for consumer in (self._consumer, self._watermarks):
            if consumer is not None:
                await asyncio.to_thread(consumer.close)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(store_error("registry stopping"))
        self._waiters.clear()

    def _ensure_topic(self) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _log}
        admin = AdminClient(conf)
        try:
            metadata = admin.list_topics(timeout=self.timeout)
        except KafkaException as e:
            raise store_error(f"cannot reach {self.bootstrap}: {e}") from None
        if self.topic in metadata.topics and metadata.topics[self.topic].error is None:
            return
        # One partition keeps a total order of all writes; compaction keeps the latest record
        # per key, which is all the state needs.
        replication = min(3, max(1, len(metadata.brokers)))
        new = NewTopic(self.topic, 1, replication, config={"cleanup.policy": "compact"})
        future = admin.create_topics([new], operation_timeout=self.timeout)[self.topic]
        try:
            future.result(timeout=self.timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise store_error(f"cannot create {self.topic}: {e}") from None

    # -- reading -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                # A batch call waits its whole timeout unless the batch fills, which would hold
                # every write for that long: wait for one record, then take what else is there.
                first = self._consumer.poll(0.1)
                if first is None:
                    continue
                messages = [first, *self._consumer.consume(num_messages=500, timeout=0)]
            except (KafkaException, RuntimeError) as e:
                _log.warning("reading %s: %s", self.topic, e)
                continue
            records = []
            for m in messages:
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        _log.warning("reading %s: %s", self.topic, m.error())
                    continue
                records.append((m.offset(), m.key(), m.value()))
            if records and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closing
                    self._loop.call_soon_threadsafe(self._apply, records)

    def _apply(self, records: list[tuple[int, bytes | None, bytes | None]]) -> None:
        for offset, key_bytes, value_bytes in records:
            if offset < self._applied:
                continue
            try:
                key = decode_key(key_bytes)
                if key is not None:
                    self.state.apply(key, decode_value(key, value_bytes))
            except RecordFormatError as e:
                _log.warning("%s offset %d skipped: %s", self.topic, offset, e)
            self._applied = offset + 1
        ready = [w for w in self._waiters if w[0] <= self._applied]
        self._waiters = [w for w in self._waiters if w[0] > self._applied]
        for _, fut in ready:
            if not fut.done():
                fut.set_result(None)

    async def _wait_applied(self, offset: int) -> None:
        if offset <= self._applied:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((offset, fut))
        try:
            await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise store_timeout(f"{self.topic} not read up to offset {offset}") from None

    async def read_to_end(self) -> None:
        """Wait until every record written before this call is applied."""
        try:
            _, high = await asyncio.to_thread(
                self._watermarks.get_watermark_offsets, self._tp, self.timeout, False
            )
        except KafkaException as e:
            raise store_error(f"cannot read the end of {self.topic}: {e}") from None
        await self._wait_applied(high)

    # -- writing -------------------------------------------------------------------------------

    async def append(self, records: list[tuple[Key, Value | None]]) -> None:
        """Write ``records`` in order and wait until the state has applied them."""
        if not records:
            return
        assert self._loop is not None
        loop = self._loop
        done: asyncio.Future[int] = loop.create_future()
        remaining = [len(records)]
        last = [-1]

        def delivered(err: Any, msg: Any) -> None:
            def settle() -> None:
                if done.done():
                    return
                if err is not None:
                    done.set_exception(store_error(str(err)))
                    return
                last[0] = max(last[0], msg.offset())
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set_result(last[0])
            loop.call_soon_threadsafe(settle)

        def produce() -> None:
            for key, value in records:
                self._producer.produce(
                    self.topic, key=encode_key(key), value=encode_value(value),
                    partition=0, on_delivery=delivered,
                )
            self._producer.flush(self.timeout)

        try:
            await asyncio.to_thread(produce)
            offset = await asyncio.wait_for(done, self.timeout)
        except TimeoutError:
            raise store_timeout(f"write to {self.topic} not acknowledged") from None
        except (KafkaException, BufferError) as e:
            raise store_error(str(e)) from None
        except RegistryError:
            raise
        await self._wait_applied(offset + 1)
