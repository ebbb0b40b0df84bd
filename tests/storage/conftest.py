from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_helpers import START_MS, OpenLog

from odradek.clock import ManualClock
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_MS)


@pytest.fixture
def open_log(tmp_path: Path, clock: ManualClock) -> Iterator[OpenLog]:
    opened: list[PartitionLog] = []

    def _open(config: LogConfig | None = None, *, recover: bool = False,
              name: str = "t-0") -> PartitionLog:
        plog = PartitionLog.open(
            tmp_path / name, "t", 0, config or LogConfig(), clock, recover=recover
        )
        opened.append(plog)
        return plog

    yield _open
    for plog in opened:
        plog._close_handles()
