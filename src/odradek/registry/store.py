"""The ``_schemas`` topic read and written with confluent-kafka.

:class:`KafkaStore` keeps a :class:`~odradek.registry.state.RegistryState` equal to the topic: a
reader thread polls the topic's single partition from the start (``read_committed``) and hands
each batch of records to the event loop, which applies them in order. A write is complete when
the reader has applied it, so the state never runs ahead of the log (persist before apply).
:meth:`KafkaStore.read_to_end` captures the partition's end (the last stable offset) at call
time and waits until everything below it is applied: what a request answers from includes every
write committed before it began, by any instance.

Fencing: every write is a Kafka transaction of one ``transactional.id`` shared by all instances
of the registry (``odradek-registry-<topic>``). An instance *claims* the writer before its first
write (and again after being fenced): a new producer's ``init_transactions`` bumps the id's
producer epoch, which aborts a transaction the previous writer has open and makes the broker
refuse all its later writes. A claim is followed by reading to the end, so the claimant decides
from every write the previous primary committed, and a deposed primary's in-flight write either
committed before the claim (and is read) or is refused (:class:`~odradek.registry.errors.
FencedError`). Nothing in the records changes: they stay Confluent's, and transaction markers
are invisible to every reader.

Owned by the registry's event loop (state, waiters, the writer); the reader thread only polls
and posts. Nothing is kept on disk: a restart replays the topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from odradek.registry.errors import FencedError, RegistryError, store_error, store_timeout
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
#: While creating the topic in a starting cluster: how long no new broker must have joined
#: before the registry stops waiting for more.
_SETTLE_S = 3.0
#: The errors with which a broker refuses a writer whose epoch another has since bumped.
_FENCED = frozenset({
    KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
})


class KafkaStore:
    """The registry's state and its log. ``timeout`` bounds each wait on Kafka, in seconds."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = DEFAULT_TOPIC,
        timeout: float = 30.0,
        transaction_timeout_ms: int = 10000,
        replication_factor: int = 3,
        cluster_wait: float = 0.0,
    ) -> None:
        """``transaction_timeout_ms`` bounds how long an instance that died mid-write holds the
        topic's end back from readers, when no other instance claims the writer before.
        ``replication_factor`` and ``cluster_wait`` (seconds) apply when the topic is created
        (:meth:`_ensure_topic`)."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self.transactional_id = f"odradek-registry-{topic}"
        self._transaction_timeout_ms = transaction_timeout_ms
        self._replication_factor = replication_factor
        self._cluster_wait = cluster_wait
        self.state = RegistryState()
        self._tp = TopicPartition(topic, 0)
        self._applied = 0  # the offset after the last record applied
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Any = None
        self._watermarks: Any = None
        self._producer: Any = None  # the claimed transactional writer; None until claimed
        self._common: dict[str, Any] = {}
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()
        self._posted = -1  # the reader thread's: the last position it handed over
        self._end_query: asyncio.Future[int] | None = None  # the end-offset query in flight
        self._next_end: asyncio.Future[int] | None = None  # for callers that came during it
        #: Writes are serialised: each claims if it must, reads to the end, decides, appends
        #: and waits (:meth:`writing`).
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
        self._common = common
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
        self._reader = threading.Thread(target=self._read_loop, name="registry-reader", daemon=True)
        self._reader.start()
        await self.read_to_end()
        _log.info(
            "registry state loaded from %s: %d subjects, max id %d, offset %d",
            self.topic, len(self.state.subjects), self.state.max_id(), self._applied,
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join)
        self._producer = None  # a write in flight is aborted by the broker's transaction timeout
        for consumer in (self._consumer, self._watermarks):
            if consumer is not None:
                await asyncio.to_thread(consumer.close)
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(store_error("registry stopping"))
        self._waiters.clear()

    def _ensure_topic(self) -> None:
        """Create the topic unless it is there: one partition (one total order of all writes),
        compacted (the latest record per key is all the state needs), with
        min(``replication_factor``, live brokers) replicas, as Confluent's ``kafkastore.topic.
        replication.factor``. With ``cluster_wait``, a cluster that is still starting (fewer
        live brokers than wanted) is given that long to fill, stopping early once no broker
        has joined for ``_SETTLE_S``: a registry in a broker's process starts as soon as its
        own broker has registered, and would otherwise keep its log on that broker alone."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _log}
        admin = AdminClient(conf)
        start = time.monotonic()
        deadline = start + self.timeout
        wait_until = start + self._cluster_wait
        seen, changed = -1, start
        while True:
            try:
                metadata = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaException as e:
                raise store_error(f"cannot reach {self.bootstrap}: {e}") from None
            found = metadata.topics.get(self.topic)
            if found is not None and (
                found.error is None or found.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                return  # there (a leader it lacks for the moment is waited for by the reader)
            now = time.monotonic()
            live = len(metadata.brokers)
            if live != seen:
                seen, changed = live, now
            if live < self._replication_factor and now < wait_until and (
                live == 0 or now - changed < _SETTLE_S
            ):
                time.sleep(0.2)
                continue
            replication = max(1, min(self._replication_factor, live))
            if replication < self._replication_factor:
                _log.warning(
                    "creating %s with %d replicas, fewer than the %d wanted: %d live brokers",
                    self.topic, replication, self._replication_factor, live,
                )
            try:
                self._create(admin, replication, deadline)
                return
            except KafkaException as e:
                code = e.args[0].code()
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    return
                # A broker answering before its image shows the live brokers (or one that
                # left since the metadata was read) refuses the replication factor: ask
                # again, until the timeout.
                if code != KafkaError.INVALID_REPLICATION_FACTOR or time.monotonic() >= deadline:
                    raise store_error(f"cannot create {self.topic}: {e}") from None
                _log.warning("creating %s: %s; trying again", self.topic, e)
                time.sleep(0.2)

    def _create(self, admin: Any, replication: int, deadline: float) -> None:
        # Writes are acks=all: with three replicas an answered write is on at least two, so it
        # survives the loss of any one broker, and registration stops (NOT_ENOUGH_REPLICAS)
        # rather than keep writes on one copy. With two replicas, one: a two-broker cluster
        # keeps registering with a broker down. (Confluent sets only cleanup.policy and
        # inherits the broker's min.insync.replicas, 1 by default.)
        config = {
            "cleanup.policy": "compact",
            "min.insync.replicas": str(max(1, replication - 1)),
        }
        new = NewTopic(self.topic, 1, replication, config=config)
        left = max(0.1, deadline - time.monotonic())
        admin.create_topics([new], operation_timeout=left)[self.topic].result(timeout=left)
        _log.info("created %s with %d replicas (min.insync.replicas %s)",
                  self.topic, replication, config["min.insync.replicas"])

    # -- reading -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        position = -1
        while not self._stopping.is_set():
            try:
                # A batch call waits its whole timeout unless the batch fills, which would hold
                # every write for that long: wait for one record, then take what else is there.
                first = self._consumer.poll(0.1)
                messages = [] if first is None else [
                    first, *self._consumer.consume(num_messages=500, timeout=0)
                ]
                # The position also moves past what a read_committed reader is never handed
                # (transaction markers, aborted writes), which the end offset counts.
                position = max(position, self._consumer.position([self._tp])[0].offset)
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
            if (records or position > self._posted) and self._loop is not None:
                self._posted = position
                with contextlib.suppress(RuntimeError):  # the loop is closing
                    self._loop.call_soon_threadsafe(self._apply, records, position)

    def _apply(self, records: list[tuple[int, bytes | None, bytes | None]], position: int) -> None:
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
        self._applied = max(self._applied, position)
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
            high = await self._end_offset()
        except KafkaException as e:
            raise store_error(f"cannot read the end of {self.topic}: {e}") from None
        await self._wait_applied(high)

    async def _end_offset(self) -> int:
        """The partition's end, from a query sent after this call began. Callers that arrive
        while a query is in flight (it may have been sent before they came) share the next
        one, which starts when that one ends: concurrent reads cost one round trip to the
        broker between them, not one each."""
        if self._end_query is None:
            fut = self._query_end()
        else:
            if self._next_end is None:
                self._next_end = asyncio.get_running_loop().create_future()
            fut = self._next_end
        return await asyncio.shield(fut)

    def _high_watermark(self) -> int:
        """Ask the partition's leader for its end (blocking; run in a thread). The handle asks
        the leader its metadata names, and librdkafka refreshes a partition's metadata only
        every ``topic.metadata.refresh.interval.ms`` (5 min) when the handle does not fetch
        from it: after the leader moved (killed, failed over) every query would time out
        against the old one. So a failed query reads the topic's metadata again and asks once
        more, until ``timeout``."""
        deadline = time.monotonic() + self.timeout
        attempt = max(1.0, self.timeout / 6)
        while True:
            left = deadline - time.monotonic()
            try:
                _, high = self._watermarks.get_watermark_offsets(
                    self._tp, max(0.1, min(attempt, left)), False)
                return int(high)
            except KafkaException as e:
                if deadline - time.monotonic() <= 0.1:
                    raise
                _log.info("end of %s not read (%s): reading its metadata again", self.topic, e)
            try:
                self._watermarks.list_topics(
                    self.topic, timeout=max(0.1, min(attempt, deadline - time.monotonic())))
            except KafkaException as e:
                _log.info("metadata of %s not read: %s", self.topic, e)
            # An answer without a leader (an election under way) comes at once: not a busy loop.
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _query_end(self) -> asyncio.Future[int]:
        async def query() -> int:
            return await asyncio.to_thread(self._high_watermark)

        task = asyncio.ensure_future(query())
        self._end_query = task

        def done(finished: asyncio.Future[int]) -> None:
            self._end_query = None
            if not finished.cancelled():
                finished.exception()  # retrieved here too: a caller may have gone away
            waiting, self._next_end = self._next_end, None
            if waiting is not None:
                self._query_end().add_done_callback(lambda nxt: _relay(nxt, waiting))

        task.add_done_callback(done)
        return task

    # -- writing -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Hold the write lock with the writer claimed and the log read to its end: what the
        body decides from is everything written before, by any instance."""
        async with self.write_lock:
            if self._producer is None:
                await self.claim()
            await self.read_to_end()
            yield

    async def claim(self) -> None:
        """Become the writer: fence every earlier holder of the transactional id."""
        producer = Producer({
            **self._common,
            "transactional.id": self.transactional_id,
            "transaction.timeout.ms": self._transaction_timeout_ms,
            "acks": "all",
            "linger.ms": 0,
        })
        try:
            await asyncio.to_thread(producer.init_transactions, self.timeout)
        except KafkaException as e:
            raise store_error(f"cannot claim the writer of {self.topic}: {e}") from None
        self._producer = producer
        _log.info("claimed the writer of %s (%s)", self.topic, self.transactional_id)

    async def append(self, records: list[tuple[Key, Value | None]]) -> None:
        """Write ``records`` in one transaction and wait until the state has applied them.
        Only inside :meth:`writing`. :class:`FencedError` when another instance has claimed the
        writer since (nothing was written)."""
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise FencedError(f"{self.topic} has no writer claimed here")
        offsets: list[int] = []
        failures: list[Any] = []

        def delivered(err: Any, msg: Any) -> None:  # on the calling thread, in flush/commit
            if err is not None:
                failures.append(err)
            else:
                offsets.append(msg.offset())

        def write() -> None:
            producer.begin_transaction()
            for key, value in records:
                producer.produce(
                    self.topic, key=encode_key(key), value=encode_value(value),
                    partition=0, on_delivery=delivered,
                )
            producer.commit_transaction(self.timeout)  # flushes: every report has run

        try:
            await asyncio.to_thread(write)
        except KafkaException as e:
            raise await self._write_failed(producer, e.args[0]) from None
        except BufferError as e:
            raise await self._write_failed(producer, None, str(e)) from None
        if failures or len(offsets) != len(records):
            raise store_error(f"write to {self.topic} failed: {failures[:1]}")
        await self._wait_applied(max(offsets) + 1)

    async def _write_failed(
        self, producer: Any, error: Any, text: str | None = None
    ) -> RegistryError:
        """What a failed transaction answers; the writer is dropped (claimed again by the next
        write) unless the failure left it usable."""
        if error is not None and error.code() in _FENCED:
            self._producer = None
            _log.warning("%s: another instance has claimed the writer: %s", self.topic, error)
            return FencedError(f"another instance writes {self.topic} now")
        if error is not None and error.txn_requires_abort():
            try:
                await asyncio.to_thread(producer.abort_transaction, self.timeout)
                return store_error(f"write to {self.topic} aborted: {error}")
            except KafkaException as e:
                error = e.args[0]
        self._producer = None  # a fatal error, a timeout: start again from a new claim
        if error is not None and error.code() == KafkaError._TIMED_OUT:
            return store_timeout(f"write to {self.topic} not acknowledged")
        return store_error(f"write to {self.topic} failed: {error or text}")


def _relay(source: asyncio.Future[int], target: asyncio.Future[int]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())
