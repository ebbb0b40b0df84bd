"""The log cleaner and transactions (KIP-98): aborted data goes, markers stay while they matter,
the aborted-transaction index follows, and a read_committed reader sees the latest committed
value of every key -- also after a crash at any step of a pass."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from storage_helpers import START_MS
from test_cleaner import Rec, batches_of, cleaner_for, records_of

from odradek.clock import ManualClock
from odradek.protocol.records import (
    ATTR_DELETE_HORIZON,
    COMPRESSION_GZIP,
    COMPRESSION_NONE,
    CONTROL_ABORT,
    BatchHeader,
    SimpleRecord,
    control_type,
    decode_records,
    encode_batch,
    encode_control_batch,
)
from odradek.storage.cleaner import CleanerConfig, LogCleaner
from odradek.storage.cleaner_task import TaskState
from odradek.storage.log import SWAP_MANIFEST, AppendOrigin, PartitionLog
from odradek.storage.log_config import LogConfig

CONFIG = LogConfig(cleanup_policy="compact", segment_bytes=450, index_interval_bytes=60,
                   delete_retention_ms=1_000, min_cleanable_dirty_ratio=0.0)
P1, P2, P3 = 7001, 7002, 7003


# -- a log with transactional producers and its model -------------------------------------------


@dataclass(frozen=True)
class Written:
    offset: int
    key: bytes
    value: bytes | None
    txn: int  # -1: not transactional


@dataclass
class TxnLog:
    """A compacted log written by plain and transactional producers, with the model of what
    was written and how each transaction ended."""

    plog: PartitionLog
    clock: ManualClock
    written: list[Written] = field(default_factory=list)
    sequences: dict[int, int] = field(default_factory=dict)
    open_txn: dict[int, int] = field(default_factory=dict)  # producer -> txn id
    outcome: dict[int, bool] = field(default_factory=dict)  # txn id -> committed
    markers: dict[int, int] = field(default_factory=dict)  # txn id -> marker offset
    producer_of: dict[int, int] = field(default_factory=dict)  # txn id -> producer

    def _append(self, data: bytes, origin: AppendOrigin = AppendOrigin.CLIENT) -> int:
        info = self.plog.append_as_leader(data, leader_epoch=0, origin=origin)
        self.plog.update_high_watermark(self.plog.log_end_offset)
        return info.first_offset

    def _records(self, items: list[tuple[bytes, bytes | None]]) -> list[SimpleRecord]:
        now = self.clock.milliseconds()
        return [SimpleRecord(v, key=k, timestamp=now + i) for i, (k, v) in enumerate(items)]

    def plain(self, items: list[tuple[bytes, bytes | None]], compression: int = 0) -> None:
        first = self._append(encode_batch(self._records(items), compression=compression))
        for i, (k, v) in enumerate(items):
            self.written.append(Written(first + i, k, v, -1))

    def txn(self, pid: int, items: list[tuple[bytes, bytes | None]],
            compression: int = 0) -> None:
        txn = self.open_txn.get(pid)
        if txn is None:
            txn = self.open_txn[pid] = len(self.producer_of)
            self.producer_of[txn] = pid
        seq = self.sequences.get(pid, 0)
        first = self._append(encode_batch(
            self._records(items), producer_id=pid, producer_epoch=0, base_sequence=seq,
            is_transactional=True, compression=compression,
        ))
        self.sequences[pid] = seq + len(items)
        for i, (k, v) in enumerate(items):
            self.written.append(Written(first + i, k, v, txn))

    def end(self, pid: int, *, commit: bool) -> None:
        txn = self.open_txn.pop(pid)
        marker = encode_control_batch(pid, 0, commit=commit, coordinator_epoch=0,
                                      timestamp=self.clock.milliseconds())
        self.markers[txn] = self._append(marker, AppendOrigin.COORDINATOR)
        self.outcome[txn] = commit

    def end_all(self, *, commit: bool) -> None:
        for pid in list(self.open_txn):
            self.end(pid, commit=commit)

    def visible(self, upper: int) -> list[Written]:
        """What a read_committed reader must see below ``upper`` if nothing were cleaned."""
        return [w for w in self.written
                if w.offset < upper and (w.txn < 0 or self.outcome.get(w.txn) is True)]


def read_committed(plog: PartitionLog) -> list[Rec]:
    """Read the log from its start up to the LSO as Kafka's read_committed consumer does: the
    fetch reports the aborted transactions of the range; a producer's transactional batches are
    skipped from the first offset of an aborted transaction until its ABORT marker; control
    batches are not records."""
    upper = plog.last_stable_offset
    pending = sorted(plog.collect_aborted_transactions(plog.log_start_offset, upper),
                     key=lambda e: e.first_offset)
    aborted: set[int] = set()
    out = []
    for h, raw in batches_of(plog):
        if h.base_offset >= upper:
            break
        while pending and pending[0].first_offset <= h.last_offset:
            aborted.add(pending.pop(0).producer_id)
        records = decode_records(raw)
        if h.is_control:
            if records and control_type(records[0].key) == CONTROL_ABORT:
                aborted.discard(h.producer_id)
            continue
        if h.is_transactional and h.producer_id in aborted:
            continue
        out.extend(Rec(r.offset, r.key, r.value, r.timestamp, r.headers) for r in records)
    return out


def latest(records: list[Rec] | list[Written]) -> dict[bytes, bytes]:
    """The value of every key after reading ``records`` in order (a tombstone deletes)."""
    state: dict[bytes, bytes] = {}
    for r in records:
        assert r.key is not None
        if r.value is None:
            state.pop(r.key, None)
        else:
            state[r.key] = r.value
    return state


def data_records(plog: PartitionLog) -> list[Rec]:
    """Every record but control records, as read_uncommitted reads them."""
    return [Rec(r.offset, r.key, r.value, r.timestamp, r.headers)
            for h, raw in batches_of(plog) if not h.is_control for r in decode_records(raw)]


def control_batches(plog: PartitionLog) -> list[BatchHeader]:
    return [h for h, _ in batches_of(plog) if h.is_control]


def txn_entries(plog: PartitionLog) -> list[tuple[int, int, int]]:
    return [(e.producer_id, e.first_offset, e.last_offset)
            for seg in plog.log_segments for e in seg.txn_index.entries]


def markers_indexed(source: PartitionLog | list[tuple[int, int, int]]) -> set[tuple[int, int]]:
    entries = txn_entries(source) if isinstance(source, PartitionLog) else source
    return {(pid, marker) for pid, _first, marker in entries}


def check_cleaned(t: TxnLog, end: int) -> None:
    """The invariants of a cleaned transactional log, given the last pass's end offset."""
    plog = t.plog
    view = read_committed(plog)
    upper = plog.last_stable_offset
    # A read_committed reader ends with the latest committed value of every key ...
    assert latest(view) == latest(t.visible(upper))
    # ... sees only committed data, in offset order ...
    model = {(w.offset, w.key, w.value) for w in t.visible(upper)}
    assert {(r.offset, r.key, r.value) for r in view} <= model
    assert [r.offset for r in view] == sorted({r.offset for r in view})
    # ... and below the cleaning point at most one record per key: its last committed one.
    below = [r for r in view if r.offset < end]
    last = {w.key: w for w in t.visible(end)}
    assert len({r.key for r in below}) == len(below)
    for r in below:
        assert last[r.key].offset == r.offset
    for key, w in last.items():
        if w.value is not None:
            assert (w.offset, key, w.value) in {(r.offset, r.key, r.value) for r in below}
    # No record of an aborted transaction is left below the cleaning point.
    raw = {r.offset for r in data_records(plog)}
    for w in t.written:
        if w.offset < end and w.txn >= 0 and t.outcome.get(w.txn) is False:
            assert w.offset not in raw
    # A committed transaction with a record left keeps its marker.
    markers = {h.base_offset for h in control_batches(plog)}
    for w in t.written:
        if w.txn >= 0 and t.outcome.get(w.txn) and w.offset in raw:
            assert t.markers[w.txn] in markers
    # Every index entry's ABORT marker is still in the log.
    for _pid, _first, marker in txn_entries(plog):
        assert marker in markers


