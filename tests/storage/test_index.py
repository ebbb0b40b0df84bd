from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odradek.storage.index import CorruptIndexError, OffsetIndex, TimeIndex


def test_offset_index_lookup_and_reload(tmp_path: Path) -> None:
    idx = OffsetIndex(tmp_path / "x.index", 100, 1024)
    idx.create()
    assert idx.lookup(150) == (100, 0)
    for off, pos in [(105, 300), (110, 700), (130, 1500)]:
        idx.append(off, pos)
    idx.append(120, 1600)  # not increasing: ignored
    assert idx.lookup(99) == (100, 0)
    assert idx.lookup(104) == (100, 0)
    assert idx.lookup(105) == (105, 300)
    assert idx.lookup(129) == (110, 700)
    assert idx.lookup(10**9) == (130, 1500)
    idx.close()
    assert (tmp_path / "x.index").stat().st_size == 24
    again = OffsetIndex(tmp_path / "x.index", 100, 1024)
    again.sanity_check(log_size=2000)
    assert again.lookup(112) == (110, 700) and len(again) == 3
    again.truncate_to(110)
    assert len(again) == 1 and (tmp_path / "x.index").stat().st_size == 8
    with pytest.raises(CorruptIndexError):
        OffsetIndex(tmp_path / "x.index", 100, 1024).sanity_check(log_size=300)


def test_offset_index_sanity_rejects_torn_file(tmp_path: Path) -> None:
    (tmp_path / "y.index").write_bytes(b"\x00" * 11)
    with pytest.raises(CorruptIndexError):
        OffsetIndex(tmp_path / "y.index", 0, 1024).sanity_check(log_size=10_000)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=50, unique=True), st.integers(0, 11_000))
def test_offset_index_matches_linear_search(offsets: list[int], target: int) -> None:
    import tempfile

    offsets.sort()
    with tempfile.TemporaryDirectory() as d:
        idx = OffsetIndex(Path(d) / "z.index", 0, 1 << 20)
        idx.create()
        for o in offsets:
            idx.append(o, o * 10 + 1)
        le = [o for o in offsets if o <= target]
        assert idx.lookup(target) == ((le[-1], le[-1] * 10 + 1) if le else (0, 0))
        idx.close()


def test_time_index(tmp_path: Path) -> None:
    ti = TimeIndex(tmp_path / "x.timeindex", 50, 12 * 3)
    ti.create()
    assert ti.lookup(5) == (-1, 50)
    ti.maybe_append(1000, 55)
    ti.maybe_append(900, 60)  # smaller timestamp: ignored
    ti.maybe_append(2000, 70)
    assert ti.lookup(999) == (-1, 50)
    assert ti.lookup(1500) == (1000, 55)
    assert ti.last_entry() == (2000, 70)
    assert not ti.is_full
    ti.maybe_append(3000, 80)
    assert ti.is_full
    ti.close()
    again = TimeIndex(tmp_path / "x.timeindex", 50, 12 * 3)
    again.sanity_check()
    assert again.lookup(2500) == (2000, 70)
    again.truncate_to(70)
    assert again.last_entry() == (1000, 55)
    assert (tmp_path / "x.timeindex").stat().st_size == 12
