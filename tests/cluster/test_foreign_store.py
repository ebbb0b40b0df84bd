"""A data dir that belongs to a cluster the metadata store does not hold (a single node pointed
at etcd, a wiped etcd, a mistyped etcd.prefix) refuses to start and keeps its logs: started, it
would take every topic on disk for deleted."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from odradek.broker.app import Broker
from odradek.broker.cluster_member import ClusterIdMismatch
from odradek.broker.runner import local_config
from odradek.testing.etcd import EtcdProcess


def test_a_data_dir_unknown_to_the_store_is_refused_and_kept(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    data = tmp_path / "data"

    async def single_node() -> None:
        async with Broker(local_config(data)) as broker:
            await broker.topics.create("kept", num_partitions=2)

    async def on_etcd() -> None:
        config = local_config(data, etcd_endpoints=shared_etcd.endpoint,
                              etcd_prefix=f"/foreign-{uuid.uuid4().hex[:8]}")
        with pytest.raises(ClusterIdMismatch, match="holds no cluster"):
            async with Broker(config):
                pass

    asyncio.run(single_node())
    asyncio.run(on_etcd())
    assert (data / "kept-0").is_dir() and (data / "kept-1").is_dir()
    asyncio.run(_reopen(data))  # the single node still has its topic


async def _reopen(data: Path) -> None:
    async with Broker(local_config(data)) as broker:
        info = broker.cluster.topic("kept")
        assert info is not None and len(info.partitions) == 2