def reopen_replayed(directory: Path, clock: ManualClock, config: LogConfig = CONFIG
                    ) -> PartitionLog:
    """Open after a crash with no producer snapshot: producer state and every .txnindex come
    from replaying the cleaned log itself."""
    for name in os.listdir(directory):
        if name.endswith(".snapshot") or name == "recovery-point-offset-checkpoint":
            os.unlink(directory / name)
    plog = PartitionLog.open(directory, "t", 0, config, clock, recover=True)
    plog.update_high_watermark(plog.log_end_offset)
    return plog


def open_txn_log(directory: Path, clock: ManualClock, config: LogConfig = CONFIG) -> TxnLog:
    return TxnLog(PartitionLog.open(directory, "t", 0, config, clock, recover=False), clock)


# -- the model property -----------------------------------------------------------------------

_KEYS = [b"k%d" % i for i in range(5)]
_value = st.one_of(st.none(), st.binary(min_size=1, max_size=12))
_items = st.lists(st.tuples(st.sampled_from(_KEYS), _value), min_size=1, max_size=3)
_txn = st.tuples(st.just("txn"), st.sampled_from([P1, P2, P3]), _items)
_end = st.tuples(st.just("end"), st.sampled_from([P1, P2, P3]), st.booleans())
_op = st.one_of(  # transactions weigh more: a marker can go only once its producer moved on
    st.tuples(st.just("plain"), _items), _txn, _txn, _end, _end,
    st.tuples(st.just("roll")),
    st.tuples(st.just("clean"), st.integers(0, 1_500)),
)


