"""Transactions in the storage engine: LSO, aborted-transaction index, fencing, recovery."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from storage_helpers import START_MS, OpenLog, batch, crash

from odradek.clock import ManualClock
from odradek.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from odradek.protocol.records import encode_control_batch, read_batch_header
from odradek.storage.log import (
    RECOVERY_POINT_CHECKPOINT,
    AbortedTxn,
    AppendOrigin,
    FetchIsolation,
    FetchOffsetOutOfRangeError,
    LogAppendInfo,
    PartitionLog,
)
from odradek.storage.log_config import LogConfig
from odradek.storage.producer_state import (
    InvalidTxnStateError,
    ProducerStateManager,
    TransactionCoordinatorFencedError,
)

P1, P2, P3 = 4001, 4002, 4003
SMALL = LogConfig(segment_bytes=700, index_interval_bytes=150)


def txn(pid: int, seq: int, n: int = 1, epoch: int = 0) -> bytes:
    return batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                 is_transactional=True, value=b"t%d" % pid)


def idem(pid: int, seq: int, n: int = 1, epoch: int = 0) -> bytes:
    return batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def marker(pid: int, epoch: int = 0, *, commit: bool, coord: int = 0) -> bytes:
    return encode_control_batch(pid, epoch, commit=commit, coordinator_epoch=coord,
                                timestamp=START_MS)


def produce(plog: PartitionLog, data: bytes, *, hw: bool = True) -> LogAppendInfo:
    info = plog.append_as_leader(data, leader_epoch=0)
    if hw:
        plog.update_high_watermark(plog.log_end_offset)
    return info


def end(plog: PartitionLog, pid: int, epoch: int = 0, *, commit: bool, coord: int = 0,
        hw: bool = True) -> int:
    info = plog.append_as_leader(
        marker(pid, epoch, commit=commit, coord=coord), leader_epoch=0,
        origin=AppendOrigin.COORDINATOR,
    )
    if hw:
        plog.update_high_watermark(plog.log_end_offset)
    return info.first_offset


def txnindex_files(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.endswith(".txnindex"))


# -- basics ---------------------------------------------------------------------------------------


def test_commit_moves_lso_to_high_watermark(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, batch(2))
    assert plog.last_stable_offset == 2
    produce(plog, txn(P1, 0, 3))  # offsets 2..4
    produce(plog, batch(1))
    assert plog.last_stable_offset == 2 and plog.high_watermark == 6
    entry = plog.producer_entry(P1)
    assert entry is not None and entry.current_txn_first_offset == 2
    produce(plog, txn(P1, 3))  # continues the same transaction
    assert plog.producer_entry(P1).current_txn_first_offset == 2  # type: ignore[union-attr]
    at = end(plog, P1, commit=True, coord=3)
    assert plog.last_stable_offset == plog.high_watermark == at + 1
    entry = plog.producer_entry(P1)
    assert entry is not None and entry.current_txn_first_offset == -1
    assert entry.coordinator_epoch == 3
    assert plog.collect_aborted_transactions(0, plog.log_end_offset) == []
    assert txnindex_files(plog.directory) == []


def test_abort_is_indexed_in_the_marker_segment(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, txn(P1, 0, 2))  # 0..1
    produce(plog, txn(P2, 0))  # 2
    at = end(plog, P1, commit=False)  # 3
    # P2 is still open, so the LSO stored with the abort is its first offset
    assert plog.collect_aborted_transactions(0, 10) == [AbortedTxn(P1, 0, 3, 2)]
    assert plog.last_stable_offset == 2
    assert txnindex_files(plog.directory) == ["00000000000000000000.txnindex"]
    end(plog, P2, commit=False)  # 4
    assert plog.last_stable_offset == 5
    assert plog.collect_aborted_transactions(0, 10) == [
        AbortedTxn(P1, 0, at, 2), AbortedTxn(P2, 2, 4, 5)]
    # the range must reach the data and the marker must be at or after the start
    assert plog.collect_aborted_transactions(4, 10) == [AbortedTxn(P2, 2, 4, 5)]
    assert plog.collect_aborted_transactions(0, 2) == [AbortedTxn(P1, 0, 3, 2)]
    assert plog.collect_aborted_transactions(5, 10) == []


def offsets_of(records: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(records):
        h = read_batch_header(records, pos)
        out.append(h.base_offset)
        pos += h.size
    return out


def test_fetch_answers_for_the_isolation_level(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, batch(1))  # 0
    produce(plog, txn(P1, 0, 2))  # 1..2, aborted below
    produce(plog, txn(P2, 0))  # 3, left open
    end(plog, P1, commit=False)  # 4
    produce(plog, batch(1), hw=False)  # 5, above the high watermark
    assert (plog.high_watermark, plog.last_stable_offset, plog.log_end_offset) == (5, 3, 6)
    committed = plog.fetch(0, max_bytes=1 << 20, isolation=FetchIsolation.TXN_COMMITTED)
    assert offsets_of(committed.records) == [0, 1]  # stops at the open transaction
    assert (committed.high_watermark, committed.last_stable_offset,
            committed.log_start_offset) == (5, 3, 0)
    assert committed.aborted_transactions == (AbortedTxn(P1, 1, 4, 3),)
    uncommitted = plog.fetch(0, max_bytes=1 << 20, isolation=FetchIsolation.HIGH_WATERMARK)
    assert offsets_of(uncommitted.records) == [0, 1, 3, 4]
    assert uncommitted.aborted_transactions is None
    everything = plog.fetch(0, max_bytes=1 << 20, isolation=FetchIsolation.LOG_END)
    assert offsets_of(everything.records) == [0, 1, 3, 4, 5]
    # read_committed with nothing to return: no list at all; with data but no abort: an empty one.
    assert plog.fetch(3, max_bytes=1 << 20,
                      isolation=FetchIsolation.TXN_COMMITTED).aborted_transactions is None
    first = plog.fetch(0, max_bytes=1, isolation=FetchIsolation.TXN_COMMITTED)
    assert offsets_of(first.records) == [0] and first.aborted_transactions == ()


def test_fetch_out_of_range_carries_the_offsets(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, batch(3))
    plog.delete_records_before(1)
    for offset in (0, 4):
        with pytest.raises(FetchOffsetOutOfRangeError) as e:
            plog.fetch(offset, max_bytes=100)
        assert (e.value.high_watermark, e.value.log_start_offset) == (3, 1)


def test_lso_waits_for_the_marker_to_be_below_the_high_watermark(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, batch(1))
    produce(plog, txn(P1, 0, 2), hw=False)  # 1..2
    assert plog.high_watermark == 1 and plog.last_stable_offset == 1
    plog.update_high_watermark(3)
    assert plog.last_stable_offset == 1
    end(plog, P1, commit=True, hw=False)  # marker at 3
    plog.update_high_watermark(3)  # the marker itself is not yet covered
    assert plog.last_stable_offset == 1
    plog.update_high_watermark(4)
    assert plog.last_stable_offset == 4


def test_marker_without_open_transaction_only_updates_epochs(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, idem(P1, 0))
    end(plog, P1, epoch=2, commit=False, coord=5)
    entry = plog.producer_entry(P1)
    assert entry is not None
    assert (entry.producer_epoch, entry.coordinator_epoch) == (2, 5)
    assert plog.collect_aborted_transactions(0, 10) == []
    assert txnindex_files(plog.directory) == []
    end(plog, P3, commit=True)  # an unknown producer is fine too
    assert plog.producer_entry(P3) is not None
    assert plog.last_stable_offset == plog.log_end_offset


def test_coordinator_transactional_data_starts_a_transaction(open_log: OpenLog) -> None:
    # e.g. transactional offset commits, written by the group coordinator without sequences
    plog = open_log()
    data = batch(1, producer_id=P1, producer_epoch=0, is_transactional=True)
    plog.append_as_leader(data, leader_epoch=0, origin=AppendOrigin.COORDINATOR)
    plog.update_high_watermark(plog.log_end_offset)
    assert plog.last_stable_offset == 0
    end(plog, P1, commit=False)
    assert plog.collect_aborted_transactions(0, 5) == [AbortedTxn(P1, 0, 1, 2)]
    end(plog, P1, epoch=1, commit=True)
    with pytest.raises(InvalidProducerEpochError):
        plog.append_as_leader(data, leader_epoch=0, origin=AppendOrigin.COORDINATOR)


def test_active_producers_describes_transactions(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, txn(P1, 0, 2, epoch=3))
    produce(plog, idem(P2, 0))
    end(plog, P2, epoch=1, commit=True, coord=7)
    described = {p.producer_id: p for p in plog.active_producers()}
    p1, p2 = described[P1], described[P2]
    assert (p1.producer_epoch, p1.last_sequence, p1.current_txn_start_offset) == (3, 1, 0)
    assert (p2.producer_epoch, p2.coordinator_epoch, p2.current_txn_start_offset) == (1, 7, -1)
    assert p2.last_sequence == -1  # the epoch bump forgot the old batches


# -- fencing --------------------------------------------------------------------------------------


def test_marker_with_newer_epoch_fences_the_old_producer(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, txn(P1, 0, 2))
    end(plog, P1, epoch=1, commit=False)  # e.g. a timed-out transaction aborted with a bump
    assert plog.collect_aborted_transactions(0, 10) == [AbortedTxn(P1, 0, 2, 3)]
    leo = plog.log_end_offset
    with pytest.raises(InvalidProducerEpochError):
        produce(plog, txn(P1, 2))  # the zombie with epoch 0
    with pytest.raises(InvalidProducerEpochError):
        end(plog, P1, epoch=0, commit=True)  # a stale marker
    assert plog.log_end_offset == leo
    with pytest.raises(OutOfOrderSequenceError):
        produce(plog, txn(P1, 5, epoch=1))  # the new epoch has no batches: must start at 0
    produce(plog, txn(P1, 0, epoch=1))
    assert plog.last_stable_offset == leo


def test_older_coordinator_epoch_is_fenced(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, txn(P1, 0))
    end(plog, P1, commit=True, coord=4)
    produce(plog, txn(P1, 1))
    leo = plog.log_end_offset
    with pytest.raises(TransactionCoordinatorFencedError):
        end(plog, P1, commit=False, coord=3)
    assert plog.log_end_offset == leo and plog.last_stable_offset == leo - 1
    end(plog, P1, commit=False, coord=4)
    assert plog.last_stable_offset == plog.log_end_offset


def test_non_transactional_batch_during_transaction_is_refused(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, txn(P1, 0))
    with pytest.raises(InvalidTxnStateError) as err:
        produce(plog, idem(P1, 1))
    assert err.value.code.name == "invalid_txn_state"
    assert plog.log_end_offset == 1
    # a refused multi-batch request leaves no trace, including a transaction it would start
    with pytest.raises(InvalidTxnStateError):
        produce(plog, txn(P2, 0) + idem(P2, 1))
    assert plog.producer_entry(P2) is None and plog.log_end_offset == 1
    assert plog.producer_state.ongoing_txns == {0: P1}


def test_duplicate_transactional_batch_is_not_appended(open_log: OpenLog) -> None:
    plog = open_log()
    produce(plog, txn(P1, 0, 2))
    dup = produce(plog, txn(P1, 0, 2))
    assert dup.duplicate and plog.log_end_offset == 2
    assert plog.producer_state.ongoing_txns == {0: P1}


# -- segments, retention, snapshots ------------------------------------------------------------


def test_abort_spanning_segments_is_found_from_any_of_them(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    produce(plog, txn(P1, 0))
    seq = 1
    while len(plog.segments) < 3:
        produce(plog, batch(1))
        produce(plog, txn(P1, seq))
        seq += 1
    at = end(plog, P1, commit=False)
    last_base = plog.segments[-1].base_offset
    assert txnindex_files(plog.directory) == [f"{last_base:020d}.txnindex"]
    for start in (0, plog.segments[1].base_offset, at):
        assert plog.collect_aborted_transactions(start, at + 1) == [AbortedTxn(P1, 0, at, at + 1)]
    assert plog.collect_aborted_transactions(at + 1, at + 5) == []


def test_retention_past_transaction_start_keeps_it_open(open_log: OpenLog) -> None:
    plog = open_log(SMALL)
    produce(plog, txn(P1, 0))
    while len(plog.segments) < 3:
        produce(plog, batch(1))
    plog.delete_records_before(plog.segments[1].base_offset + 1)
    start = plog.log_start_offset
    assert start > 0 and len(plog.segments) == 2
    assert plog.last_stable_offset == start  # clamped to the log start
    at = end(plog, P1, commit=False)
    assert plog.collect_aborted_transactions(start, at + 1) == [AbortedTxn(P1, 0, at, at + 1)]
    assert plog.last_stable_offset == plog.log_end_offset


def test_deleted_segment_takes_its_txnindex_along(open_log: OpenLog) -> None:
    plog = open_log(dataclasses.replace(SMALL, file_delete_delay_ms=0))
    produce(plog, txn(P1, 0))
    end(plog, P1, commit=False)
    first = f"{plog.segments[0].base_offset:020d}.txnindex"
    assert txnindex_files(plog.directory) == [first]
    while len(plog.segments) < 3:
        produce(plog, batch(1))
    plog.delete_records_before(plog.segments[1].base_offset)
    plog.maybe_flush(START_MS + 10**9)
    assert first not in txnindex_files(plog.directory)
    assert not [n for n in os.listdir(plog.directory) if n.endswith(".deleted")]


def test_snapshot_round_trip_restores_open_transactions(tmp_path: Path) -> None:
    psm = ProducerStateManager(tmp_path)
    psm.replay(read_batch_header(_at(txn(P2, 0, 2), 10)))
    psm.replay(read_batch_header(_at(txn(P1, 0), 5)))
    psm.replay(read_batch_header(_at(idem(P3, 0), 12)))
    psm.producers[P3].coordinator_epoch = 9
    psm.take_snapshot(13)
    other = ProducerStateManager(tmp_path)
    assert other.load(13) == 13
    assert other.producers == psm.producers
    assert list(other.ongoing_txns.items()) == [(5, P1), (10, P2)]  # ordered by first offset
    assert other.first_unstable_offset() == 5
    assert other.producers[P3].coordinator_epoch == 9


def test_clean_reopen_keeps_lso_and_aborts(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "t-0"
    plog = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    produce(plog, txn(P1, 0))
    produce(plog, txn(P2, 0))
    end(plog, P1, commit=False, coord=2)
    while len(plog.segments) < 3:
        produce(plog, batch(1))
    produce(plog, txn(P3, 0))
    lso, aborted = plog.last_stable_offset, plog.collect_aborted_transactions(0, 10**6)
    plog.close()
    for lose_snapshots in (False, True):
        if lose_snapshots:
            for name in os.listdir(d):
                if name.endswith(".snapshot"):
                    (d / name).unlink()
        again = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
        assert again.last_stable_offset == lso == 1
        assert again.collect_aborted_transactions(0, 10**6) == aborted
        assert again.producer_entry(P1).coordinator_epoch == 2  # type: ignore[union-attr]
        again.close()
    again = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    end(again, P2, commit=True)
    assert again.last_stable_offset == again.segments[-1].base_offset + 1  # P3 still open
    end(again, P3, commit=False)
    assert again.last_stable_offset == again.log_end_offset
    again.close()


def test_torn_txnindex_on_clean_start_is_rebuilt(tmp_path: Path, clock: ManualClock) -> None:
    d = tmp_path / "t-0"
    plog = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    produce(plog, txn(P1, 0))
    produce(plog, txn(P2, 0))
    end(plog, P1, commit=False)
    end(plog, P2, commit=False)
    while len(plog.segments) < 3:
        produce(plog, batch(1))
    aborted = plog.collect_aborted_transactions(0, 10**6)
    plog.close()
    path = d / "00000000000000000000.txnindex"
    path.write_bytes(path.read_bytes()[:-5])
    again = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    assert again.collect_aborted_transactions(0, 10**6) == aborted
    assert path.stat().st_size == 68
    again.close()


def _at(data: bytes, offset: int) -> bytes:
    raw = bytearray(data)
    raw[0:8] = offset.to_bytes(8, "big")
    return bytes(raw)


# -- model-based properties -----------------------------------------------------------------------

PIDS = (P1, P2, P3)


@dataclass
class Model:
    """What the storage should know, computed from first principles."""

    leo: int = 0
    hw: int = 0
    ongoing: dict[int, int] = field(default_factory=dict)  # pid -> first offset
    completed: list[tuple[int, int, int]] = field(default_factory=list)  # pid, first, marker
    aborted: list[AbortedTxn] = field(default_factory=list)

    def data(self, pid: int | None, transactional: bool, n: int) -> None:
        if pid is not None and transactional and pid not in self.ongoing:
            self.ongoing[pid] = self.leo
        self.leo += n

    def end(self, pid: int, commit: bool) -> None:
        at = self.leo
        self.leo += 1
        first = self.ongoing.pop(pid, None)
        if first is None:
            return
        if not commit:
            others = sorted(self.ongoing.values())
            self.aborted.append(AbortedTxn(pid, first, at, others[0] if others else at + 1))
        self.completed.append((pid, first, at))

    def lso(self) -> int:
        unstable = list(self.ongoing.values())
        unstable += [first for _pid, first, at in self.completed if at >= self.hw]
        return min(min(unstable, default=self.hw), self.hw)

    def aborted_in(self, start: int, upper: int) -> list[AbortedTxn]:
        return [a for a in self.aborted if a.last_offset >= start and a.first_offset < upper]


ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("txn"), st.sampled_from(PIDS), st.integers(1, 3), st.booleans()),
        st.tuples(st.just("end"), st.sampled_from(PIDS), st.booleans(), st.booleans()),
        st.tuples(st.just("plain"), st.just(0), st.integers(1, 3), st.booleans()),
        st.tuples(st.just("idem"), st.sampled_from(PIDS), st.integers(1, 2), st.booleans()),
        st.tuples(st.just("hw"), st.just(0), st.just(0), st.just(True)),
    ),
    min_size=10,
    max_size=60,
)


def run_ops(plog: PartitionLog, ops: list[tuple[str, int, object, bool]]) -> list[Model]:
    """Apply ``ops``; returns the model after each op (checked against the log as we go)."""
    model = Model()
    seqs = dict.fromkeys(PIDS, 0)
    history = []
    for kind, pid, arg, advance in ops:
        if kind == "txn":
            n = int(arg)  # type: ignore[call-overload]
            produce(plog, txn(pid, seqs[pid], n), hw=False)
            seqs[pid] += n
            model.data(pid, True, n)
        elif kind == "idem":
            n = int(arg)  # type: ignore[call-overload]
            if pid in model.ongoing:
                with pytest.raises(InvalidTxnStateError):
                    produce(plog, idem(pid, seqs[pid], n), hw=False)
            else:
                produce(plog, idem(pid, seqs[pid], n), hw=False)
                seqs[pid] += n
                model.data(pid, False, n)
        elif kind == "plain":
            n = int(arg)  # type: ignore[call-overload]
            produce(plog, batch(n), hw=False)
            model.data(None, False, n)
        elif kind == "end":
            end(plog, pid, commit=bool(arg), hw=False)
            model.end(pid, bool(arg))
        if advance:
            plog.update_high_watermark(plog.log_end_offset)
            model.hw = model.leo
        assert plog.log_end_offset == model.leo
        assert plog.last_stable_offset == model.lso()
        history.append(Model(model.leo, model.hw, dict(model.ongoing), list(model.completed),
                             list(model.aborted)))
    return history


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy, data=st.data())
def test_lso_and_aborted_match_model(
    tmp_path: Path, ops: list[tuple[str, int, object, bool]], data: st.DataObject
) -> None:
    clock = ManualClock(START_MS)
    d = Path(tempfile.mkdtemp(dir=tmp_path)) / "t-0"
    plog = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    try:
        model = run_ops(plog, ops)[-1]
        event(f"segments={min(len(plog.segments), 4)} aborts={min(len(model.aborted), 3)}")
        assert plog.collect_aborted_transactions(0, 10**9) == model.aborted
        for _ in range(5):
            start = data.draw(st.integers(0, model.leo + 1))
            upper = data.draw(st.integers(start, model.leo + 2))
            assert plog.collect_aborted_transactions(start, upper) == model.aborted_in(
                start, upper
            )
        # .txnindex files exist exactly for the segments holding an indexed abort
        bases = [s.base_offset for s in plog.segments]
        want = sorted({max(b for b in bases if b <= a.last_offset) for a in model.aborted})
        assert txnindex_files(d) == [f"{b:020d}.txnindex" for b in want]
    finally:
        plog._close_handles()


def _batch_layout(path: Path) -> list[tuple[int, int, int]]:
    """(position, size, next offset) of each batch in a segment file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.append((pos, h.size, h.next_offset))
        pos += h.size
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy, data=st.data())
def test_crash_recovery_matches_model_of_surviving_prefix(
    tmp_path: Path, ops: list[tuple[str, int, object, bool]], data: st.DataObject
) -> None:
    clock = ManualClock(START_MS)
    d = Path(tempfile.mkdtemp(dir=tmp_path)) / "t-0"
    plog = PartitionLog.open(d, "t", 0, SMALL, clock, recover=False)
    history = run_ops(plog, ops)
    bases = [s.base_offset for s in plog.segments]
    crash(plog)
    everything = data.draw(st.booleans(), label="re-validate every segment")
    if everything:
        (d / RECOVERY_POINT_CHECKPOINT).unlink(missing_ok=True)
        victim_base = data.draw(st.sampled_from(bases))
        if data.draw(st.booleans(), label="lose txn indexes"):
            for name in txnindex_files(d):
                (d / name).unlink()
    else:
        victim_base = bases[-1]
    if data.draw(st.booleans(), label="lose snapshots"):
        for name in os.listdir(d):
            if name.endswith(".snapshot"):
                (d / name).unlink()
    victim = d / f"{victim_base:020d}.log"
    layout = _batch_layout(victim)
    raw = victim.read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    # Every byte from the cut on is flipped: damage that recovery must detect even in an older
    # segment (a shorter file alone would look like a complete, shorter segment).
    victim.write_bytes(raw[:cut] + bytes(b ^ 0xFF for b in raw[cut:]))
    survivors = [nxt for pos, size, nxt in layout if pos + size <= cut]
    if cut == len(raw):
        expected_end = history[-1].leo
    else:
        expected_end = survivors[-1] if survivors else victim_base

    again = PartitionLog.open(d, "t", 0, SMALL, clock, recover=True)
    try:
        assert again.log_end_offset == again.high_watermark == expected_end
        # the model after the last op whose batches all survived; HW is the log end now
        kept = [m for m in history if m.leo <= expected_end]
        model = kept[-1] if kept else Model()
        assert model.leo == expected_end
        model.hw = expected_end
        event(f"surviving aborts={min(len(model.aborted), 2)} open={min(len(model.ongoing), 2)}")
        assert again.last_stable_offset == model.lso()
        assert again.collect_aborted_transactions(0, 10**9) == model.aborted
        # the recovered log carries on: every open transaction can still be aborted
        for pid in sorted(model.ongoing, key=model.ongoing.__getitem__):
            end(again, pid, commit=False)
            model.end(pid, False)
        model.hw = again.high_watermark
        assert again.last_stable_offset == model.lso() == again.log_end_offset
        assert again.collect_aborted_transactions(0, 10**9) == model.aborted
    finally:
        again._close_handles()
