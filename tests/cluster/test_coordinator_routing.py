"""Coordinators move with the leadership of their internal-topic partitions: two brokers in one
process on a real etcd; a group's requests answer NOT_COORDINATOR on the broker that does not
lead its ``__consumer_offsets`` partition, FindCoordinator on either names the leader, and
leadership moved (as a controller moves it) unloads the partition on one and loads it on the
other, answering COORDINATOR_LOAD_IN_PROGRESS until it is loaded; a transactional produce to
one broker is verified by the transaction coordinator on the other (KIP-890 part 1)."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import socket
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
from kio.schema.add_partitions_to_txn.v3 import request as add_v3
from kio.schema.produce.v9 import request as produce_v9

from odradek.broker.app import Broker
from odradek.broker.runner import local_config
from odradek.cluster.model import PartitionState
from odradek.cluster.store import Put
from odradek.coordinator.runtime import PartitionState as LoadState
from odradek.errors import CoordinatorLoadInProgressError, ErrorCode, NotCoordinatorError
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.messages import request_schema
from odradek.protocol.records import SimpleRecord, encode_batch
from odradek.testing.etcd import EtcdProcess
from odradek.topic_names import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

_prefixes = itertools.count()


async def _until(check: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def _request(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    """One request over a blocking socket (run it off the brokers' loop); its response."""
    schema = request_schema(api_key, version)
    assert schema is not None
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(encode_request(schema(**fields), 7, "test"))
        stream = sock.makefile("rb")
        (size,) = struct.unpack(">i", stream.read(4))
        correlation, body = decode_response(stream.read(size), api_key, version)
    assert correlation == 7
    return body


def _find_coordinator(bootstrap: str, group: str) -> Any:
    return _request(bootstrap, 10, 4, key_type=0, coordinator_keys=(group,))


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


def test_a_transactional_produce_is_verified_by_the_coordinator_on_the_other_broker(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/routing-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "transaction_state_log_num_partitions": "4",
    }

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props)) as two:
            await one.transactions.topic.ensure()
            await one.topics.create("data", num_partitions=2, replication_factor=1)
            await _until(lambda: two.cluster.topic("data") is not None
                         and two.cluster.topic(TRANSACTION_STATE_TOPIC) is not None)
            txns = one.transactions
            txn_id = next(
                t for t in (f"t{i}" for i in range(1000))
                if one.cluster.partition(TRANSACTION_STATE_TOPIC, txns.partition_for(t)).leader
                == 1
            )
            await _until(lambda: txns.runtime.state(txns.partition_for(txn_id))
                         is LoadState.ACTIVE)
            data = next(p for p in (0, 1) if one.cluster.partition("data", p).leader == 2)
            init = await asyncio.to_thread(
                _request, one.bootstrap, 22, 4, transactional_id=txn_id,
                transaction_timeout=datetime.timedelta(seconds=30), producer_id=-1,
                producer_epoch=-1,
            )
            assert init.error_code == ErrorCode.none

            def produce() -> int:
                batch = encode_batch(
                    [SimpleRecord(b"v")], producer_id=init.producer_id,
                    producer_epoch=init.producer_epoch, base_sequence=0, is_transactional=True,
                )
                r = _request(
                    two.bootstrap, 0, 9, transactional_id=txn_id, acks=-1,
                    timeout=datetime.timedelta(seconds=5), topic_data=(produce_v9.TopicProduceData(
                        name="data", partition_data=(
                            produce_v9.PartitionProduceData(index=data, records=batch),
                        ),
                    ),),
                )
                return int(r.responses[0].partition_responses[0].error_code)

            # Broker two asks broker one: the partition is not in the transaction.
            assert await asyncio.to_thread(produce) == ErrorCode.invalid_txn_state
            added = await asyncio.to_thread(
                _request, one.bootstrap, 24, 3, v3_and_below_transactional_id=txn_id,
                v3_and_below_producer_id=init.producer_id,
                v3_and_below_producer_epoch=init.producer_epoch,
                v3_and_below_topics=(add_v3.AddPartitionsToTxnTopic(
                    name="data", partitions=(data,)
                ),),
            )
            assert added.results_by_topic_v3_and_below[0].results_by_partition[0] \
                .partition_error_code == ErrorCode.none
            assert await asyncio.to_thread(produce) == ErrorCode.none

    asyncio.run(scenario())
