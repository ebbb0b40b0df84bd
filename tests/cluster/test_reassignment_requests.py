"""AlterPartitionReassignments, ListPartitionReassignments and ElectLeaders through real clients
(kafka-python's admin, confluent-kafka's elect_leaders) against two brokers in one process on a
real etcd. The brokers' replica fetchers are stopped where a reassignment must stay in progress
until the test writes the ISR change a leader makes once a new replica has caught up (a
compare-and-swap of the partition key, as AlterPartition);
``tests/integration/test_reassignment_replicated.py`` runs one with real followers."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import kafka.errors as kerrors
import pytest
from confluent_kafka import ElectionType as CElectionType
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import NewTopic
from kio.schema.alter_partition_reassignments.v0 import request as alter_v0
from kio.schema.elect_leaders.v0 import request as elect_v0
from kio.schema.elect_leaders.v2 import request as elect_v2

from odradek.broker.app import Broker
from odradek.broker.runner import local_config
from odradek.cli.main import main as cli_main
from odradek.cluster.model import PartitionState
from odradek.cluster.store import Put, mod_revision_is
from odradek.errors import ErrorCode
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.messages import request_schema
from odradek.testing.etcd import EtcdProcess

_prefixes = itertools.count()


async def _until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def _set_isr(broker: Broker, topic: str, partition: int, isr: tuple[int, ...]) -> None:
    """What the leader writes once a follower has caught up (AlterPartition). The real leader
    may expand the ISR itself meanwhile; a lost compare-and-swap reads the state again."""
    key = broker.cluster_keys.partition(topic, partition)
    for _ in range(20):
        kv = await broker.cluster_store.get(key)
        assert kv is not None
        state = PartitionState.decode(kv.value)
        if set(isr) <= set(state.isr):
            return
        new = replace(state, isr=isr, partition_epoch=state.partition_epoch + 1)
        result = await broker.cluster_store.txn(
            [mod_revision_is(key, kv.mod_revision)], [Put(key, new.encode())]
        )
        if result.succeeded:
            return
    raise AssertionError(f"could not set the ISR of {topic}-{partition} to {isr}")


def test_reassign_and_elect_through_clients(shared_etcd: EtcdProcess, tmp_path: Path) -> None:
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/reassign-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "auto_leader_rebalance_enable": "false",
    }
    tp = TopicPartition("moving", 0)

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props)) as two:
            await _until(lambda: len(one.cluster.live_brokers()) == len(two.cluster.live_brokers()) == 2)
            for broker in (one, two):  # the test plays the followers' catching up
                await broker.replica_fetchers.stop()
            admin = await asyncio.to_thread(
                KafkaAdminClient, bootstrap_servers=two.bootstrap, request_timeout_ms=20000
            )
            confluent = AdminClient({"bootstrap.servers": two.bootstrap})

            def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
                return asyncio.to_thread(fn, *args, **kwargs)

            try:
                await call(admin.create_topics, [NewTopic(
                    "moving", num_partitions=-1, replication_factor=-1,
                    replica_assignments={0: [1]},
                )])
                await _until(lambda: two.cluster.topic("moving") is not None)
                assert one.logs.has_log("moving", 0) and not two.logs.has_log("moving", 0)

                # Add broker 2 in front: it becomes a replica at once (and holds a log), the
                # leader and ISR stay until it is in sync.
                assert await call(admin.alter_partition_reassignments, {tp: [2, 1]}) == {
                    tp: None
                }
                listed = await call(admin.list_partition_reassignments)
                assert listed == {
                    tp: {"replicas": [2, 1], "adding_replicas": [2], "removing_replicas": []}
                }
                assert await call(admin.list_partition_reassignments, {"moving": [0, 5]}) \
                    == listed
                assert await call(admin.list_partition_reassignments, {"other": [0]}) == {}
                await _until(lambda: two.logs.has_log("moving", 0))
                await _until(lambda: one.cluster.partition("moving", 0).replicas == (2, 1))
                state = one.cluster.partition("moving", 0)
                assert state is not None
                assert (state.replicas, state.isr, state.leader) == ((2, 1), (1,), 1)

                # Broker 2 caught up: the controller completes the reassignment; broker 1 still
                # leads (it is in the target), though 2 is now the preferred replica.
                await _set_isr(one, "moving", 0, (1, 2))
                await _until(lambda: not one.cluster.partition("moving", 0).reassigning)
                assert await call(admin.list_partition_reassignments) == {}
                state = one.cluster.partition("moving", 0)
                assert (state.replicas, state.isr, state.leader) == ((2, 1), (1, 2), 1)
                epoch = state.leader_epoch

                # Preferred election through librdkafka.
                future = confluent.elect_leaders(
                    CElectionType.PREFERRED, [CTopicPartition("moving", 0)]
                )
                result = await call(future.result, 20)
                assert [(p.topic, p.partition, e) for p, e in result.items()] == [
                    ("moving", 0, None)
                ]
                await _until(lambda: one.cluster.partition("moving", 0).leader == 2)
                state = one.cluster.partition("moving", 0)
                assert (state.leader, state.leader_epoch) == (2, epoch + 1)
                again = confluent.elect_leaders(
                    CElectionType.PREFERRED, [CTopicPartition("moving", 0)]
                )
                (error,) = (await call(again.result, 20)).values()
                assert error is not None and error.name() == "ELECTION_NOT_NEEDED"
                response = await call(
                    admin.elect_leaders, 1, {"moving": [0]}, raise_errors=False
                )
                (partition,) = response.replica_election_results[0].partition_result
                assert partition.error_code == kerrors.ElectionNotNeededError.errno

                # Errors, partition by partition.
                results = await call(admin.alter_partition_reassignments, {
                    tp: None,  # nothing to cancel
                    TopicPartition("moving", 3): [1],
                    TopicPartition("nope", 0): [1],
                })
                assert results == {
                    tp: kerrors.NoReassignmentInProgressError,
                    TopicPartition("moving", 3): kerrors.UnknownTopicOrPartitionError,
                    TopicPartition("nope", 0): kerrors.UnknownTopicOrPartitionError,
                }
                results = await call(admin.alter_partition_reassignments, {tp: [2, 9]})
                assert results == {tp: kerrors.InvalidReplicationAssignmentError}

                # Remove broker 1: the target is in sync, so it completes at once, in a new
                # leader epoch; broker 1 drops its log.
                assert await call(admin.alter_partition_reassignments, {tp: [2]}) == {tp: None}
                # The controller may be the other broker: wait for broker 2's view of etcd.
                await _until(lambda: two.cluster.partition("moving", 0).replicas == (2,))
                state = two.cluster.partition("moving", 0)
                assert (state.replicas, state.isr, state.leader) == ((2,), (2,), 2)
                assert state.leader_epoch == epoch + 2
                await _until(lambda: not one.logs.has_log("moving", 0))

                # Versions the clients above did not use: ElectLeaders v0 (always preferred), an
                # unknown election type; AlterPartitionReassignments v1 is not served.
                alter = await call(
                    _request, one.bootstrap, 45, 0, topics=(alter_v0.ReassignableTopic(
                        name="moving", partitions=(
                            alter_v0.ReassignablePartition(partition_index=0, replicas=(2,)),
                        ),
                    ),),
                )
                assert alter.responses[0].partitions[0].error_code == ErrorCode.none
                versions = await call(_api_versions, one.bootstrap)
                assert (versions[43], versions[45], versions[46]) == ((0, 2), (0, 0), (0, 0))
                elect = await call(
                    _request, one.bootstrap, 43, 0, topic_partitions=(
                        elect_v0.TopicPartitions(topic="moving", partitions=(0,)),
                    ),
                )
                (p,) = elect.replica_election_results[0].partition_result
                assert p.error_code == ErrorCode.election_not_needed
                elect = await call(
                    _request, one.bootstrap, 43, 2, election_type=7, topic_partitions=(
                        elect_v2.TopicPartitions(topic="moving", partitions=(0,)),
                    ),
                )
                assert elect.error_code == ErrorCode.invalid_request
            finally:
                await call(admin.close)

    asyncio.run(scenario())


def test_the_controller_restores_the_preferred_leader(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/reassign-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "leader_imbalance_check_interval_seconds": "1",
    }

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props)) as two:
            await _until(lambda: len(one.cluster.live_brokers()) == len(two.cluster.live_brokers()) == 2)
            await one.topics.create("t", assignments={0: [1]})
            # Broker 2 joins as the preferred replica; broker 1 keeps leading at completion.
            results = await one.partition_changes.alter_reassignments({("t", 0): (2, 1)})
            assert results == {("t", 0): None}
            await _set_isr(one, "t", 0, (1, 2))
            await _until(lambda: not one.cluster.partition("t", 0).reassigning)
            assert one.cluster.partition("t", 0).leader == 1
            # Within the check interval (1 s), the controller elects it.
            await _until(lambda: one.cluster.partition("t", 0).leader == 2, timeout_s=10)

    asyncio.run(scenario())


def _api_versions(bootstrap: str) -> dict[int, tuple[int, int]]:
    answer = _request(bootstrap, 18, 3, client_software_name="t", client_software_version="1")
    return {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in answer.api_keys}


def _request(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    """One request over a blocking socket (run it off the brokers' loop); its response."""
    schema = request_schema(api_key, version)
    assert schema is not None
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(encode_request(schema(**fields), 7, "test"))
        stream = sock.makefile("rb")
        (size,) = struct.unpack(">i", stream.read(4))
        correlation, body = decode_response(stream.read(size), api_key, version)
    assert correlation == 7
    return body


def test_the_command_line(
    shared_etcd: EtcdProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``odradek cluster reassign`` (--execute, --list, --verify, --cancel) and ``odradek cluster
    elect-leaders`` against two brokers."""
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/reassign-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "auto_leader_rebalance_enable": "false",
    }
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "c", "partition": 0, "replicas": [2, 1], "log_dirs": ["any", "any"]},
        {"topic": "c", "partition": 1, "replicas": [2]},
    ]}))

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props)) as two:
            await _until(lambda: len(one.cluster.live_brokers()) == len(two.cluster.live_brokers()) == 2)
            for broker in (one, two):  # the test plays the followers' catching up
                await broker.replica_fetchers.stop()
            await one.topics.create("c", assignments={0: [1], 1: [2]})
            await _until(lambda: two.cluster.topic("c") is not None)

            async def run(*args: str) -> tuple[int, str, str]:
                capsys.readouterr()
                code = await asyncio.to_thread(
                    cli_main, ["cluster", *args, "--bootstrap-server", one.bootstrap]
                )
                out, err = capsys.readouterr()
                return code, out, err

            code, out, _ = await run("reassign", "--reassignment-json-file", str(plan),
                                     "--execute")
            assert code == 0
            rollback = json.loads(out.split("\n\n")[1])
            assert rollback["partitions"] == [
                {"topic": "c", "partition": 0, "replicas": [1], "log_dirs": ["any"]},
                {"topic": "c", "partition": 1, "replicas": [2], "log_dirs": ["any"]},
            ]
            assert out.endswith("Successfully started partition reassignments for c-0, c-1\n")
            code, out, _ = await run("reassign", "--list")
            assert out == "Current partition reassignments:\n" \
                "c-0: replicas: 2,1. adding: 2. removing: .\n"
            code, out, _ = await run("reassign", "--reassignment-json-file", str(plan),
                                     "--verify")
            assert (code, out) == (0, "Status of partition reassignment:\n"
                                   "Reassignment of partition c-0 is still in progress.\n"
                                   "Reassignment of partition c-1 is completed.\n")
            code, out, _ = await run("reassign", "--reassignment-json-file", str(plan),
                                     "--cancel")
            assert (code, out) == (0, "Successfully cancelled partition reassignments for c-0\n")
            code, out, _ = await run("reassign", "--reassignment-json-file", str(plan),
                                     "--verify")
            assert "There is no active reassignment of partition c-0, but replica set is 1 " \
                "rather than 2,1." in out
            code, out, _ = await run("reassign", "--reassignment-json-file", str(plan),
                                     "--cancel")
            assert out == "None of the specified partition reassignments are active.\n"

            code, out, _ = await run("elect-leaders", "--election-type", "preferred",
                                     "--topic", "c", "--partition", "0")
            assert (code, out) == (0, "Valid replica already elected for partitions c-0\n")
            code, out, _ = await run("elect-leaders", "--election-type", "preferred",
                                     "--all-topic-partitions")
            assert (code, out) == (0, "No partitions needed an election.\n")
            code, out, err = await run("elect-leaders", "--election-type", "UNCLEAN",
                                       "--topic", "c", "--partition", "9")
            assert code == 1
            assert out.startswith("Error completing leader election (UNCLEAN) for partition: "
                                  "c-9: UNKNOWN_TOPIC_OR_PARTITION")
            assert "1 replica(s) could not be elected" in err

    asyncio.run(scenario())
