"""The coordinator runtime, sans-IO: operations return records, the runtime persists them and
then replays them; partitions of the internal topic are loaded, active or failed.

This is the shape of Apache Kafka's ``CoordinatorRuntime``, for both coordinators (groups over
``__consumer_offsets``, transactions over ``__transaction_state``):

- An operation is a function of the coordinator that reads its state and returns a
  :class:`CoordinatorResult`: the records to write and the response. It does not change the
  persisted state itself.
- :meth:`CoordinatorRuntime.write` checks that the partition the request belongs to is
  loaded, runs the operation, hands its records to the :data:`Writer` (the broker appends them
  to the internal topic through its replica manager) and, once that returned, *replays* them:
  :meth:`CoordinatorShard.replay` is the only mutator of persisted state, the same code that
  rebuilds the state when a partition is loaded. A failed write replays nothing and fails the
  operation with the writer's error.
- Each partition of the internal topic has a :class:`PartitionState`. A partition this runtime
  does not hold (never loaded, or unloaded when the coordinator moves elsewhere) answers
  NOT_COORDINATOR; one being loaded answers COORDINATOR_LOAD_IN_PROGRESS, as Kafka's do.
- Timers are operations too: :meth:`CoordinatorRuntime.poll` runs the coordinator's due
  timer callbacks and writes the records they return.

Writes are synchronous: the writer returns once the records are in the leader's log, and they
are replayed at once (as Kafka's runtime applies a write before it is committed). With several
replicas a write is *durable* only once the high watermark covers it; the runtime's
``replicated`` hook hands out a :class:`Replication` for it, and what must not happen before
(a result's ``on_written`` and ``after``; the broker also holds the response of the request that
wrote it) waits for that. A write that then fails to replicate gives ``on_written`` the error
and reverts the partition's state to what is durable: the ``on_failed`` hook (the broker loads
the partition again from its log up to the high watermark), as Kafka's runtime reverts to its
last committed offset.

Reads that answer clients with persisted state must not show what is not durable (Kafka's
runtime reads at its last committed offset). The runtime tells the shard where durability
stands: :meth:`CoordinatorShard.on_pending` before it replays records that are not durable yet
(a write waiting for its replication, a marker, what a load replays from the offset the host
names with :meth:`CoordinatorRuntime.pending_from`),
and :meth:`CoordinatorShard.on_durable` once the high watermark covers them (at once, before
the replay, for a write durable when written: always with one replica). The shard keeps what
those reads need as of the durable part of the log (the group coordinator: the previous value
of an offset whose newer write is not durable yet).

Owned by one thread (the broker's event loop); nothing here does I/O except through the
injected writer, and time comes from the caller.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from odradek.coordinator.timer import Timer
from odradek.errors import (
    CoordinatorLoadInProgressError,
    ErrorCode,
    KafkaError,
    NotCoordinatorError,
)

__all__ = [
    "CoordinatorResult",
    "CoordinatorRuntime",
    "CoordinatorShard",
    "PartitionState",
    "Replication",
    "StoredMarker",
    "StoredRecord",
    "Writer",
    "error_code_of",
]

log = logging.getLogger("odradek.coordinator")

R = TypeVar("R")

#: Appends encoded (key, value) records to one partition of the internal topic as one batch
#: (transactional when the last argument is (producer id, epoch)); returns the offset of the
#: first record. Raises a KafkaError, having written nothing, when it cannot.
Writer = Callable[[int, Sequence[tuple[bytes, bytes | None]], "tuple[int, int] | None"], int]


class Replication(Protocol):
    """A write on its way to being durable (the high watermark covering it)."""

    def add_done(self, callback: Callable[[Exception | None], None]) -> None:
        """Call ``callback`` once with None when the write is durable, or with the error (as
        the coordinator answers it) when it will not be."""
        ...


#: (partition, offset after the write) -> the write's :class:`Replication`, or None when it is
#: durable already (one replica).
Replicated = Callable[[int, int], "Replication | None"]


@dataclass(frozen=True, slots=True)
class CoordinatorResult(Generic[R]):
    """What a coordinator operation returns: records to persist, and the response.

    - ``records`` go to the partition :meth:`CoordinatorShard.partition_of` names (one batch
      per partition, in order; transactional when ``producer`` is (id, epoch)) and are then
      replayed in order. ``replay=False`` marks records that snapshot state the operation
      already holds in memory (classic groups, as in Kafka): they are written, not replayed.
    - ``on_written`` runs once the write is done (``None``) or failed (the error), for effects
      that are not records: waking waiters, timers, transient state.
    - ``then`` continues the operation once the records are in: its result is written the same
      way and its response is the operation's.
    - ``after`` are operations of their own, run once this one is done; their failures are
      logged, not the caller's.
    """

    records: Sequence[Any]
    response: R
    producer: tuple[int, int] | None = None
    replay: bool = True
    on_written: Callable[[Exception | None], None] | None = None
    then: Callable[[], CoordinatorResult[R]] | None = None
    after: tuple[Callable[[], CoordinatorResult[Any]], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record read back from the internal topic; ``producer_id`` is set when it sits in a
    transactional batch (its fate is decided by a later marker)."""

    key: bytes | None
    value: bytes | None
    producer_id: int | None = None
    offset: int = -1


