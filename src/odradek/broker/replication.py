"""The leader's state of one replicated partition: its followers, its ISR and its high watermark.

A :class:`LeaderPartition` exists for each partition with more than one replica that this
broker leads, for one leader epoch (Kafka's ``Partition`` while it is leader). It alone moves
the partition's high watermark and proposes changes of its ISR; the
:class:`~odradek.broker.replica_manager.ReplicaManager` owns it, creates it when this broker
becomes leader (or at the first request of the epoch) and drops it when leadership moves.

- **Followers.** Each follower's :class:`FollowerState` is what its fetches say: the fetch
  offset is its log end offset, and its *last caught-up time* is computed as Kafka computes it:
  a fetch at or past the leader's log end offset of that moment makes the follower caught up
  at the fetch's time; a fetch at or past the leader's log end offset *of the follower's
  previous fetch* makes it caught up at the previous fetch's time. A follower is in sync while
  its log end offset equals the leader's or it was caught up within
  ``replica.lag.time.max.ms``. A new leader knows nothing of its followers' logs (log end
  offset unknown) and counts the ISR members as caught up at the moment it became leader.
- **The high watermark** is the lowest log end offset over the *maximal* ISR -- the committed
  ISR plus a member being added (Kafka's rule: while an expansion is pending, the new member
  already holds the high watermark back; while a shrink is pending, the member leaving still
  does) -- the leader's own included. It never moves back, and it moves only while the
  committed ISR has at least ``min.insync.replicas`` members (KIP-966's strict rule): a leader
  left alone cannot make visible, or acknowledge, what only it holds.
- **ISR changes** are proposals: :attr:`pending_isr` holds one until the metadata store
  confirms it (``cluster/alter_partition.py``); at most one is under way at a time. The
  committed ISR is the newest partition state seen (by ``partition_epoch``), from the image or
  from the store's answer, whichever comes first.
- **acks=all** waiters wait here for the high watermark to pass their batch.

Owned by the broker's event loop; nothing here is thread-safe. Time is the injected clock's
monotonic milliseconds, passed in.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from odradek.cluster.model import PartitionState
from odradek.storage.log import PartitionLog

if TYPE_CHECKING:
    from odradek.broker.timings import RequestTimings

__all__ = ["UNKNOWN_OFFSET", "FollowerState", "LeaderPartition"]

#: A follower's log end offset before its first fetch of the leader's epoch (Kafka's -1).
UNKNOWN_OFFSET = -1


@dataclass(slots=True)
class FollowerState:
    """What the leader knows of one follower, from its fetches. Mutable; owned by its
    :class:`LeaderPartition`."""

    replica_id: int
    #: The follower's broker epoch as its last fetch said it (KIP-903); -1 unknown.
    broker_epoch: int = -1
    log_end_offset: int = UNKNOWN_OFFSET
    log_start_offset: int = UNKNOWN_OFFSET
    last_caught_up_time_ms: int = 0
    #: The leader's log end offset and the time of the follower's previous fetch.
    last_fetch_leader_log_end_offset: int = UNKNOWN_OFFSET
    last_fetch_time_ms: int = 0

    def record_fetch(
        self,
        *,
        fetch_offset: int,
        log_start_offset: int,
        fetch_time_ms: int,
        leader_end_offset: int,
        broker_epoch: int,
    ) -> None:
        """A fetch from ``fetch_offset`` read while the leader's log ended at
        ``leader_end_offset``."""
        if fetch_offset >= leader_end_offset:
            self.last_caught_up_time_ms = max(self.last_caught_up_time_ms, fetch_time_ms)
        elif fetch_offset >= self.last_fetch_leader_log_end_offset >= 0:
            self.last_caught_up_time_ms = max(self.last_caught_up_time_ms,
                                              self.last_fetch_time_ms)
        self.log_end_offset = fetch_offset
        self.log_start_offset = log_start_offset
        self.last_fetch_leader_log_end_offset = leader_end_offset
        self.last_fetch_time_ms = fetch_time_ms
        if broker_epoch >= 0:
            self.broker_epoch = broker_epoch

    def is_caught_up(self, leader_end_offset: int, now_ms: int, max_lag_ms: int) -> bool:
        return (
            self.log_end_offset == leader_end_offset
            or now_ms - self.last_caught_up_time_ms <= max_lag_ms
        )


@dataclass(order=True, slots=True)
class _Waiter:
    required_offset: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)
    #: When the batch was appended (``RequestTimings`` clock), for the replication timings.
    since_ns: int = field(compare=False, default=0)


class LeaderPartition:
    """One replicated partition this broker leads, in one leader epoch (see the module docs).
    Owned by the :class:`~odradek.broker.replica_manager.ReplicaManager`."""

    def __init__(
        self,
        topic: str,
        partition: int,
        node_id: int,
        state: PartitionState,
        log: PartitionLog,
        now_ms: int,
        timings: RequestTimings | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.node_id = node_id
        self.log = log
        self.state = state
        self.leader_epoch = state.leader_epoch
        #: Where this leader's epoch starts: its log end offset when it became leader. A
        #: follower joins the ISR only once it has reached it; ListOffsets answers "latest"
        #: only once the high watermark has (KIP-207).
        self.epoch_start_offset = log.log_end_offset
        #: An ISR proposed to the store and not yet confirmed.
        self.pending_isr: tuple[int, ...] | None = None
        self.followers: dict[int, FollowerState] = {}
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._timings = timings
        #: (end offset, append time) of the waiting batches no follower has fetched yet, in
        #: offset order: the ``replication.fetched`` timing.
        self._unfetched: deque[tuple[int, int]] = deque()
        self._sync_followers(now_ms)

    # -- the partition state ---------------------------------------------------------------------

    @property
    def isr(self) -> tuple[int, ...]:
        """The committed ISR."""
        return self.state.isr

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        """The committed ISR plus the members a pending change adds."""
        pending = self.pending_isr
        if pending is None:
            return self.state.isr
        return self.state.isr + tuple(r for r in pending if r not in self.state.isr)

    def update_state(self, state: PartitionState, now_ms: int) -> bool:
        """Take a newer state of the same leader epoch (the image's, or the store's answer to a
        proposal); True if it was newer. A pending proposal ends with any newer state."""
        if state.partition_epoch <= self.state.partition_epoch:
            return False
        self.state = state
        self.pending_isr = None
        self._sync_followers(now_ms)
        return True

    def _sync_followers(self, now_ms: int) -> None:
        replicas = [r for r in self.state.replicas if r != self.node_id]
        for r in list(self.followers):
            if r not in replicas:
                del self.followers[r]
        for r in replicas:
            if r not in self.followers:
                # Kafka: an ISR member is taken as caught up at the moment it became one here.
                caught_up = now_ms if r in self.state.isr else 0
                self.followers[r] = FollowerState(r, last_caught_up_time_ms=caught_up)

    # -- followers --------------------------------------------------------------------------------

    def record_follower_fetch(
        self,
        replica_id: int,
        *,
        fetch_offset: int,
        log_start_offset: int,
        now_ms: int,
        leader_end_offset: int,
        broker_epoch: int,
    ) -> FollowerState | None:
        """Record a follower's fetch; None for a broker that is not a follower here."""
        follower = self.followers.get(replica_id)
        if follower is None:
            return None
        follower.record_fetch(
            fetch_offset=fetch_offset,
            log_start_offset=log_start_offset,
            fetch_time_ms=now_ms,
            leader_end_offset=leader_end_offset,
            broker_epoch=broker_epoch,
        )
        unfetched = self._unfetched
        if unfetched and unfetched[0][0] <= fetch_offset and self._timings is not None:
            timings = self._timings
            now = timings.now_ns()
            while unfetched and unfetched[0][0] <= fetch_offset:
                timings.replication_fetched.record(now - unfetched.popleft()[1])
        return follower

    def out_of_sync_replicas(self, now_ms: int, max_lag_ms: int) -> tuple[int, ...]:
        """The committed ISR's followers that have not caught up within ``max_lag_ms``."""
        leo = self.log.log_end_offset
        return tuple(
            r
            for r in self.state.isr
            if r != self.node_id
            and (f := self.followers.get(r)) is not None
            and not f.is_caught_up(leo, now_ms, max_lag_ms)
        )

    def may_join_isr(self, replica_id: int) -> bool:
        """Kafka's ISR expansion rule: a follower outside the (maximal) ISR whose log has reached
        both the high watermark and the start of this leader's epoch."""
        if replica_id in self.maximal_isr:
            return False
        follower = self.followers.get(replica_id)
        if follower is None:
            return False
        leo = follower.log_end_offset
        return leo >= self.log.high_watermark and leo >= self.epoch_start_offset

    # -- the high watermark ------------------------------------------------------------------------

    def maybe_advance_high_watermark(self, min_insync_replicas: int) -> bool:
        """Move the high watermark to the lowest log end offset over the maximal ISR, if that is
        higher and the committed ISR is at least ``min_insync_replicas`` strong; True if it
        moved (the caller wakes fetches and completes waiters)."""
        log = self.log
        if len(self.state.isr) < min_insync_replicas:
            return False
        new_hw = log.log_end_offset
        for r in self.maximal_isr:
            if r == self.node_id:
                continue
            follower = self.followers.get(r)
            leo = follower.log_end_offset if follower is not None else UNKNOWN_OFFSET
            if leo < new_hw:
                new_hw = leo
        if new_hw <= log.high_watermark:
            return False
        log.update_high_watermark(new_hw)
        return True

    # -- acks=all ----------------------------------------------------------------------------------

    def wait_for_high_watermark(self, required_offset: int) -> asyncio.Future[None] | None:
        """A future resolved once the high watermark reaches ``required_offset`` (the offset
        after a batch); None when it already has."""
        if self.log.high_watermark >= required_offset:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        since = 0
        if self._timings is not None:
            since = self._timings.now_ns()
            if len(self._unfetched) < 10_000:
                self._unfetched.append((required_offset, since))
        heapq.heappush(self._waiters, _Waiter(required_offset, next(self._seq), fut, since))
        return fut

    @property
    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def complete_waiters(self) -> None:
        """Resolve the waiters the high watermark has passed."""
        hw = self.log.high_watermark
        waiters = self._waiters
        timings = self._timings
        now = timings.now_ns() if timings is not None else 0
        while waiters and waiters[0].required_offset <= hw:
            w = heapq.heappop(waiters)
            if timings is not None:
                timings.replication_committed.record(now - w.since_ns)
            if not w.future.done():
                w.future.set_result(None)

    def fail_waiters(self, exc: BaseException) -> None:
        """Fail every waiter with ``exc`` (the ISR shrank below its minimum; leadership moved)."""
        waiters, self._waiters = self._waiters, []
        self._unfetched.clear()
        for w in waiters:
            if not w.future.done():
                w.future.set_exception(exc)

    def __repr__(self) -> str:
        return (
            f"LeaderPartition({self.topic}-{self.partition}, epoch {self.leader_epoch}, "
            f"isr {list(self.isr)}, pending {self.pending_isr}, "
            f"hw {self.log.high_watermark}, leo {self.log.log_end_offset})"
        )
