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
from kio.schema.offset_commit.v8 import request as commit_v8
from kio.schema.offset_fetch.v8 import request as fetch_v8
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


class _CuttableProxy:
    """A TCP proxy to etcd on the test's loop that can be cut (every connection closed, new ones
    refused) and restored on the same port: a broker behind it loses its metadata store."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}


def _commit(bootstrap: str, group: str, offset: int) -> int:
    r = _request(
        bootstrap, 8, 8, group_id=group, generation_id_or_member_epoch=-1, member_id="",
        group_instance_id=None, topics=(commit_v8.OffsetCommitRequestTopic(
            name="data", partitions=(commit_v8.OffsetCommitRequestPartition(
                partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                committed_metadata="",
            ),),
        ),),
    )
    return int(r.topics[0].partitions[0].error_code)


def _fetch_offset(bootstrap: str, group: str) -> tuple[int, int]:
    """(the group's error code, the committed offset of data-0) from an OffsetFetch v8."""
    r = _request(bootstrap, 9, 8, require_stable=False, groups=(
        fetch_v8.OffsetFetchRequestGroup(group_id=group, topics=(
            fetch_v8.OffsetFetchRequestTopics(name="data", partition_indexes=(0,)),
        )),
    ))
    (answer,) = r.groups
    if answer.error_code != ErrorCode.none:
        return int(answer.error_code), -1
    return int(answer.error_code), int(answer.topics[0].partitions[0].committed_offset)


def test_a_fenced_coordinator_serves_nothing_from_its_stale_state(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    """The group coordinator's broker loses etcd: once it is fenced, the other broker leads the
    group's partition and takes a newer commit. The fenced broker's image still names it the
    coordinator, and its state holds the older commit: it must answer NOT_COORDINATOR (and
    FindCoordinator COORDINATOR_NOT_AVAILABLE) rather than hand out that older offset, which a
    consumer would resume from (a chaos run saw a group member go back 14 records so)."""
    prefix = f"/routing-{next(_prefixes)}-{uuid.uuid4().hex[:6]}"
    props = {
        "etcd_prefix": prefix,
        "broker_session_timeout_ms": "2000",
        "offsets_topic_num_partitions": "2",
        "offsets_topic_replication_factor": "2",
    }
    proxy = _CuttableProxy(shared_etcd.client_port)

    async def scenario() -> None:
        await proxy.start()
        async with Broker(local_config(
                    tmp_path / "one", node_id="1",
                    etcd_endpoints=f"http://127.0.0.1:{proxy.port}", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2",
                                    etcd_endpoints=shared_etcd.endpoint, **props)) as two:
            await _until(lambda: len(one.cluster.live_brokers()) == 2)
            await one.topics.create("data", num_partitions=1, replication_factor=2)
            await one.groups.topic.ensure()
            await _until(lambda: two.cluster.topic(OFFSETS_TOPIC) is not None)
            group = next(
                g for g in (f"g{i}" for i in range(1000))
                if one.cluster.partition(OFFSETS_TOPIC, one.groups.partition_for(g)).leader == 1
            )
            partition = one.groups.partition_for(group)
            await _until(lambda: one.groups.runtime.state(partition) is LoadState.ACTIVE
                         and len(one.cluster.partition(OFFSETS_TOPIC, partition).isr) == 2)
            assert await asyncio.to_thread(_commit, one.bootstrap, group, 5) == ErrorCode.none

            # Broker one loses etcd: fenced once its session may have expired; broker two takes
            # the partition over (from the ISR) once one's lease is gone, and a newer commit.
            await proxy.cut()
            await _until(lambda: one.fenced, 10)
            await _until(lambda: two.cluster.partition(OFFSETS_TOPIC, partition).leader == 2
                         and two.groups.runtime.state(partition) is LoadState.ACTIVE, 15)
            assert await asyncio.to_thread(_commit, two.bootstrap, group, 9) == ErrorCode.none
            assert await asyncio.to_thread(_fetch_offset, two.bootstrap, group) \
                == (ErrorCode.none, 9)

            # One's image still names it leader, and its state holds offset 5.
            assert one.cluster.partition(OFFSETS_TOPIC, partition).leader == 1
            assert one.groups.runtime.state(partition) is LoadState.ACTIVE
            assert await asyncio.to_thread(_fetch_offset, one.bootstrap, group) \
                == (ErrorCode.not_coordinator, -1)
            (coordinator,) = (
                await asyncio.to_thread(_find_coordinator, one.bootstrap, group)
            ).coordinators
            assert coordinator.error_code == ErrorCode.coordinator_not_available
            assert await asyncio.to_thread(_commit, one.bootstrap, group, 7) \
                == ErrorCode.not_coordinator

            # Back on etcd: one registers again, learns who leads, and names broker two.
            await proxy.start()
            await _until(lambda: not one.fenced
                         and one.cluster.partition(OFFSETS_TOPIC, partition).leader == 2, 20)
            await _until(lambda: one.groups.runtime.state(partition) is None)
            (coordinator,) = (
                await asyncio.to_thread(_find_coordinator, one.bootstrap, group)
            ).coordinators
            assert (coordinator.error_code, coordinator.node_id) == (ErrorCode.none, 2)
            assert await asyncio.to_thread(_fetch_offset, two.bootstrap, group) \
                == (ErrorCode.none, 9)

    asyncio.run(scenario())


def test_a_leadership_in_a_new_epoch_loads_the_partition_again(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    """The image may skip the epochs between two leaderships of this broker (a watch that fell
    behind re-reads): another broker may have led the partition meanwhile and taken writes this
    broker's state has not seen, so a partition led in another epoch than it was loaded in is
    loaded again (from the log, which holds what was replicated)."""
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/routing-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "offsets_topic_num_partitions": "1",
    }
    loads: list[int] = []

    async def count(topic: str, partition: int) -> None:
        if topic == OFFSETS_TOPIC:
            loads.append(partition)

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props),
                          coordinator_load_hook=count) as one:
            await one.groups.topic.ensure()
            await _until(lambda: one.groups.runtime.state(0) is LoadState.ACTIVE)
            assert loads == [0]
            old = one.cluster.partition(OFFSETS_TOPIC, 0)
            assert old is not None
            same_leader = PartitionState(
                replicas=old.replicas, isr=old.isr, leader=1, leader_epoch=old.leader_epoch + 1,
                partition_epoch=old.partition_epoch + 1,
            )
            key = one.cluster_keys.partition(OFFSETS_TOPIC, 0)
            await one.cluster_store.txn([], [Put(key, same_leader.encode())])
            await _until(lambda: loads == [0, 0]
                         and one.groups.runtime.state(0) is LoadState.ACTIVE)
            # A partition state that keeps the epoch (an ISR change) loads nothing.
            isr_only = PartitionState(
                replicas=old.replicas, isr=old.isr, leader=1, leader_epoch=old.leader_epoch + 1,
                partition_epoch=old.partition_epoch + 2,
            )
            await one.cluster_store.txn([], [Put(key, isr_only.encode())])
            await _until(lambda: one.cluster.partition(OFFSETS_TOPIC, 0).partition_epoch
                         == old.partition_epoch + 2)
            assert loads == [0, 0]
            assert one.groups.runtime.state(0) is LoadState.ACTIVE

    asyncio.run(scenario())


