from __future__ import annotations

import os
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import START_MS

from odradek.clock import ManualClock
from odradek.errors import InvalidRecordError
from odradek.protocol.records import (
    ATTR_DELETE_HORIZON,
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    BatchHeader,
    SimpleRecord,
    decode_records,
    encode_batch,
    encode_control_batch,
    read_batch_header,
)
from odradek.storage.cleaner import CleanerConfig, LogCleaner, read_cleaner_checkpoint
from odradek.storage.cleaner_task import TaskState
from odradek.storage.log import AppendOrigin, PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import LogManager
from odradek.storage.offset_map import OffsetMap, Pacer, Throttler

COMPACT = LogConfig(cleanup_policy="compact", segment_bytes=600, index_interval_bytes=64,
                    delete_retention_ms=1000, min_cleanable_dirty_ratio=0.0)
COMPACT_BIG = LogConfig(cleanup_policy="compact", segment_bytes=1 << 20,
                        min_cleanable_dirty_ratio=0.0)

# -- helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes | None], ...] = ()


def batches_of(plog: PartitionLog) -> list[tuple[BatchHeader, bytes]]:
    """Every batch readable from the log, in order."""
    out: list[tuple[BatchHeader, bytes]] = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        data = plog.read(offset, max_bytes=1 << 20).records
        if not data:
            break
        pos = 0
        while pos < len(data):
            h = read_batch_header(data, pos)
            out.append((h, data[pos : pos + h.size]))
            pos += h.size
            offset = h.next_offset
    return out


def records_of(plog: PartitionLog) -> list[Rec]:
    out = []
    for _h, raw in batches_of(plog):
        for r in decode_records(raw):
            out.append(Rec(r.offset, r.key, r.value, r.timestamp, r.headers))
    return out


def append(plog: PartitionLog, items: list[tuple[bytes | None, bytes | None]], *,
           ts: int = START_MS, compression: int = COMPRESSION_NONE, **kw: object) -> None:
    recs = [SimpleRecord(v, key=k, timestamp=ts + i, headers=(("h", k),) if k else ())
            for i, (k, v) in enumerate(items)]
    plog.append_as_leader(encode_batch(recs, compression=compression, **kw),  # type: ignore[arg-type]
                          leader_epoch=0)


def fill(plog: PartitionLog, items: list[tuple[bytes, bytes | None]], per_batch: int = 1,
         *, ts: int = START_MS, compression: int = COMPRESSION_NONE) -> None:
    for i in range(0, len(items), per_batch):
        append(plog, list(items[i : i + per_batch]), ts=ts + i, compression=compression)
    plog.roll()
    plog.update_high_watermark(plog.log_end_offset)


def expected_after(before: list[Rec], end: int, *, drop_tombstones: bool = False) -> list[Rec]:
    """The model: below ``end`` only the last record per key survives (tombstones too unless
    expired); at and past ``end`` everything."""
    last: dict[bytes | None, int] = {}
    for r in before:
        if r.offset < end:
            last[r.key] = r.offset
    return [
        r for r in before
        if r.offset >= end
        or (r.key is not None and last[r.key] == r.offset
            and not (drop_tombstones and r.value is None))
    ]


def cleaner_for(*logs: PartitionLog, clock: ManualClock, **kw: object) -> LogCleaner:
    kw.setdefault("dedupe_buffer_size", 1 << 20)
    return LogCleaner(lambda: list(logs), CleanerConfig(**kw), clock)  # type: ignore[arg-type]


def open_compact(tmp_path: Path, clock: ManualClock, config: LogConfig = COMPACT,
                 name: str = "t-0") -> PartitionLog:
    return PartitionLog.open(tmp_path / name, "t", 0, config, clock, recover=False)


# -- offset map -------------------------------------------------------------------------------


def test_offset_map_put_get_update_and_full() -> None:
    m = OffsetMap(24 * 11, load_factor=0.9)  # 11 slots (prime) -> 9 entries
    assert m.slots == 11 and m.max_entries == 9
    for i in range(9):
        assert m.put(b"k%d" % i, i * 10)
    assert m.size == 9
    assert not m.put(b"new", 100)  # full: a new key is refused, nothing changes
    assert m.get(b"new") == -1 and m.size == 9
    assert m.put(b"k3", 999)  # an existing key may still move
    assert m.get(b"k3") == 999 and m.get(b"k4") == 40 and m.get(b"k8") == 80
    m.clear()
    assert m.size == 0 and m.get(b"k3") == -1
    assert m.put(b"", 0) and m.get(b"") == 0