# Keys cycling over three with a two-key map: every pass covers just two offsets, so the 45
# offsets need 23 passes (more than a fixed bound of 20 that this test once assumed).
_SLOW_CYCLE = [("plain", [(_KEYS[i % 3], b"v")]) for i in range(45)]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, min_size=20, max_size=80), tiny_map=st.booleans(),
       compression=st.sampled_from([COMPRESSION_NONE, COMPRESSION_GZIP]),
       last_commit=st.booleans())
@example(ops=_SLOW_CYCLE, tiny_map=True, compression=COMPRESSION_NONE, last_commit=True)
def test_read_committed_view_matches_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, ...]], tiny_map: bool,
    compression: int, last_commit: bool,
) -> None:
    clock = ManualClock(START_MS)
    directory = tmp_path_factory.mktemp("txn") / "t-0"
    t = open_txn_log(directory, clock)
    cleaner = cleaner_for(t.plog, clock=clock,
                          dedupe_buffer_size=24 * 4 if tiny_map else 1 << 20)
    end = 0

    def clean() -> None:
        nonlocal end
        result = cleaner.clean_log(t.plog, clock.milliseconds())
        if result is not None:
            assert result.error is None
            # Never past the last stable offset: open transactions are not touched.
            assert result.end_offset <= t.plog.last_stable_offset
            end = result.end_offset
            check_cleaned(t, end)

    for op in ops:
        if op[0] == "plain":
            t.plain(op[1], compression)  # type: ignore[arg-type]
        elif op[0] == "txn":
            t.txn(op[1], op[2], compression)  # type: ignore[arg-type]
        elif op[0] == "end":
            if op[1] in t.open_txn:
                t.end(op[1], commit=op[2])  # type: ignore[arg-type]
        elif op[0] == "roll":
            t.plog.roll()
        else:
            clock.advance(op[1])  # type: ignore[arg-type]
            clean()
    t.end_all(commit=last_commit)
    t.plog.roll()
    t.plog.update_high_watermark(t.plog.log_end_offset)
    # A tiny map holds two keys, so a pass may cover as few as two offsets: clean until done,
    # requiring every pass to make progress (which bounds the loop).
    while end < t.plog.active_segment.base_offset:
        before = end
        clean()
        assert end > before
    assert end == t.plog.active_segment.base_offset
    # Past every delete horizon, emptied markers go too; the view stays right.
    clock.advance(CONFIG.delete_retention_ms)
    clean()
    clock.advance(CONFIG.delete_retention_ms)
    clean()
    check_cleaned(t, end)
    for h in control_batches(t.plog):
        assert not h.attributes & ATTR_DELETE_HORIZON or h.base_timestamp > clock.milliseconds()
    left = {h.base_offset for h in control_batches(t.plog)}
    event(f"markers removed: {any(m not in left for m in t.markers.values())}")
    event(f"markers kept: {any(m in left for m in t.markers.values())}")
    event(f"aborted transactions: {sum(1 for c in t.outcome.values() if not c) > 0}")
    event(f"abort indexed at the end: {bool(txn_entries(t.plog))}")
    # Replaying the cleaned log reopens no transaction and indexes the same aborts (from the
    # first batch left of each: a replay cannot know where a transaction's data used to start).
    view = read_committed(t.plog)
    entries = txn_entries(t.plog)
    t.plog._close_handles()
    again = reopen_replayed(directory, clock)
    assert again.last_stable_offset == again.high_watermark == again.log_end_offset
    assert read_committed(again) == view
    assert markers_indexed(again) == markers_indexed(entries)
    again.close()