@dataclass(frozen=True, slots=True)
class StoredMarker:
    """A COMMIT or ABORT control record of ``producer_id`` read back from the topic."""

    producer_id: int
    commit: bool
    offset: int = -1


class PartitionState(enum.Enum):
    """The state of one internal-topic partition in this runtime (Kafka's
    ``CoordinatorState``, without the transient INITIAL and CLOSED).

    - ``LOADING``: its records are being replayed. transition: -> ACTIVE when done, -> FAILED
      if loading raised. Requests get COORDINATOR_LOAD_IN_PROGRESS.
    - ``ACTIVE``: serving. Previous: LOADING.
    - ``FAILED``: loading failed; its state was dropped. Requests get NOT_COORDINATOR.

    A partition with no state is not this runtime's (NOT_COORDINATOR); :meth:`CoordinatorRuntime.
    unload` takes any state back to that.
    """

    LOADING = "loading"
    ACTIVE = "active"
    FAILED = "failed"


class CoordinatorShard(Protocol):
    """What the runtime needs of a coordinator (implemented by the group and the transaction
    coordinators). Owned by the runtime's thread."""

    @property
    def timer(self) -> Timer:
        """Deadlines whose callbacks are operations: they return ``None``, a
        :class:`CoordinatorResult` or an iterable of them."""
        ...

    def partition_of(self, record: Any) -> int:
        """The internal-topic partition ``record`` belongs to."""
        ...

    def encode(self, record: Any) -> tuple[bytes, bytes | None]: ...

    def decode(self, key: bytes, value: bytes | None) -> Any | None:
        """The record stored as ``key``/``value``; None for one to skip (an unknown version).
        Raises for bytes that cannot be decoded."""
        ...

    def replay(
        self, record: Any, *, partition: int, offset: int, producer_id: int | None
    ) -> None:
        """Apply one record (the only mutator of persisted state); ``producer_id`` when it is in
        a transactional batch, ``offset`` its position in the partition."""
        ...

    def replay_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        """A COMMIT/ABORT marker of ``producer_id`` is in ``partition`` at ``offset`` (-1:
        unknown, counted as durable)."""
        ...

    def on_pending(self, partition: int, offset: int) -> None:
        """Records of ``partition`` replayed from ``offset`` on are not durable until
        :meth:`on_durable` covers them (records replayed without this call are durable)."""
        ...

    def on_durable(self, partition: int, end_offset: int) -> None:
        """The high watermark of ``partition`` reached ``end_offset``: every record before it
        is durable. Calls may come late and out of order (each says something true)."""
        ...

    def on_loaded(self, partition: int) -> None:
        """``partition`` is fully replayed and serving (start its timers)."""
        ...

    def on_unloaded(self, partition: int) -> None:
        """Forget every piece of state held for ``partition`` (and its timers)."""
        ...