def test_offset_map_needs_two_slots() -> None:
    with pytest.raises(ValueError):
        OffsetMap(30)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=6), st.integers(0, 2**40)), max_size=200))
def test_offset_map_matches_dict(pairs: list[tuple[bytes, int]]) -> None:
    m = OffsetMap(24 * 1000)
    model: dict[bytes, int] = {}
    for k, v in pairs:
        assert m.put(k, v)
        model[k] = v
    assert m.size == len(model)
    for k, v in model.items():
        assert m.get(k) == v
    assert m.get(b"not-a-key-in-any-example") == -1


# -- keyless records --------------------------------------------------------------------------


def test_keyless_record_rejected_on_compacted_topic(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    with pytest.raises(InvalidRecordError):
        append(plog, [(b"a", b"1"), (None, b"2")])
    with pytest.raises(InvalidRecordError):
        append(plog, [(None, b"x")], compression=COMPRESSION_GZIP)
    assert plog.log_end_offset == 0 and plog.active_segment.size == 0
    append(plog, [(b"a", b"1"), (b"b", None)])  # keyed values and tombstones are fine
    assert plog.log_end_offset == 2
    # The policy is read at append time: a switch to delete lifts the rule.
    plog.update_config(LogConfig(cleanup_policy="delete"))
    append(plog, [(None, b"x")])
    assert plog.log_end_offset == 3
    plog.update_config(LogConfig(cleanup_policy="delete,compact"))
    with pytest.raises(InvalidRecordError):
        append(plog, [(None, b"x")])


# -- the model property -----------------------------------------------------------------------

_ops = st.lists(
    st.tuples(st.integers(0, 9), st.one_of(st.none(), st.binary(min_size=1, max_size=30))),
    min_size=1, max_size=120,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops, per_batch=st.integers(1, 5), segment_bytes=st.integers(400, 2000),
       tiny_map=st.booleans(),
       compression=st.sampled_from([COMPRESSION_NONE, COMPRESSION_GZIP, COMPRESSION_ZSTD]))
def test_clean_matches_model(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int,
                             bytes | None]], per_batch: int, segment_bytes: int, tiny_map: bool,
                             compression: int) -> None:
    clock = ManualClock(START_MS)
    config = LogConfig(cleanup_policy="compact", segment_bytes=segment_bytes,
                       index_interval_bytes=50, delete_retention_ms=10_000)
    plog = open_compact(tmp_path_factory.mktemp("m"), clock, config)
    items = [(b"key-%d" % k, v) for k, v in ops]
    fill(plog, items, per_batch, compression=compression)
    before = records_of(plog)
    raw_before = batches_of(plog)
    cleaner = cleaner_for(plog, clock=clock,
                          dedupe_buffer_size=24 * 5 if tiny_map else 1 << 20)
    passes = 0
    while True:
        result = cleaner.clean_log(plog, clock.milliseconds())
        assert result is not None and result.error is None
        passes += 1
        end = result.end_offset
        after = records_of(plog)
        # Nothing at or past the cleaning point changed, byte for byte.
        assert [b for h, b in batches_of(plog) if h.base_offset >= end] == [
            b for h, b in raw_before if h.base_offset >= end
        ]
        assert after == expected_after(before, end)
        assert read_cleaner_checkpoint(plog.directory) == end
        if end >= plog.active_segment.base_offset:
            break
        assert passes < 50
    if tiny_map and len({k for k, _ in items}) > 4:
        assert passes > 1
    # Order by offset is kept and every surviving record is what was written.
    offsets = [r.offset for r in after]
    assert offsets == sorted(offsets)
    assert set(after) <= set(before)
    # Once delete.retention.ms has passed, one more pass drops every tombstone.
    clock.advance(config.delete_retention_ms)
    result = cleaner.clean_log(plog, clock.milliseconds())
    assert result is not None and result.error is None
    after = records_of(plog)
    assert after == expected_after(before, end, drop_tombstones=True)
    # The log reads the same after an unclean restart.
    plog._close_handles()
    again = PartitionLog.open(plog.directory, "t", 0, config, clock, recover=True)
    assert records_of(again) == after
    again.close()