# -- the rules one by one ------------------------------------------------------------------------


def test_aborted_records_are_dropped_and_never_mapped(tmp_path: Path, clock: ManualClock) -> None:
    t = open_txn_log(tmp_path / "t-0", clock)
    t.plain([(b"a", b"committed"), (b"b", b"1")])
    t.txn(P1, [(b"a", b"aborted"), (b"c", b"aborted")])
    t.end(P1, commit=False)
    t.plain([(b"b", b"2")])
    t.plog.roll()
    result = cleaner_for(t.plog, clock=clock).clean_log(t.plog, clock.milliseconds())
    assert result is not None and result.end_offset == t.plog.log_end_offset
    # Had the aborted "a" been mapped, the committed one would be gone.
    assert {(r.key, r.value) for r in read_committed(t.plog)} == {(b"a", b"committed"),
                                                                   (b"b", b"2")}
    assert {r.value for r in data_records(t.plog)} == {b"committed", b"2"}
    check_cleaned(t, result.end_offset)


def test_markers_stay_with_data_and_expire_without(tmp_path: Path, clock: ManualClock) -> None:
    t = open_txn_log(tmp_path / "t-0", clock)
    t.txn(P1, [(b"a", b"1")])
    t.end(P1, commit=True)  # keeps data: "a" is never overwritten
    t.txn(P2, [(b"b", b"1")])
    t.end(P2, commit=True)  # loses its data to the later "b"
    t.txn(P3, [(b"c", b"1")])
    t.end(P3, commit=False)  # aborted
    t.plain([(b"b", b"2")])
    t.txn(P2, [(b"d", b"1")])  # so that P2's and P3's data batches are not their last
    t.end(P2, commit=True)
    t.txn(P3, [(b"d", b"2")])
    t.end(P3, commit=True)
    t.plog.roll()
    m1, m2, m3 = (t.markers[i] for i in range(3))
    cleaner = cleaner_for(t.plog, clock=clock)
    cleaner.clean_log(t.plog, clock.milliseconds())
    headers = {h.base_offset: h for h in control_batches(t.plog)}
    # All markers survive the first pass; those of emptied transactions get a horizon.
    assert {m1, m2, m3} <= set(headers)
    assert not headers[m1].attributes & ATTR_DELETE_HORIZON
    horizon = clock.milliseconds() + CONFIG.delete_retention_ms
    for m in (m2, m3):
        assert headers[m].attributes & ATTR_DELETE_HORIZON and headers[m].base_timestamp == horizon
        # The record keeps its timestamp (its delta is re-based on the horizon).
        marker = next(raw for h, raw in batches_of(t.plog) if h.base_offset == m)
        assert decode_records(marker)[0].timestamp == START_MS
    assert (P3, 4, m3) in txn_entries(t.plog)
    # Before the horizon nothing changes; the cleaner knows when the horizon is due.
    clock.advance(CONFIG.delete_retention_ms - 1)
    assert cleaner.grab_filthiest(clock.milliseconds()) is None
    cleaner.clean_log(t.plog, clock.milliseconds())
    assert {h.base_offset for h in control_batches(t.plog)} >= {m1, m2, m3}
    clock.advance(1)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    task.run()
    cleaner.complete(task)
    offsets = {h.base_offset for h in control_batches(t.plog)}
    assert m1 in offsets and m2 not in offsets and m3 not in offsets
    assert (P3, 4, m3) not in txn_entries(t.plog)
    check_cleaned(t, task.end_offset)


