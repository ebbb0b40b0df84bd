from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from odradek.broker.runner import BrokerThread, local_config


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    with BrokerThread(local_config(tmp_path / "data")) as b:
        yield b


@pytest.fixture
def bootstrap(broker: BrokerThread) -> str:
    return broker.bootstrap