def test_multi_pass_with_tiny_map(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    items = [(b"k%02d" % (i % 20), b"v%d" % i) for i in range(100)]
    fill(plog, items)
    before = records_of(plog)
    cleaner = cleaner_for(plog, clock=clock, dedupe_buffer_size=24 * 7)  # 6 keys per pass
    ends = []
    while plog.active_segment.base_offset > (ends[-1] if ends else 0):
        result = cleaner.clean_log(plog, clock.milliseconds())
        assert result is not None and result.swapped
        assert result.stats.keys_mapped <= 6
        ends.append(result.end_offset)
    assert len(ends) >= 4 and ends == sorted(ends)
    assert records_of(plog) == expected_after(before, 100)
    assert [r.value for r in records_of(plog)] == [b"v%d" % i for i in range(80, 100)]


# -- tombstones -------------------------------------------------------------------------------


def test_tombstones_expire_after_delete_retention(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"a", b"1"), (b"b", b"2"), (b"a", None), (b"c", b"3"), (b"b", b"4")])
    cleaner = cleaner_for(plog, clock=clock)
    t0 = clock.milliseconds()
    result = cleaner.clean_log(plog, t0)
    assert result is not None and result.end_offset == 5
    recs = records_of(plog)
    assert [(r.key, r.value) for r in recs] == [(b"a", None), (b"c", b"3"), (b"b", b"4")]
    (tomb_batch,) = [h for h, raw in batches_of(plog) if h.base_offset == 2]
    assert tomb_batch.attributes & ATTR_DELETE_HORIZON
    assert tomb_batch.base_timestamp == t0 + COMPACT.delete_retention_ms
    assert recs[0].timestamp == START_MS + 2  # the record keeps its own timestamp
    others = [h for h, raw in batches_of(plog) if h.base_offset != 2]
    assert not any(h.attributes & ATTR_DELETE_HORIZON for h in others)
    # Before the horizon a pass keeps it; the cleaner is not even due.
    clock.advance(999)
    assert cleaner.grab_filthiest(clock.milliseconds()) is None
    cleaner.clean_log(plog, clock.milliseconds())
    assert [r.key for r in records_of(plog)] == [b"a", b"c", b"b"]
    # At the horizon the cleaner is due by itself and drops it.
    clock.advance(1)
    result = cleaner.clean_once(clock.milliseconds())
    assert result is not None and result.swapped
    assert [(r.offset, r.key, r.value) for r in records_of(plog)] == [
        (3, b"c", b"3"), (4, b"b", b"4")
    ]
    assert cleaner.grab_filthiest(clock.milliseconds()) is None


def test_tombstone_newer_than_cleaning_point_is_untouched(tmp_path: Path,
                                                           clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"a", b"1"), (b"b", b"2")])
    append(plog, [(b"a", None)])  # in the active segment: never cleaned
    plog.update_high_watermark(plog.log_end_offset)
    clock.advance(10_000)
    cleaner = cleaner_for(plog, clock=clock)
    cleaner.clean_log(plog, clock.milliseconds())
    clock.advance(10_000)
    cleaner.clean_log(plog, clock.milliseconds())
    assert [(r.key, r.value) for r in records_of(plog)] == [(b"a", b"1"), (b"b", b"2"),
                                                             (b"a", None)]


# -- choosing logs ----------------------------------------------------------------------------


def test_min_compaction_lag_holds_back_recent_segments(tmp_path: Path,
                                                       clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact", segment_bytes=600,
                       min_compaction_lag_ms=60_000, min_cleanable_dirty_ratio=0.0)
    plog = open_compact(tmp_path, clock, config)
    now = clock.milliseconds()
    fill(plog, [(b"a", b"old1"), (b"a", b"old2")], ts=now - 120_000)
    fill(plog, [(b"a", b"new1"), (b"a", b"new2")], ts=now - 1_000)
    cleaner = cleaner_for(plog, clock=clock)
    ltc = cleaner.log_to_clean(plog, now)
    assert ltc is not None and ltc.first_uncleanable_offset == 2
    result = cleaner.clean_log(plog, now)
    assert result is not None and result.end_offset == 2
    assert [r.value for r in records_of(plog)] == [b"old2", b"new1", b"new2"]
    clock.advance(60_000)
    result = cleaner.clean_log(plog, clock.milliseconds())
    assert result is not None and result.end_offset == 4
    assert [r.value for r in records_of(plog)] == [b"new2"]


