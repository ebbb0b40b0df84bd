"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

- ``odradek_broker`` — a running broker on a temporary data directory, one per test; its
  ``bootstrap`` attribute is the ``host:port`` to hand to any Kafka client. It runs with Kafka's
  development setting ``group.initial.rebalance.delay.ms=0`` (as Kafka's quick-start
  ``server.properties``), so a new consumer group's first join does not wait 3 s.
- ``odradek_bootstrap`` — just that address.
- ``odradek_cluster`` — a cluster of three broker processes (node ids 1-3) on a local etcd, one
  per test (:class:`odradek.cluster.local.LocalCluster`): ``bootstrap`` is every broker's
  address, ``broker(node_id)`` a handle that can ``kill()`` (SIGKILL), ``pause()`` (SIGSTOP),
  ``resume()``, ``stop()`` and ``restart()`` one broker, ``etcd`` the etcd process (``kill()``,
  ``start()``), ``status()`` what ``odradek cluster status`` shows. Skipped when the ``etcd``
  binary is not installed.
- ``odradek_cluster_factory`` — ``start(brokers=3, session_timeout_ms=9000, **properties)``
  for another size or settings (``properties`` with underscores for dots); every cluster it
  started is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from odradek.broker.runner import BrokerThread
    from odradek.cluster.local import LocalCluster

__all__ = ["odradek_broker", "odradek_bootstrap", "odradek_cluster", "odradek_cluster_factory"]

ClusterFactory = Callable[..., "LocalCluster"]


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


@pytest.fixture
def odradek_cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    from odradek.cluster.etcd_process import etcd_binary
    from odradek.cluster.local import LocalCluster

    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server; `make system-deps` installs it)")
    started: list[LocalCluster] = []

    def start(
        brokers: int = 3, session_timeout_ms: int = 9000, **properties: str
    ) -> LocalCluster:
        settings = {k.replace("_", "."): str(v) for k, v in properties.items()}
        settings["broker.session.timeout.ms"] = str(session_timeout_ms)
        cluster = LocalCluster(
            tmp_path / f"odradek-cluster-{len(started)}", brokers, broker_properties=settings
        )
        started.append(cluster)
        cluster.start()
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


@pytest.fixture
def odradek_cluster(odradek_cluster_factory: ClusterFactory) -> LocalCluster:
    return odradek_cluster_factory()
