"""Coordinators on the broker: the internal topic each one persists to, the loading of its
partitions, and the task that fires its timers — one shape for the group and the transaction
coordinator (:class:`CoordinatorHost`, which :class:`~odradek.broker.groups.GroupRuntime` and
:class:`~odradek.broker.transactions.TxnRuntime` extend).

A write is one batch appended as the coordinator (``AppendOrigin.COORDINATOR``) through the
replica manager and counts as done once the high watermark covers it (one replica); a failed
write raises COORDINATOR_NOT_AVAILABLE so the coordinator changes nothing and the client
retries, except a batch too large to store, which retrying cannot fix: UNKNOWN_SERVER_ERROR, as
Kafka maps them.

Loading happens after the broker listens: each partition of the internal topic is replayed by a
task of its own that yields to the event loop every :data:`LOAD_CHUNK_RECORDS` records, so the
broker serves everything else meanwhile, and requests for a group or transactional id of a
partition still loading are answered COORDINATOR_LOAD_IN_PROGRESS.

Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from odradek.clock import Clock
from odradek.coordinator.runtime import (
    CoordinatorResult,
    CoordinatorRuntime,
    CoordinatorShard,
    PartitionState,
    Replication,
    StoredMarker,
    StoredRecord,
)
from odradek.coordinator.timer import Timer
from odradek.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorError,
    NotLeaderOrFollowerError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from odradek.protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    Record,
    SimpleRecord,
    control_type,
    decode_records,
    encode_batch,
    read_batch_header,
)
from odradek.storage.log import AppendOrigin

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices
    from odradek.cluster.image import TopicsChange

__all__ = ["CoordinatorHost", "InternalTopic", "LOAD_CHUNK_RECORDS", "LoadHook", "TimerTask"]

log = logging.getLogger("odradek.broker")

R = TypeVar("R")

#: Records replayed between two yields to the event loop while a partition loads (~10 ms).
LOAD_CHUNK_RECORDS = 500
#: Pause before asking again whether this broker acts as the leader the image names (a
#: leadership of an earlier incarnation of the broker waits for the controller's next epoch).
_LEADER_RETRY_S = 0.1

#: Awaited with (internal topic, partition) before a partition is loaded: tests hold loading
#: with it to observe COORDINATOR_LOAD_IN_PROGRESS.
LoadHook = Callable[[str, int], Awaitable[None]]


class InternalTopic:
    """``name`` with ``partitions`` partitions and ``configs``, created on first use."""

    def __init__(
        self, broker: BrokerServices, name: str, partitions: int, configs: Mapping[str, str]
    ) -> None:
        self._broker = broker
        self.name = name
        self.partitions = partitions
        self._configs = dict(configs)
        self._creating: asyncio.Task[None] | None = None

    def exists(self) -> bool:
        return self._broker.topics.topic(self.name) is not None

    async def ensure(self) -> None:
        if self.exists():
            return
        try:
            await self._broker.topics.create(
                self.name,
                num_partitions=self.partitions,
                configs=self._configs,
                internal=True,
            )
        except TopicAlreadyExistsError:
            return  # created meanwhile, by another request or broker
        log.info("created %s with %d partitions", self.name, self.partitions)

    def _create_soon(self) -> None:
        """Start creating the topic, unless that is under way; its users retry meanwhile."""
        if self._creating is None or self._creating.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # called from outside the broker's loop (tests): nothing to start on
            self._creating = loop.create_task(
                self._create_logged(), name=f"create {self.name}"
            )

    async def _create_logged(self) -> None:
        try:
            await self.ensure()
        except Exception:
            log.exception("creating %s failed", self.name)

    def append(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None = None,
    ) -> int:
        """Append ``records`` as one batch (transactional when ``producer`` = (id, epoch));
        returns the offset of its first record."""
        if not self.exists():
            self._create_soon()
            raise CoordinatorNotAvailableError(f"{self.name} is being created")
        try:
            now = self._broker.clock.milliseconds()
            simple = [SimpleRecord(value, key, timestamp=now) for key, value in records]
            if producer is None:
                batch = encode_batch(simple)
            else:
                batch = encode_batch(
                    simple, producer_id=producer[0], producer_epoch=producer[1],
                    is_transactional=True,
                )
            # acks=all, as Kafka's coordinators write: refused below min.insync.replicas.
            info = self._broker.replicas.append_as_leader(
                self.name, partition, batch, origin=AppendOrigin.COORDINATOR, required_acks=-1
            )
            return info.first_offset
        except (RecordTooLargeError, RecordListTooLargeError) as e:
            # Retrying cannot help (Kafka answers these as UNKNOWN_SERVER_ERROR too).
            raise KafkaError(f"{self.name}: {e}") from e
        except KafkaError as e:
            log.warning("writing to %s-%d failed: %s", self.name, partition, e)
            raise CoordinatorNotAvailableError(f"{self.name} is not writable: {e}") from e

    def replicated(self, partition: int, end_offset: int) -> Replication | None:
        """The replication of a write ending before ``end_offset`` (None: durable already);
        its error is the one a coordinator answers: NOT_COORDINATOR once leadership moved,
        else COORDINATOR_NOT_AVAILABLE (Kafka's mapping of NOT_ENOUGH_REPLICAS and the like)."""
        fut = self._broker.replicas.wait_for_offset(self.name, partition, end_offset)
        return _FutureReplication(fut, f"{self.name}-{partition}") if fut is not None else None

    def read(self, partition: int) -> Iterator[tuple[BatchHeader, list[Record]]]:
        """Every batch of ``partition`` up to the log end, with its records. The log end is
        read again after every chunk, so what was appended meanwhile (a marker written while
        the partition loads) is read too."""
        plog = self._broker.topics.log(self.name, partition)
        offset = plog.log_start_offset
        while offset < plog.log_end_offset:
            records = plog.read(offset, max_bytes=1 << 20).records
            assert isinstance(records, bytes)  # no max_inline_bytes: always bytes
            data = memoryview(records)
            if not data:
                break
            pos = 0
            while pos < len(data):
                header = read_batch_header(data, pos)
                batch = data[pos : pos + header.size]
                pos += header.size
                offset = header.next_offset
                yield header, decode_records(batch)

    def stored(
        self, partition: int, skip: tuple[int, int] = (0, 0)
    ) -> Iterator[StoredRecord | StoredMarker]:
        """``partition``'s records as a coordinator replays them: data records (with their
        producer when in a transactional batch) and COMMIT/ABORT markers; batches based in the
        offset range ``skip`` are left out (writes that will not be replicated)."""
        for header, records in self.read(partition):
            if skip[0] <= header.base_offset < skip[1]:
                continue
            if header.is_control:
                for record in records:
                    marker = control_type(record.key)
                    if marker in (CONTROL_ABORT, CONTROL_COMMIT):
                        yield StoredMarker(
                            header.producer_id, marker == CONTROL_COMMIT, record.offset
                        )
                continue
            producer_id = header.producer_id if header.is_transactional else None
            for record in records:
                yield StoredRecord(record.key, record.value, producer_id, record.offset)


class _FutureReplication:
    """A :class:`~odradek.coordinator.runtime.Replication` over the replica manager's future."""

    __slots__ = ("_future", "_what")

    def __init__(self, future: asyncio.Future[None], what: str) -> None:
        self._future = future
        self._what = what

    def add_done(self, callback: Callable[[Exception | None], None]) -> None:
        def done(fut: asyncio.Future[None]) -> None:
            callback(coordinator_error(fut, self._what))

        self._future.add_done_callback(done)


def coordinator_error(fut: asyncio.Future[None], what: str) -> KafkaError | None:
    """How a coordinator answers the failed replication ``fut`` of a write to ``what``."""
    if fut.cancelled():
        return NotCoordinatorError(f"{what}: the broker is stopping")
    exc = fut.exception()
    if exc is None:
        return None
    message = f"{what}: not replicated: {exc}"
    if isinstance(exc, NotLeaderOrFollowerError):
        return NotCoordinatorError(message)
    return CoordinatorNotAvailableError(message)


class TimerTask:
    """Advances ``timer`` at each of its deadlines, on the event loop (through ``poll``, which
    runs the due callbacks as coordinator operations, when given)."""

    def __init__(
        self,
        timer: Timer,
        clock: Clock,
        name: str,
        poll: Callable[[int], object] | None = None,
    ) -> None:
        self._timer = timer
        self._clock = clock
        self._name = name
        self._poll = poll if poll is not None else timer.advance
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
                self._poll(self._clock.milliseconds())
            except Exception:
                log.exception("%s: a timer failed", self._name)
            deadline = timer.next_deadline()
            timeout = None
            if deadline is not None:
                timeout = max(deadline - self._clock.milliseconds(), 0) / 1000
            # Not asyncio.wait_for: in Python 3.11 it returns when the wake-up and a
            # cancellation (stop()) come together, and the task ran on, stop() waiting for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()


class CoordinatorHost:
    """One coordinator on the broker's event loop: a
    :class:`~odradek.coordinator.runtime.CoordinatorRuntime` writing to ``topic``, one loading
    task per partition, and the task that fires the coordinator's timers.

    Requests reach the coordinator through :meth:`write` (operations that return records) and
    :meth:`run` (operations that write nothing), keyed by the group or transactional id whose
    partition must be loaded here. The host coordinates exactly the partitions the image names
    this broker leader of: it loads them at start and follows the image's topic listener
    (:meth:`maybe_follow_leadership`), loading a partition it becomes leader of in the
    background and unloading one it loses, so requests for any other partition answer
    NOT_COORDINATOR. A single broker leads, and so loads, every partition.
    """

    def __init__(
        self,
        broker: BrokerServices,
        topic: InternalTopic,
        shard: CoordinatorShard,
        *,
        name: str,
        load_hook: LoadHook | None = None,
    ) -> None:
        self._broker = broker
        self.topic = topic
        self.runtime = CoordinatorRuntime(
            shard, topic.append, topic=topic.name, replicated=topic.replicated,
            on_failed=self._revert,
        )
        self._name = name
        self._load_hook = load_hook
        self._loads: dict[int, asyncio.Task[None]] = {}
        #: Per loaded partition: the log end when this broker's leadership began (what it holds
        #: below is the log of its epoch, replicated or not), kept across a revert's reload.
        self._epoch_start: dict[int, int] = {}
        #: Per loaded partition: the leader epoch the image showed when its load began.
        self._loaded_epoch: dict[int, int] = {}
        self._started = False
        self._stopping = False
        self._timers = TimerTask(
            shard.timer, broker.clock, f"odradek-{name}-timers", poll=self.runtime.poll
        )

    def partition_for(self, key: str) -> int:
        """The internal-topic partition of a group or transactional id."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Once the broker listens: load the partitions this broker leads (as tasks), follow
        leadership through the image from now on, and start the timers. With no internal topic
        yet there is nothing to load: every partition serves at once, until the topic appears
        and leadership decides (FindCoordinator creates the topic before it names a broker)."""
        if self.topic.exists():
            self.maybe_follow_leadership()
        else:
            for partition in range(self.topic.partitions):
                self.runtime.load(partition, ())
        self._started = True
        self._timers.start()

    def leads(self, partition: int) -> bool:
        """Whether the image names this broker leader of ``partition`` of the internal topic."""
        state = self._broker.cluster.partition(self.topic.name, partition)
        return state is not None and state.leader == self._broker.node_id

    def _leader_epoch(self, partition: int) -> int:
        state = self._broker.cluster.partition(self.topic.name, partition)
        return state.leader_epoch if state is not None else -1

    def acts_as_leader(self, partition: int) -> bool:
        """Whether requests for ``partition`` may be served here (see :meth:`_check_acting`)."""
        try:
            self._check_acting(partition)
        except NotCoordinatorError:
            return False
        return True

    def _check_acting(self, partition: int) -> None:
        """Raise NOT_COORDINATOR unless this broker acts as leader of ``partition`` now: not
        fenced (its session may have expired, and another broker may coordinate the partition
        meanwhile, so even reads of its state may be stale: an offset fetched from it could be
        older than one a client has since committed elsewhere) and not a leadership the image
        gave an earlier incarnation of this broker (the controller has yet to write it again)."""
        if not self.topic.exists():
            return  # no internal topic yet: every partition is served here (see start)
        try:
            self._broker.replicas.check_writable(self.topic.name, partition)
        except KafkaError as e:
            raise NotCoordinatorError(
                f"broker {self._broker.node_id} does not act as the coordinator of "
                f"{self.topic.name}-{partition}: {e}"
            ) from None

    def coordinates_here(self, key: str) -> bool:
        """Whether this broker is (or, with no internal topic yet, stands in as) the
        coordinator of ``key``: it leads the key's partition."""
        return not self.topic.exists() or self.leads(self.partition_for(key))

    def maybe_follow_leadership(self) -> None:
        """Load the partitions this broker has become leader of and unload those it no longer
        leads, as Kafka's coordinators follow ``onElection`` / ``onResignation``. A partition
        still led and loaded (or loading) in the leader epoch it was loaded in is left alone;
        one led in another epoch is loaded again: the image may have skipped the epochs
        between (a watch that fell behind re-reads), in which another broker led it and took
        writes this broker's state has not seen."""
        if not self.topic.exists():
            return
        for partition in range(self.topic.partitions):
            state = self.runtime.state(partition)
            if self.leads(partition):
                if state not in (PartitionState.ACTIVE, PartitionState.LOADING):
                    log.info("%s coordinator: loading %s-%d (this broker leads it)",
                             self._name, self.topic.name, partition)
                    self.load(partition)
                elif self._loaded_epoch.get(partition) != self._leader_epoch(partition):
                    log.info("%s coordinator: loading %s-%d again (led in leader epoch %d, "
                             "loaded in %s)", self._name, self.topic.name, partition,
                             self._leader_epoch(partition), self._loaded_epoch.get(partition))
                    self._epoch_start.pop(partition, None)
                    self.load(partition)
            elif state is not None:
                log.info("%s coordinator: unloading %s-%d (this broker no longer leads it)",
                         self._name, self.topic.name, partition)
                self.unload(partition)

    def on_topics_changed(self, change: TopicsChange) -> None:
        """The broker's image listener: follow leadership when the internal topic changed
        (nothing before :meth:`start`, which looks at the image itself)."""
        if not self._started:
            return
        name = self.topic.name
        if any(info.name == name for info in change.added) or any(
            new.name == name for _old, new in change.changed
        ):
            self.maybe_follow_leadership()

    async def stop(self) -> None:
        self._stopping = True  # writes failed by the shutdown revert nothing
        loads = list(self._loads.values())
        for task in loads:
            task.cancel()
        for task in loads:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._timers.stop()

    def load(self, partition: int, skip: tuple[int, int] = (0, 0)) -> asyncio.Task[None]:
        """Start loading ``partition``: requests for it answer COORDINATOR_LOAD_IN_PROGRESS until
        its records are replayed (but those based in the offset range ``skip``)."""
        previous = self._loads.pop(partition, None)
        if previous is not None:
            previous.cancel()
        self._loaded_epoch[partition] = self._leader_epoch(partition)
        self.runtime.begin_load(partition)
        task = asyncio.create_task(
            self._load(partition, skip), name=f"odradek-{self._name}-load-{partition}"
        )
        self._loads[partition] = task
        return task

    def _revert(self, partition: int) -> None:
        """A write to ``partition`` was replayed but will not be replicated: load the partition
        again from its log up to the high watermark (what is durable), or drop it when this
        broker no longer leads it."""
        if self._stopping:
            return
        if (
            self.runtime.state(partition) is PartitionState.LOADING
            and partition not in self._epoch_start
        ):
            # A write of an earlier leadership of this broker, failed by the new epoch: the
            # load of the new leadership under way replays the log as it is, that write too.
            return
        if self.leads(partition):
            plog = self._broker.topics.log(self.topic.name, partition)
            # What the log holds above the high watermark now is what will not replicate, but
            # for what it held when this broker became leader: written under earlier leaders,
            # possibly acknowledged by them, and the log of this epoch.
            start = max(plog.high_watermark, self._epoch_start.get(partition, 0))
            self.load(partition, skip=(start, max(start, plog.log_end_offset)))
        else:
            self.unload(partition)

    def unload(self, partition: int) -> None:
        """Stop coordinating ``partition`` and forget its state (NOT_COORDINATOR from now)."""
        task = self._loads.pop(partition, None)
        if task is not None:
            task.cancel()
        self._epoch_start.pop(partition, None)
        self._loaded_epoch.pop(partition, None)
        self.runtime.unload(partition)

    def is_loading(self) -> bool:
        return self.runtime.is_loading()

    async def _lead(self, partition: int) -> int:
        """Wait until this broker acts as the partition's leader; returns its log end then.

        That log end is not waited for: the new leader's log is the partition's from now on,
        so what it holds beyond its high watermark (records committed under an earlier leader
        that its high watermark does not cover yet, after a restart) is either replicated while
        it leads or dropped with its leadership, and with it everything loaded. Kafka's loaders
        read up to the log end too, without waiting for the high watermark. Loading only up to
        the high watermark left such records out for good, and with them acknowledged commits
        (found by the simulation, seed 10140); waiting for the high watermark to reach the log
        end held the partition in COORDINATOR_LOAD_IN_PROGRESS for as long as a follower in
        the ISR did not fetch (a dead one, until the controller shrank the ISR)."""
        name = self.topic.name
        while True:
            try:
                # As leader: a lone replica's high watermark is lifted to its log end here, and
                # a replicated partition's leader state starts.
                return self._broker.replicas.leader_log(name, partition).log_end_offset
            except KafkaError:
                if not self.leads(partition):
                    # No longer the leader: the unload follows (and ends this load).
                    return self._broker.topics.log(name, partition).log_end_offset
                # A leadership of an earlier incarnation of this broker: not acted on until the
                # controller writes the partition again.
                await asyncio.sleep(_LEADER_RETRY_S)

    async def _load(self, partition: int, skip: tuple[int, int] = (0, 0)) -> None:
        runtime = self.runtime
        started = time.perf_counter()
        try:
            if self._load_hook is not None:
                await self._load_hook(self.topic.name, partition)
            if skip == (0, 0):
                self._epoch_start[partition] = await self._lead(partition)
            led = time.perf_counter()
            plog = self._broker.topics.log(self.topic.name, partition)
            # Durable reads (OffsetFetch) show what the log held when this leadership began,
            # as the load and a revert keep it (see _lead: possibly acknowledged under an
            # earlier leader, though the high watermark may not say so yet; hiding it answered
            # offsets older than acknowledged ones after a restart, simulation seed 30); what
            # was appended since is shown once the high watermark passes it.
            runtime.pending_from(
                partition, max(plog.high_watermark, self._epoch_start.get(partition, 0))
            )
            applied = 0
            chunk: list[StoredRecord | StoredMarker] = []
            for item in self.topic.stored(partition, skip):
                chunk.append(item)
                if len(chunk) >= LOAD_CHUNK_RECORDS:
                    applied += runtime.replay_stored(partition, chunk)
                    chunk = []
                    await asyncio.sleep(0)  # let the broker serve between chunks
            # No await from the last read to here: nothing appended to the partition is missed.
            applied += runtime.replay_stored(partition, chunk)
            runtime.complete_load(partition, plog.log_end_offset)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loading %s-%d failed", self.topic.name, partition)
            runtime.fail_load(partition)
            return
        finally:
            if self._loads.get(partition) is asyncio.current_task():
                del self._loads[partition]
        done = time.perf_counter()
        log.info(
            "%s coordinator loaded %d records of %s-%d in %.0f ms (%.0f ms of them waiting to "
            "act as its leader)",
            self._name, applied, self.topic.name, partition, (done - started) * 1000,
            (led - started) * 1000,
        )

    # -- requests -----------------------------------------------------------------------------

    def write(self, key: str, op: Callable[[], CoordinatorResult[R]]) -> R:
        """Run ``op`` for ``key`` (a group or transactional id) once its partition is loaded
        here, write its records and replay them; returns its response. Raises
        COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR, the operation's error, or
        COORDINATOR_NOT_AVAILABLE when the write fails."""
        partition = self.partition_for(key)
        self._check_acting(partition)
        return self.runtime.write(partition, op)

    def run(self, key: str, fn: Callable[[], R]) -> R:
        """Run ``fn`` (which writes nothing) for ``key`` once its partition is loaded here and
        this broker acts as its leader (NOT_COORDINATOR otherwise, as :meth:`write`)."""
        partition = self.partition_for(key)
        self._check_acting(partition)
        return self.runtime.run(partition, fn)

    def check_loaded(self) -> None:
        """Raise COORDINATOR_LOAD_IN_PROGRESS while any partition loads (requests about every
        group or transaction, such as ListGroups, answer so in Kafka)."""
        loading = self.runtime.partitions(PartitionState.LOADING)
        if loading:
            raise CoordinatorLoadInProgressError(
                f"{len(loading)} partitions of {self.topic.name} are still being loaded"
            )