def test_last_batch_of_a_producer_keeps_its_marker(tmp_path: Path, clock: ManualClock) -> None:
    t = open_txn_log(tmp_path / "t-0", clock)
    t.txn(P1, [(b"a", b"1")])
    t.end(P1, commit=False)
    t.plain([(b"x", b"1")])
    t.plog.roll()
    cleaner = cleaner_for(t.plog, clock=clock)
    for _ in range(3):
        cleaner.clean_log(t.plog, clock.milliseconds())
        clock.advance(CONFIG.delete_retention_ms)
    # The aborted batch is the producer's last: it stays, emptied, and so does its marker
    # (and index entry), or a replay of the log would find a transaction that never ends.
    headers = [h for h, _ in batches_of(t.plog)]
    assert [(h.base_offset, h.records_count, h.is_control) for h in headers] == [
        (0, 0, False), (1, 1, True), (2, 1, False)]
    assert txn_entries(t.plog) == [(P1, 0, 1)]
    assert read_committed(t.plog) == [Rec(2, b"x", b"1", START_MS)]
    # Once the producer writes again, the empty batch goes, then (after the horizon) the marker.
    t.txn(P1, [(b"b", b"1")])
    t.end(P1, commit=True)
    t.plog.roll()
    for _ in range(3):
        cleaner.clean_log(t.plog, clock.milliseconds())
        clock.advance(CONFIG.delete_retention_ms)
    headers = [h for h, _ in batches_of(t.plog)]
    assert [h.base_offset for h in headers] == [2, 3, 4]
    assert txn_entries(t.plog) == []
    check_cleaned(t, t.plog.active_segment.base_offset)


def test_dirty_section_stops_at_the_last_stable_offset(tmp_path: Path, clock: ManualClock) -> None:
    t = open_txn_log(tmp_path / "t-0", clock)
    for i in range(6):
        t.plain([(b"a", b"%d" % i)])
    t.plog.roll()
    t.txn(P1, [(b"a", b"open")])  # offset 6, left open
    lso_segment = t.plog.active_segment.base_offset
    for i in range(6):
        t.plain([(b"a", b"late-%d" % i)])
    t.plog.roll()
    for i in range(3):
        t.plain([(b"b", b"%d" % i)])
    t.plog.roll()
    assert t.plog.last_stable_offset == 6
    cleaner = cleaner_for(t.plog, clock=clock)
    ltc = cleaner.log_to_clean(t.plog, clock.milliseconds())
    assert ltc is not None and ltc.first_uncleanable_offset == lso_segment
    result = cleaner.clean_log(t.plog, clock.milliseconds())
    assert result is not None and result.end_offset == lso_segment
    values = [r.value for r in records_of(t.plog)]
    assert values[:2] == [b"5", b"open"] and b"late-0" in values  # nothing past the LSO went
    # Once the transaction commits, the rest can be cleaned.
    t.end(P1, commit=True)
    t.plog.roll()
    result = cleaner.clean_log(t.plog, clock.milliseconds())
    assert result is not None and result.end_offset == t.plog.active_segment.base_offset
    assert latest(read_committed(t.plog)) == {b"a": b"late-5", b"b": b"2"}
    check_cleaned(t, result.end_offset)


