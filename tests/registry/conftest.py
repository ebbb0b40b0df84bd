from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registrykit import Http, formats

from odradek.broker.runner import BrokerThread, local_config
from odradek.registry.runner import RegistryThread


@pytest.fixture(scope="module")
def registry_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerThread]:
    data: Path = tmp_path_factory.mktemp("registry-broker")
    with BrokerThread(local_config(data, group_initial_rebalance_delay_ms="0")) as broker:
        yield broker


@pytest.fixture(scope="module")
def registry(registry_broker: BrokerThread) -> Iterator[RegistryThread]:
    with RegistryThread(registry_broker.bootstrap, formats=formats, timeout=15.0) as reg:
        yield reg


@pytest.fixture(scope="module")
def http(registry: RegistryThread) -> Http:
    return Http(registry.url)