def test_offset_fetch_answers_no_commit_that_is_not_replicated(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    """A commit the coordinator has appended but its follower has not fetched is not durable:
    were the coordinator's broker to fail, the next leader would not have it. OffsetFetch
    answers the previous offset meanwhile (Kafka's runtime reads at its last committed offset),
    and the new one once the follower caught up, when the commit is acknowledged too."""
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/routing-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "offsets_topic_num_partitions": "1",
        "offsets_topic_replication_factor": "2",
    }

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props)) as two:
            await _until(lambda: len(one.cluster.live_brokers()) == 2)
            await one.topics.create("data", num_partitions=1, replication_factor=1)
            await one.groups.topic.ensure()
            await _until(lambda: two.cluster.topic(OFFSETS_TOPIC) is not None
                         and two.cluster.topic("data") is not None)
            state = one.cluster.partition(OFFSETS_TOPIC, 0)
            assert state is not None
            leader, follower = (one, two) if state.leader == 1 else (two, one)
            await _until(lambda: leader.groups.runtime.state(0) is LoadState.ACTIVE
                         and len(leader.cluster.partition(OFFSETS_TOPIC, 0).isr) == 2)
            group = "g"
            assert await asyncio.to_thread(_commit, leader.bootstrap, group, 5) == ErrorCode.none
            assert await asyncio.to_thread(_fetch_offset, leader.bootstrap, group) \
                == (ErrorCode.none, 5)

            # The follower stops fetching (within replica.lag.time.max.ms it stays in the ISR):
            # the next commit is appended and applied, and waits to be replicated.
            await follower.replica_fetchers.stop()
            commit = asyncio.ensure_future(
                asyncio.to_thread(_commit, leader.bootstrap, group, 7)
            )
            committed = leader.groups.coordinator.offsets
            await _until(lambda: group in committed and committed[group][("data", 0)].offset == 7)
            assert await asyncio.to_thread(_fetch_offset, leader.bootstrap, group) \
                == (ErrorCode.none, 5)
            assert not commit.done()

            follower.replica_fetchers.start()
            assert await asyncio.wait_for(commit, 10) == ErrorCode.none
            assert await asyncio.to_thread(_fetch_offset, leader.bootstrap, group) \
                == (ErrorCode.none, 7)

    asyncio.run(scenario())