def test_dirty_ratio_picks_the_dirtiest_log(tmp_path: Path, clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact", segment_bytes=100_000,
                       min_cleanable_dirty_ratio=0.5)
    a = PartitionLog.open(tmp_path / "a-0", "a", 0, config, clock, recover=False)
    b = PartitionLog.open(tmp_path / "b-0", "b", 0, config, clock, recover=False)
    plain = PartitionLog.open(tmp_path / "c-0", "c", 0, LogConfig(), clock, recover=False)
    for plog in (a, b):
        fill(plog, [(b"k%d" % (i % 3), b"v") for i in range(30)])
    fill(plain, [(b"k", b"v")] * 30)
    cleaner = cleaner_for(a, b, plain, clock=clock)
    now = clock.milliseconds()
    first = cleaner.clean_once(now)
    assert first is not None and first.swapped
    assert cleaner.dirty_logs(now)[0].cleanable_ratio == 1.0  # the other one
    second = cleaner.clean_once(now)
    assert second is not None and {first.topic, second.topic} == {"a", "b"}
    assert cleaner.clean_once(now) is None  # both clean now; "c" is not compacted
    # A little new dirt is below the 0.5 ratio; a lot is above it.
    fill(a, [(b"k0", b"w")])
    assert cleaner.grab_filthiest(clock.milliseconds()) is None
    fill(b, [(b"k%d" % i, b"w") for i in range(30)])
    ratios = {c.topic: c.cleanable_ratio for c in cleaner.dirty_logs(clock.milliseconds())}
    assert ratios["a"] < 0.5 < ratios["b"]
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None and task.topic == "b"
    assert cleaner.grab_filthiest(clock.milliseconds()) is None  # one cleaner thread: busy
    task.run()
    assert cleaner.complete(task).swapped


def test_max_compaction_lag_forces_cleaning(tmp_path: Path, clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact", segment_bytes=100_000,
                       min_cleanable_dirty_ratio=0.99, max_compaction_lag_ms=60_000)
    plog = open_compact(tmp_path, clock, config)
    now = clock.milliseconds()
    fill(plog, [(b"k%d" % i, b"v") for i in range(20)], ts=now)
    cleaner = cleaner_for(plog, clock=clock)
    cleaner.clean_log(plog, now)
    fill(plog, [(b"k0", b"w")], ts=now)  # ratio far below 0.99
    assert cleaner.grab_filthiest(now) is None
    clock.advance(60_001)
    ltc = cleaner.log_to_clean(plog, clock.milliseconds())
    assert ltc is not None and ltc.need_compaction_now
    result = cleaner.clean_once(clock.milliseconds())
    assert result is not None and result.swapped
    assert [r.key for r in records_of(plog)][-1] == b"k0" and len(records_of(plog)) == 20


def test_max_compaction_lag_rolls_the_active_segment(tmp_path: Path, clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact", max_compaction_lag_ms=5_000)
    plog = open_compact(tmp_path, clock, config)
    append(plog, [(b"a", b"1")])
    clock.advance(5_001)
    plog.apply_retention(clock.milliseconds())
    assert len(plog.segments) == 2 and plog.segments[0].size > 0
    assert config.max_segment_ms == 5_000 and LogConfig().max_segment_ms == 604800000


def test_retention_does_not_delete_compact_only_segments(tmp_path: Path,
                                                         clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact", retention_ms=1000, retention_bytes=10)
    plog = open_compact(tmp_path, clock, config)
    fill(plog, [(b"a", b"1")], ts=clock.milliseconds() - 100_000)
    assert plog.apply_retention(clock.milliseconds()) == 0
    plog.update_config(LogConfig(cleanup_policy="compact,delete", retention_ms=1000))
    assert plog.apply_retention(clock.milliseconds()) == 1


# -- batches ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codec", [COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]
)
def test_compressed_batches_keep_their_codec(tmp_path: Path, clock: ManualClock,
                                             codec: int) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 4), b"value-%d" % i * 5) for i in range(24)], per_batch=6,
         compression=codec)
    before = records_of(plog)
    cleaner_for(plog, clock=clock).clean_log(plog, clock.milliseconds())
    assert records_of(plog) == expected_after(before, 24)
    kept = batches_of(plog)
    assert kept and all(h.compression == codec for h, _ in kept)
    last = kept[-1][0]
    assert (last.base_offset, last.last_offset_delta, last.records_count) == (18, 5, 4)


def test_batch_fields_survive_rewriting(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    append(plog, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], producer_id=7, producer_epoch=3,
           base_sequence=0)
    append(plog, [(b"a", b"4")], producer_id=7, producer_epoch=3, base_sequence=3)
    plog.roll()
    plog.update_high_watermark(plog.log_end_offset)
    cleaner_for(plog, clock=clock).clean_log(plog, clock.milliseconds())
    (h1, raw1), (h2, _raw2) = batches_of(plog)
    assert (h1.base_offset, h1.last_offset_delta, h1.records_count) == (0, 2, 2)
    assert (h1.producer_id, h1.producer_epoch, h1.base_sequence) == (7, 3, 0)
    assert h1.partition_leader_epoch == 0 and h1.last_sequence == 2
    assert [r.offset for r in decode_records(raw1)] == [1, 2]
    assert h2.base_offset == 3


