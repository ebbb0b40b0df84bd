from __future__ import annotations

from pathlib import Path

from odradek.storage.epoch import LEADER_EPOCH_CHECKPOINT, EpochEntry, LeaderEpochFileCache


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    cache = LeaderEpochFileCache(tmp_path)
    assert cache.latest_epoch == -1
    assert cache.assign(0, 0)
    assert not cache.assign(0, 5)  # same epoch: no change
    assert cache.assign(2, 10)
    assert cache.assign(7, 25)
    assert not cache.assign(-1, 30)
    text = (tmp_path / LEADER_EPOCH_CHECKPOINT).read_text()
    assert text == "0\n3\n0 0\n2 10\n7 25\n"
    again = LeaderEpochFileCache(tmp_path)
    assert again.entries == [EpochEntry(0, 0), EpochEntry(2, 10), EpochEntry(7, 25)]


def test_queries(tmp_path: Path) -> None:
    cache = LeaderEpochFileCache(tmp_path)
    for e, o in [(1, 5), (2, 10), (7, 25)]:
        cache.assign(e, o)
    assert cache.epoch_for_offset(4) == -1
    assert cache.epoch_for_offset(5) == 1 and cache.epoch_for_offset(24) == 2
    assert cache.end_offset_for_epoch(7, 40) == (7, 40)
    assert cache.end_offset_for_epoch(2, 40) == (2, 25)
    assert cache.end_offset_for_epoch(3, 40) == (2, 25)
    assert cache.end_offset_for_epoch(0, 40) == (0, 5)
    assert cache.end_offset_for_epoch(8, 40) == (-1, -1)


def test_truncation(tmp_path: Path) -> None:
    cache = LeaderEpochFileCache(tmp_path)
    for e, o in [(1, 5), (2, 10), (7, 25)]:
        cache.assign(e, o)
    cache.truncate_from_end(25)
    assert [e.epoch for e in cache.entries] == [1, 2]
    cache.truncate_from_start(12)
    assert cache.entries == [EpochEntry(2, 12)]
    assert LeaderEpochFileCache(tmp_path).entries == [EpochEntry(2, 12)]


def test_malformed_checkpoint_is_ignored(tmp_path: Path) -> None:
    (tmp_path / LEADER_EPOCH_CHECKPOINT).write_text("0\n2\n1 5\n")
    assert LeaderEpochFileCache(tmp_path).entries == []
    (tmp_path / LEADER_EPOCH_CHECKPOINT).write_text("garbage")
    assert LeaderEpochFileCache(tmp_path).entries == []
