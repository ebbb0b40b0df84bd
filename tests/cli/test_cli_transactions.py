"""``odradek transactions list|describe|describe-producers|find-hanging|abort``, run as real
subprocesses against a broker started in-process, plus unit tests of the pure helpers (state
parsing, which open transactions hang, finding the producer to abort).

An open transaction comes from a confluent-kafka transactional producer. A *hanging* one -- data
of a transaction no coordinator knows, so no marker will ever end it -- is made the way old
clients made them: a transactional batch produced with a plain idempotent producer id and no
transactional id, which the broker cannot check against a coordinator.
"""

from __future__ import annotations

import datetime
import sys
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from clirun import fails, ok
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from odradek.cli._raw import Connection
from odradek.cli.transactions import (
    AbortSpec,
    OpenTransaction,
    TransactionOwner,
    abort_spec_for_offset,
    hanging_transactions,
    open_transactions,
    parse_transaction_states,
)
from odradek.protocol.messages import request_schema
from odradek.protocol.records import SimpleRecord, encode_batch

# -- pure helpers ---------------------------------------------------------------------------------


def test_parse_transaction_states() -> None:
    assert parse_transaction_states([]) == []
    assert parse_transaction_states(["ongoing, PREPARECOMMIT", "Ongoing"]) == [
        "Ongoing",
        "PrepareCommit",
    ]
    with pytest.raises(ValueError, match="unknown transaction state 'Stable'; valid states: Empty"):
        parse_transaction_states(["Stable"])


def _producer(pid: int, start: int = -1, epoch: int = 0, coordinator_epoch: int = -1) -> Any:
    return SimpleNamespace(
        producer_id=pid,
        producer_epoch=epoch,
        coordinator_epoch=coordinator_epoch,
        current_txn_start_offset=start,
        last_timestamp=1000 + pid,
        last_sequence=0,
    )


def test_open_transactions_and_abort_spec() -> None:
    producers = [_producer(1), _producer(2, start=10, epoch=3), _producer(3, 12, 1, 7)]
    assert open_transactions("t", 4, producers) == [
        OpenTransaction("t", 4, 2, 3, -1, 10, 1002),
        OpenTransaction("t", 4, 3, 1, 7, 12, 1003),
    ]
    # A producer that never had a marker is aborted with coordinator epoch 0, as Kafka's tool.
    assert abort_spec_for_offset("t", 4, producers, 10) == AbortSpec("t", 4, 2, 3, 0)
    assert abort_spec_for_offset("t", 4, producers, 12) == AbortSpec("t", 4, 3, 1, 7)
    with pytest.raises(ValueError, match="no open transaction starts at offset 11 in t-4"):
        abort_spec_for_offset("t", 4, producers, 11)


def test_hanging_transactions_rule() -> None:
    def txn(pid: int, partition: int = 0) -> OpenTransaction:
        return OpenTransaction("t", partition, pid, 0, 0, 5, 0)

    owners = {
        1: TransactionOwner(1, frozenset({("t", 0)})),  # its coordinator will mark t-0
        2: TransactionOwner(9, frozenset({("t", 0)})),  # the id moved on to producer 9
        3: TransactionOwner(3, frozenset({("t", 1)})),  # its transaction lacks t-0
    }
    candidates = [txn(1), txn(2), txn(3), txn(4), txn(3, partition=1)]
    assert hanging_transactions(candidates, owners) == [txn(2), txn(3), txn(4)]