def test_undecided_transaction_above_the_high_watermark(tmp_path: Path,
                                                        clock: ManualClock) -> None:
    t = open_txn_log(tmp_path / "t-0", clock)
    t.plain([(b"a", b"1")])
    t.txn(P1, [(b"a", b"2")])
    t.plog.roll()
    hw = t.plog.log_end_offset
    # The ABORT marker is written but not yet below the high watermark: still undecided.
    t.plog.append_as_leader(
        encode_control_batch(P1, 0, commit=False, coordinator_epoch=0, timestamp=START_MS),
        leader_epoch=0, origin=AppendOrigin.COORDINATOR)
    t.plog.roll()
    assert t.plog.high_watermark == hw and t.plog.last_stable_offset == 1
    before = records_of(t.plog)
    cleaner = cleaner_for(t.plog, clock=clock)
    ltc = cleaner.log_to_clean(t.plog, clock.milliseconds())
    assert ltc is not None and ltc.first_uncleanable_offset == 0
    assert cleaner.clean_log(t.plog, clock.milliseconds()) is None
    assert records_of(t.plog) == before


def test_plan_snapshots_the_aborted_index(tmp_path: Path, clock: ManualClock) -> None:
    """The worker reads index entries captured at planning; aborts the owner appends while it
    runs change nothing in the pass."""
    t = open_txn_log(tmp_path / "t-0", clock)
    t.txn(P1, [(b"a", b"x")])
    t.end(P1, commit=False)
    t.plain([(b"a", b"y")])
    t.plog.roll()
    cleaner = cleaner_for(t.plog, clock=clock)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    live = [seg.txn_index.entries for seg in t.plog.log_segments]
    assert all(p.aborted_txns is not live[i] for i, p in enumerate(task._plans))
    # Meanwhile, on the owner thread: another aborted transaction, in the active segment.
    t.txn(P2, [(b"a", b"z")])
    t.end(P2, commit=False)
    assert task.run() is TaskState.DONE
    result = cleaner.complete(task)
    assert result.swapped
    check_cleaned(t, result.end_offset)
    assert latest(read_committed(t.plog)) == {b"a": b"y"}


def test_control_batch_of_another_kind_stays(tmp_path: Path, clock: ManualClock) -> None:
    t = open_txn_log(tmp_path / "t-0", clock)
    t.plain([(b"a", b"1")])
    other = encode_batch([SimpleRecord(b"\0\0", key=b"\0\0\0\2", timestamp=START_MS)],
                         is_control=True)  # a LEADER_CHANGE-like control record
    t.plog.append_as_leader(other, leader_epoch=0, origin=AppendOrigin.COORDINATOR)
    t.plain([(b"a", b"2")])
    t.plog.roll()
    t.plog.update_high_watermark(t.plog.log_end_offset)
    cleaner = cleaner_for(t.plog, clock=clock)
    for _ in range(2):
        cleaner.clean_log(t.plog, clock.milliseconds())
        clock.advance(CONFIG.delete_retention_ms)
    assert [(h.base_offset, h.is_control) for h, _ in batches_of(t.plog)] == [(1, True),
                                                                              (2, False)]


