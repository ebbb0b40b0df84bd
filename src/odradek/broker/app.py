"""The broker: storage, metadata and the TCP server in one object, usable in-process.

``async with Broker(config) as broker:`` starts it (``broker.bootstrap`` is the address to give
clients) and shuts it down cleanly. :func:`odradek.broker.runner.run_in_thread` wraps it for
blocking code. All state lives on the broker's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from odradek.broker.cluster_member import ClusterMember, ControllerWork, store_for
from odradek.broker.connection import KafkaConnection
from odradek.broker.connection_limits import ConnectionLimits, Connections, raise_open_file_limit
from odradek.broker.contract import ApiHandler
from odradek.broker.delayed import AppendWatch
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.groups import GroupRuntime
from odradek.broker.internal_topics import LoadHook
from odradek.broker.memory_pool import RequestMemoryPool
from odradek.broker.registry import handlers
from odradek.broker.replica_manager import ReplicaManager
from odradek.broker.topics import TopicManager
from odradek.broker.transactions import TxnRuntime
from odradek.clock import Clock, SystemClock
from odradek.config import BrokerConfig, log_config_for
from odradek.coordinator.group.coordinator import GroupCoordinator
from odradek.coordinator.txn.coordinator import TransactionCoordinator
from odradek.errors import UnknownTopicOrPartitionError
from odradek.metadata.store import MetadataStore, TopicMetadata
from odradek.storage.cleaner import CleanerConfig
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import DataDirLock, LogManager
from odradek.storage.scrubber import LogScrubber, ScrubberConfig

__all__ = ["Broker", "cleaner_config", "scrubber_config"]

log = logging.getLogger("odradek.broker")

#: Logs opened per turn of the event loop after start-up (a clean one takes ~0.2 ms).
_OPEN_LOGS_PER_SLICE = 20


def cleaner_config(config: BrokerConfig) -> CleanerConfig:
    """The log cleaner's settings from Kafka's ``log.cleaner.*`` broker configs."""
    threads = config.log_cleaner_threads
    return CleanerConfig(
        enable=config.log_cleaner_enable and threads > 0,
        threads=max(threads, 1),
        dedupe_buffer_size=config.log_cleaner_dedupe_buffer_size,
        io_max_bytes_per_second=config.log_cleaner_io_max_bytes_per_second,
        backoff_ms=config.log_cleaner_backoff_ms,
    )


def scrubber_config(config: BrokerConfig) -> ScrubberConfig:
    """The log scrubber's settings from the ``log.scrubber.*`` broker configs."""
    return ScrubberConfig(
        enable=config.log_scrubber_enable,
        bytes_per_second=config.log_scrubber_bytes_per_second,
        interval_ms=config.log_scrubber_interval_ms,
    )