def test_last_batch_of_a_producer_stays_as_an_empty_batch(tmp_path: Path,
                                                           clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    append(plog, [(b"a", b"1"), (b"b", b"2")], producer_id=5, producer_epoch=0, base_sequence=0)
    append(plog, [(b"a", b"3"), (b"b", b"4")])  # supersedes the whole producer batch
    append(plog, [(b"c", b"x")], producer_id=6, producer_epoch=0, base_sequence=0)
    append(plog, [(b"c", b"y")], producer_id=6, producer_epoch=0, base_sequence=1)
    append(plog, [(b"c", b"z")])
    plog.roll()
    plog.update_high_watermark(plog.log_end_offset)
    cleaner = cleaner_for(plog, clock=clock)
    cleaner.clean_log(plog, clock.milliseconds())
    headers = [h for h, _ in batches_of(plog)]
    empty = [h for h in headers if h.records_count == 0]
    # Producer 5's only batch and producer 6's last batch stay empty; 6's first one goes.
    assert [(h.producer_id, h.base_offset, h.last_offset_delta, h.base_sequence)
            for h in empty] == [(5, 0, 1, 0), (6, 5, 0, 1)]
    assert [(r.key, r.value) for r in records_of(plog)] == [(b"a", b"3"), (b"b", b"4"),
                                                             (b"c", b"z")]
    # A retry of producer 5's batch is still recognised after a restart that replays the log.
    plog._close_handles()
    for snap in plog.directory.glob("*.snapshot"):
        snap.unlink()
    again = PartitionLog.open(plog.directory, "t", 0, COMPACT, clock, recover=True)
    retry = encode_batch([SimpleRecord(b"1", key=b"a", timestamp=START_MS),
                          SimpleRecord(b"2", key=b"b", timestamp=START_MS + 1)],
                         producer_id=5, producer_epoch=0, base_sequence=0)
    info = again.append_as_leader(retry, leader_epoch=0)
    assert info.duplicate and info.first_offset == 0
    # Cleaning again keeps the empty batch while it is the producer's last.
    cleaner_for(again, clock=clock).clean_log(again, clock.milliseconds())
    assert [h.records_count for h, _ in batches_of(again)][:1] == [0]
    again.close()


def test_control_batches_are_kept(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    append(plog, [(b"a", b"1")], producer_id=9, producer_epoch=0, base_sequence=0,
           is_transactional=True)
    marker = encode_control_batch(9, 0, commit=True, coordinator_epoch=1, timestamp=START_MS)
    plog.append_as_leader(marker, leader_epoch=0, origin=AppendOrigin.COORDINATOR)
    append(plog, [(b"a", b"2")])
    plog.roll()
    plog.update_high_watermark(plog.log_end_offset)
    cleaner_for(plog, clock=clock).clean_log(plog, clock.milliseconds())
    headers = [h for h, _ in batches_of(plog)]
    assert [(h.base_offset, h.is_control) for h in headers] == [(0, False), (1, True),
                                                                (2, False)]
    assert headers[0].records_count == 0  # the producer's last data batch, emptied


# -- reading while cleaning, cancelling, failing ------------------------------------------------


def test_reads_during_cleaning_see_a_consistent_log(tmp_path: Path, clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact", segment_bytes=400, index_interval_bytes=40,
                       min_cleanable_dirty_ratio=0.0)
    plog = open_compact(tmp_path, clock, config)
    fill(plog, [(b"k%d" % (i % 5), b"v%d" % i) for i in range(60)])
    before = records_of(plog)
    cleaner = LogCleaner(lambda: [plog], CleanerConfig(io_buffer_size=128), clock)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    steps = 0
    while not task.step(64):
        steps += 1
        assert records_of(plog) == before  # the old segments until the swap
        for offset in range(0, 60, 7):
            got = plog.read(offset, max_bytes=10_000).records
            assert decode_records(got)[0].offset <= offset
        if steps == 3:  # the producer keeps appending meanwhile
            append(plog, [(b"new", b"x")])
            before = records_of(plog)
    assert steps > 5 and task.state is TaskState.DONE
    result = cleaner.complete(task)
    assert result.swapped
    assert records_of(plog) == expected_after(before, result.end_offset)
    assert records_of(plog)[-1].key == b"new"


def test_cancel_discards_files_and_changes_nothing(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 3), b"v%d" % i) for i in range(30)])
    before = records_of(plog)
    cleaner = cleaner_for(plog, clock=clock, io_buffer_size=100)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    while not any(n.endswith(".cleaned") for n in os.listdir(plog.directory)):
        assert not task.step(50)
    task.cancel()
    assert task.step(50) and task.state is TaskState.CANCELLED
    assert not any(n.endswith(".cleaned") for n in os.listdir(plog.directory))
    result = cleaner.complete(task)
    assert not result.swapped and result.error == "cancelled"
    assert records_of(plog) == before
    assert cleaner.clean_once(clock.milliseconds()) is not None  # not marked uncleanable


