"""An in-memory internal topic for coordinator unit tests: the writer a real
:class:`~odradek.coordinator.runtime.CoordinatorRuntime` appends to (with failures to inject),
and what a fresh coordinator loads from."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from odradek.coordinator.runtime import (
    CoordinatorRuntime,
    CoordinatorShard,
    StoredMarker,
    StoredRecord,
)


@dataclass(frozen=True)
class Entry:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    producer: tuple[int, int] | None = None  # (id, epoch) of a transactional batch
    marker: bool | None = None  # COMMIT (True) / ABORT (False) marker of producer[0]


class MemoryLog:
    """Appends as a partition log would: offsets per partition, one batch per write. Set
    ``fail`` to an exception to make every write raise it (nothing is written);
    ``before_write(partition)`` runs first when set (to look at the state being persisted)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.fail: Exception | None = None
        self.before_write: Callable[[int], None] | None = None
        self.writes = 0
        self._ends: defaultdict[int, int] = defaultdict(int)

    def write(
        self,
        partition: int,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None,
    ) -> int:
        if self.before_write is not None:
            self.before_write(partition)
        if self.fail is not None:
            raise self.fail
        self.writes += 1
        base = self._ends[partition]
        for i, (key, value) in enumerate(records):
            self.entries.append(Entry(partition, base + i, key, value, producer))
        self._ends[partition] = base + len(records)
        return base

    def marker(self, partition: int, producer_id: int, commit: bool) -> int:
        """Append a COMMIT/ABORT marker; returns its offset."""
        offset = self._ends[partition]
        self.entries.append(Entry(partition, offset, None, None, (producer_id, 0), commit))
        self._ends[partition] = offset + 1
        return offset

    def end(self, partition: int) -> int:
        return self._ends[partition]

    def records(self) -> list[tuple[bytes | None, bytes | None]]:
        """Every data record's (key, value), in write order."""
        return [(e.key, e.value) for e in self.entries if e.marker is None]

    def stored(self, partition: int) -> list[StoredRecord | StoredMarker]:
        out: list[StoredRecord | StoredMarker] = []
        for e in self.entries:
            if e.partition != partition:
                continue
            if e.marker is not None:
                assert e.producer is not None
                out.append(StoredMarker(e.producer[0], e.marker, e.offset))
            else:
                producer_id = e.producer[0] if e.producer is not None else None
                out.append(StoredRecord(e.key, e.value, producer_id, e.offset))
        return out

    def runtime(
        self, shard: CoordinatorShard, partitions: int, topic: str, *, load: bool = False,
        replicated: Replications | None = None,
    ) -> CoordinatorRuntime:
        """A runtime writing here with every partition served: empty, or (``load``) loaded
        from what this log holds, as a broker does at start-up; its writes durable at once, or
        as ``replicated`` says."""
        runtime = CoordinatorRuntime(shard, self.write, topic=topic, replicated=replicated)
        for partition in range(partitions):
            runtime.load(partition, self.stored(partition) if load else ())
        return runtime


class Replications:
    """The runtime's ``replicated`` hook over a test-driven high watermark per partition: a
    write is durable once :meth:`advance` passes its end, or fails with :meth:`fail`."""

    def __init__(self) -> None:
        self.high_watermark: dict[int, int] = {}
        self.waiting: list[tuple[int, int, Any]] = []

    def __call__(self, partition: int, end_offset: int) -> Any:
        if self.high_watermark.get(partition, 0) >= end_offset:
            return None
        outer = self

        class One:
            def add_done(self, callback: Any) -> None:
                outer.waiting.append((partition, end_offset, callback))

        return One()

    def advance(self, partition: int, offset: int) -> None:
        self.high_watermark[partition] = offset
        done = [w for w in self.waiting if w[0] == partition and w[1] <= offset]
        self.waiting = [w for w in self.waiting if w not in done]
        for _p, _o, callback in done:
            callback(None)

    def fail(self, partition: int, error: Exception) -> None:
        failed = [w for w in self.waiting if w[0] == partition]
        self.waiting = [w for w in self.waiting if w not in failed]
        for _p, _o, callback in failed:
            callback(error)
