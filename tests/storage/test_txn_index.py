from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.storage.index import CorruptIndexError
from odradek.storage.txn_index import AbortedTxn, TransactionIndex


def _index(tmp_path: Path, base: int = 100) -> TransactionIndex:
    return TransactionIndex(tmp_path / f"{base:020d}.txnindex", base)


def test_entry_layout_is_kafkas() -> None:
    raw = AbortedTxn(7, 100, 130, 131).encode()
    assert len(raw) == 34
    assert struct.unpack(">hqqqq", raw) == (0, 7, 100, 130, 131)


def test_file_is_created_by_the_first_entry(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    assert idx.entries == [] and not idx.path.exists()
    idx.sanity_check()  # a missing file is an empty index
    idx.append(AbortedTxn(1, 90, 105, 106))
    idx.append(AbortedTxn(2, 101, 110, 111))
    idx.close()
    assert idx.path.stat().st_size == 68
    again = _index(tmp_path)
    again.sanity_check()
    assert again.entries == [AbortedTxn(1, 90, 105, 106), AbortedTxn(2, 101, 110, 111)]


def test_markers_must_increase(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    idx.append(AbortedTxn(1, 100, 105, 106))
    with pytest.raises(ValueError):
        idx.append(AbortedTxn(2, 100, 105, 106))
    assert len(idx.entries) == 1 and idx.path.stat().st_size == 34
    idx.close()


def test_collect_intersects_and_stops_at_complete_entry(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    a = AbortedTxn(1, 100, 104, 102)  # another txn from 102 was still open
    b = AbortedTxn(2, 102, 108, 109)
    c = AbortedTxn(3, 109, 112, 113)
    for e in (a, b, c):
        idx.append(e)
    r = idx.collect(105, 109)
    assert r.aborted == (b,) and r.complete  # b's LSO 109 >= upper bound 109
    r = idx.collect(100, 120)
    assert r.aborted == (a, b, c) and not r.complete
    r = idx.collect(113, 120)
    assert r.aborted == () and not r.complete
    r = idx.collect(100, 101)
    assert r.aborted == (a,) and r.complete  # a's LSO 102 >= 101
    idx.close()


def test_truncate_to_drops_markers_at_and_after(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    for i in range(4):
        idx.append(AbortedTxn(i, 100 + 10 * i, 105 + 10 * i, 106 + 10 * i))
    idx.truncate_to(125)  # drops the marker at 125 and 135
    assert [e.last_offset for e in idx.entries] == [105, 115]
    assert idx.path.stat().st_size == 68
    idx.append(AbortedTxn(9, 120, 121, 122))
    idx.truncate_to(100)
    assert idx.entries == [] and not idx.path.exists()
    idx.close()


def test_sanity_check_rejects_torn_and_bad_entries(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    idx.append(AbortedTxn(1, 100, 105, 106))
    idx.close()
    data = idx.path.read_bytes()
    idx.path.write_bytes(data + data[:10])
    with pytest.raises(CorruptIndexError):
        _index(tmp_path).sanity_check()
    idx.path.write_bytes(struct.pack(">hqqqq", 1, 1, 100, 105, 106))
    with pytest.raises(CorruptIndexError):
        _index(tmp_path).sanity_check()
    idx.path.write_bytes(data + data)  # markers not increasing
    with pytest.raises(CorruptIndexError):
        _index(tmp_path).sanity_check()
    idx.path.write_bytes(struct.pack(">hqqqq", 0, 1, 10, 50, 51))  # marker before the base
    with pytest.raises(CorruptIndexError):
        _index(tmp_path).sanity_check()


def test_rename_and_delete(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    target = tmp_path / "x.txnindex.swap"
    idx.rename(target)  # no file yet: only the path moves
    assert idx.path == target and not target.exists()
    idx.append(AbortedTxn(1, 100, 105, 106))
    final = tmp_path / "x.txnindex"
    idx.rename(final)
    assert final.exists() and not target.exists()
    idx.delete()
    assert not final.exists() and idx.entries == []


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 10)), max_size=12),
    st.integers(0, 400),
    st.integers(0, 400),
)
def test_collect_matches_brute_force_when_lsos_are_exact(
    spans: list[tuple[int, int]], start: int, length: int
) -> None:
    # Non-overlapping transactions aborted one after the other: each LSO is marker + 1.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        idx = TransactionIndex(Path(d) / "i.txnindex", 0)
        entries, offset = [], 0
        for gap, n in spans:
            first = offset + gap
            e = AbortedTxn(len(entries), first, first + n, first + n + 1)
            idx.append(e)
            entries.append(e)
            offset = first + n + 1
        upper = start + length
        want = [e for e in entries if e.last_offset >= start and e.first_offset < upper]
        got = idx.collect(start, upper)
        assert list(got.aborted) == want
        idx.close()
