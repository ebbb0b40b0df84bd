"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

- ``odradek_broker`` — a running broker on a temporary data directory, one per test; its
  ``bootstrap`` attribute is the ``host:port`` to hand to any Kafka client.
- ``odradek_bootstrap`` — just that address.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from odradek.broker.runner import BrokerThread

__all__ = ["odradek_broker", "odradek_bootstrap"]


@pytest.fixture
def odradek_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    # Imported here so that merely having the plugin installed costs pytest nothing.
    from odradek.broker.runner import BrokerThread, local_config

    with BrokerThread(local_config(tmp_path / "odradek-data")) as broker:
        yield broker


@pytest.fixture
def odradek_bootstrap(odradek_broker: BrokerThread) -> str:
    return odradek_broker.bootstrap