def test_corrupt_segment_fails_the_pass_and_marks_the_log(tmp_path: Path,
                                                          clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 3), b"v%d" % i) for i in range(30)])
    first = plog.log_segments[0]
    with open(first.log_path, "r+b") as f:  # flip a byte inside the first record batch
        f.seek(70)
        b = f.read(1)
        f.seek(70)
        f.write(bytes([b[0] ^ 0xFF]))
    cleaner = cleaner_for(plog, clock=clock)
    result = cleaner.clean_once(clock.milliseconds())
    assert result is not None and not result.swapped and "CRC" in (result.error or "")
    assert not any(n.endswith(".cleaned") for n in os.listdir(plog.directory))
    assert cleaner.uncleanable_logs() == {("t", 0): result.error}
    assert cleaner.clean_once(clock.milliseconds()) is None


def test_retention_during_cleaning_swaps_the_groups_left(tmp_path: Path,
                                                         clock: ManualClock) -> None:
    config = LogConfig(cleanup_policy="compact,delete", segment_bytes=300,
                       min_cleanable_dirty_ratio=0.0, retention_ms=-1)
    plog = open_compact(tmp_path, clock, config)
    fill(plog, [(b"k%d" % (i % 4), b"v%d" % i) for i in range(40)])
    cleaner = cleaner_for(plog, clock=clock)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None and task.run() is TaskState.DONE
    assert len(task.groups) > 2
    plog.delete_records_before(plog.log_segments[1].base_offset)  # drops the first segment
    before = records_of(plog)
    result = cleaner.complete(task)
    assert result.swapped and result.segments_written == len(task.groups) - 1
    assert records_of(plog) == expected_after(before, result.end_offset)
    assert not any(n.endswith((".cleaned", ".swap")) for n in os.listdir(plog.directory))


def test_cleaned_log_recovers_after_switching_to_delete(tmp_path: Path,
                                                        clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 3), b"v%d" % i) for i in range(30)])
    cleaner_for(plog, clock=clock).clean_log(plog, clock.milliseconds())
    after = records_of(plog)
    plog._close_handles()
    # Offsets now have gaps; recovery of a 'delete' log must still accept them.
    again = PartitionLog.open(plog.directory, "t", 0, LogConfig(), clock, recover=True)
    assert records_of(again) == after
    again.close()


# -- throttling, manager ----------------------------------------------------------------------


def test_throttler_token_bucket() -> None:
    clock = ManualClock(0)
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(round(s * 1000))

    t = Throttler(1000.0, clock, sleep)
    assert t.acquire(1000) == 0.0  # one second's burst
    assert t.acquire(500) == pytest.approx(0.5)
    assert t.acquire(500) == pytest.approx(0.5)
    assert slept == [pytest.approx(0.5), pytest.approx(0.5)]
    clock.advance(10_000)  # idle time refills at most one second's worth
    assert t.acquire(1000) == 0.0 and t.acquire(1) > 0
    free = Throttler(float("inf"), clock)
    assert free.acquire(10**12) == 0.0
    report_only = Throttler(100.0, clock)
    report_only.acquire(100)
    assert report_only.acquire(50) == pytest.approx(0.5)


def test_cleaning_is_throttled(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 3), b"v" * 50) for i in range(40)])
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        clock.advance(round(s * 1000))

    cleaner = LogCleaner(lambda: [plog], CleanerConfig(io_max_bytes_per_second=1000.0,
                                                       io_buffer_size=256), clock, sleep=sleep)
    start = clock.monotonic_ms()
    result = cleaner.clean_once(clock.milliseconds())
    assert result is not None and result.swapped
    moved = result.stats.bytes_read + result.stats.bytes_written
    elapsed_s = (clock.monotonic_ms() - start) / 1000
    assert moved > 3000 and waits
    assert elapsed_s == pytest.approx((moved - 1000) / 1000, abs=0.05)
    # Without a sleep function, step() reports the wait instead of blocking.
    fill(plog, [(b"k%d" % (i % 3), b"w" * 50) for i in range(40)])
    cleaner2 = LogCleaner(lambda: [plog], CleanerConfig(io_max_bytes_per_second=1000.0,
                                                        io_buffer_size=256), clock)
    task = cleaner2.grab_filthiest(clock.milliseconds())
    assert task is not None
    while not task.step(10_000):
        assert task.wait_s > 0
        clock.advance(round(task.wait_s * 1000))
    assert cleaner2.complete(task).swapped


