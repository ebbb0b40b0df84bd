"""The elected controller's work: keep every partition led by a live broker from its ISR, finish
topics a creator left incomplete, and remove the partition states of deleted topics.

The controller is a reconciler. It holds a decoded copy of everything under the cluster's root
(one range read, then a watch from the revision after it) and, after every batch of changes,
compares that copy with what it should be and writes the difference. Every write is a
:meth:`~odradek.cluster.membership.ControllerElection.fenced_txn` (the controller epoch is
compared, so a deposed controller writes nothing) and a compare-and-swap of each partition key it
changes (its ``mod_revision`` as read), plus the registrations (broker epochs) of the brokers a
new state names as leader or ISR member, so nobody's change in between is overwritten and no
broker that came and went meanwhile is taken for its earlier self. A refused compare re-reads
everything and plans again; because the plan is a pure function of what the store holds, a
write whose answer was lost (``OutcomeUnknown``) is re-read and recognised, never repeated.
A new controller after a failover starts with the same full reconciliation, so it finishes
whatever the old one left half-done.

Rules (Kafka's, with etcd's revisions standing in for broker epochs):

- **Leaders and ISRs** follow :func:`odradek.cluster.election.reassess` (lost brokers leave
  the ISR, never to an empty one; a lost leader is replaced by the first live ISR member in
  replica order, or none unless the topic allows unclean election; a broker in controlled
  shutdown hands its leaderships over and leaves the ISRs; the epochs bump as
  :func:`~odradek.cluster.election.apply_change` says). :meth:`Controller._next_state` is the
  one place the controller computes a partition's next state: other rules (reassignment,
  preferred leaders) go there. ``unclean.leader.election.enable`` is the topic's, else the
  broker setting the controller was given.
- **A reassignment completes** (:func:`~odradek.cluster.reassignment.advance_reassignment`, in
  :meth:`Controller._next_state`) once every target replica is in the ISR: the removed replicas
  leave the replica set and the ISR, and a removed leader is replaced.
- **Preferred leaders are restored** (:mod:`odradek.cluster.preferred`) every
  ``leader.imbalance.check.interval.seconds`` when ``auto.leader.rebalance.enable``.
- **A topic is incomplete** when some partition below its count has no state. Topic records are
  written before their partitions (:mod:`odradek.cluster.model`), so a creator may be half-way;
  the controller completes a topic only once it has stayed incomplete and unchanged for
  ``incomplete_topic_grace_s`` (a creator that crashed), placing the missing partitions with
  ``placement`` over the live brokers (rack-aware as :mod:`odradek.cluster.topic_admin` places
  when any broker has a rack, else round robin), at the replication factor of the topic's other
  partitions.
- **A partition state is orphaned** when its topic has no record (a deleter stopped half-way)
  or its number is not below the record's count (left by a deleted namesake with more
  partitions). Orphans are deleted. Which incarnation of a name a state belongs to is not
  recorded: a topic created again must clear its namesake's states itself.

Writes go in transactions of at most :data:`MAX_TXN_OPS` operations and as many compares (etcd
refuses more than ``--max-txn-ops``, 128 by default); a change spread over several transactions
is still safe to interrupt, since each transaction leaves valid states and the next controller
plans from what it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from odradek.clock import Clock, SystemClock
from odradek.cluster.election import Brokers, reassess
from odradek.cluster.lease_reaper import LeaseReaper
from odradek.cluster.membership import (
    BrokerInfo,
    ClusterKeys,
    ControllerElection,
    NotController,
    Session,
)
from odradek.cluster.model import PartitionState, TopicRecord
from odradek.cluster.preferred import PreferredLeaderBalancer, RebalanceSettings
from odradek.cluster.reassignment import advance_reassignment
from odradek.cluster.store import (
    ClusterStore,
    ClusterStoreError,
    Compare,
    Delete,
    EventType,
    KeyValue,
    LeaseNotFound,
    OutcomeUnknown,
    Put,
    RevisionCompacted,
    StoreUnavailable,
    TxnOp,
    WatchEvent,
    absent,
    create_revision_is,
    mod_revision_is,
)
from odradek.cluster.topic_admin import assign_replicas, rack_alternating
from odradek.tasks import cancel_and_wait

__all__ = [
    "MAX_TXN_OPS",
    "UNCLEAN_LEADER_ELECTION",
    "Placement",
    "round_robin_placement",
    "reassess_partition",
    "ControllerStats",
    "Controller",
    "ControllerRunner",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
Sleep = Callable[[float], Awaitable[None]]

#: The most operations (and compares) one controller transaction carries; etcd's default
#: ``--max-txn-ops`` is 128, and the fencing compare comes on top.
MAX_TXN_OPS = 100

#: The topic config that allows a replica outside the ISR to be elected (Kafka's name).
UNCLEAN_LEADER_ELECTION = "unclean.leader.election.enable"

#: Places new partitions: (partition numbers, live broker ids in order, replication factor) →
#: the replicas of each partition, preferred leader first.
Placement = Callable[[Sequence[int], Sequence[int], int], Mapping[int, tuple[int, ...]]]

_BACKOFF_S = 0.1
_BACKOFF_MAX_S = 2.0
_RESIGN_TIMEOUT_S = 2.0
_MAX_PLANS = 10


def round_robin_placement(
    partitions: Sequence[int], brokers: Sequence[int], replication_factor: int
) -> dict[int, tuple[int, ...]]:
    """Partition ``p``'s replicas are ``replication_factor`` consecutive brokers starting at
    ``brokers[p % len(brokers)]``, so leaders (the first replica) go round the brokers."""
    n = len(brokers)
    return {p: tuple(brokers[(p + i) % n] for i in range(replication_factor)) for p in partitions}


def reassess_partition(
    state: PartitionState,
    written_at: int,
    live: Mapping[int, int],
    *,
    unclean: bool = False,
    shutting_down: frozenset[int] = frozenset(),
) -> PartitionState | None:
    """The state a partition should have, given the live brokers (node id → broker epoch), or
    None when it should stay as it is (:func:`odradek.cluster.election.reassess`)."""
    return reassess(state, written_at, Brokers(live, shutting_down), unclean=unclean)


@dataclass(slots=True)
class ControllerStats:
    """Counters of one controller's work (owned by its task; read by tests and status)."""

    resyncs: int = 0
    transactions: int = 0
    conflicts: int = 0
    recognised: int = 0  # writes whose answer was lost, found done on re-reading
    settled: int = 0  # plans that found nothing (left) to write


