"""The broker: storage, metadata and the TCP server in one object, usable in-process.

``async with Broker(config) as broker:`` starts it (``broker.bootstrap`` is the address to give
clients) and shuts it down cleanly. :func:`odradek.broker.runner.run_in_thread` wraps it for
blocking code. All state lives on the broker's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from odradek.broker.cluster_member import ClusterMember, ControllerTerm, ControllerWork
from odradek.broker.connection import KafkaConnection
from odradek.broker.connection_limits import ConnectionLimits, Connections, raise_open_file_limit
from odradek.broker.contract import ApiHandler
from odradek.broker.delayed import AppendWatch
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.groups import GroupRuntime
from odradek.broker.inter_broker import InterBrokerClient
from odradek.broker.internal_topics import LoadHook
from odradek.broker.memory_pool import RequestMemoryPool
from odradek.broker.registry import handlers
from odradek.broker.replica_fetcher import FetcherConfig, ReplicaFetcherManager
from odradek.broker.replica_manager import ReplicaManager
from odradek.broker.timings import RequestTimings
from odradek.broker.topics import TopicManager
from odradek.broker.transactions import TxnRuntime
from odradek.clock import Clock, SystemClock
from odradek.cluster.alter_partition import alter_partition
from odradek.cluster.controller import Controller
from odradek.cluster.durable import open_single_node_store
from odradek.cluster.image import MetadataImage, TopicsChange
from odradek.cluster.membership import ClusterKeys
from odradek.cluster.partition_changes import PartitionChanges
from odradek.cluster.preferred import RebalanceSettings
from odradek.cluster.producer_ids import ProducerIdManager
from odradek.cluster.store import ClusterStore, RevisionCompacted
from odradek.cluster.topic_admin import TopicAdmin
from odradek.config import BrokerConfig, log_config_for
from odradek.coordinator.group.coordinator import GroupCoordinator
from odradek.coordinator.txn.coordinator import TransactionCoordinator
from odradek.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
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

#: The single node's registration lease (seconds): long, so that a stalled event loop never
#: loses it; nothing else shares the in-process store to notice a dead broker anyway.
_SINGLE_NODE_SESSION_TTL_S = 3600
#: After a controlled shutdown has handed its partitions over, the broker goes on answering
#: while clients still talk to it -- NOT_LEADER_OR_FOLLOWER naming the new leader (KIP-951),
#: Metadata naming them all -- until none has for ``_DRAIN_QUIET_S``, at most this long. A
#: producer whose next record was on its way met a closed port instead, and librdkafka, which
#: also drops the departed broker from its list at the next Metadata, then waited for its 1 s
#: leader re-query (0.5-1.9 s instead of 0.05 s to the first record on the new leader).
CONTROLLED_SHUTDOWN_DRAIN_S = 0.5
_DRAIN_QUIET_S = 0.1


def _controller_work(config: BrokerConfig, clock: Clock | None = None) -> ControllerWork:
    """The controller's work for one term (cluster/controller.py), the default of every broker;
    ``clock`` measures its grace periods and rebalance checks (default: the system clock)."""
    rebalance = RebalanceSettings(
        enabled=config.auto_leader_rebalance_enable,
        check_interval_s=config.leader_imbalance_check_interval_seconds,
        per_broker_percentage=config.leader_imbalance_per_broker_percentage,
    )

    async def run(term: ControllerTerm) -> None:
        await Controller(
            term.store,
            term.keys,
            term.election,
            unclean_leader_election=config.unclean_leader_election_enable,
            rebalance=rebalance,
            clock=clock,
        ).run()

    return run


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
        cluster_store: ClusterStore | None = None,
        session_clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``coordinator_load_hook`` is awaited before each internal-topic partition loads
        (tests hold loading with it); ``controller`` is the controller's work, run while this
        broker is the controller (:class:`~odradek.broker.cluster_member.ClusterMember`).

        ``cluster_store`` is a metadata store shared with other brokers in this process (the
        deterministic simulation, ``odradek.sim``), used as etcd would be; the broker closes it
        at stop. ``session_clock`` measures real time for membership and the controller (session
        leases, grace periods) and for the connections (idle and stalled-request timeouts, the
        controlled shutdown's drain): the system clock unless given, never the injected
        ``clock``, which tests move by hours. ``rng`` draws the broker's random choices (topic
        placement); the simulation seeds it."""
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._given_store = cluster_store
        self._session_clock = session_clock
        self._rng = rng
        self._load_hook = coordinator_load_hook
        self._controller_work = controller
        self.node_id = config.node_id
        self.data_dir = Path(config.log_dirs[0])
        self.append_watch = AppendWatch()
        self.timings = RequestTimings({key: api.name for key, api in handlers().items()})
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
        self.cluster_keys = ClusterKeys()
        self.cluster_store: ClusterStore
        #: The cluster's metadata as this broker sees it (BrokerServices.cluster).
        self.cluster: MetadataImage
        self.topic_admin: TopicAdmin
        self.partition_changes: PartitionChanges
        self.producer_ids: ProducerIdManager
        self._store_compacted_at = 0
        # What start() opened of the cluster metadata, closed in reverse order by stop().
        self._cluster_parts: list[MetadataImage | ProducerIdManager] = []
        self.logs: LogManager
        # The logs once opened: what a start-up that fails must shut down again.
        self._opened_logs: LogManager | None = None
        self.scrubber: LogScrubber
        self.topics: TopicManager
        self.replicas: ReplicaManager
        self.replica_fetchers: ReplicaFetcherManager
        self.inter_broker: InterBrokerClient
        self.groups: GroupRuntime
        self.group_coordinator: GroupCoordinator
        self.transactions: TxnRuntime
        self.txn_coordinator: TransactionCoordinator

    @property
    def bootstrap(self) -> str:
        return f"{self.advertised_host}:{self.advertised_port}"

    def _led_by_earlier_incarnation(self, topic: str, partition: int) -> bool:
        """Whether the partition's state predates this broker's registration (ReplicaManager).
        Only where other brokers share the store: nobody else holds a single node's data."""
        member = self.cluster_member
        epoch = member.epoch if member is not None else 0
        return (self._shared_store and epoch > 0
                and self.cluster.partition_written_at(topic, partition) < epoch)

    @property
    def _shared_store(self) -> bool:
        """Whether other brokers share the metadata store (etcd, or one given)."""
        return bool(self.config.etcd_endpoints) or self._given_store is not None

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
            await self._abandon_start()
            raise

    async def _abandon_start(self) -> None:
        """Close what a failed start() opened, last first: the listener, the cluster metadata,
        the logs (shut down as at a clean stop, as Kafka does when start-up fails, so that the
        next start need not recover them), then the data dir's lock."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(Exception):
            await self._close_cluster()
        logs, self._opened_logs = self._opened_logs, None
        try:
            if logs is not None:
                logs.shutdown()
        except Exception:
            log.exception("shutting the logs down after a failed start failed")
        finally:
            if self._dir_lock is not None:
                self._dir_lock.release()
                self._dir_lock = None

    async def _start(self, t0: float) -> None:
        # First, so that the defaults sized from it (log.max.open.files, max.connections) see
        # the raised limit.
        open_file_limit = raise_open_file_limit()
        await self._open_cluster()
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
            page_cache_retain_bytes=(
                None if self.config.log_page_cache_retain_bytes < 0
                else self.config.log_page_cache_retain_bytes
            ),
        )
        # Logs open on first use and in the background (_open_logs), so start-up does not
        # grow with the number of partitions.
        self.logs.startup(self._log_config_for_topic, lazy=True)
        # Only once started: a start-up cut short has not seen every log, and its shutdown
        # would mark them clean.
        self._opened_logs = self.logs
        self.scrubber = LogScrubber(self.logs.all_logs, scrubber_config(self.config), self.clock)
        self.topics = TopicManager(self.config, self.cluster, self.topic_admin, self.logs)
        self.topics.reconcile()
        self.replicas = ReplicaManager(
            self, alter_partition=functools.partial(
                alter_partition, self.cluster_store, self.cluster_keys
            ),
            led_by_earlier_incarnation=self._led_by_earlier_incarnation,
        )
        # Started once registered: a follower's fetches carry the broker epoch.
        self.replica_fetchers = ReplicaFetcherManager(
            dataclasses.replace(FetcherConfig.from_broker_config(self.config),
                                on_high_watermark=self.append_watch.notify),
            self.cluster,
            self.topics.log,
            lambda: self.cluster_member.epoch if self.cluster_member is not None else -1,
            self.timings,
        )
        self.inter_broker = InterBrokerClient(
            self.cluster, self.node_id, request_timeout_ms=self.config.request_timeout_ms
        )
        # The coordinators load their partitions after the server listens (start() below).
        self.groups = GroupRuntime(self, load_hook=self._load_hook)
        self.group_coordinator = self.groups.coordinator
        self.transactions = TxnRuntime(self, load_hook=self._load_hook)
        self.txn_coordinator = self.transactions.coordinator
        self.cluster.add_topics_listener(self._on_topics_changed)
        loop = asyncio.get_running_loop()
        host, port = self.config.listener_host, self.config.listener_port
        dispatcher = Dispatcher(self)
        max_frame = self.config.socket_request_max_bytes
        limits = ConnectionLimits.from_config(self.config, open_file_limit)
        connections = self.connections = Connections(limits, self._connection_clock())
        pool = self.request_memory
        timings = self.timings
        self._server = await loop.create_server(
            lambda: KafkaConnection(dispatcher, max_frame, connections, pool, timings),
            host,
            port,
            reuse_address=True,
            # Bound now (the port is what the registration advertises), listening only once
            # registered and this broker's image shows it: a request served before then would
            # see a cluster without brokers (Kafka opens its listeners after catching up, too).
            start_serving=False,
        )
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        adv = self.config.advertised_address
        self.advertised_host = adv[0] if adv and adv[0] else self.host
        self.advertised_port = adv[1] if adv and adv[1] else self.port
        # Refused (another live broker has this node id) or no store: start() closes it all.
        await self._register()
        await self._server.start_serving()
        self.replica_fetchers.start()
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
        self.replicas.start()
        self.started_at = time.perf_counter() - t0
        log.info(
            "odradek broker %d serving on %s:%d (cluster %s, broker epoch %d, data in %s) "
            "in %.0f ms",
            self.node_id,
            self.host,
            self.port,
            self.metadata.cluster_id,
            self.cluster_member.epoch if self.cluster_member else 0,
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

    def _connection_clock(self) -> Callable[[], float]:
        """Monotonic seconds for the connections: the session clock's when one was given."""
        session_clock = self._session_clock
        if session_clock is None:
            return time.monotonic
        return lambda: session_clock.monotonic_ns() / 1e9

    async def _drain_clients(self) -> None:
        """Keep answering after the handover while clients still talk to this broker (see
        :data:`CONTROLLED_SHUTDOWN_DRAIN_S`)."""
        monotonic = self.connections.monotonic  # the clock of the connections' active_at
        deadline = monotonic() + CONTROLLED_SHUTDOWN_DRAIN_S
        while (now := monotonic()) < deadline:
            if not any(now - c.active_at < _DRAIN_QUIET_S for c in self.connections):
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is None:
            return
        member = self.cluster_member
        if member is not None and self.config.controlled_shutdown_enable:
            # Still serving: clients follow the leaderships as they move.
            try:
                if await member.controlled_shutdown(
                    self.cluster, self.config.broker_session_timeout_ms / 1000
                ):
                    await self._drain_clients()
            except Exception:  # the stop must go on whatever happened
                log.exception("controlled shutdown failed; stopping anyway")
        self._server.close()
        self.connections.close_all()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.replica_fetchers.stop()
        await self.replicas.stop()
        await self.groups.stop()
        await self.transactions.stop()
        await self.inter_broker.close()
        self.append_watch.notify_all()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
        self._server = None
        try:
            await self._close_cluster()
            self._opened_logs = None
            self.logs.shutdown()
        finally:
            if self._dir_lock is not None:
                self._dir_lock.release()
                self._dir_lock = None
        log.info("odradek broker %d stopped", self.node_id)

    async def _open_cluster(self) -> None:
        """The metadata store (etcd when ``etcd.endpoints`` is set, else the single node's
        journalled in-process store), this broker's membership, and the image, topic admin and
        producer ids over them. One code path: a single node is a cluster of one."""
        config = self.config
        keys = self.cluster_keys = ClusterKeys(prefix=config.etcd_prefix)
        work = self._controller_work or _controller_work(config, self._session_clock)
        if self._given_store is not None:
            member = ClusterMember(
                self._given_store, config, controller=work, clock=self._session_clock
            )
            self.cluster_member = member
            cluster_id = await member.join(self.data_dir, config.cluster_id)
            self.metadata = MetadataStore(self.data_dir, self.node_id, cluster_id)
        elif config.etcd_endpoints:
            # Imported here: aiohttp costs a single node ~80 ms of start-up and ~10 MB.
            from odradek.cluster.etcd import EtcdStore

            # The cluster id is agreed with etcd before the data dir's metadata is read, so a
            # data dir of another cluster is refused before anything is written to it.
            member = ClusterMember(EtcdStore(config.etcd_endpoints), config, controller=work)
            self.cluster_member = member
            cluster_id = await member.join(self.data_dir, config.cluster_id)
            self.metadata = MetadataStore(self.data_dir, self.node_id, cluster_id)
        else:
            self.metadata = MetadataStore(self.data_dir, self.node_id, config.cluster_id)
            store = await open_single_node_store(
                self.data_dir, keys, node_id=self.node_id, cluster_id=self.metadata.cluster_id
            )
            # Nobody else can take a single node's partitions: a stalled event loop (a long
            # synchronous request) must not fence it, so its session outlives any stall.
            member = ClusterMember(
                store, config, controller=work, ttl_s=_SINGLE_NODE_SESSION_TTL_S
            )
            self.cluster_member = member
            await member.join(self.data_dir, self.metadata.cluster_id)
        self.cluster_store = member.store
        self.cluster = MetadataImage(member.store, keys)
        await self.cluster.start()
        self._cluster_parts.append(self.cluster)
        self.topic_admin = TopicAdmin(member.store, keys, self.cluster, rng=self._rng)
        self.partition_changes = PartitionChanges(
            member.store, keys, self.cluster,
            unclean_leader_election=config.unclean_leader_election_enable,
        )
        self.producer_ids = ProducerIdManager(member.store, keys)
        self._cluster_parts.append(self.producer_ids)
        await self.producer_ids.start()

    async def _register(self) -> None:
        """Register at the advertised address; answer only once the image shows this broker
        (and, on a single node, a controller: it elects itself at once)."""
        member = self.cluster_member
        assert member is not None
        elected = asyncio.Event()
        self.cluster.add_brokers_listener(
            lambda: elected.set() if self.cluster.controller_id >= 0 else None
        )
        epoch = await member.register(self.advertised_host, self.advertised_port)
        await self.cluster.wait_for_revision(epoch, timeout_s=60.0)
        if not self._shared_store and self.cluster.controller_id < 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(elected.wait(), 2.0)

    async def _close_cluster(self) -> None:
        """Stop what start() opened of the cluster metadata (so far: start-up may have failed)."""
        while self._cluster_parts:
            await self._cluster_parts.pop().close()
        if self.cluster_member is not None:
            # Resigns, deregisters (the others learn at once that this broker is gone),
            # revokes the lease and closes the store.
            await self.cluster_member.stop()

    def _on_topics_changed(self, change: TopicsChange) -> None:
        # Whichever broker deleted a topic, its groups' offsets go with it here.
        for info in change.removed:
            self.groups.on_topic_deleted(info.name)
        # A re-read after a lost watch may fold a delete and a re-create into one change.
        for old, new in change.changed:
            if old.topic_id != new.topic_id:
                self.groups.on_topic_deleted(old.name)
        # Replicated partitions this broker now leads start their epoch; the others are dropped.
        self.replicas.on_topics_changed(change)
        # Coordinators move with the leadership of their internal topics' partitions.
        self.groups.on_topics_changed(change)
        self.transactions.on_topics_changed(change)

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
                self.logs.flush_due(now_ms, checkpoint=False)
                write = self.logs.due_high_watermark_checkpoint(clock.milliseconds())
                if write is not None:
                    # Its fsyncs off the event loop (Kafka writes it from a scheduler thread).
                    await asyncio.to_thread(write)
                if clock.monotonic_ms() >= next_retention:
                    next_retention = clock.monotonic_ms() + retention_every
                    self.logs.run_retention(now_ms)
                    if not self._shared_store:  # etcd is shared: never compact it
                        await self._maybe_compact_cluster_store()
                if clock.monotonic_ms() >= next_producers:
                    next_producers = clock.monotonic_ms() + producers_every
                    self.logs.remove_expired_producers(
                        now_ms, self.config.producer_id_expiration_ms
                    )
            except Exception:
                log.exception("housekeeping failed")

    async def _maybe_compact_cluster_store(self) -> None:
        """Forget the in-process store's history up to what the image shows (nothing else here
        watches it), so that it does not grow with every change over the broker's life."""
        revision = self.cluster.revision
        if revision > self._store_compacted_at:
            with contextlib.suppress(RevisionCompacted):  # compacted there already (start-up)
                await self.cluster_store.compact(revision)
            self._store_compacted_at = revision

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
        info = self.cluster.topic(topic)
        return log_config_for(self.config, info.configs if info else {})

    def partition_log(self, topic: str, partition: int) -> PartitionLog:
        return self.topics.log(topic, partition)

    async def maybe_auto_create(self, name: str) -> TopicMetadata | None:
        """Create ``name`` with the broker defaults when ``auto.create.topics.enable`` is on."""
        meta = self.topics.topic(name)
        if meta is not None:
            return meta
        if not self.config.auto_create_topics_enable:
            return None
        try:
            meta = await self.topics.create(name)
        except TopicAlreadyExistsError:
            return self.topics.topic(name)  # another request (or broker) created it first
        log.info("auto-created topic %s with %d partitions", name, meta.partitions)
        return meta

    def require_topic(self, name: str) -> TopicMetadata:
        meta = self.topics.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return meta
