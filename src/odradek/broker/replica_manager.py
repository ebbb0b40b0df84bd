"""The one owner of appends to partitions this broker leads, and of the leadership checks.

Who leads a partition, and in which leader epoch, is the broker's
:class:`~odradek.cluster.model.MetadataView` (``services.cluster``). Every request that must be
served by the leader -- produce, client fetches, ListOffsets, OffsetForLeaderEpoch,
DeleteRecords -- takes its log from :meth:`ReplicaManager.leader_log`, which answers as Kafka's
``Partition.localLogWithEpochOrThrow`` does: UNKNOWN_TOPIC_OR_PARTITION for a partition the view
does not know, NOT_LEADER_OR_FOLLOWER for one this broker does not hold, FENCED_LEADER_EPOCH /
UNKNOWN_LEADER_EPOCH for a client's older / newer leader epoch (KIP-320), NOT_LEADER_OR_FOLLOWER
for one another broker leads.

Every write to a partition log -- a client's produce, a coordinator's records in
``__consumer_offsets`` or ``__transaction_state``, a transaction marker -- goes through
:meth:`ReplicaManager.append_as_leader`: it appends in the view's leader epoch (the log's epoch
cache starts a newer epoch at the log end offset with that append), then advances the high
watermark and wakes the fetches waiting on the partition. A broker marked ``fenced`` (its
registration's lease may have expired) appends nothing.

**One replica** (the fast path, as before replication): the ISR is the leader alone, so the
high watermark follows the log end offset at once, and consumers' fetches are woken by the
append.

**Several replicas** (issue 13): each partition this broker leads has a
:class:`~odradek.broker.replication.LeaderPartition` (its followers, ISR proposals, high
watermark, acks=all waiters), made when the image names this broker leader of an epoch, or at
the first request of it. Replica fetches (:meth:`ReplicaManager.fetch_for_follower`) read to
the log end, check the follower's log against the leader's epochs (KIP-279's diverging epoch)
and record the follower's position; the high watermark (the lowest log end offset over the ISR,
only while the ISR has ``min.insync.replicas`` members) then moves, waking consumers' fetches
(:attr:`BrokerServices.append_watch`) and completing acks=all produces. An append wakes the
replica fetches (:attr:`ReplicaManager.replica_watch`) at once; a high-watermark move wakes them
only :data:`HW_NOTICE_DELAY_MS` later (an append in between wakes them sooner, and its answer
carries the new high watermark): waking them at once cost every acks=all round an extra fetch
answer and request per follower, only to tell it what the next append's answer tells it anyway. Every ``replica.lag.time.max.ms / 2``
the ISR is checked for followers that have not caught up within ``replica.lag.time.max.ms``
(shrink); a fetch that reaches the high watermark and the epoch's start adds its follower
(expand); both are compare-and-swaps in the metadata store (``cluster/alter_partition.py``),
one at a time per partition. While the broker is fenced the high watermark does not move, so a
zombie leader acknowledges nothing.

Owned by the broker's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from odradek.broker.delayed import AppendWatch
from odradek.broker.replication import LeaderPartition
from odradek.cluster.alter_partition import (
    IneligibleReplica,
    StalePartitionState,
)
from odradek.errors import (
    CoordinatorNotAvailableError,
    FencedLeaderEpochError,
    KafkaError,
    NotCoordinatorError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    OffsetNotAvailableError,
    RequestTimedOutError,
    UnknownLeaderEpochError,
    UnknownTopicOrPartitionError,
)
from odradek.storage.file_records import FileRecords
from odradek.storage.log import (
    AppendOrigin,
    FetchDataInfo,
    FetchIsolation,
    LogAppendInfo,
    PartitionLog,
)

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices
    from odradek.cluster.image import TopicsChange
    from odradek.cluster.model import PartitionState

__all__ = [
    "AlterPartitionFn",
    "HW_NOTICE_DELAY_MS",
    "FollowerFetch",
    "ReplicaManager",
    "check_leader_epoch",
    "end_offset_for_epoch",
    "epoch_for_offset",
]


def check_leader_epoch(current_leader_epoch: int, leader_epoch: int) -> None:
    """Validate a client's idea of the leader epoch against the partition's (KIP-320); -1 means
    "not known", no check."""
    if current_leader_epoch < 0 or current_leader_epoch == leader_epoch:
        return
    if current_leader_epoch < leader_epoch:
        raise FencedLeaderEpochError(
            f"leader epoch {current_leader_epoch} is older than the current {leader_epoch}"
        )
    raise UnknownLeaderEpochError(
        f"leader epoch {current_leader_epoch} is newer than the current {leader_epoch}"
    )


def end_offset_for_epoch(log: PartitionLog, epoch: int, leader_epoch: int) -> tuple[int, int]:
    """OffsetForLeaderEpoch's answer (epoch, end offset) for ``epoch`` on the leader of
    ``leader_epoch``. Kafka records a new leader epoch at the log end offset when the broker
    becomes leader; here the log records it with the epoch's first append, so until then the
    answer is computed as if it were recorded (no file is written on a read)."""
    latest = log.leader_epoch
    if leader_epoch <= latest or epoch < 0:
        return log.end_offset_for_epoch(epoch)
    end = log.log_end_offset
    if epoch == leader_epoch:
        return epoch, end
    if epoch > leader_epoch:
        return -1, -1
    if latest < 0:  # older than every epoch the log knows: it ends where the first starts
        return epoch, end
    if epoch >= latest:  # the latest recorded epoch ends where the current one starts
        return latest, end
    return log.end_offset_for_epoch(epoch)


def epoch_for_offset(log: PartitionLog, offset: int, leader_epoch: int) -> int:
    """The leader epoch of ``offset`` (ListOffsets' earliest), counting the current epoch as
    started at the log end offset when no append has recorded it yet."""
    if leader_epoch > log.leader_epoch and offset >= log.log_end_offset:
        return leader_epoch
    return log.epoch_for_offset(offset)


log = logging.getLogger("odradek.replication")

#: ``cluster.alter_partition.alter_partition`` with its store and keys bound.
AlterPartitionFn = Callable[..., Awaitable["PartitionState"]]

TopicPartition = tuple[str, int]
#: Retries of an ISR change whose outcome is unknown (the store unreachable): first and most.
_ALTER_RETRY_S = 0.1
#: How long a high-watermark move waits before it wakes the followers' long polls by itself.
HW_NOTICE_DELAY_MS = 25
_ALTER_RETRY_MAX_S = 2.0
#: A refusal of an ISR change repeated for a partition within this long is logged at DEBUG
#: (the leader asks again at every follower fetch while a follower's broker epoch is stale).
REFUSAL_LOG_INTERVAL_MS = 30_000
#: A barrier's empty answer, shared (never appended to).
_NO_WAITS: list[asyncio.Future[None]] = []


class RepeatedRefusals:
    """Which refusals to log at INFO: a partition's first, one that differs from its previous,
    and a repeat once ``interval_ms`` has passed since it was last logged so."""

    __slots__ = ("_interval_ms", "_last")

    def __init__(self, interval_ms: int) -> None:
        self._interval_ms = interval_ms
        self._last: dict[TopicPartition, tuple[str, int]] = {}

    def first(self, tp: TopicPartition, message: str, now_ms: int) -> bool:
        last = self._last.get(tp)
        if last is not None and last[0] == message and now_ms - last[1] < self._interval_ms:
            return False
        self._last[tp] = (message, now_ms)
        return True

    def forget(self, tp: TopicPartition) -> None:
        """``tp``'s ISR changed: its next refusal is news again."""
        self._last.pop(tp, None)


@dataclass(frozen=True, slots=True)
class FollowerFetch:
    """One partition's share of a replica fetch: what was read (the high watermark as it is
    after this fetch moved it), or -- when the follower's log is not a prefix of the leader's --
    the epoch and end offset it must truncate to (KIP-279), with no records."""

    data: FetchDataInfo
    diverging_epoch: tuple[int, int] | None = None


class ReplicaManager:
    """Leadership checks, appends as leader and the leader's side of replication; see the
    module docs. Reads the view, the node id and ``fenced`` from the broker at every call, so a
    view replaced meanwhile (the cluster image) is used at once. ``alter_partition`` changes an
    ISR in the metadata store (None: ISRs are never changed, as with a test's static view)."""

    def __init__(
        self,
        broker: BrokerServices,
        *,
        alter_partition: AlterPartitionFn | None = None,
        led_by_earlier_incarnation: Callable[[str, int], bool] | None = None,
    ) -> None:
        """``led_by_earlier_incarnation(topic, partition)``: whether this broker's leadership
        of a partition was written before its current registration, for an earlier incarnation
        of it (which may have had records this one lost, or led an epoch it must not go on
        with): such a leadership is not acted on until the controller writes the partition
        again (it bumps the leader epoch of a restarted leader). None: never."""
        self._broker = broker
        self._alter = alter_partition
        self._earlier = led_by_earlier_incarnation or (lambda _topic, _partition: False)
        self._leaders: dict[TopicPartition, LeaderPartition] = {}
        #: Wake-ups for replica fetches waiting on new data (an append, a new high watermark).
        self.replica_watch = AppendWatch()
        self._lag_ms = broker.config.replica_lag_time_max_ms
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        #: While a request's handler runs (see :meth:`open_barrier`): what its coordinator
        #: appends must have replicated before it is answered (the list made at the first).
        self._collecting = False
        self._barrier: list[asyncio.Future[None]] = _NO_WAITS
        #: DeleteRecords waiting for every replica's log start (Kafka's DelayedDeleteRecords):
        #: partition -> (required low watermark, future of the low watermark reached).
        self._low_waiters: dict[TopicPartition, list[tuple[int, asyncio.Future[int]]]] = {}
        #: Pending wake-ups of the followers' long polls after a high-watermark move.
        self._hw_notices: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._refusals = RepeatedRefusals(REFUSAL_LOG_INTERVAL_MS)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ISR expiry check (every ``replica.lag.time.max.ms / 2``, as Kafka)."""
        if self._expiry is None:
            self._expiry = asyncio.create_task(self._expire_isr(), name="odradek-isr-expiry")

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._expiry] if self._expiry is not None else [])]
        self._expiry = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for handle in self._hw_notices.values():
            handle.cancel()
        self._hw_notices.clear()
        for lp in self._leaders.values():
            lp.fail_waiters(NotLeaderOrFollowerError("the broker is stopping"))
        self._leaders.clear()
        for tp in list(self._low_waiters):
            self._fail_low_waiters(tp, "the broker is stopping")
        self.replica_watch.notify_all()

    # -- leadership ------------------------------------------------------------------------------

    def leader_state(
        self, topic: str, partition: int, current_leader_epoch: int = -1
    ) -> PartitionState:
        """The state of a partition this broker leads, checked as the module docs say."""
        broker = self._broker
        state = broker.cluster.partition(topic, partition)
        if state is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        node_id = broker.node_id
        if node_id not in state.replicas:
            raise NotLeaderOrFollowerError(
                f"broker {node_id} holds no replica of {topic}-{partition}"
            )
        check_leader_epoch(current_leader_epoch, state.leader_epoch)
        if state.leader != node_id:
            raise NotLeaderOrFollowerError(
                f"broker {node_id} is not the leader of {topic}-{partition} "
                f"(leader {state.leader}, epoch {state.leader_epoch})"
            )
        if len(state.replicas) > 1 and self._earlier(topic, partition):
            raise NotLeaderOrFollowerError(
                f"{topic}-{partition}: leader epoch {state.leader_epoch} was given to an "
                f"earlier incarnation of broker {node_id}; waiting for the controller"
            )
        return state

    def _led_log(self, topic: str, partition: int, state: PartitionState) -> PartitionLog:
        """The log of a partition this broker leads in ``state``, its leader state made
        current first."""
        plog = self._broker.topics.log(topic, partition)
        if len(state.replicas) == 1:
            # A lone replica's high watermark is its log end offset (a checkpoint read at start
            # may be behind it).
            if plog.high_watermark < plog.log_end_offset:
                plog.update_high_watermark(plog.log_end_offset)
        else:
            self._leader_partition(topic, partition, state, plog)
        return plog

    def leader_log(self, topic: str, partition: int, current_leader_epoch: int = -1) -> PartitionLog:
        """The log of a partition this broker leads (errors as :meth:`leader_state`)."""
        state = self.leader_state(topic, partition, current_leader_epoch)
        return self._led_log(topic, partition, state)

    def leader_log_and_epoch(
        self, topic: str, partition: int, current_leader_epoch: int = -1
    ) -> tuple[PartitionLog, int]:
        """:meth:`leader_log` and the partition's leader epoch."""
        state = self.leader_state(topic, partition, current_leader_epoch)
        return self._led_log(topic, partition, state), state.leader_epoch

    def check_writable(self, topic: str, partition: int) -> PartitionState:
        """The state of a partition this broker may append to: it leads it and is not
        fenced."""
        if self._broker.fenced:
            raise NotLeaderOrFollowerError(
                f"broker {self._broker.node_id} is fenced: its registration may have expired"
            )
        return self.leader_state(topic, partition)

    def min_insync_replicas(self, topic: str) -> int:
        """The topic's ``min.insync.replicas`` (its own, else the broker's)."""
        info = self._broker.cluster.topic(topic)
        value = info.configs.get("min.insync.replicas") if info is not None else None
        return int(value) if value else self._broker.config.min_insync_replicas

    def _leader_partition(
        self, topic: str, partition: int, state: PartitionState, plog: PartitionLog
    ) -> LeaderPartition:
        """The leader state of a replicated partition led in ``state``: made when this broker
        became leader of its epoch (or of a new incarnation of the topic), else brought up to
        date with a newer partition state."""
        tp = (topic, partition)
        lp = self._leaders.get(tp)
        now = self._broker.clock.monotonic_ms()
        if lp is None or lp.leader_epoch != state.leader_epoch or lp.log is not plog:
            if lp is not None:
                lp.fail_waiters(NotLeaderOrFollowerError(
                    f"{topic}-{partition}: leader epoch {lp.leader_epoch} has ended"
                ))
            lp = self._leaders[tp] = LeaderPartition(
                topic, partition, self._broker.node_id, state, plog, now, self._broker.timings
            )
            log.info("%s-%d: leader in epoch %d from offset %d (ISR %s, high watermark %d)",
                     topic, partition, state.leader_epoch, lp.epoch_start_offset,
                     list(state.isr), plog.high_watermark)
            self._maybe_advance_high_watermark(lp)
        elif lp.update_state(state, now):
            self._after_isr_change(lp)
        return lp

    def on_topics_changed(self, change: TopicsChange) -> None:
        """The image's listener: make the leader state of partitions this broker now leads (so
        an epoch starts at the log end offset of that moment), bring the others up to date, and
        drop (failing their waiters) those it no longer leads."""
        node_id = self._broker.node_id
        logs = self._broker.logs
        for info in change.removed:
            self._resign_topic(info.name)
        for info in (*change.added, *(new for _old, new in change.changed)):
            for index, state in enumerate(info.partitions):
                tp = (info.name, index)
                if (state.leader == node_id and len(state.replicas) > 1
                        and not self._earlier(info.name, index)):
                    # A log not opened yet (start-up opens them lazily) is left to its first
                    # request: nothing can have been appended to it meanwhile.
                    plog = logs.opened_log(info.name, index)
                    if plog is not None:
                        self._leader_partition(info.name, index, state, plog)
                elif tp in self._leaders:
                    self._resign(tp, f"{info.name}-{index}: now led by {state.leader} in epoch "
                                     f"{state.leader_epoch}")
        for old, new in change.changed:
            if old.topic_id != new.topic_id or len(new.partitions) < len(old.partitions):
                for tp in [tp for tp in self._leaders if tp[0] == new.name]:
                    if tp[1] >= len(new.partitions):
                        self._resign(tp, f"{tp[0]}-{tp[1]} is gone")

    def _resign_topic(self, name: str) -> None:
        for tp in [tp for tp in self._leaders if tp[0] == name]:
            self._resign(tp, f"{tp[0]}-{tp[1]} was deleted")

    def _resign(self, tp: TopicPartition, why: str) -> None:
        lp = self._leaders.pop(tp, None)
        if lp is not None:
            lp.fail_waiters(NotLeaderOrFollowerError(why))
            self.replica_watch.notify(tp)
        self._fail_low_waiters(tp, why)

    # -- appends ---------------------------------------------------------------------------------

    def append_as_leader(
        self,
        topic: str,
        partition: int,
        records: bytes | bytearray | memoryview,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
        required_acks: int = 1,
    ) -> LogAppendInfo:
        """Append ``records`` (validated and given offsets by storage) in the partition's leader
        epoch, then advance the high watermark over them as far as the ISR allows and wake
        waiting fetches. A retried batch the log recognised as a duplicate changes nothing.
        ``required_acks=-1`` refuses the append with NOT_ENOUGH_REPLICAS while the ISR is
        smaller than ``min.insync.replicas`` (then :meth:`wait_for_replication`), except a
        retried batch the log already holds, which is answered as a duplicate. Raises what
        :meth:`check_writable` and :meth:`PartitionLog.append_as_leader` raise; nothing is
        written then."""
        state = self.check_writable(topic, partition)
        plog = self._broker.topics.log(topic, partition)
        if len(state.replicas) == 1:
            if required_acks == -1 and self.min_insync_replicas(topic) > 1:
                raise NotEnoughReplicasError(
                    f"{topic}-{partition} has 1 in-sync replica, fewer than its "
                    f"min.insync.replicas {self.min_insync_replicas(topic)}"
                )
            info = plog.append_as_leader(records, leader_epoch=state.leader_epoch, origin=origin)
            # The ISR is the leader alone: everything appended is replicated.
            if not info.duplicate and plog.high_watermark < plog.log_end_offset:
                plog.update_high_watermark(plog.log_end_offset)
                self._broker.append_watch.notify((topic, partition))
            return info
        lp = self._leader_partition(topic, partition, state, plog)
        if required_acks == -1:
            min_isr = self.min_insync_replicas(topic)
            if len(lp.isr) < min_isr:
                # A retry of a batch already appended (by this broker, or by the previous
                # leader and replicated here) is not refused: NOT_ENOUGH_REPLICAS tells the
                # client its batch was not written, and librdkafka, whose next batch then fails
                # with OUT_OF_ORDER_SEQUENCE_NUMBER once the ISR grows, bumps its epoch and
                # sends the batch again under new sequence numbers: stored twice. Its answer
                # waits for the replication of the original, like any acks=all append.
                dup = plog.find_duplicate(records)
                if dup is not None:
                    return dup
                raise NotEnoughReplicasError(
                    f"{topic}-{partition} has {len(lp.isr)} in-sync replicas {list(lp.isr)}, "
                    f"fewer than its min.insync.replicas {min_isr}"
                )
        info = plog.append_as_leader(records, leader_epoch=state.leader_epoch, origin=origin)
        if not info.duplicate:
            self.replica_watch.notify((topic, partition))
            self._maybe_advance_high_watermark(lp)
        if origin is not AppendOrigin.CLIENT and self._collecting:
            fut = lp.wait_for_high_watermark(info.last_offset + 1)
            if fut is not None:
                if not self._barrier:
                    self._barrier = []  # the shared empty list is never appended to
                self._barrier.append(fut)
        return info

    # -- coordinator writes ------------------------------------------------------------------------

    def open_barrier(self) -> None:
        """Start collecting the coordinator appends (records of ``__consumer_offsets`` and
        ``__transaction_state``, transaction markers) made while a request's handler runs
        synchronously: the dispatcher answers that request only once they are replicated (Kafka
        appends them with acks=all)."""
        self._collecting = True

    def close_barrier(self) -> list[asyncio.Future[None]]:
        """Stop collecting; the futures of the appends still to replicate."""
        self._collecting = False
        waits = self._barrier
        if waits:
            self._barrier = _NO_WAITS
        return waits

    async def await_replication(
        self, waits: list[asyncio.Future[None]], *, timeout_ms: int, coordinator: bool
    ) -> None:
        """Wait for coordinator appends collected by a barrier; raises what a failed one raised
        (as a coordinator answers it when ``coordinator``: COORDINATOR_NOT_AVAILABLE, or
        NOT_COORDINATOR once leadership moved), or REQUEST_TIMED_OUT after ``timeout_ms``."""
        try:
            _done, pending = await asyncio.wait(waits, timeout=timeout_ms / 1000)
        except asyncio.CancelledError:
            for fut in waits:  # the request's connection went away: nobody reads them now
                fut.cancel()
            raise
        for fut in pending:
            fut.cancel()
        error: KafkaError | None = None
        if pending:
            error = RequestTimedOutError(
                f"coordinator records not replicated within {timeout_ms} ms"
            )
        for fut in waits:
            if fut.cancelled():
                continue
            exc = fut.exception()
            if isinstance(exc, KafkaError) and error is None:
                error = exc
        if error is None:
            return
        if not coordinator:
            raise error
        if isinstance(error, NotLeaderOrFollowerError):
            raise NotCoordinatorError(error.message) from error
        raise CoordinatorNotAvailableError(error.message) from error

    def wait_for_replication(
        self, topic: str, partition: int, info: LogAppendInfo
    ) -> asyncio.Future[None] | None:
        """acks=all: a future resolved once the high watermark has passed the batch ``info``
        describes (failed with NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrinks below
        ``min.insync.replicas`` first, NOT_LEADER_OR_FOLLOWER if leadership moves); None when
        there is nothing to wait for (one replica; already replicated)."""
        if info.last_offset < 0:
            return None
        lp = self._leaders.get((topic, partition))
        if lp is None:  # one replica: the append moved the high watermark itself
            return None
        return lp.wait_for_high_watermark(info.last_offset + 1)

    def wait_for_offset(
        self, topic: str, partition: int, end_offset: int
    ) -> asyncio.Future[None] | None:
        """A future resolved once the high watermark reaches ``end_offset`` (failed as
        :meth:`wait_for_replication`'s); None when it has, or for one replica."""
        lp = self._leaders.get((topic, partition))
        return lp.wait_for_high_watermark(end_offset) if lp is not None else None

    def _maybe_advance_high_watermark(self, lp: LeaderPartition) -> bool:
        if self._broker.fenced:
            return False  # a zombie leader makes nothing visible and acknowledges nothing
        if not lp.maybe_advance_high_watermark(self.min_insync_replicas(lp.topic)):
            return False
        tp = (lp.topic, lp.partition)
        # Woken in the order of what waits on it: consumers, acks=all producers, and a moment
        # later the followers' long polls (they only learn the new high watermark, which the
        # answer to the next append tells them anyway).
        self._broker.append_watch.notify(tp)
        lp.complete_waiters()
        if tp not in self._hw_notices:
            self._hw_notices[tp] = asyncio.get_running_loop().call_later(
                HW_NOTICE_DELAY_MS / 1000, self._hw_notice, tp
            )
        return True

    def _hw_notice(self, tp: TopicPartition) -> None:
        del self._hw_notices[tp]
        self.replica_watch.notify(tp)

    def _after_isr_change(self, lp: LeaderPartition) -> None:
        if lp.has_waiters and len(lp.isr) < self.min_insync_replicas(lp.topic):
            lp.fail_waiters(NotEnoughReplicasAfterAppendError(
                f"{lp.topic}-{lp.partition}: the ISR shrank to {list(lp.isr)} while waiting"
            ))
        self._maybe_advance_high_watermark(lp)

    # -- replica fetches -------------------------------------------------------------------------

    def fetch_for_follower(
        self,
        replica_id: int,
        broker_epoch: int,
        topic: str,
        partition: int,
        *,
        current_leader_epoch: int,
        fetch_offset: int,
        last_fetched_epoch: int,
        log_start_offset: int,
        max_bytes: int,
        min_one_message: bool,
        max_inline_bytes: int | None = None,
    ) -> FollowerFetch:
        """Serve one partition of a follower's fetch (Kafka's ``Partition.fetchRecords`` for a
        follower): leadership and the leader epoch checked (KIP-320), a follower that is no
        replica refused with NOT_LEADER_OR_FOLLOWER, the follower's ``last_fetched_epoch`` /
        ``fetch_offset`` checked against the leader's epochs (KIP-279: a divergence is answered
        with the epoch and end offset to truncate to), records read up to the log end, the
        follower's position recorded, and the high watermark moved and the ISR grown from it.
        Raises FetchOffsetOutOfRangeError outside the log."""
        state = self.leader_state(topic, partition, current_leader_epoch)
        if replica_id == self._broker.node_id or replica_id not in state.replicas:
            raise NotLeaderOrFollowerError(
                f"broker {replica_id} is not a follower of {topic}-{partition} "
                f"(replicas {list(state.replicas)})"
            )
        plog = self._broker.topics.log(topic, partition)
        lp = self._leader_partition(topic, partition, state, plog)
        if last_fetched_epoch >= 0:
            epoch, end = end_offset_for_epoch(plog, last_fetched_epoch, lp.leader_epoch)
            if epoch < last_fetched_epoch or end < fetch_offset:
                data = FetchDataInfo(
                    b"", fetch_offset, plog.high_watermark, plog.log_start_offset,
                    plog.log_end_offset, plog.last_stable_offset,
                )
                return FollowerFetch(data, (epoch, end))
        data = plog.fetch(
            fetch_offset,
            max_bytes=max_bytes,
            isolation=FetchIsolation.LOG_END,
            min_one_message=min_one_message,
            max_inline_bytes=max_inline_bytes,
        )
        follower = lp.record_follower_fetch(
            replica_id,
            fetch_offset=fetch_offset,
            log_start_offset=log_start_offset,
            now_ms=self._broker.clock.monotonic_ms(),
            leader_end_offset=data.log_end_offset,
            broker_epoch=broker_epoch,
        )
        if follower is None:  # the leader state is newer than the image's
            if isinstance(data.records, FileRecords):
                data.records.close()
            raise NotLeaderOrFollowerError(
                f"broker {replica_id} is not a follower of {topic}-{partition}"
            )
        if self._maybe_advance_high_watermark(lp):
            data = replace(data, high_watermark=plog.high_watermark,
                           last_stable_offset=plog.last_stable_offset)
        if (topic, partition) in self._low_waiters:
            self._complete_low_waiters(lp)
        if lp.may_join_isr(replica_id) and self._eligible(replica_id, follower.broker_epoch):
            self._propose_isr(lp, (*lp.isr, replica_id))
        return FollowerFetch(data)

    def _eligible(self, replica_id: int, broker_epoch: int) -> bool:
        """KIP-903: a follower joins the ISR only while registered under the epoch it fetched
        with (a broker that restarted since must fetch again under its new one); KIP-841: and
        not in controlled shutdown (the controller takes it out; its last fetches must not
        bring it back)."""
        registered = self._broker.cluster.broker(replica_id)
        return (
            registered is not None
            and broker_epoch in (-1, registered.epoch)
            and not registered.info.shutting_down
        )

    # -- ISR changes -----------------------------------------------------------------------------

    def _propose_isr(self, lp: LeaderPartition, new_isr: tuple[int, ...]) -> None:
        """Propose ``new_isr`` to the store, unless a proposal is under way (or none can be
        made: no store, fenced)."""
        if self._alter is None or lp.pending_isr is not None or self._broker.fenced:
            return
        if not new_isr or new_isr == lp.isr:
            return
        lp.pending_isr = new_isr
        epochs = {
            r: lp.followers[r].broker_epoch for r in new_isr if r in lp.followers
        }
        task = asyncio.create_task(
            self._alter_isr(lp, lp.state, new_isr, epochs),
            name=f"odradek-alter-partition-{lp.topic}-{lp.partition}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Pending expansion: the new member already holds the high watermark back.

    async def _alter_isr(
        self,
        lp: LeaderPartition,
        expected: PartitionState,
        new_isr: tuple[int, ...],
        epochs: Mapping[int, int],
    ) -> None:
        assert self._alter is not None
        tp = (lp.topic, lp.partition)
        what = "shrink" if len(new_isr) < len(expected.isr) else "expand"
        state: PartitionState | None = None
        backoff = _ALTER_RETRY_S
        try:
            while True:
                try:
                    state = await self._alter(
                        lp.topic, lp.partition, expected=expected, new_isr=new_isr,
                        member_epochs=epochs,
                    )
                except StalePartitionState as e:
                    log.info("%s-%d: ISR %s to %s not made: the partition state changed (%s)",
                             lp.topic, lp.partition, what, list(new_isr), e.current)
                    state = e.current
                except IneligibleReplica as e:
                    message = f"ISR {what} to {list(new_isr)} refused: {e}"
                    if self._refusals.first(tp, message, self._broker.clock.monotonic_ms()):
                        log.info("%s-%d: %s (repeats within %d s logged at DEBUG)", lp.topic,
                                 lp.partition, message, REFUSAL_LOG_INTERVAL_MS // 1000)
                    else:
                        log.debug("%s-%d: %s", lp.topic, lp.partition, message)
                except Exception as e:
                    # The outcome is unknown: the store may hold ``new_isr`` (and the controller
                    # elect from it). As Kafka's leader does, the proposal stays pending -- an
                    # expansion's new member holding the high watermark back -- and is sent
                    # again until answered (a retry finds its own write and says so), unless a
                    # newer partition state ends it first.
                    log.warning("%s-%d: ISR %s to %s failed (retrying in %.1f s): %s",
                                lp.topic, lp.partition, what, list(new_isr), backoff, e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _ALTER_RETRY_MAX_S)
                    if (
                        self._leaders.get(tp) is lp
                        and lp.pending_isr == new_isr
                        and lp.state is expected
                    ):
                        continue
                else:
                    self._refusals.forget(tp)
                    log.info("%s-%d: ISR %s from %s to %s (partition epoch %d)", lp.topic,
                             lp.partition, what, list(expected.isr), list(new_isr),
                             expected.partition_epoch + 1)
                break
        finally:
            if lp.pending_isr == new_isr and lp.state is expected:
                lp.pending_isr = None
        if self._leaders.get(tp) is not lp:
            return
        if (
            state is not None
            and state.leader == self._broker.node_id
            and state.leader_epoch == lp.leader_epoch
            and lp.update_state(state, self._broker.clock.monotonic_ms())
        ):
            self._after_isr_change(lp)
        else:
            # The proposal is over either way; a pending expansion no longer holds the
            # high watermark back.
            self._maybe_advance_high_watermark(lp)

    async def _expire_isr(self) -> None:
        """Kafka's ``isr-expiration`` task: shrink the ISR of followers that have not caught up
        within ``replica.lag.time.max.ms``."""
        interval = self._lag_ms / 2000
        while True:
            await asyncio.sleep(interval)
            try:
                self.maybe_shrink_isr()
            except Exception:
                log.exception("ISR expiry check failed")

    def maybe_shrink_isr(self) -> None:
        """One pass of the ISR expiry check over the partitions this broker leads."""
        now = self._broker.clock.monotonic_ms()
        for lp in list(self._leaders.values()):
            if lp.pending_isr is not None:
                continue
            out = lp.out_of_sync_replicas(now, self._lag_ms)
            if not out:
                continue
            new_isr = tuple(r for r in lp.isr if r not in out)
            for r in out:
                f = lp.followers[r]
                log.info("%s-%d: follower %d is out of sync (log end offset %d, leader's %d, "
                         "last caught up %d ms ago)", lp.topic, lp.partition, r,
                         f.log_end_offset, lp.log.log_end_offset,
                         now - f.last_caught_up_time_ms)
            self._propose_isr(lp, new_isr)

    # -- fetch from the closest replica (KIP-392) -------------------------------------------------

    def preferred_read_replica(
        self, topic: str, partition: int, fetch_offset: int, client_rack: str
    ) -> int:
        """The replica a consumer in ``client_rack`` should read ``fetch_offset`` from, as
        Kafka's RackAwareReplicaSelector picks it, or -1 for this leader: candidates are the
        leader and the followers on registered brokers whose log holds the offset; the leader
        when it is in the client's rack or no candidate is, else the most caught-up candidate
        there."""
        lp = self._leaders.get((topic, partition))
        cluster = self._broker.cluster
        if lp is None or not client_rack:
            return -1

        def rack(node: int) -> str | None:
            registered = cluster.broker(node)
            return registered.info.rack if registered is not None else None

        if rack(self._broker.node_id) == client_rack:
            return -1
        best: tuple[int, int, int] | None = None  # (log end offset, caught-up time, id)
        for r, f in lp.followers.items():
            if (
                f.log_start_offset <= fetch_offset <= f.log_end_offset
                and rack(r) == client_rack
            ):
                candidate = (f.log_end_offset, f.last_caught_up_time_ms, r)
                if best is None or candidate > best:
                    best = candidate
        return best[2] if best is not None else -1

    def follower_log(
        self, topic: str, partition: int, current_leader_epoch: int
    ) -> PartitionLog | None:
        """The log of a partition this broker follows, for a consumer's fetch (v11+, KIP-392),
        its leader epoch checked (KIP-320); None when this broker leads it or holds no replica
        (the leader's checks answer then)."""
        broker = self._broker
        state = broker.cluster.partition(topic, partition)
        node_id = broker.node_id
        if state is None or state.leader == node_id or node_id not in state.replicas:
            return None
        check_leader_epoch(current_leader_epoch, state.leader_epoch)
        return broker.logs.opened_log(topic, partition) or broker.topics.log(topic, partition)

    # -- DeleteRecords ---------------------------------------------------------------------------

    def low_watermark(self, topic: str, partition: int) -> int:
        """The lowest log start offset over the leader and its followers on registered brokers
        (Kafka's ``lowWatermarkIfLeader``); a follower that has not fetched yet counts as -1."""
        lp = self._leaders.get((topic, partition))
        plog = self._broker.topics.log(topic, partition)
        if lp is None:
            return plog.log_start_offset
        return self._low_watermark(lp)

    def _low_watermark(self, lp: LeaderPartition) -> int:
        cluster = self._broker.cluster
        starts = [
            f.log_start_offset for r, f in lp.followers.items() if cluster.broker(r) is not None
        ]
        return min([lp.log.log_start_offset, *starts])

    def wait_for_low_watermark(
        self, topic: str, partition: int, offset: int
    ) -> asyncio.Future[int] | None:
        """DeleteRecords (Kafka's DelayedDeleteRecords): a future of the low watermark once it
        has reached ``offset`` -- every replica moved its log start offset there, which a
        follower does once a fetch answer told it the leader's -- failed with
        NOT_LEADER_OR_FOLLOWER if leadership moves; None when it already has. The replica
        fetches are woken so that followers learn the new log start at once."""
        lp = self._leaders.get((topic, partition))
        if lp is None or self._low_watermark(lp) >= offset:
            return None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._low_waiters.setdefault((topic, partition), []).append((offset, fut))
        self.replica_watch.notify((topic, partition))
        return fut

    def _complete_low_waiters(self, lp: LeaderPartition) -> None:
        tp = (lp.topic, lp.partition)
        low = self._low_watermark(lp)
        waiting = []
        for offset, fut in self._low_waiters.pop(tp, []):
            if fut.done():
                continue
            if low >= offset:
                fut.set_result(low)
            else:
                waiting.append((offset, fut))
        if waiting:
            self._low_waiters[tp] = waiting

    def _fail_low_waiters(self, tp: TopicPartition, why: str) -> None:
        for _offset, fut in self._low_waiters.pop(tp, []):
            if not fut.done():
                fut.set_exception(NotLeaderOrFollowerError(why))

    # -- ListOffsets -----------------------------------------------------------------------------

    def check_latest_offset_available(self, topic: str, partition: int) -> None:
        """KIP-207: a new leader answers ListOffsets(latest) only once its high watermark has
        reached the start of its epoch (until then the answer could go backwards)."""
        lp = self._leaders.get((topic, partition))
        if lp is not None and lp.log.high_watermark < lp.epoch_start_offset:
            raise OffsetNotAvailableError(
                f"{topic}-{partition}: the high watermark {lp.log.high_watermark} has not "
                f"reached the start {lp.epoch_start_offset} of leader epoch {lp.leader_epoch}"
            )