# --- the controller's copy of the store -------------------------------------------------------


@dataclass(slots=True)
class _Topic:
    kv: KeyValue
    record: TopicRecord | None  # None: the value could not be decoded; its partitions are left be


@dataclass(slots=True)
class _Partition:
    kv: KeyValue
    state: PartitionState | None  # None: could not be decoded


@dataclass(slots=True)
class _Image:
    """Everything the controller reads, decoded, as of the events applied so far. Owned by the
    controller's task; rebuilt from a range read whenever the controller reads everything."""

    keys: ClusterKeys
    epoch: int  # the controller epoch this image is kept for
    brokers: dict[int, int] = field(default_factory=dict)  # node id → broker epoch
    leases: dict[int, int] = field(default_factory=dict)  # node id → its session's lease
    shutting_down: set[int] = field(default_factory=set)  # in controlled shutdown
    racks: dict[int, str] = field(default_factory=dict)  # of the brokers that have one
    topics: dict[str, _Topic] = field(default_factory=dict)
    partitions: dict[str, dict[int, _Partition]] = field(default_factory=dict)
    # The topics changed since the last plan (by record or partition); None: every topic (a
    # broker came or went, or everything was read).
    dirty: set[str] | None = None

    def load(self, kvs: Sequence[KeyValue]) -> None:
        controller = next((kv for kv in kvs if kv.key == self.keys.controller), None)
        if controller is None or controller.create_revision != self.epoch:
            raise NotController(f"controller epoch {self.epoch} has ended")
        for kv in kvs:
            self.put(kv)

    def apply(self, event: WatchEvent) -> None:
        key = event.kv.key
        if key == self.keys.controller:
            if event.type is EventType.DELETE or event.kv.create_revision != self.epoch:
                raise NotController(f"controller epoch {self.epoch} has ended")
        elif event.type is EventType.PUT:
            self.put(event.kv)
        else:
            self.delete(key, event.revision)

    def put(self, kv: KeyValue) -> None:
        where = self._locate(kv.key)
        if where is None:
            return
        kind, name, number = where
        self._touch(kind, name)
        if kind == "broker":
            self.brokers[number] = kv.create_revision
            self.leases[number] = kv.lease
            info = _decode(BrokerInfo.decode, kv)
            if info is not None and info.shutting_down:
                self.shutting_down.add(number)
            else:
                self.shutting_down.discard(number)
            if info is not None and info.rack:
                self.racks[number] = info.rack
            else:
                self.racks.pop(number, None)
        elif kind == "topic":
            current = self.topics.get(name)
            if current is None or current.kv.mod_revision <= kv.mod_revision:
                self.topics[name] = _Topic(kv, _decode(TopicRecord.decode, kv))
        else:
            parts = self.partitions.setdefault(name, {})
            existing = parts.get(number)
            if existing is None or existing.kv.mod_revision <= kv.mod_revision:
                parts[number] = _Partition(kv, _decode(PartitionState.decode, kv))

    def delete(self, key: str, revision: int) -> None:
        where = self._locate(key)
        if where is None:
            return
        kind, name, number = where
        self._touch(kind, name)
        if kind == "broker":
            log.info("controller epoch %d: broker %d's registration ended (revision %d)",
                     self.epoch, number, revision)
            self.brokers.pop(number, None)
            self.leases.pop(number, None)
            self.shutting_down.discard(number)
            self.racks.pop(number, None)
        elif kind == "topic":
            topic = self.topics.get(name)
            if topic is not None and topic.kv.mod_revision < revision:
                del self.topics[name]
        else:
            parts = self.partitions.get(name, {})
            partition = parts.get(number)
            if partition is not None and partition.kv.mod_revision < revision:
                del parts[number]
                if not parts:
                    del self.partitions[name]

    def rack_aware_placement(
        self, partitions: Sequence[int], brokers: Sequence[int], replication_factor: int
    ) -> dict[int, tuple[int, ...]]:
        """Kafka's placement over ``brokers`` with their registered racks (replicas on distinct
        racks while any is unused), from a fixed start so that a plan stays a pure function of
        the store; round robin when no broker has a rack."""
        if not any(b in self.racks for b in brokers):
            return round_robin_placement(partitions, brokers, replication_factor)
        ordered = rack_alternating([BrokerInfo(b, "", 0, self.racks.get(b)) for b in brokers])
        return {
            p: assign_replicas(
                ordered, 1, replication_factor, start=0, shift=0, first_partition=p
            )[0]
            for p in partitions
        }

    def _touch(self, kind: str, name: str) -> None:
        if kind == "broker":
            self.dirty = None
        elif self.dirty is not None:
            self.dirty.add(name)

    def _locate(self, key: str) -> tuple[str, str, int] | None:
        try:
            if key.startswith(self.keys.brokers):
                return "broker", "", int(key[len(self.keys.brokers) :])
            if key.startswith(self.keys.topics):
                return "topic", key[len(self.keys.topics) :], 0
            if key.startswith(self.keys.partitions):
                name, _, number = key[len(self.keys.partitions) :].rpartition("/")
                if name:
                    return "partition", name, int(number)
        except ValueError:
            pass
        return None


