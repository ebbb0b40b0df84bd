"""Fixtures for the cluster-metadata tests: real etcd processes, and the harness parametrised
over both ClusterStore implementations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_harness import Harness, start_etcd

from odradek.testing.etcd import EtcdProcess


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd for a module's tests; each test works under its own key prefix."""
    yield from start_etcd(tmp_path_factory.mktemp("etcd"))


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    """An etcd of the test's own, which it may kill and restart."""
    yield from start_etcd(tmp_path)


@pytest.fixture(params=["inprocess", "etcd"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "etcd":
        return Harness("etcd", request.getfixturevalue("shared_etcd"))
    return Harness("inprocess", None)
