from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from storage_helpers import START_MS, batch, crash

from odradek.clock import ManualClock
from odradek.protocol.records import Record, decode_records, read_batch_header
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig
from odradek.storage.log_manager import CLEAN_SHUTDOWN_FILE, LogManager, parse_partition_dir


def test_parse_partition_dir() -> None:
    assert parse_partition_dir("orders-3") == ("orders", 3)
    assert parse_partition_dir("my-topic.v2-10") == ("my-topic.v2", 10)
    assert parse_partition_dir("__cluster_metadata") is None
    assert parse_partition_dir("t-0.abc-delete") is None


def test_lifecycle_and_clean_marker(tmp_path: Path, monkeypatch) -> None:
    clock = ManualClock(START_MS)
    lm = LogManager(tmp_path, clock, LogConfig())
    lm.startup()
    assert not lm.had_clean_shutdown
    a = lm.create_log("a", 0)
    assert lm.create_log("a", 0) is a
    b = lm.create_log("b", 1, LogConfig(segment_bytes=5000))
    a.append_as_leader(batch(3), leader_epoch=0)
    b.append_as_leader(batch(2), leader_epoch=0)
    (tmp_path / "__cluster_metadata").mkdir()
    (tmp_path / "gone-0.0123abcd-delete").mkdir()
    (tmp_path / "gone-0.0123abcd-delete" / "00000000000000000000.log").write_bytes(b"x")
    lm.shutdown()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()

    recovered: list[bool] = []
    from odradek.storage import log as log_mod

    real_open = log_mod.PartitionLog.open.__func__  # type: ignore[attr-defined]

    def spy(cls, *args, recover: bool, **kw):  # type: ignore[no-untyped-def]
        recovered.append(recover)
        return real_open(cls, *args, recover=recover, **kw)

    monkeypatch.setattr(log_mod.PartitionLog, "open", classmethod(spy))
    lm2 = LogManager(tmp_path, clock, LogConfig())
    lm2.startup({"b": LogConfig(segment_bytes=5000)})
    assert lm2.had_clean_shutdown and recovered == [False, False]
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert not (tmp_path / "gone-0.0123abcd-delete").exists()
    assert (tmp_path / "__cluster_metadata").is_dir()
    assert lm2.get_log("a", 0).log_end_offset == 3  # type: ignore[union-attr]
    assert lm2.get_log("b", 1).config.segment_bytes == 5000  # type: ignore[union-attr]
    assert lm2.get_log("c", 0) is None
    # crash: no marker -> recovery on next start
    for plog in lm2.all_logs():
        crash(plog)
    recovered.clear()
    lm3 = LogManager(tmp_path, clock, LogConfig())
    lm3.startup(lambda topic: None)
    assert recovered == [True, True] and not lm3.had_clean_shutdown
    lm3.shutdown()


def test_delete_and_update_config(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    lm = LogManager(tmp_path, clock, LogConfig())
    lm.startup()
    for p in range(3):
        lm.create_log("t", p).append_as_leader(batch(1), leader_epoch=0)
    lm.update_config("t", LogConfig(retention_ms=5))
    assert all(plog.config.retention_ms == 5 for plog in lm.logs_for_topic("t"))
    assert lm.delete_log("t", 1)
    assert not lm.delete_log("t", 1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["t-0", "t-2"]
    again = lm.create_log("t", 1)
    assert again.log_end_offset == 0 and again.config.retention_ms == 5
    lm.shutdown()


def test_housekeeping(tmp_path: Path) -> None:
    clock = ManualClock(START_MS)
    cfg = LogConfig(segment_bytes=500, retention_ms=1000, flush_ms=100, file_delete_delay_ms=0)
    lm = LogManager(tmp_path, clock, cfg)
    lm.startup()
    plog = lm.create_log("t", 0)
    for i in range(20):
        plog.append_as_leader(batch(1, ts=START_MS + i), leader_epoch=0)
    plog.update_high_watermark(plog.log_end_offset)
    assert lm.flush_due(clock.milliseconds()) == 0
    clock.advance(100)
    assert lm.flush_due(clock.milliseconds()) == 1
    clock.advance(5000)
    assert lm.run_retention(clock.milliseconds()) > 0
    assert plog.log_start_offset > 0
    lm.shutdown()


def startup_messages(caplog: pytest.LogCaptureFixture, data_dir: Path) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="odradek.storage"):
        lm = LogManager(data_dir, ManualClock(START_MS), LogConfig())
        lm.startup()
    messages = [r.getMessage() for r in caplog.records if "partition logs" in r.getMessage()]
    plog = lm.create_log("t", 0)
    plog.append_as_leader(batch(1), leader_epoch=0)
    crash(plog)  # never shut down: the next start finds no marker
    return messages


def test_startup_names_a_new_data_directory(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    # Never used (not even created): new, not an unclean shutdown.
    assert startup_messages(caplog, data) == [f"loaded 0 partition logs from {data} "
                                              f"(new data directory)"]
    # Logs but no marker (the run above never shut down): a crash, and the logs are recovered.
    assert startup_messages(caplog, data) == [f"loaded 1 partition logs from {data} "
                                              f"(recovered after an unclean shutdown)"]
    lm = LogManager(data, ManualClock(START_MS), LogConfig())
    lm.startup()
    lm.shutdown()
    assert startup_messages(caplog, data) == [f"loaded 1 partition logs from {data} "
                                              f"(after a clean shutdown)"]


@pytest.mark.parametrize(("kept", "end"), [(None, 7), (lambda n: 0, 3), (lambda n: n // 2 + 1, 5)])
def test_an_abandoned_log_recovers_what_the_crash_left(
    tmp_path: Path, kept: Callable[[int], int] | None, end: int
) -> None:
    """The simulation's crashes: a killed process leaves every appended byte (page cache); a
    power loss cuts what was appended since the last fsync, possibly inside a batch."""
    clock = ManualClock(START_MS)
    lm = LogManager(tmp_path, clock, LogConfig())
    lm.startup()
    plog = lm.create_log("t", 0)
    for _ in range(3):
        plog.append_as_leader(batch(1), leader_epoch=0)
    plog.flush()
    for _ in range(4):
        plog.append_as_leader(batch(1), leader_epoch=0)
    lm.abandon(unsynced_kept=kept)
    assert plog.is_closed
    again = LogManager(tmp_path, clock, LogConfig())
    again.startup()
    reopened = again.get_log("t", 0)
    assert reopened is not None
    assert reopened.log_end_offset == end
    assert [r.offset for r in decode_records_of(reopened)] == list(range(end))
    again.shutdown()


def decode_records_of(plog: PartitionLog) -> list[Record]:
    data = plog.read(0, max_bytes=1 << 20).records
    assert isinstance(data, bytes)
    out: list[Record] = []
    pos = 0
    while pos < len(data):
        size = read_batch_header(data, pos).size
        out.extend(decode_records(data[pos : pos + size]))
        pos += size
    return out