def _decode(decode: Callable[[bytes], _T], kv: KeyValue) -> _T | None:
    try:
        return decode(kv.value)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.error("cannot decode %s (%s); the controller leaves it alone", kv.key, e)
        return None


# --- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Write:
    """One key's change: a put (``value``) or a delete (None), compared against the key's
    ``mod_revision`` as read (0: the key must be absent), resting on ``guards`` as well."""

    key: str
    mod_revision: int
    value: bytes | None
    guards: tuple[Compare, ...] = ()
    create_revision: int = 0  # as read, so the controller's copy can be updated after the write

    def compare(self) -> Compare:
        return (
            mod_revision_is(self.key, self.mod_revision) if self.mod_revision else absent(self.key)
        )

    def op(self) -> TxnOp:
        return Put(self.key, self.value) if self.value is not None else Delete(self.key)


def _chunks(writes: Sequence[_Write], limit: int = MAX_TXN_OPS) -> Iterator[list[_Write]]:
    """The writes in groups whose operations and (distinct) compares both stay within
    ``limit``."""
    chunk: list[_Write] = []
    compares: set[Compare] = set()
    for write in writes:
        new = {g for g in write.guards if g not in compares}
        if chunk and (len(chunk) + 1 > limit or len(chunk) + len(compares) + 1 + len(new) > limit):
            yield chunk
            chunk, compares = [], set()
            new = set(write.guards)
        chunk.append(write)
        compares |= new
    if chunk:
        yield chunk