@given(
    candidates=st.lists(
        st.builds(OpenTransaction, st.just("t"), st.integers(0, 2), st.integers(0, 4),
                  st.just(0), st.just(0), st.integers(0, 99), st.just(0)),
        max_size=8,
    ),
    owners=st.dictionaries(
        st.integers(0, 4),
        st.builds(TransactionOwner, st.integers(0, 4),
                  st.frozensets(st.tuples(st.just("t"), st.integers(0, 2)), max_size=3)),
        max_size=5,
    ),
)
def test_hanging_is_exactly_what_no_coordinator_will_mark(
    candidates: list[OpenTransaction], owners: dict[int, TransactionOwner]
) -> None:
    hanging = hanging_transactions(candidates, owners)
    assert hanging == [c for c in candidates if c in hanging]  # order kept, a subset
    for c in candidates:
        owner = owners.get(c.producer_id)
        will_be_marked = (
            owner is not None
            and owner.producer_id == c.producer_id
            and ("t", c.partition) in owner.partitions
        )
        assert (c in hanging) != will_be_marked


# -- against a broker -----------------------------------------------------------------------------

integration = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from odradek.broker.runner import BrokerThread, local_config

    config = local_config(tmp_path_factory.mktemp("cli-txn") / "data")
    with BrokerThread(config) as broker:
        yield broker.bootstrap


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _topic(bootstrap: str, partitions: int = 1) -> str:
    name = _name("t")
    ok("topics", "create", name, "--partitions", str(partitions), "--bootstrap-server", bootstrap)
    return name