def test_pacer_steps_aside_only_while_kept_waiting() -> None:
    clock = ManualClock(0)
    cpu = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock.advance(round(s * 1000))

    pacer = Pacer(clock, sleep, lambda: cpu[0], slice_ms=2, share=0.2)
    # Running flat out (CPU time keeps up with the wall clock): never a pause.
    for _ in range(10):
        clock.advance(1)
        cpu[0] += 0.001
        pacer.tick()
    assert slept == []
    # Half of a slice spent waiting for the GIL or a core: pause so that the thread uses at
    # most a fifth of the time (4 ms per 1 ms of CPU), and again while it keeps waiting.
    for _ in range(3):
        clock.advance(2)
        cpu[0] += 0.001
        pacer.tick()
    assert slept == [pytest.approx(0.004)] * 3
    assert pacer.pauses == 3 and pacer.paced_s == pytest.approx(0.012)
    # Not a whole slice yet: no look at the clocks' difference at all.
    clock.advance(1)
    pacer.tick()
    assert pacer.pauses == 3
    # A producer's requests come in bursts: after waiting, even slices without waiting pause
    # until hold_ms have passed; then flat out again.
    held = Pacer(clock, sleep, lambda: cpu[0], slice_ms=2, share=0.2, hold_ms=10)
    for cpu_ms in (1, 2, 2, 2):
        clock.advance(2)
        cpu[0] += cpu_ms / 1000
        held.tick()
    assert held.pauses == 2 and slept[-2:] == [pytest.approx(0.004), pytest.approx(0.008)]
    # Without a sleep or a CPU-time function it is inert.
    for inert in (Pacer(clock, None, lambda: 0.0, slice_ms=2, share=0.2),
                  Pacer(clock, sleep, None, slice_ms=2, share=0.2),
                  Pacer(clock, sleep, lambda: 0.0, slice_ms=2, share=1.0)):
        assert not inert.active
        clock.advance(10)
        inert.tick()
    assert len(slept) == 5


class _TickingClock(ManualClock):
    """Every monotonic reading moves the clock on by a millisecond: time passes as work does."""

    def monotonic_ns(self) -> int:
        self.advance(1)
        return super().monotonic_ns()


def test_a_pass_over_big_batches_pauses_inside_them(tmp_path: Path) -> None:
    clock = _TickingClock(START_MS)
    plog = open_compact(tmp_path, clock, COMPACT_BIG)
    # One batch, far longer than a pacer slice (and offset deltas of two varint bytes).
    items = [(b"k%03d" % (i % 300), b"v%d" % i) for i in range(3000)]
    fill(plog, items, per_batch=3000)
    before = records_of(plog)
    pauses: list[float] = []

    def sleep(s: float) -> None:
        pauses.append(s)
        clock.advance(round(s * 1000))

    cleaner = LogCleaner(lambda: [plog], CleanerConfig(dedupe_buffer_size=1 << 20), clock,
                         sleep=sleep, cpu_time=lambda: clock.monotonic_ms() / 2000)
    result = cleaner.clean_log(plog, clock.milliseconds())
    assert result is not None and result.swapped
    assert records_of(plog) == expected_after(before, result.end_offset)
    # Between batches the pass has three chances to pause (before mapping, after the one
    # batch's mapping, after its copy), and a pause needs two readings of the ticking clock:
    # more pauses than two mean the record loops paused inside the batch.
    assert len(pauses) > 2 and result.stats.paced_s == pytest.approx(sum(pauses))


def test_log_manager_cleans_and_forgets(tmp_path: Path, clock: ManualClock) -> None:
    manager = LogManager(tmp_path, clock, LogConfig())
    manager.startup()
    plog = manager.create_log("c", 0, COMPACT)
    manager.create_log("d", 0, LogConfig())
    assert manager.clean_once(clock.milliseconds()) is None
    fill(plog, [(b"k", b"v%d" % i) for i in range(10)])
    result = manager.clean_once(clock.milliseconds())
    assert result is not None and (result.topic, result.swapped) == ("c", True)
    assert [r.value for r in records_of(plog)] == [b"v9"]
    fill(plog, [(b"k", b"w%d" % i) for i in range(10)])
    task = manager.cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    manager.delete_log("c", 0)
    assert task.state is TaskState.CANCELLED and manager.cleaner.in_flight == []
    manager.shutdown()
    manager2 = LogManager(tmp_path, clock, LogConfig())
    manager2.startup({"c": COMPACT})
    assert manager2.get_log("c", 0) is None and manager2.clean_once(clock.milliseconds()) is None
    manager2.shutdown()