# -- crashes ---------------------------------------------------------------------------------------


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    # A simulated crash keeps the page cache, so fsync only costs time here.
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def build_for_crash(directory: Path, clock: ManualClock) -> TxnLog:
    """A log whose next pass drops an expired ABORT marker and the index entry of the first
    segment (which then needs no .txnindex), drops aborted data elsewhere and keeps others."""
    t = open_txn_log(directory, clock)
    t.txn(P1, [(b"a", b"aborted")])
    t.end(P1, commit=False)
    t.plain([(b"a", b"1"), (b"b", b"1")])
    t.txn(P1, [(b"c", b"1")])
    t.end(P1, commit=True)
    t.plog.roll()
    cleaner = cleaner_for(t.plog, clock=clock)
    cleaner.clean_log(t.plog, clock.milliseconds())  # drops the aborted data, stamps the marker
    assert txn_entries(t.plog) == [(P1, 0, 1)]
    clock.advance(CONFIG.delete_retention_ms)
    t.txn(P2, [(b"b", b"aborted"), (b"d", b"aborted")])
    t.plain([(b"a", b"2")])
    t.end(P2, commit=False)
    t.txn(P2, [(b"e", b"1")])
    t.end(P2, commit=True)
    for i in range(6):
        t.plain([(b"k%d" % (i % 3), b"%d" % i)])
    t.plog.roll()
    return t


def test_crash_at_every_step_reads_before_or_after(tmp_path: Path, clock: ManualClock,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   no_fsync: None) -> None:
    t = build_for_crash(tmp_path / "t-0", clock)
    plog = t.plog
    before, view_before = records_of(plog), read_committed(plog)
    snaps: list[tuple[str, Path]] = []

    def copy(name: str) -> None:
        target = tmp_path / "snaps" / f"{len(snaps):03d}-{name}"
        shutil.copytree(plog.directory, target)
        snaps.append((name, target))

    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        if Path(dst).parent == plog.directory:
            copy("rename-" + Path(dst).name)

    cleaner = LogCleaner(lambda: [plog], CleanerConfig(dedupe_buffer_size=1 << 20), clock,
                         on_step=copy)
    task = cleaner.plan(plog, clock.milliseconds())
    assert task is not None
    assert task.run() is TaskState.DONE
    monkeypatch.setattr(os, "replace", replace)
    try:
        result = cleaner.complete(task)
    finally:
        monkeypatch.setattr(os, "replace", real_replace)
    assert result.swapped
    after, view_after = records_of(plog), read_committed(plog)
    assert before != after and latest(view_before) == latest(view_after)
    assert txn_entries(plog) == [(P2, 6, 9)]  # the first segment's entry went with its marker
    check_cleaned(t, result.end_offset)
    outcomes = []
    for name, snap in snaps:
        again = PartitionLog.open(snap, "t", 0, CONFIG, clock, recover=True)
        again.update_high_watermark(again.log_end_offset)
        got = records_of(again)
        assert got in (before, after), name
        outcomes.append(got == after)
        # The aborted index matches the records read: no entry outlives its marker.
        if got == after:
            assert txn_entries(again) == [(P2, 6, 9)], name
            assert read_committed(again) == view_after, name
        else:
            assert read_committed(again) == view_before, name
        assert not [n for n in os.listdir(snap) if n.endswith((".cleaned", ".swap"))]
        assert SWAP_MANIFEST + ".swap" not in os.listdir(snap)
        again.close()
    assert outcomes[0] is False and outcomes[-1] is True and outcomes == sorted(outcomes)


def test_replay_after_a_crash_rebuilds_the_same_index(tmp_path: Path, clock: ManualClock,
                                                      no_fsync: None) -> None:
    t = build_for_crash(tmp_path / "t-0", clock)
    cleaner = cleaner_for(t.plog, clock=clock)
    result = cleaner.clean_log(t.plog, clock.milliseconds())
    assert result is not None and result.swapped
    view, entries = read_committed(t.plog), txn_entries(t.plog)
    t.plog._close_handles()
    again = reopen_replayed(t.plog.directory, clock)
    assert again.last_stable_offset == again.log_end_offset
    assert read_committed(again) == view
    # The abort whose data is gone keeps its entry while its marker waits for its horizon; a
    # replay has no data to index it by, which changes nothing a reader sees.
    assert markers_indexed(entries) == {(P2, 9)} and markers_indexed(again) == set()
    again.close()
