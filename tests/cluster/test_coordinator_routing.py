"""Coordinators move with the leadership of their internal-topic partitions: two brokers in one
process on a real etcd; a group's requests answer NOT_COORDINATOR on the broker that does not
lead its ``__consumer_offsets`` partition, FindCoordinator on either names the leader, and
leadership moved (as a controller moves it) unloads the partition on one and loads it on the
other, answering COORDINATOR_LOAD_IN_PROGRESS until it is loaded."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest

from odradek.broker.app import Broker
from odradek.broker.runner import local_config
from odradek.cluster.model import PartitionState
from odradek.cluster.store import Put
from odradek.coordinator.runtime import PartitionState as LoadState
from odradek.errors import CoordinatorLoadInProgressError, ErrorCode, NotCoordinatorError
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.messages import request_schema
from odradek.testing.etcd import EtcdProcess
from odradek.topic_names import OFFSETS_TOPIC

_prefixes = itertools.count()


async def _until(check: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def _find_coordinator(bootstrap: str, group: str) -> Any:
    """FindCoordinator v4 for ``group``, over a blocking socket (run off the brokers' loop)."""
    schema = request_schema(10, 4)
    assert schema is not None
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(encode_request(schema(key_type=0, coordinator_keys=(group,)), 7, "test"))
        stream = sock.makefile("rb")
        (size,) = struct.unpack(">i", stream.read(4))
        correlation, body = decode_response(stream.read(size), 10, 4)
    assert correlation == 7
    return body


def test_group_requests_follow_the_leader_of_the_group_partition(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/routing-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "offsets_topic_num_partitions": "4",
    }
    held: dict[str, int] = {}  # the partition whose loading broker two holds
    release = asyncio.Event()

    async def hold_on_two(topic: str, partition: int) -> None:
        if topic == OFFSETS_TOPIC and held.get("partition") == partition:
            await release.wait()

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props),
                       coordinator_load_hook=hold_on_two) as two:
            await one.groups.topic.ensure()
            await _until(lambda: two.cluster.topic(OFFSETS_TOPIC) is not None)
            group = next(
                g for g in (f"g{i}" for i in range(1000))
                if one.cluster.partition(OFFSETS_TOPIC, one.groups.partition_for(g)).leader == 1
            )
            partition = one.groups.partition_for(group)
            await _until(lambda: one.groups.runtime.state(partition) is LoadState.ACTIVE)
            assert two.groups.runtime.state(partition) is None
            one.groups.run(group, lambda: None)
            with pytest.raises(NotCoordinatorError):
                two.groups.run(group, lambda: None)
            for broker in (one, two):
                found = (await asyncio.to_thread(_find_coordinator, broker.bootstrap, group))
                (coordinator,) = found.coordinators
                assert coordinator.error_code == ErrorCode.none
                assert (coordinator.node_id, coordinator.port) == (1, one.advertised_port)

            # Leadership moves to broker two, as the controller moves it: one unloads the
            # partition at once, two loads it (held here: COORDINATOR_LOAD_IN_PROGRESS).
            held["partition"] = partition
            old = one.cluster.partition(OFFSETS_TOPIC, partition)
            assert old is not None
            moved = PartitionState(
                replicas=(2,), isr=(2,), leader=2, leader_epoch=old.leader_epoch + 1,
                partition_epoch=old.partition_epoch + 1,
            )
            key = one.cluster_keys.partition(OFFSETS_TOPIC, partition)
            await one.cluster_store.txn([], [Put(key, moved.encode())])
            await _until(lambda: two.groups.runtime.state(partition) is LoadState.LOADING)
            await _until(lambda: one.groups.runtime.state(partition) is None)
            with pytest.raises(CoordinatorLoadInProgressError):
                two.groups.run(group, lambda: None)
            with pytest.raises(NotCoordinatorError):
                one.groups.run(group, lambda: None)
            (coordinator,) = (
                await asyncio.to_thread(_find_coordinator, one.bootstrap, group)
            ).coordinators
            assert (coordinator.node_id, coordinator.port) == (2, two.advertised_port)
            release.set()
            await _until(lambda: two.groups.runtime.state(partition) is LoadState.ACTIVE)
            two.groups.run(group, lambda: None)

    asyncio.run(scenario())