# --- the controller ---------------------------------------------------------------------------


class Controller:
    """The work of the controller of one epoch (``election`` has won its campaign).

    Owned by the event loop of the broker that was elected; :meth:`run` returns once the
    controller is deposed (its epoch ended) or the store closes, and may be cancelled. It keeps
    nothing that outlives it: a new controller rebuilds everything from the store.
    ``clock`` and ``sleep`` drive the incomplete-topic grace and the backoff after the store
    fails (tests pass a manual clock and a sleep driven by it).
    """

    def __init__(
        self,
        store: ClusterStore,
        keys: ClusterKeys,
        election: ControllerElection,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        placement: Placement | None = None,
        incomplete_topic_grace_s: float = 5.0,
        unclean_leader_election: bool = False,
        rebalance: RebalanceSettings | None = None,
    ) -> None:
        """``placement``: how the controller places partitions it completes (None: rack-aware
        placement over the brokers' registered racks). ``unclean_leader_election``: the broker's ``unclean.leader.election.enable``, for
        topics that do not set it."""
        if not election.epoch:
            raise ValueError("the election has not been won")
        self._store = store
        self._keys = keys
        self._election = election
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._placement = placement
        self._grace_ms = int(incomplete_topic_grace_s * 1000)
        self._unclean_default = unclean_leader_election
        self._balancer = PreferredLeaderBalancer(rebalance or RebalanceSettings(), self._clock)
        self.epoch = election.epoch
        self.stats = ControllerStats()
        self._image = _Image(keys, self.epoch)
        # An incomplete topic → (the last revision that touched it, when that was first seen).
        self._incomplete: dict[str, tuple[int, int]] = {}
        # A topic with partition states past its count → the same, for their removal.
        self._beyond: dict[str, tuple[int, int]] = {}
        self._deadline_ms: int | None = None
        self._conflicts_in_row = 0
        #: Set when :meth:`run` ended because the store closed (not because it was deposed).
        self.store_closed = False
        # On the controller's clock, which must be real time (a session's) with a real store.
        self._reaper = LeaseReaper(
            store, lambda: {n: lease for n, lease in self._image.leases.items() if lease},
            self._clock, self._sleep,
        )

    async def run(self) -> None:
        """Reconcile until deposed or the store closes. Raises only CancelledError or a bug."""
        log.info("controller epoch %d: taking over", self.epoch)
        backoff = _BACKOFF_S
        # Ends dead brokers' leases as soon as they have certainly run out, not at etcd's
        # next sweep (up to 500 ms later): their partitions get new leaders that much sooner.
        reaper = asyncio.get_running_loop().create_task(
            self._reaper.run(), name=f"controller {self.epoch} lease reaper"
        )
        try:
            while True:
                try:
                    await self._follow()
                    # A conflict: read again at once, unless the last read also ended in one
                    # before anything was done (someone rewriting the same keys in a loop).
                    if self._conflicts_in_row > 1:
                        await self._sleep(backoff)
                        backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    else:
                        backoff = _BACKOFF_S
                except RevisionCompacted:
                    log.info("controller epoch %d: watch compacted; reading again", self.epoch)
                except StoreUnavailable as e:
                    log.warning("controller epoch %d: store unavailable (%s)", self.epoch, e)
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
        except NotController:
            log.info("controller epoch %d: deposed", self.epoch)
        except _StoreClosed:
            log.info("controller epoch %d: the store closed", self.epoch)
            self.store_closed = True
        finally:
            # Not 'with suppress(CancelledError): await reaper', which also swallowed a
            # cancellation of this controller arriving meanwhile (odradek.tasks).
            await cancel_and_wait(reaper)

    async def _follow(self) -> None:
        """One full read, then changes from the watch, until a write conflicts (return: read
        everything again) or the store fails (raise)."""
        revision = await self._resync()
        queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        watch = self._store.watch(self._keys.root, prefix=True, start_revision=revision + 1)
        pump = asyncio.get_running_loop().create_task(
            _pump(watch, queue), name=f"controller {self.epoch} watch"
        )
        try:
            while await self._reconcile():
                await self._wait_for_changes(queue)
        finally:
            # A cancellation of the controller arriving while the pump ends must end it (a
            # stopping broker waits for it): not swallowed with the pump's (odradek.tasks).
            await cancel_and_wait(pump)
            await watch.aclose()

    async def _resync(self) -> int:
        result = await self._store.range(self._keys.root, prefix=True)
        self.stats.resyncs += 1
        image = _Image(self._keys, self.epoch)
        image.load(result.kvs)
        self._image = image
        return result.revision

    async def _wait_for_changes(self, queue: asyncio.Queue[WatchEvent | BaseException]) -> None:
        """Apply the next batch of changes, or return when the next grace period ends."""
        if self._deadline_ms is None:
            items = [await queue.get()]
        else:
            delay_s = max(0, self._deadline_ms - self._clock.monotonic_ms()) / 1000
            getter = asyncio.ensure_future(queue.get())
            timer = asyncio.ensure_future(self._sleep(delay_s))
            try:
                await asyncio.wait([getter, timer], return_when=asyncio.FIRST_COMPLETED)
            finally:
                timer.cancel()
                if not getter.done():
                    getter.cancel()  # a cancelled get takes nothing from the queue
            if not getter.done():
                return
            items = [getter.result()]
        while not queue.empty():
            items.append(queue.get_nowait())
        for item in items:
            if isinstance(item, BaseException):
                raise item
            self._image.apply(item)

    async def _reconcile(self) -> bool:
        """Plan and write until nothing is left to do; False when a write found the store
        changed (re-read everything)."""
        for _ in range(_MAX_PLANS):
            writes = self._plan()
            if not writes:
                self._conflicts_in_row = 0
                self.stats.settled += 1
                return True
            for chunk in _chunks(writes):
                if not await self._commit(chunk):
                    self._conflicts_in_row += 1
                    return False
        # A plan should be done in one or two rounds (an orphan deleted, then its number
        # completed); more is a bug: wait for the next change rather than spin.
        log.error(
            "controller epoch %d: still planning writes after %d rounds", self.epoch, _MAX_PLANS
        )
        return True

    async def _commit(self, chunk: list[_Write]) -> bool:
        compares: dict[Compare, None] = {}
        for write in chunk:
            compares[write.compare()] = None
            compares.update(dict.fromkeys(write.guards))
        self.stats.transactions += 1
        try:
            result = await self._election.fenced_txn(list(compares), [w.op() for w in chunk])
        except OutcomeUnknown as e:
            log.warning("controller epoch %d: a write's answer was lost (%s)", self.epoch, e)
            await self._recognise(chunk)
            return False
        if not result.succeeded:
            self.stats.conflicts += 1
            log.debug("controller epoch %d: the store changed under a write", self.epoch)
            return False
        for write in chunk:
            if write.value is None:
                self._image.delete(write.key, result.revision)
            else:
                created = write.create_revision or result.revision
                # The version is not tracked: nothing the controller decides depends on it.
                kv = KeyValue(write.key, write.value, created, result.revision, 0)
                self._image.put(kv)
        return True

    async def _recognise(self, chunk: list[_Write]) -> None:
        """After a lost answer: read the chunk's keys back and count it as done when every key
        holds what was written, at one revision past what was read. Either way the caller plans
        again from a fresh read, which does not repeat a write that happened."""
        revisions = set()
        for write in chunk:
            kv = await self._store.get(write.key)
            if write.value is None:
                if kv is not None:
                    return
            elif kv is None or kv.value != write.value or kv.mod_revision <= write.mod_revision:
                return
            else:
                revisions.add(kv.mod_revision)
        if len(revisions) <= 1:  # one transaction wrote them all
            self.stats.recognised += 1
            log.info("controller epoch %d: the lost write had happened", self.epoch)

    def _plan(self) -> list[_Write]:
        """Every write that would bring the store to what it should be: for every topic when a
        broker came or went (or after a full read), else for the topics whose record or
        partitions changed and those waiting out their grace."""
        image = self._image
        if image.dirty is None:
            names = image.topics.keys() | image.partitions.keys()
        else:
            names = image.dirty | self._incomplete.keys() | self._beyond.keys()
        image.dirty = set()
        self._deadline_ms = None
        writes: list[_Write] = []
        for name in sorted(names):
            writes.extend(self._plan_topic(name))
        writes.extend(self._plan_rebalance({w.key for w in writes}))
        return writes

    def _plan_rebalance(self, planned: set[str]) -> list[_Write]:
        """Preferred-leader elections, when the balancer's check is due (its next check then
        becomes a deadline of the wait for changes). Partitions with a write already planned in
        this pass are left to the next check; brokers in controlled shutdown are not elected."""
        image, keys = self._image, self._keys
        due = self._balancer.next_check_ms
        if due is not None:
            self._deadline_ms = due if self._deadline_ms is None else min(self._deadline_ms, due)
        if not self._balancer.due():
            return []  # not every pass: a pass costs what changed, a check every partition
        partitions: dict[str, _Partition] = {}
        for name, parts in image.partitions.items():
            topic = image.topics.get(name)
            if topic is None or topic.record is None:
                continue
            for number, partition in parts.items():
                if partition.state is not None and _belongs(topic, number, partition):
                    partitions[partition.kv.key] = partition
        live = {b: e for b, e in image.brokers.items() if b not in image.shutting_down}
        elections = self._balancer.maybe_elect(
            (
                (key, p.state, p.kv.mod_revision)
                for key, p in partitions.items()
                if p.state is not None and key not in planned
            ),
            live,
        )
        due = self._balancer.next_check_ms  # moved on by the check
        if due is not None:
            self._deadline_ms = due if self._deadline_ms is None else min(self._deadline_ms, due)
        writes = []
        for key, new in elections:
            kv = partitions[key].kv
            named = sorted({*new.isr, new.leader} & live.keys())
            guards = tuple(create_revision_is(keys.broker(b), live[b]) for b in named)
            writes.append(_Write(key, kv.mod_revision, new.encode(), guards, kv.create_revision))
        if writes:
            log.info(
                "controller epoch %d: electing %d preferred leaders", self.epoch, len(writes)
            )
        return writes

    def _settled(self, seen: dict[str, tuple[int, int]], name: str, touched: int) -> bool:
        """Whether topic ``name`` has stayed unchanged since revision ``touched`` for the grace
        period (tracked in ``seen``); if not, the controller wakes again when it would be."""
        now = self._clock.monotonic_ms()
        first = seen.get(name)
        if first is None or first[0] != touched:
            first = seen[name] = (touched, now)
        due = first[1] + self._grace_ms
        if now < due:
            self._deadline_ms = due if self._deadline_ms is None else min(self._deadline_ms, due)
            return False
        return True

    def _next_state(
        self, record: TopicRecord, state: PartitionState, kv: KeyValue, brokers: Brokers
    ) -> PartitionState | None:
        """The one place the controller decides a partition's next state (None: leave it);
        ``kv`` is its key as read (``mod_revision``: when the state was written)."""
        unclean = _flag(record.configs.get(UNCLEAN_LEADER_ELECTION), self._unclean_default)
        new = reassess(state, kv.mod_revision, brokers, unclean=unclean)
        can_lead = [b for b in brokers.epochs if brokers.can_lead(b)]
        return advance_reassignment(new or state, can_lead, stored=state) or new

    def _plan_topic(self, name: str) -> list[_Write]:
        image, keys, live = self._image, self._keys, self._image.brokers
        topic = image.topics.get(name)
        parts = image.partitions.get(name, {})
        writes: list[_Write] = []
        if topic is not None and topic.record is None:
            return writes  # an undecodable record: do not guess

        def registrations(state: PartitionState) -> tuple[Compare, ...]:
            named = sorted({*state.isr, state.leader} & live.keys())
            return tuple(create_revision_is(keys.broker(b), live[b]) for b in named)

        registered = Brokers(live, frozenset(image.shutting_down))
        beyond: list[_Write] = []
        for number, partition in sorted(parts.items()):
            kv = partition.kv
            if topic is None:
                writes.append(_Write(kv.key, kv.mod_revision, None))
                continue
            if not _belongs(topic, number, partition):
                # Past the count: a namesake's leftover, or the first batches of a
                # CreatePartitions whose record (written last) is on its way. Removed only once
                # it has stayed so for the grace period, like an incomplete topic.
                beyond.append(_Write(kv.key, kv.mod_revision, None))
                continue
            if partition.state is None or topic.record is None:
                continue
            new = self._next_state(topic.record, partition.state, kv, registered)
            if new is not None:
                writes.append(
                    _Write(
                        kv.key,
                        kv.mod_revision,
                        new.encode(),
                        registrations(new),
                        kv.create_revision,
                    )
                )

        if topic is not None and beyond:
            touched = max([topic.kv.mod_revision, *(p.kv.mod_revision for p in parts.values())])
            if self._settled(self._beyond, name, touched):
                writes.extend(beyond)
        else:
            self._beyond.pop(name, None)
        missing = [] if topic is None else [p for p in range(_count(topic)) if p not in parts]
        if topic is None or not missing:
            self._incomplete.pop(name, None)
            return writes
        touched = max([topic.kv.mod_revision, *(p.kv.mod_revision for p in parts.values())])
        if not self._settled(self._incomplete, name, touched):
            return writes
        factor = max(
            (len(q.state.replicas) for p, q in parts.items() if q.state and _belongs(topic, p, q)),
            default=1,
        )
        factor = max(factor, 1)  # a replica-less state (written by hand) says nothing
        brokers = sorted(b for b in live if b not in image.shutting_down)
        if len(brokers) < factor:
            return writes  # wait for brokers: a broker's arrival wakes the controller
        guard = mod_revision_is(keys.topic(name), topic.kv.mod_revision)
        placement = self._placement or self._image.rack_aware_placement
        for p, replicas in sorted(placement(missing, brokers, factor).items()):
            state = PartitionState(replicas, replicas, replicas[0])
            guards = (guard, *registrations(state))
            writes.append(_Write(keys.partition(name, p), 0, state.encode(), guards))
        log.info(
            "controller epoch %d: completing topic %s (%d partitions missing)",
            self.epoch,
            name,
            len(missing),
        )
        return writes


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None else value.strip().lower() == "true"