def error_code_of(error: Exception) -> ErrorCode:
    """The Kafka error code a failed write answers with."""
    return error.code if isinstance(error, KafkaError) else ErrorCode.unknown_server_error


class CoordinatorRuntime:
    """Runs one coordinator's operations over its internal topic ``topic``; see the module
    docs. Owned by the broker's event loop (or a test); not thread-safe."""

    def __init__(
        self,
        shard: CoordinatorShard,
        write: Writer,
        *,
        topic: str,
        replicated: Replicated | None = None,
        on_failed: Callable[[int], None] | None = None,
    ) -> None:
        self.shard = shard
        self.topic = topic
        self._write = write
        #: Where writes wait to be durable (None: durable once written, as with one replica).
        self._replicated = replicated
        #: Called with a partition whose replayed write failed to replicate: its state ran
        #: ahead of the log's durable part and must be rebuilt (None: it is unloaded).
        self._on_failed = on_failed
        self._states: dict[int, PartitionState] = {}

    # -- partition states -------------------------------------------------------------------

    def state(self, partition: int) -> PartitionState | None:
        return self._states.get(partition)

    def partitions(self, state: PartitionState) -> list[int]:
        return sorted(p for p, s in self._states.items() if s is state)

    def is_loading(self) -> bool:
        return any(s is PartitionState.LOADING for s in self._states.values())

    def check(self, partition: int) -> None:
        """Raise unless ``partition`` is loaded and served here."""
        state = self._states.get(partition)
        if state is PartitionState.ACTIVE:
            return
        if state is PartitionState.LOADING:
            raise CoordinatorLoadInProgressError(
                f"{self.topic}-{partition} is still being loaded"
            )
        raise NotCoordinatorError(f"this broker does not coordinate {self.topic}-{partition}")

    def begin_load(self, partition: int) -> None:
        """Start loading ``partition`` (any state it held is dropped first)."""
        if partition in self._states:
            self.unload(partition)
        self._states[partition] = PartitionState.LOADING

    def replay_stored(
        self, partition: int, items: Iterable[StoredRecord | StoredMarker]
    ) -> int:
        """Replay stored records of a partition being loaded, in offset order; returns how many
        were applied. A record that cannot be decoded or replayed is skipped with a log line,
        as one bad record must not keep the coordinator from serving."""
        shard = self.shard
        applied = 0
        for item in items:
            if isinstance(item, StoredMarker):
                shard.replay_marker(partition, item.producer_id, item.commit, item.offset)
                continue
            if item.key is None:
                continue
            try:
                record = shard.decode(item.key, item.value)
                if record is None:
                    continue
                shard.replay(
                    record, partition=partition, offset=item.offset, producer_id=item.producer_id
                )
            except Exception:
                log.exception(
                    "skipping record %d of %s-%d: it cannot be replayed",
                    item.offset, self.topic, partition,
                )
                continue
            applied += 1
        return applied

    def pending_from(self, partition: int, offset: int) -> None:
        """Records of ``partition`` from ``offset`` on, about to be loaded, are not durable yet
        (the broker names what was appended since its leadership began): the shard keeps them
        from durable reads until :meth:`complete_load`'s watch sees the high watermark pass
        them."""
        self.shard.on_pending(partition, offset)

    def complete_load(self, partition: int, end_offset: int | None = None) -> None:
        """``partition`` is loaded and serves; with ``end_offset`` (the log end it was read to)
        what it replayed counts as durable once the high watermark reaches that."""
        if self._states.get(partition) is not PartitionState.LOADING:
            raise RuntimeError(f"{self.topic}-{partition} is not loading")
        self._states[partition] = PartitionState.ACTIVE
        self.shard.on_loaded(partition)
        if end_offset is not None:
            self._watch(partition, end_offset, end_offset, again=True)

    def fail_load(self, partition: int) -> None:
        self.shard.on_unloaded(partition)
        self._states[partition] = PartitionState.FAILED

    def load(self, partition: int, items: Iterable[StoredRecord | StoredMarker]) -> int:
        """Load ``partition`` from ``items`` in one go (a partition with nothing stored, or a
        test); returns how many records were applied."""
        self.begin_load(partition)
        try:
            applied = self.replay_stored(partition, items)
        except BaseException:
            self.fail_load(partition)
            raise
        self.complete_load(partition)
        return applied

    def unload(self, partition: int) -> None:
        """Stop serving ``partition`` and forget its state (its coordinator moved away)."""
        if self._states.pop(partition, None) is not None:
            self.shard.on_unloaded(partition)

    # -- operations -------------------------------------------------------------------------

    def write(self, partition: int, op: Callable[[], CoordinatorResult[R]]) -> R:
        """Run ``op`` for a request of ``partition``, persist its records, replay them and
        return its response. Raises COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR when the
        partition is not served (``op`` does not run), the operation's error, or the writer's
        (nothing replayed)."""
        self.check(partition)
        return self.execute(op())

    def run(self, partition: int, fn: Callable[[], R]) -> R:
        """Run ``fn`` for a request of ``partition`` that writes nothing (a read, or a change of
        transient state such as a heartbeat), once the partition is served."""
        self.check(partition)
        return fn()

    def execute(self, result: CoordinatorResult[R]) -> R:
        """Persist and replay ``result`` (and its continuations), run its ``after`` operations,
        and return the response. Every partition written to must be served here."""
        after: list[Callable[[], CoordinatorResult[Any]]] = []
        pending: list[Replication] = []
        try:
            while True:
                pending.extend(self._persist(result))
                if result.after and not pending:
                    # Durable already: what follows runs now, before the chain goes on (it
                    # may read what that completed).
                    self._run_after(list(result.after), None)
                else:
                    after.extend(result.after)
                if result.then is None:
                    break
                result = result.then()
        finally:
            # What follows a write that was persisted runs even when a later link of its
            # chain fails (the write stands: a fenced transaction's abort must complete).
            if after:
                if pending:
                    # Kafka's order: what follows a write (markers after PrepareCommit) starts
                    # once the write is durable, and not at all if it failed.
                    _when_all(pending, lambda error: self._run_after(after, error))
                else:
                    self._run_after(after, None)
        return result.response

    def _run_after(
        self, after: list[Callable[[], CoordinatorResult[Any]]], error: Exception | None
    ) -> None:
        if error is not None:
            log.warning("%s: a write was not replicated (%s); what follows it is not run",
                        self.topic, error)
            return
        for op in after:
            self.run_detached(op)

    def run_detached(self, op: Callable[[], object]) -> None:
        """Run an operation nobody waits for (a timer, a follow-up): write what it returns;
        failures are logged."""
        try:
            out = op()
            for result in _results(out):
                try:
                    self.execute(result)
                except CoordinatorLoadInProgressError as e:
                    # A timer looked at a partition still loading; it runs again later.
                    log.debug("%s: %s", self.topic, e)
                except KafkaError as e:
                    log.warning("%s: a coordinator write failed: %s", self.topic, e)
        except Exception:
            log.exception("%s: a coordinator operation failed", self.topic)

    def poll(self, now_ms: int) -> int:
        """Run the coordinator's timers due at ``now_ms`` as operations; returns how many ran."""
        return self.shard.timer.advance(now_ms, run=self.run_detached)

    def replay_marker(
        self, partition: int, producer_id: int, commit: bool, offset: int = -1
    ) -> None:
        """Someone else (the transaction coordinator) wrote a marker of ``producer_id`` into
        ``partition`` at ``offset``: apply it if the partition is served (durable for reads
        once the high watermark passes it). A partition being loaded reads it from the log
        itself; one not held here has no state to change."""
        if self._states.get(partition) is PartitionState.ACTIVE:
            if offset >= 0:
                self._watch(partition, offset, offset + 1, again=True)
            self.shard.replay_marker(partition, producer_id, commit, offset)

    def _watch(
        self, partition: int, start: int, end: int, *, again: bool = False
    ) -> Replication | None:
        """Tell the shard whether the records of ``partition`` in [``start``, ``end``), about
        to be replayed, are durable: :meth:`CoordinatorShard.on_durable` now if they are, else
        :meth:`CoordinatorShard.on_pending` now and ``on_durable`` once they are. Returns the
        replication still under way (None: durable).

        ``again``: records whose failed replication reverts nothing (a load's, a marker's)
        stay in the log and may still become durable (the ISR grows back): while the partition
        is served here and its leadership did not move, they are watched again."""
        shard = self.shard
        replication = self._replicated(partition, end) if self._replicated is not None else None
        if replication is None:
            shard.on_durable(partition, end)
            return None
        shard.on_pending(partition, start)

        def done(error: Exception | None) -> None:
            if error is None:
                shard.on_durable(partition, end)
            elif (
                again
                and not isinstance(error, NotCoordinatorError)
                and self._states.get(partition) is PartitionState.ACTIVE
            ):
                self._watch(partition, end, end, again=True)

        replication.add_done(done)
        return replication

    def _persist(self, result: CoordinatorResult[Any]) -> list[Replication]:
        """Write and replay ``result``'s records; the replications still under way. Its
        ``on_written`` runs once they are durable (at once for a link of a ``then`` chain, whose
        next operation reads what it applied)."""
        shard = self.shard
        pending: list[tuple[int, Replication]] = []
        try:
            batches: dict[int, list[Any]] = {}
            for record in result.records:
                batches.setdefault(shard.partition_of(record), []).append(record)
            for partition in batches:
                self.check(partition)
            producer_id = result.producer[0] if result.producer is not None else None
            for partition, records in batches.items():
                base = self._write(
                    partition, [shard.encode(r) for r in records], result.producer
                )
                # Before the replay: the shard keeps what is not durable from durable reads.
                replication = self._watch(partition, base, base + len(records))
                if result.replay:
                    for i, record in enumerate(records):
                        shard.replay(
                            record, partition=partition, offset=base + i, producer_id=producer_id
                        )
                if replication is not None:
                    pending.append((partition, replication))
        except Exception as e:
            if result.on_written is not None:
                result.on_written(e)
            raise
        if not pending:
            if result.on_written is not None:
                result.on_written(None)
            return []
        # A link of a ``then`` chain completes now (the next operation reads what it applied),
        # but its replication is still watched: if it fails, the state it replayed is not
        # durable either (and an unobserved failure would be an exception nobody retrieved).
        on_written = None if result.then is not None else result.on_written
        if result.then is not None and result.on_written is not None:
            result.on_written(None)

        def durable(error: Exception | None) -> None:
            if error is not None:
                log.warning("%s: a write was not replicated: %s", self.topic, error)
                if result.replay:
                    for partition in sorted({p for p, _ in pending}):
                        self._revert(partition)
            if on_written is not None:
                on_written(error)

        _when_all([r for _, r in pending], durable)
        return [r for _, r in pending]

    def _revert(self, partition: int) -> None:
        """Its state holds a write that is not durable: rebuild it from what is."""
        if self._states.get(partition) is not PartitionState.ACTIVE:
            return
        log.warning("%s-%d: reverting the coordinator's state to the replicated log",
                    self.topic, partition)
        if self._on_failed is not None:
            self._on_failed(partition)
        else:
            self.unload(partition)


def _when_all(
    replications: Sequence[Replication], callback: Callable[[Exception | None], None]
) -> None:
    """``callback`` once every replication is done: None if all are durable, else the first
    error."""
    remaining = len(replications)
    first: list[Exception] = []

    def one(error: Exception | None) -> None:
        nonlocal remaining
        remaining -= 1
        if error is not None and not first:
            first.append(error)
        if remaining == 0:
            callback(first[0] if first else None)

    for replication in replications:
        replication.add_done(one)


def _results(out: object) -> list[CoordinatorResult[Any]]:
    if out is None:
        return []
    if isinstance(out, CoordinatorResult):
        return [out]
    if isinstance(out, Iterable):
        return [r for r in out if isinstance(r, CoordinatorResult)]
    raise TypeError(f"a coordinator operation returned {out!r}")
