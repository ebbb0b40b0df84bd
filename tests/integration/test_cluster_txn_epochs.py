"""Transaction markers carry the coordinator epoch, as Kafka's: the leader epoch of the
transaction's ``__transaction_state`` partition. Three broker processes; the coordinator's
broker restarted (its partition's leader epoch moves on), after which a partition refuses a
marker with the old coordinator's epoch (TRANSACTION_COORDINATOR_FENCED)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.describe_producers.v0 import request as describe_producers_req
from kio.schema.metadata.v12 import request as metadata_req
from kio.schema.write_txn_markers.v1 import request as write_txn_markers_req
from rawclient import RawClient
from test_cluster_clients import (
    _INTERNAL,
    _coordinator,
    _create,
    _key_coordinated_elsewhere,
    _leaders,
    _wait,
)

from odradek.cluster.local import LocalCluster
from odradek.coordinator.txn.records import partition_for
from odradek.errors import ErrorCode
from odradek.topic_names import TRANSACTION_STATE_TOPIC

pytestmark = pytest.mark.integration

PARTITIONS = 6
STATE_PARTITIONS = int(_INTERNAL["transaction_state_log_num_partitions"])


def _state_leader_epoch(bootstrap: str, partition: int) -> int:
    body = metadata_req.MetadataRequest(
        topics=(metadata_req.MetadataRequestTopic(topic_id=None, name=TRANSACTION_STATE_TOPIC),),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False,
    )
    with RawClient(bootstrap) as c:
        response = c.request(body)
    (topic,) = response.topics
    return next(int(p.leader_epoch) for p in topic.partitions if p.partition_index == partition)


def _producer_state(address: str, topic: str, partition: int) -> Any:
    body = describe_producers_req.DescribeProducersRequest(topics=(
        describe_producers_req.TopicRequest(name=topic, partition_indexes=(partition,)),
    ))
    with RawClient(address) as c:
        response = c.request(body)
    (result,) = response.topics[0].partitions
    assert result.error_code == ErrorCode.none
    (state,) = result.active_producers
    return state


def _abort_marker(address: str, topic: str, partition: int, producer_id: int, epoch: int,
                  coordinator_epoch: int) -> int:
    w = write_txn_markers_req
    body = w.WriteTxnMarkersRequest(markers=(w.WritableTxnMarker(
        producer_id=producer_id, producer_epoch=epoch, transaction_result=False,
        topics=(w.WritableTxnMarkerTopic(name=topic, partition_indexes=(partition,)),),
        coordinator_epoch=coordinator_epoch,
    ),))
    with RawClient(address) as c:
        response = c.request(body)
    return int(response.markers[0].topics[0].partitions[0].error_code)


def test_markers_carry_the_coordinator_epoch_and_an_older_one_is_fenced(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=2000, **_INTERNAL)
    one = cluster.broker(1).address
    topic = f"epochs-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS and -1 not in ls.values() else None)(
            _leaders(one, topic)
        ),
        "every partition's leader",
    )
    txn_id, coordinator = _key_coordinated_elsewhere(one, f"ep-{topic}", 1, avoid=1)
    # A data partition another broker leads: its marker travels as WriteTxnMarkers.
    partition = next(p for p, leader in leaders.items() if leader != coordinator)
    data_leader = cluster.broker(leaders[partition]).address
    state_partition = partition_for(txn_id, STATE_PARTITIONS)

    def committed_transaction(value: bytes) -> None:
        producer = Producer({"bootstrap.servers": one, "transactional.id": txn_id,
                             "transaction.timeout.ms": 30_000})
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, value=value, partition=partition)
        producer.commit_transaction(30)

    def marked() -> Any:
        """The producer's state once its transaction's marker is in (EndTxn answers before)."""
        state = _producer_state(data_leader, topic, partition)
        return state if state.current_txn_start_offset == -1 else None

    committed_transaction(b"first")
    first_epoch = _state_leader_epoch(one, state_partition)
    state = _wait(marked, "the first marker")
    assert state.coordinator_epoch == first_epoch

    # The coordinator's broker restarts: it leads its partition again at a later leader epoch.
    # Its one replica gone, the partition is leaderless in a new epoch (awaited: a restart the
    # controller saw only together with the old registration's end would give the new
    # incarnation its single-replica partition in the same leader epoch).
    cluster.broker(coordinator).kill()
    _wait(lambda: _state_leader_epoch(one, state_partition) > first_epoch or None,
          "the state partition's leaderless epoch")
    cluster.broker(coordinator).restart()
    assert _coordinator(one, txn_id, 1) == coordinator
    second_epoch = _wait(
        lambda: (lambda e: e if e > first_epoch else None)(
            _state_leader_epoch(one, state_partition)
        ),
        "the state partition's new leader epoch",
    )
    committed_transaction(b"second")
    state = _wait(marked, "the second marker")
    assert state.coordinator_epoch == second_epoch
    producer_id, producer_epoch = int(state.producer_id), int(state.producer_epoch)

    # A marker from the deposed coordinator's epoch is refused and writes nothing; the current
    # one's is taken.
    assert _abort_marker(
        data_leader, topic, partition, producer_id, producer_epoch, first_epoch
    ) == ErrorCode.transaction_coordinator_fenced
    assert _producer_state(data_leader, topic, partition).coordinator_epoch == second_epoch
    assert _abort_marker(
        data_leader, topic, partition, producer_id, producer_epoch, second_epoch
    ) == ErrorCode.none


def test_a_transactional_produce_verified_by_another_broker_waits_for_replication(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    """A partition led by one broker, replicated to all three, written in a transaction that
    another broker coordinates: the leader asks the coordinator (AddPartitionsToTxn v4), appends,
    and answers once the batch is replicated. It used to try to encode the replication wait
    itself as the answer and close the connection (the retried send, then a duplicate already
    replicated, was answered)."""
    cluster = odradek_cluster_factory(brokers=3, session_timeout_ms=2000, **_INTERNAL)
    one = cluster.broker(1).address
    topic = f"verified-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": one})
    admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS and -1 not in ls.values() else None)(
            _leaders(one, topic)
        ),
        "every partition's leader",
    )
    txn_id, coordinator = _key_coordinated_elsewhere(one, f"rv-{topic}", 1, avoid=1)
    partition = next(p for p, leader in leaders.items() if leader != coordinator)
    delivered: list[tuple[int, int]] = []
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": one, "transactional.id": txn_id,
                         "transaction.timeout.ms": 30_000, "message.timeout.ms": 15_000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"v{i}".encode(), partition=partition,
                         on_delivery=report)
    producer.commit_transaction(30)
    assert errors == []
    assert delivered == [(partition, 0), (partition, 1), (partition, 2)]
    leader_log = cluster.broker(leaders[partition]).log_path.read_text(errors="replace")
    assert "request failed" not in leader_log, leader_log[-3000:]
