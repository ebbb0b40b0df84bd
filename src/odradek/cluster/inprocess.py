"""The single node's metadata store: :class:`ClusterStore` in memory, with etcd's semantics.

Nothing is persisted here; :class:`odradek.cluster.durable.DurableInProcessStore` adds a journal
for the single node, whose topics must survive a restart.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from odradek.clock import Clock, SystemClock
from odradek.cluster.store import (
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    DeleteResult,
    EventType,
    FutureRevision,
    Get,
    KeyValue,
    Lease,
    LeaseNotFound,
    LeaseTimeToLive,
    Put,
    PutResult,
    RangeResult,
    RevisionCompacted,
    TxnOp,
    TxnResult,
    WatchEvent,
)

__all__ = ["InProcessStore"]


@dataclass(slots=True)
class _LeaseState:
    ttl: int
    deadline_ms: int
    keys: set[str] = field(default_factory=set)


class InProcessStore:
    """A :class:`~odradek.cluster.store.ClusterStore` held in memory.

    Owned by the event loop that uses it; no method awaits between reading and writing its
    state, so each operation (a transaction included) is atomic. Lease deadlines are read from
    the injected clock's monotonic reading: a lease past its deadline is ended before any
    operation runs, by :meth:`maybe_expire_leases`, and, when ``expiry_interval_s`` is set, by a
    background task every that many seconds (use it with the system clock; with a
    :class:`~odradek.clock.ManualClock`, advance the clock and call :meth:`maybe_expire_leases`).
    History is kept until :meth:`compact`.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        expiry_interval_s: float | None = None,
        sweep_delay_ms: int = 0,
    ):
        self._clock: Clock = clock or SystemClock()
        # How long after its deadline a lease's keys go (it cannot be renewed meanwhile): 0,
        # or etcd's lag, up to its 500 ms sweep, for the tests of what may act before it.
        self._sweep_delay_ms = sweep_delay_ms
        self._revision = 1
        self._compacted = 0  # reads and watches below this revision fail
        # Every version of every key since the compaction point, oldest first; a deletion is a
        # tombstone (version 0) whose mod_revision is the deleting revision.
        self._history: dict[str, list[KeyValue]] = {}
        self._sorted_keys: list[str] = []  # the keys of _history, in order (prefix reads)
        self._events: list[WatchEvent] = []
        self._leases: dict[int, _LeaseState] = {}
        self._next_lease = 0x1000
        self._changed = asyncio.Event()
        self._closed = False
        self._ticker: asyncio.Task[None] | None = None
        if expiry_interval_s is not None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(expiry_interval_s), name="in-process store lease expiry"
            )

    # --- reads --------------------------------------------------------------------------------

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        result = await self.range(key, revision=revision)
        return result.kvs[0] if result.kvs else None

    async def range(
        self, key: str, *, prefix: bool = False, revision: int = 0, limit: int = 0
    ) -> RangeResult:
        self.maybe_expire_leases()
        kvs = self._read(key, prefix, revision)
        return RangeResult(tuple(kvs[:limit] if limit else kvs), self._revision)

    def _read(self, key: str, prefix: bool, revision: int) -> list[KeyValue]:
        at = revision or self._revision
        if at > self._revision:
            raise FutureRevision(f"revision {at} is after the current revision {self._revision}")
        if at < self._compacted:
            raise RevisionCompacted(self._compacted)
        if prefix:
            start = bisect.bisect_left(self._sorted_keys, key)
            keys = []
            for k in self._sorted_keys[start:]:
                if not k.startswith(key):
                    break
                keys.append(k)
        else:
            keys = [key]
        found = []
        for k in keys:
            kv = self._version_at(k, at)
            if kv is not None and kv.version:
                found.append(kv)
        return found

    def _version_at(self, key: str, revision: int) -> KeyValue | None:
        for kv in reversed(self._history.get(key, ())):
            if kv.mod_revision <= revision:
                return kv
        return None

    # --- writes -------------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult:
        self.maybe_expire_leases()
        self._check_lease(lease)
        self._revision += 1
        self._put(key, value, lease)
        self._publish()
        return PutResult(self._revision)

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        self.maybe_expire_leases()
        doomed = self._read(key, prefix, 0)
        if doomed:
            self._revision += 1
            for kv in doomed:
                self._delete(kv.key)
            self._publish()
        return DeleteResult(self._revision, len(doomed))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        self.maybe_expire_leases()
        succeeded = all(self._compare(c) for c in compare)
        ops = success if succeeded else failure
        for op in ops:
            if isinstance(op, Put):
                self._check_lease(op.lease)
        writes = any(isinstance(op, Put) for op in ops) or any(
            isinstance(op, Delete) and self._read(op.key, op.prefix, 0) for op in ops
        )
        # etcd gives every write of a transaction the one new revision, and reads inside it see
        # the writes made before them.
        if writes:
            self._revision += 1
        responses: list[RangeResult | PutResult | DeleteResult] = []
        for op in ops:
            if isinstance(op, Get):
                responses.append(
                    RangeResult(tuple(self._read(op.key, op.prefix, 0)), self._revision)
                )
            elif isinstance(op, Put):
                self._put(op.key, op.value, op.lease)
                responses.append(PutResult(self._revision))
            else:
                doomed = self._read(op.key, op.prefix, 0)
                for kv in doomed:
                    self._delete(kv.key)
                responses.append(DeleteResult(self._revision, len(doomed)))
        if writes:
            self._publish()
        return TxnResult(succeeded, self._revision, tuple(responses))

    def _compare(self, c: Compare) -> bool:
        kvs = self._read(c.key, False, 0)
        if not kvs:
            if c.target is CompareTarget.VALUE:
                return False  # as etcd: a value compare on an absent key is false
            kv = KeyValue(c.key, b"", 0, 0, 0, 0)
        else:
            kv = kvs[0]
        actual: bytes | int
        if c.target is CompareTarget.VALUE:
            actual = kv.value
        elif c.target is CompareTarget.VERSION:
            actual = kv.version
        elif c.target is CompareTarget.CREATE:
            actual = kv.create_revision
        elif c.target is CompareTarget.MOD:
            actual = kv.mod_revision
        else:
            actual = kv.lease
        operand = c.operand
        if c.op is CompareOp.EQUAL:
            return actual == operand
        if c.op is CompareOp.NOT_EQUAL:
            return actual != operand
        if type(actual) is not type(operand):
            raise TypeError(f"cannot order {c.target.value} against {operand!r}")
        if c.op is CompareOp.GREATER:
            return actual > operand  # type: ignore[operator]
        return actual < operand  # type: ignore[operator]

    def _check_lease(self, lease: int) -> None:
        if lease and lease not in self._leases:
            raise LeaseNotFound(lease)

    def _put(self, key: str, value: bytes, lease: int) -> None:
        versions = self._history.get(key)
        if versions is None:
            versions = self._history[key] = []
            bisect.insort(self._sorted_keys, key)
        previous = versions[-1] if versions and versions[-1].version else None
        if previous is not None and previous.lease and previous.lease != lease:
            self._leases[previous.lease].keys.discard(key)
        if lease:
            self._leases[lease].keys.add(key)
        kv = KeyValue(
            key,
            value,
            previous.create_revision if previous else self._revision,
            self._revision,
            previous.version + 1 if previous else 1,
            lease,
        )
        versions.append(kv)
        self._events.append(WatchEvent(EventType.PUT, kv))

    def _delete(self, key: str) -> None:
        versions = self._history[key]
        if versions[-1].lease and versions[-1].lease in self._leases:
            self._leases[versions[-1].lease].keys.discard(key)
        tombstone = KeyValue(key, b"", 0, self._revision, 0, 0)
        versions.append(tombstone)
        self._events.append(WatchEvent(EventType.DELETE, tombstone))

    def _publish(self) -> None:
        self._committed(self._revision)
        # Wake every watcher; each re-reads the event log from its own position.
        self._changed.set()
        self._changed = asyncio.Event()

    def _committed(self, revision: int) -> None:
        """Called once per new revision, after its changes are applied and before anyone learns
        of them (watchers, the caller): where a durable store persists them."""

    def _events_of(self, revision: int) -> list[WatchEvent]:
        start = bisect.bisect_left(self._events, revision, key=_rev)
        return self._events[start:]

    # --- leases -------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        self.maybe_expire_leases()
        ttl = max(1, ttl)
        self._next_lease += 1
        self._leases[self._next_lease] = _LeaseState(ttl, self._clock.monotonic_ms() + ttl * 1000)
        return Lease(self._next_lease, ttl)

    async def keep_alive(self, lease_id: int) -> int:
        self.maybe_expire_leases()
        state = self._leases.get(lease_id)
        if state is None or state.deadline_ms <= self._clock.monotonic_ms():
            raise LeaseNotFound(lease_id)  # etcd, too, renews no lease past its deadline
        state.deadline_ms = self._clock.monotonic_ms() + state.ttl * 1000
        return state.ttl

    async def time_to_live(self, lease_id: int) -> LeaseTimeToLive:
        self.maybe_expire_leases()
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseNotFound(lease_id)
        left_ms = max(0, state.deadline_ms - self._clock.monotonic_ms())
        return LeaseTimeToLive(left_ms // 1000, state.ttl, 0)

    async def revoke(self, lease_id: int) -> None:
        self.maybe_expire_leases()
        if lease_id not in self._leases:
            raise LeaseNotFound(lease_id)
        self._end_lease(lease_id)

    def maybe_expire_leases(self) -> None:
        """End every lease whose deadline has passed (each in its own revision, as etcd does)."""
        now = self._clock.monotonic_ms()
        delay = self._sweep_delay_ms
        for lease_id in [i for i, s in self._leases.items() if s.deadline_ms + delay <= now]:
            self._end_lease(lease_id)

    def _end_lease(self, lease_id: int) -> None:
        state = self._leases.pop(lease_id)
        if state.keys:
            self._revision += 1
            for key in sorted(state.keys):
                self._delete(key)
            self._publish()

    async def _tick(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.maybe_expire_leases()

    # --- history and watches ------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        self.maybe_expire_leases()
        if revision > self._revision:
            raise FutureRevision(f"cannot compact past the current revision {self._revision}")
        if revision <= self._compacted:
            raise RevisionCompacted(self._compacted)
        self._compacted = revision
        self._events = self._events[bisect.bisect_left(self._events, revision, key=_rev) :]
        for key in list(self._history):
            versions = self._history[key]
            # Keep the version visible at the compaction point and everything after it.
            keep = max(0, bisect.bisect_right(versions, revision, key=_mod_rev) - 1)
            versions[:] = versions[keep:]
            if len(versions) == 1 and not versions[0].version:
                del self._history[key]
                del self._sorted_keys[bisect.bisect_left(self._sorted_keys, key)]

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncGenerator[WatchEvent, None]:
        return self._watch(key, prefix, start_revision)

    async def _watch(
        self, key: str, prefix: bool, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        self.maybe_expire_leases()
        next_revision = start_revision or self._revision + 1
        while not self._closed:
            if next_revision < self._compacted:
                raise RevisionCompacted(self._compacted)
            changed = self._changed
            start = bisect.bisect_left(self._events, next_revision, key=_rev)
            batch = self._events[start:]
            if not batch:
                await changed.wait()
                continue
            next_revision = batch[-1].revision + 1
            for event in batch:
                if event.kv.key == key or (prefix and event.kv.key.startswith(key)):
                    yield event

    async def close(self) -> None:
        self._closed = True
        self._changed.set()
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass


def _rev(event: WatchEvent) -> int:
    return event.kv.mod_revision


def _mod_rev(kv: KeyValue) -> int:
    return kv.mod_revision