class Broker:
    """A single Kafka-compatible broker; implements
    :class:`~odradek.broker.services.BrokerServices` for its handlers and runtimes."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        clock: Clock | None = None,
        coordinator_load_hook: LoadHook | None = None,
        controller: ControllerWork | None = None,
    ) -> None:
        """``coordinator_load_hook`` is awaited before each internal-topic partition loads
        (tests hold loading with it); ``controller`` is the controller's work, run while this
        broker is the controller (:class:`~odradek.broker.cluster_member.ClusterMember`)."""
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._load_hook = coordinator_load_hook
        self._controller_work = controller
        self.node_id = config.node_id
        self.data_dir = Path(config.log_dirs[0])
        self.append_watch = AppendWatch()
        self._server: asyncio.Server | None = None
        self.request_memory = RequestMemoryPool(config.queued_max_request_bytes)
        # Set by start(), which knows the open-file limit:
        self.connections: Connections
        self._tasks: list[asyncio.Task[None]] = []
        self._dir_lock: DataDirLock | None = None
        self.host = ""
        self.port = 0
        self.advertised_host = ""
        self.advertised_port = 0
        self.started_at = 0.0
        # Set by start():
        self.cluster_member: ClusterMember | None = None
        self.metadata: MetadataStore
        self.logs: LogManager
        self.scrubber: LogScrubber
        self.topics: TopicManager
        self.replicas: ReplicaManager
        self.groups: GroupRuntime
        self.group_coordinator: GroupCoordinator
        self.transactions: TxnRuntime
        self.txn_coordinator: TransactionCoordinator

    @property
    def bootstrap(self) -> str:
        return f"{self.advertised_host}:{self.advertised_port}"

    @property
    def fenced(self) -> bool:
        """True while the broker's cluster session could have expired: it must not accept
        writes (produce answers NOT_LEADER_OR_FOLLOWER) until it has registered again."""
        member = self.cluster_member
        return member is not None and member.fenced

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.perf_counter()
        # Before anything reads or writes the directory: one broker process per data dir.
        self._dir_lock = DataDirLock(self.data_dir)
        try:
            await self._start(t0)
        except BaseException:
            self._dir_lock.release()
            self._dir_lock = None
            raise

    async def _start(self, t0: float) -> None:
        # First, so that the defaults sized from it (log.max.open.files, max.connections) see
        # the raised limit.
        open_file_limit = raise_open_file_limit()
        # The cluster id is agreed with the metadata store before the data dir's metadata is
        # read, so a data dir of another cluster is refused before anything is written to it.
        member = self.cluster_member = ClusterMember(
            store_for(self.config), self.config, controller=self._controller_work
        )
        try:
            cluster_id = await member.join(self.data_dir, self.config.cluster_id)
        except BaseException:
            await member.stop()
            self.cluster_member = None
            raise
        self.metadata = MetadataStore(self.data_dir, self.node_id, cluster_id)
        self.logs = LogManager(
            self.data_dir,
            self.clock,
            self.config.default_log_config(),
            cleaner_config=cleaner_config(self.config),
            # The cleaner's worker thread sleeps to throttle its I/O and to step aside while the
            # event loop (or a client) wants to run (storage/offset_map.Pacer).
            cleaner_sleep=time.sleep,
            cleaner_cpu_time=time.thread_time,
            max_open_files=self.config.log_max_open_files,
        )
        # Logs open on first use and in the background (_open_logs), so start-up does not
        # grow with the number of partitions.
        self.logs.startup(self._log_config_for_topic, lazy=True)
        self.scrubber = LogScrubber(self.logs.all_logs, scrubber_config(self.config), self.clock)
        self.topics = TopicManager(self.config, self.metadata, self.logs)
        self.topics.reconcile()
        self.replicas = ReplicaManager(self.topics, self.append_watch)
        # The coordinators load their partitions after the server listens (start() below).
        self.groups = GroupRuntime(self, load_hook=self._load_hook)
        self.group_coordinator = self.groups.coordinator
        self.transactions = TxnRuntime(self, load_hook=self._load_hook)
        self.txn_coordinator = self.transactions.coordinator
        loop = asyncio.get_running_loop()
        host, port = self.config.listener_host, self.config.listener_port
        dispatcher = Dispatcher(self)
        max_frame = self.config.socket_request_max_bytes
        limits = ConnectionLimits.from_config(self.config, open_file_limit)
        connections = self.connections = Connections(limits)
        pool = self.request_memory
        self._server = await loop.create_server(
            lambda: KafkaConnection(dispatcher, max_frame, connections, pool),
            host,
            port,
            reuse_address=True,
        )
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        adv = self.config.advertised_address
        self.advertised_host = adv[0] if adv and adv[0] else self.host
        self.advertised_port = adv[1] if adv and adv[1] else self.port
        try:
            await member.register(self.advertised_host, self.advertised_port)
        except BaseException:
            # Refused (another live broker has this node id) or no store: stop what started.
            self._server.close()
            self._server = None
            self.logs.shutdown()
            await member.stop()
            self.cluster_member = None
            raise
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="odradek-housekeeping"))
        if self.logs.pending_count:
            self._tasks.append(asyncio.create_task(self._open_logs(), name="odradek-open-logs"))
        self._tasks.append(
            asyncio.create_task(connections.sweep_forever(), name="odradek-connection-sweep")
        )
        if self.logs.cleaner.config.enable:
            self._tasks.append(asyncio.create_task(self._clean_logs(), name="odradek-cleaner"))
        if self.scrubber.config.enable:
            self._tasks.append(asyncio.create_task(self._scrub_logs(), name="odradek-scrubber"))
        # Loading __consumer_offsets and __transaction_state grows with them: it runs as tasks
        # while the broker serves (their requests answer COORDINATOR_LOAD_IN_PROGRESS meanwhile).
        self.groups.start()
        self.transactions.start()
        self.started_at = time.perf_counter() - t0
        log.info(
            "odradek broker %d serving on %s:%d (cluster %s, broker epoch %d, data in %s) "
            "in %.0f ms",
            self.node_id,
            self.host,
            self.port,
            self.metadata.cluster_id,
            member.epoch,
            self.data_dir,
            self.started_at * 1000,
        )
        log.info(
            "connections: at most %d (%d per IP), idle close after %s, stalled requests closed "
            "after %d ms, %s of requests in flight",
            limits.max_connections,
            limits.max_connections_per_ip,
            f"{self.config.connections_max_idle_ms} ms" if limits.idle_s is not None else "never",
            self.config.request_timeout_ms,
            f"{self.request_memory.limit} bytes" if self.request_memory.limit > 0 else "unbounded",
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.connections.close_all()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.cluster_member is not None:
            # First: the other brokers learn at once that this one is gone (no session timeout).
            await self.cluster_member.stop()
        await self.groups.stop()
        await self.transactions.stop()
        self.append_watch.notify_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None
        try:
            self.logs.shutdown()
        finally:
            if self._dir_lock is not None:
                self._dir_lock.release()
                self._dir_lock = None
        log.info("odradek broker %d stopped", self.node_id)

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def _housekeeping(self) -> None:
        """Retention, producer-id expiry and time-based flushes, on Kafka's check intervals."""
        clock = self.clock
        retention_every = self.config.log_retention_check_interval_ms
        producers_every = self.config.producer_id_expiration_check_interval_ms
        flush_every = min(self.config.log_flush_scheduler_interval_ms / 1000, 1.0)
        next_retention = clock.monotonic_ms() + retention_every
        next_producers = clock.monotonic_ms() + producers_every
        while True:
            await asyncio.sleep(flush_every)
            now_ms = clock.milliseconds()
            try:
                self.logs.flush_due(now_ms)
                if clock.monotonic_ms() >= next_retention:
                    next_retention = clock.monotonic_ms() + retention_every
                    self.logs.run_retention(now_ms)
                if clock.monotonic_ms() >= next_producers:
                    next_producers = clock.monotonic_ms() + producers_every
                    self.logs.remove_expired_producers(
                        now_ms, self.config.producer_id_expiration_ms
                    )
            except Exception:
                log.exception("housekeeping failed")

    async def _open_logs(self) -> None:
        """Open the logs start-up only found, a few at a time between other work (a request
        for one of them opens it at once)."""
        t0 = time.perf_counter()
        total = self.logs.pending_count
        while self.logs.open_pending(_OPEN_LOGS_PER_SLICE):
            await asyncio.sleep(0)
        log.info("opened %d partition logs in the background in %.0f ms", total,
                 (time.perf_counter() - t0) * 1000)

    async def _clean_logs(self) -> None:
        """Compaction: plan a pass here, copy on a worker thread (produce and fetch carry on and
        see the old segments), swap the result in here. One pass at a time."""
        cleaner = self.logs.cleaner
        backoff = cleaner.config.backoff_ms / 1000
        while True:
            try:
                task = cleaner.grab_filthiest(self.clock.milliseconds())
            except Exception:
                log.exception("log cleaner could not plan a pass")
                task = None
            if task is None:
                await asyncio.sleep(backoff)
                continue
            try:
                await asyncio.to_thread(task.run)
            except asyncio.CancelledError:
                task.cancel()
                raise
            except Exception:
                log.exception("log cleaner pass failed")
            try:
                result = cleaner.complete(task)
            except Exception:
                log.exception("log cleaner could not swap a pass in")
                await asyncio.sleep(backoff)
                continue
            if result.error:
                log.warning("cleaning %s-%d: %s", result.topic, result.partition, result.error)
                await asyncio.sleep(backoff)

    async def _scrub_logs(self) -> None:
        """The scrubber (storage/scrubber.py): plan here, read and check on a worker thread
        through the job's own file, take the result here; paced by the scrubber's rate."""
        scrubber = self.scrubber
        while True:
            try:
                job = scrubber.next_job()
            except Exception:
                log.exception("log scrubber could not plan a step")
                job = None
            if job is None:
                # At least 10 ms: with a clock that does not move (tests) it would spin.
                await asyncio.sleep(max(scrubber.delay_ms(), 10) / 1000)
                continue
            try:
                result = await asyncio.to_thread(job.run)
                scrubber.complete(result)
            except Exception:
                # One failed step must not end scrubbing for good.
                log.exception("log scrubber step failed")
                await asyncio.sleep(1.0)

    # -- used by handlers -----------------------------------------------------------------------

    def supported_apis(self) -> Mapping[int, ApiHandler]:
        """The APIs this broker serves (and advertises in ApiVersions), by key."""
        return handlers()

    def _log_config_for_topic(self, topic: str) -> LogConfig:
        meta = self.metadata.topic(topic)
        return log_config_for(self.config, meta.configs if meta else {})

    def partition_log(self, topic: str, partition: int) -> PartitionLog:
        return self.topics.log(topic, partition)

    def maybe_auto_create(self, name: str) -> TopicMetadata | None:
        """Create ``name`` with the broker defaults when ``auto.create.topics.enable`` is on."""
        meta = self.topics.topic(name)
        if meta is not None:
            return meta
        if not self.config.auto_create_topics_enable:
            return None
        meta = self.topics.create(name)
        log.info("auto-created topic %s with %d partitions", name, meta.partitions)
        return meta

    def require_topic(self, name: str) -> TopicMetadata:
        meta = self.topics.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return meta