def _table(text: str) -> list[dict[str, str]]:
    """The rows of a command's table, as column name -> cell."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split()
    return [dict(zip(header, line.split(), strict=True)) for line in lines[1:]]


def _txn_producer(bootstrap: str) -> tuple[Producer, str]:
    txn_id = _name("txn")
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 0,
    })
    producer.init_transactions(30)
    return producer, txn_id


def _plain_produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(10) == 0


def _hang(bootstrap: str, topic: str, partition: int = 0, count: int = 2) -> tuple[int, int, int]:
    """Open a transaction no coordinator knows in ``topic``-``partition``; returns the producer
    id, its epoch and the offset the transaction starts at."""
    init_mod = sys.modules[request_schema(22, 4).__module__]  # type: ignore[union-attr]
    produce_mod = sys.modules[request_schema(0, 9).__module__]  # type: ignore[union-attr]
    conn = Connection(bootstrap, 5, 10, "hanging-maker")
    try:
        init = conn.request(init_mod.InitProducerIdRequest(
            transactional_id=None, transaction_timeout=datetime.timedelta(seconds=60),
        ))
        assert init.error_code == ErrorCode.none
        records = encode_batch(
            [SimpleRecord(b"hanging-%d" % i, timestamp=int(time.time() * 1000) - 1000)
             for i in range(count)],
            producer_id=init.producer_id,
            producer_epoch=init.producer_epoch,
            base_sequence=0,
            is_transactional=True,
        )
        answer = conn.request(produce_mod.ProduceRequest(
            transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
            topic_data=(produce_mod.TopicProduceData(name=topic, partition_data=(
                produce_mod.PartitionProduceData(index=partition, records=records),
            )),),
        ))
    finally:
        conn.close()
    (result,) = answer.responses[0].partition_responses
    assert result.error_code == ErrorCode.none, result
    return init.producer_id, init.producer_epoch, result.base_offset


def _producers(bootstrap: str, topic: str, partition: int = 0) -> dict[str, dict[str, str]]:
    out = ok("transactions", "describe-producers", "--topic", topic, "--partition",
             str(partition), "--bootstrap-server", bootstrap)
    return {row["ProducerId"]: row for row in _table(out)}


@integration
def test_list_and_describe_an_open_transaction(bootstrap: str) -> None:
    topic = _topic(bootstrap, partitions=2)
    b = ("--bootstrap-server", bootstrap)
    producer, txn_id = _txn_producer(bootstrap)
    producer.begin_transaction()
    for partition in (1, 0):
        producer.produce(topic, value=b"x", partition=partition)
    assert producer.flush(10) == 0

    rows = {r["TransactionalId"]: r for r in _table(ok("transactions", "list", *b))}
    assert rows[txn_id]["TransactionState"] == "Ongoing"
    assert rows[txn_id]["Coordinator"] == "1"
    pid = rows[txn_id]["ProducerId"]
    assert txn_id in ok("transactions", "list", "--state", "ongoing,PrepareCommit", *b)
    assert txn_id in ok("transactions", "list", "--producer-id", pid, *b)
    assert txn_id not in ok("transactions", "list", "--state", "CompleteCommit", *b)
    assert txn_id not in ok("transactions", "list", "--producer-id", str(int(pid) + 1000), *b)

    (row,) = _table(ok("transactions", "describe", txn_id, *b))
    assert row["TransactionalId"] == txn_id
    assert (row["ProducerId"], row["ProducerEpoch"]) == (pid, "0")
    assert row["TransactionState"] == "Ongoing"
    assert row["TopicPartitions"] == f"{topic}-0,{topic}-1"
    assert int(row["TransactionTimeoutMs"]) > 0
    start = int(row["CurrentTransactionStartTimeMs"])
    assert abs(start - time.time() * 1000) < 60_000
    assert int(row["TransactionDurationMs"]) >= 0

    # The partition's leader knows the producer and where its transaction starts.
    assert _producers(bootstrap, topic, 1)[pid]["CurrentTransactionStartOffset"] == "0"
    # It is open, but its coordinator will mark it: not hanging, however old.
    out = ok("transactions", "find-hanging", "--topic", topic, "--max-transaction-timeout", "0",
             *b)
    assert "No hanging transactions found." in out

    producer.commit_transaction(30)
    (row,) = _table(ok("transactions", "describe", txn_id, *b))
    assert row["TransactionState"] == "CompleteCommit"
    assert row["TopicPartitions"] == "-"
    assert _producers(bootstrap, topic, 1)[pid]["CurrentTransactionStartOffset"] == "-"


@integration
def test_describe_an_idle_transactional_id(bootstrap: str) -> None:
    """No transaction open: the broker sends start time -1, which the CLI shows as '-'."""
    producer, txn_id = _txn_producer(bootstrap)
    (row,) = _table(ok("transactions", "describe", txn_id, "--bootstrap-server", bootstrap))
    assert row["TransactionState"] == "Empty"
    assert row["CurrentTransactionStartTimeMs"] == "-"
    assert row["TopicPartitions"] in ("", "-")
    del producer


def test_abort_a_hanging_transaction_by_start_offset(bootstrap: str) -> None:
    topic = _topic(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    _plain_produce(bootstrap, topic, [b"before"])
    pid, epoch, start = _hang(bootstrap, topic)
    assert start == 1
    row = _producers(bootstrap, topic)[str(pid)]
    assert (row["ProducerEpoch"], row["CurrentTransactionStartOffset"]) == (str(epoch), "1")
    assert row["LatestCoordinatorEpoch"] == "-1"

    # Younger than the longest transaction time-out: it may still be completed.
    assert "No hanging" in ok("transactions", "find-hanging", "--topic", topic, *b)
    (found,) = _table(ok("transactions", "find-hanging", "--topic", topic, "--partition", "0",
                         "--max-transaction-timeout", "0", *b))
    assert (found["Topic"], found["Partition"], found["ProducerId"]) == (topic, "0", str(pid))
    assert (found["StartOffset"], found["ProducerEpoch"]) == ("1", str(epoch))

    assert "no open transaction starts at offset 2" in fails(
        "transactions", "abort", "--topic", topic, "--partition", "0", "--start-offset", "2", *b
    )
    out = ok("transactions", "abort", "--topic", topic, "--partition", "0", "--start-offset", "1",
             *b)
    assert f"Aborted the transaction of producer {pid} (epoch {epoch}) in {topic}-0." in out

    row = _producers(bootstrap, topic)[str(pid)]
    assert (row["CurrentTransactionStartOffset"], row["LatestCoordinatorEpoch"]) == ("-", "0")
    assert "No hanging" in ok("transactions", "find-hanging", "--topic", topic,
                              "--max-transaction-timeout", "0", *b)
    assert "no open transaction starts at offset 1" in fails(
        "transactions", "abort", "--topic", topic, "--partition", "0", "--start-offset", "1", *b
    )


@integration
def test_abort_by_producer_and_its_refusals(bootstrap: str) -> None:
    topic = _topic(bootstrap, partitions=2)
    b = ("--bootstrap-server", bootstrap)
    pid, epoch, start = _hang(bootstrap, topic, partition=1)
    assert (epoch, start) == (0, 0)

    def abort(producer_epoch: int, coordinator_epoch: int) -> list[str]:
        return [
            "transactions", "abort", "--topic", topic, "--partition", "1", "--producer-id",
            str(pid), "--producer-epoch", str(producer_epoch), "--coordinator-epoch",
            str(coordinator_epoch), *b,
        ]

    # A marker with a newer epoch ends the transaction and fences the producer's old epoch.
    ok(*abort(1, 0))
    row = _producers(bootstrap, topic, 1)[str(pid)]
    assert (row["ProducerEpoch"], row["CurrentTransactionStartOffset"]) == ("1", "-")
    err = fails(*abort(0, 0))
    assert "producer epoch 0 is older than the partition's (INVALID_PRODUCER_EPOCH)" in err
    # A marker from a newer coordinator epoch, then one from an older.
    ok(*abort(1, 4))
    err = fails(*abort(1, 3))
    assert "coordinator epoch 3 is older than the last marker's" in err
    assert "TRANSACTION_COORDINATOR_FENCED" in err
    assert _producers(bootstrap, topic, 1)[str(pid)]["LatestCoordinatorEpoch"] == "4"
    assert _producers(bootstrap, topic, 0) == {}  # the other partition saw nothing


@integration
def test_read_committed_consumer_moves_on_after_abort(bootstrap: str) -> None:
    topic = _topic(bootstrap)
    b = ("--bootstrap-server", bootstrap)
    _hang(bootstrap, topic)
    _plain_produce(bootstrap, topic, [b"after"])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": _name("g"),
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert _poll(consumer, seconds=2) == []  # stuck behind the hanging transaction
        ok("transactions", "abort", "--topic", topic, "--partition", "0", "--start-offset", "0",
           *b)
        assert _poll(consumer, seconds=20, until=1) == [b"after"]  # the aborted data is hidden
    finally:
        consumer.close()


def _poll(consumer: Consumer, *, seconds: float, until: int | None = None) -> list[bytes]:
    """Values consumed within ``seconds`` (returning early once ``until`` have come)."""
    values: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or len(values) < until):
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
    return values


@integration
def test_errors_are_one_line(bootstrap: str) -> None:
    b = ("--bootstrap-server", bootstrap)
    topic = _topic(bootstrap)
    missing = _name("missing")
    assert f"transactional id '{missing}' does not exist" in fails(
        "transactions", "describe", missing, *b
    )
    assert "unknown transaction state 'Asleep'" in fails(
        "transactions", "list", "--state", "Asleep", *b
    )
    assert f"topic '{missing}' does not exist" in fails(
        "transactions", "describe-producers", "--topic", missing, "--partition", "0", *b
    )
    assert f"topic '{topic}' has no partition 3 (it has 1)" in fails(
        "transactions", "find-hanging", "--topic", topic, "--partition", "3", *b
    )
    where = ("--topic", topic, "--partition", "0")
    assert "not both" in fails(
        "transactions", "abort", *where, "--start-offset", "0", "--producer-id", "1", *b
    )
    assert "give --start-offset, or all of" in fails(
        "transactions", "abort", *where, "--producer-id", "1", *b
    )
    err = fails("transactions", "list", "--bootstrap-server", "127.0.0.1:1",
                "--connect-timeout", "1")
    assert "cannot reach broker at 127.0.0.1:1" in err