def _count(topic: _Topic) -> int:
    return topic.record.partition_count if topic.record is not None else 0


def _belongs(topic: _Topic, number: int, partition: _Partition) -> bool:
    """Whether a partition state is the topic's own: numbered below its count. (Not compared:
    revisions, which a store that reloads its keys from disk may not keep in order.)"""
    return 0 <= number < _count(topic)


class _StoreClosed(Exception):
    pass


async def _pump(
    watch: AsyncGenerator[WatchEvent, None], queue: asyncio.Queue[WatchEvent | BaseException]
) -> None:
    """Moves a watch's events to a queue, so the controller can take each batch whole and wait
    for events and timers together; a failure of the watch is queued for the controller."""
    try:
        async for event in watch:
            queue.put_nowait(event)
        queue.put_nowait(_StoreClosed())
    except ClusterStoreError as e:
        queue.put_nowait(e)


# --- candidacy --------------------------------------------------------------------------------


class ControllerRunner:
    """A broker's candidacy for controller: campaign, and when elected run a :class:`Controller`
    until deposed; then campaign again, for as long as its session lasts.

    Owned by the broker's event loop. The broker calls :meth:`run` once per session (after it
    has registered under it): it returns when the session is lost (the broker then opens a new
    session, registers again and calls :meth:`run` with it); cancelling it resigns the
    controllership, if held, before it ends (a clean shutdown).
    """

    def __init__(
        self,
        store: ClusterStore,
        keys: ClusterKeys,
        node_id: int,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        placement: Placement | None = None,
        incomplete_topic_grace_s: float = 5.0,
        unclean_leader_election: bool = False,
        rebalance: RebalanceSettings | None = None,
    ) -> None:
        self._rebalance = rebalance
        self._store = store
        self._keys = keys
        self.node_id = node_id
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._placement = placement
        self._grace_s = incomplete_topic_grace_s
        self._unclean = unclean_leader_election
        #: The controller while this broker is controller, else None.
        self.controller: Controller | None = None

    @property
    def is_controller(self) -> bool:
        return self.controller is not None

    async def run(self, session: Session) -> None:
        """Campaign and control until ``session`` is lost or the store closes."""
        election = ControllerElection(self._store, self._keys, session, self.node_id)
        candidacy = asyncio.ensure_future(self._serve(election, session))
        lost = asyncio.ensure_future(session.lost.wait())
        try:
            await asyncio.wait([candidacy, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            try:
                # Cancelled meanwhile, this run ends cancelled (odradek.tasks), resigning first.
                await cancel_and_wait(candidacy)
            finally:
                self.controller = None
                if election.epoch and not session.lost.is_set():
                    with contextlib.suppress(ClusterStoreError, TimeoutError):
                        async with asyncio.timeout(_RESIGN_TIMEOUT_S):
                            await election.resign()
                            log.info("node %d resigned as controller", self.node_id)

    async def _serve(self, election: ControllerElection, session: Session) -> None:
        backoff = _BACKOFF_S
        while True:
            try:
                epoch = await election.campaign()
                log.info("node %d is controller (epoch %d)", self.node_id, epoch)
                self.controller = Controller(
                    self._store,
                    self._keys,
                    election,
                    clock=self._clock,
                    sleep=self._sleep,
                    placement=self._placement,
                    incomplete_topic_grace_s=self._grace_s,
                    unclean_leader_election=self._unclean,
                    rebalance=self._rebalance,
                )
                await self.controller.run()
                if self.controller.store_closed:
                    return
                backoff = _BACKOFF_S
            except LeaseNotFound:
                await session.lost.wait()  # the session will notice too; the runner then ends
            except StoreUnavailable as e:
                log.warning("node %d: controller election: store unavailable (%s)", self.node_id, e)
                await self._sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            except Exception:
                log.exception("node %d: the controller failed; campaigning again", self.node_id)
                await self._sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            finally:
                self.controller = None
            election.epoch = 0