def test_checkpoint_out_of_range_resets_to_log_start(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k", b"v%d" % i) for i in range(10)])
    (plog.directory / "cleaner-offset-checkpoint").write_text("0\n1\nt 0 999\n")
    cleaner = cleaner_for(plog, clock=clock)
    ltc = cleaner.log_to_clean(plog, clock.milliseconds())
    assert ltc is not None and ltc.first_dirty_offset == 0
    result = cleaner.clean_once(clock.milliseconds())
    assert result is not None and result.end_offset == 10
    assert (plog.directory / "cleaner-offset-checkpoint").read_text() == "0\n1\nt 0 10\n"


def test_records_of_helper_sanity() -> None:
    # The model helper itself: superseded values vanish, order stays.
    before = [Rec(0, b"a", b"1", 0), Rec(1, b"b", b"2", 0), Rec(2, b"a", None, 0),
              Rec(3, b"b", b"3", 0)]
    assert expected_after(before, 3) == [before[1], before[2], before[3]]
    assert expected_after(before, 4, drop_tombstones=True) == [before[3]]


def test_cancel_after_done_discards_the_files(tmp_path: Path, clock: ManualClock) -> None:
    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 3), b"v%d" % i) for i in range(30)])
    before = records_of(plog)
    cleaner = cleaner_for(plog, clock=clock)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None and task.run() is TaskState.DONE
    assert any(n.endswith(".cleaned") for n in os.listdir(plog.directory))
    cleaner.shutdown()
    assert task.state is TaskState.CANCELLED
    assert not any(n.endswith(".cleaned") for n in os.listdir(plog.directory))
    assert not cleaner.complete(task).swapped and records_of(plog) == before


def test_pass_on_a_worker_thread_while_the_owner_appends_and_reads(tmp_path: Path,
                                                                  clock: ManualClock) -> None:
    import threading

    plog = open_compact(tmp_path, clock)
    fill(plog, [(b"k%d" % (i % 7), b"v%d" % i * 20) for i in range(300)], per_batch=3)
    cleaner = cleaner_for(plog, clock=clock, io_buffer_size=512)
    task = cleaner.grab_filthiest(clock.milliseconds())
    assert task is not None
    worker = threading.Thread(target=task.run)
    worker.start()
    written = 0
    while worker.is_alive() or written < 20:
        append(plog, [(b"live", b"%d" % written)])
        plog.update_high_watermark(plog.log_end_offset)
        written += 1
        assert records_of(plog)[-1].value == b"%d" % (written - 1)
    worker.join()
    before = records_of(plog)
    result = cleaner.complete(task)
    assert result.swapped
    assert records_of(plog) == expected_after(before, result.end_offset)
    assert [r.value for r in records_of(plog) if r.key == b"live"] == [
        b"%d" % i for i in range(written)
    ]



def test_a_pass_holds_its_buffers_not_its_segments(tmp_path: Path, clock: ManualClock) -> None:
    # Memory beyond the offset map is a few I/O buffers (log.cleaner.io.buffer.size) and one
    # batch, whatever the size of the segments read and written: measured with tracemalloc
    # over a pass whose segments are 32 times the buffer and which writes more than 8 buffers
    # (a small map, so that clearing it, in chunks of up to 1 MiB, does not hide the rest).
    io_buffer = 32 << 10
    config = LogConfig(cleanup_policy="compact", segment_bytes=4 << 20,
                       min_cleanable_dirty_ratio=0.0)
    plog = open_compact(tmp_path, clock, config)
    value = os.urandom(100)
    for i in range(0, 30_000, 100):  # 10,000 keys, each written 3 times: ~4 MiB
        append(plog, [(b"k%05d" % ((i + j) * 7 % 10_000), value) for j in range(100)])
        if i == 15_000:
            plog.roll()  # two closed segments of ~2 MiB, cleaned into one
    fill(plog, [])
    sizes = [s.size for s in plog.log_segments]
    assert min(sizes[:2]) > 32 * io_buffer
    cleaner = cleaner_for(plog, clock=clock, io_buffer_size=io_buffer,
                          dedupe_buffer_size=320 << 10)  # 13,600 slots
    task = cleaner.plan(plog, clock.milliseconds())  # allocates the offset map
    assert task is not None
    tracemalloc.start()
    try:
        task.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = cleaner.complete(task)
    assert result.swapped and result.stats.bytes_read == 2 * sum(sizes)
    assert result.stats.bytes_written > 8 * io_buffer
    keys = [r.key for r in records_of(plog)]
    assert len(keys) == len(set(keys)) == 10_000
    assert peak < 8 * io_buffer, peak  # measured: 124 KB
