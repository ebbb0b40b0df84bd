"""What went wrong with one partition's files: corrupt batches found and failing I/O.

Corruption and disk failures must never be silent, and must not flood the log either: a client
retrying a fetch at a corrupt batch, or producing to a full disk, would otherwise log one line
per request. :class:`PartitionHealth` logs each corrupt batch once (keyed by segment and
position) and each failing operation once per errno until it succeeds again, and counts what it
saw so tests and, later, metrics can read it.

Owned by its :class:`~odradek.storage.log.PartitionLog` (the broker's event-loop thread); the
scrubber reports to it from that thread too. Nothing is persisted: after a restart a corrupt
batch is reported again when it is next found.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["CorruptBatch", "PartitionHealth", "os_error_of"]

log = logging.getLogger("odradek.storage")


@dataclass(frozen=True, slots=True)
class CorruptBatch:
    """A batch that failed validation: where it is and what was wrong. ``offset`` is the first
    offset the damaged batch should hold (from the offset index or the batch before it), or -1
    when unknown; ``found_by`` names who found it ("fetch", "scrubber", ...)."""

    segment_base_offset: int
    position: int
    offset: int
    reason: str
    found_by: str


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself or its cause), if any: a real I/O failure rather
    than a refusal such as a closed log."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__
    return None


class PartitionHealth:
    """Corruption found in, and I/O failures of, one partition log (see the module docstring).

    ``corrupt_batches`` counts distinct corrupt batches (segment, position) found by any
    reader; ``corrupt_reads`` counts reads answered with a corruption error (every fetch);
    ``storage_errors`` counts failed operations (every one, logged or not).
    """

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._corrupt: dict[tuple[int, int], CorruptBatch] = {}
        self.corrupt_reads = 0
        self.storage_errors = 0
        self._failing: dict[str, int | None] = {}  # operation -> errno last logged

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    # -- corruption -------------------------------------------------------------------------

    @property
    def corrupt_batches(self) -> int:
        return len(self._corrupt)

    def corruptions(self) -> list[CorruptBatch]:
        """Every corrupt batch found so far, in order of discovery."""
        return list(self._corrupt.values())

    def knows_corruption(self, segment_base_offset: int, position: int) -> bool:
        return (segment_base_offset, position) in self._corrupt

    def report_corruption(self, found: CorruptBatch) -> bool:
        """Record a corrupt batch; logs a WARNING the first time this segment and position is
        reported (by anyone) and returns whether it was new."""
        key = (found.segment_base_offset, found.position)
        if key in self._corrupt:
            return False
        self._corrupt[key] = found
        log.warning(
            "corrupt record batch in %s, segment %020d at position %d (offset %s), found by "
            "%s: %s; reads from there fail with CORRUPT_MESSAGE",
            self.name, found.segment_base_offset, found.position,
            found.offset if found.offset >= 0 else "unknown", found.found_by, found.reason,
        )
        return True

    def on_corrupt_read(self, found: CorruptBatch) -> None:
        """A read failed on corrupt data: count it, report the batch (logged once)."""
        self.corrupt_reads += 1
        self.report_corruption(found)

    # -- I/O failures -----------------------------------------------------------------------

    def on_storage_error(self, operation: str, exc: BaseException) -> None:
        """``operation`` failed with ``exc``; logs one ERROR per operation and errno until the
        operation succeeds again. Failures without an OSError behind them (a closed log) are
        not I/O failures and are neither logged nor counted."""
        err = os_error_of(exc)
        if err is None:
            return
        self.storage_errors += 1
        errno = err.errno
        if operation in self._failing and self._failing[operation] == errno:
            return
        self._failing[operation] = errno
        log.error(
            "storage error in %s during %s (errno %s, %s): %s; answering KAFKA_STORAGE_ERROR "
            "until it succeeds again (logged once)",
            self.name, operation, errno, err.strerror or type(err).__name__, exc,
        )

    def on_storage_ok(self, operation: str) -> None:
        """``operation`` succeeded: if it was failing, say so once."""
        if self._failing and self._failing.pop(operation, False) is not False:
            log.warning("%s: %s succeeds again", self.name, operation)
