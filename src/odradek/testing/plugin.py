"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

- ``odradek_broker`` — a running broker on a temporary data directory, one per test; its
  ``bootstrap`` attribute is the ``host:port`` to hand to any Kafka client. It runs with Kafka's
  development setting ``group.initial.rebalance.delay.ms=0`` (as Kafka's quick-start
  ``server.properties``), so a new consumer group's first join does not wait 3 s.
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

    config = local_config(tmp_path / "odradek-data", group_initial_rebalance_delay_ms="0")
    with BrokerThread(config) as broker:
        yield broker


@pytest.fixture
def odradek_bootstrap(odradek_broker: BrokerThread) -> str:
    return odradek_broker.bootstrap
