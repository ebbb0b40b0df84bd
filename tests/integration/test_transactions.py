"""Transactions with real clients: confluent-kafka (librdkafka) and aiokafka.

Every test checks two things separately: what the broker *wrote* (the batches and COMMIT/ABORT
markers in the log, read with raw Fetch and settled on the client side by :func:`txnkit.settle`)
and what it *serves* (consumers at read_uncommitted and read_committed, the last stable offset,
the aborted-transaction lists). Scenarios: transactional produce, and every coordinator
request, under dropped connections; commit and abort; an open transaction hidden from
read_committed; a zombie producer fenced by a new one with the same transactional id; a
transaction that times out and is aborted by the coordinator; DescribeTransactions and
ListTransactions; offsets sent to a transaction, which follow its outcome; and all of it across
a broker restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTP
from aiokafka.errors import KafkaError as AioKafkaError
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from faultproxy import PRODUCE
from kio.schema.errors import ErrorCode
from txnkit import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    TIMEOUT,
    Settled,
    TxnBroker,
    consume,
    create_topic,
    describe_transaction,
    list_offset,
    list_transactions,
    markers,
    read_log,
    settle,
    stable_fetch,
    txn_producer,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2
ISOLATIONS = ["read_uncommitted", "read_committed"]
OFFSETS_TOPIC = "__consumer_offsets"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TxnBroker]:
    b = TxnBroker(tmp_path / "data")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def topic(broker: TxnBroker) -> str:
    name = f"txn-{uuid.uuid4().hex[:8]}"
    create_topic(broker.direct, name, PARTITIONS)
    return name


def values(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


def produce_all(p: Producer, topic: str, vals: list[bytes]) -> None:
    """Round-robin over the partitions: value i goes to partition i % PARTITIONS."""
    for i, v in enumerate(vals):
        p.produce(topic, value=v, partition=i % PARTITIONS)
        p.poll(0)


def split(vals: list[bytes], partition: int) -> list[bytes]:
    return [v for i, v in enumerate(vals) if i % PARTITIONS == partition]


def settled(address: str, topic: str) -> list[Settled]:
    return [settle(read_log(address, topic, p)) for p in range(PARTITIONS)]


def by_partition(records: list[tuple[int, int, bytes]]) -> list[list[bytes]]:
    return [[v for p, _, v in records if p == part] for part in range(PARTITIONS)]


def fatal_error(excinfo: pytest.ExceptionInfo[KafkaException]) -> KafkaError:
    err: KafkaError = excinfo.value.args[0]
    return err


def commit_abort_commit(p: Producer, topic: str) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Transaction A committed, B aborted (flushed first, so its records reach the log), C
    committed."""
    a, b, c = values("a", 10), values("b", 10), values("c", 10)
    p.begin_transaction()
    produce_all(p, topic, a)
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    produce_all(p, topic, b)
    assert p.flush(TIMEOUT) == 0  # abort_transaction would purge unsent records
    p.abort_transaction(TIMEOUT)
    p.begin_transaction()
    produce_all(p, topic, c)
    p.commit_transaction(TIMEOUT)
    return a, b, c


def assert_commit_abort_commit_in_log(
    address: str, topic: str, a: list[bytes], b: list[bytes], c: list[bytes]
) -> None:
    for part, s in enumerate(settled(address, topic)):
        assert s.committed_values == split(a, part) + split(c, part), part
        assert s.aborted_values == split(b, part), part
        assert s.undecided_values == [], part
        ms = markers(read_log(address, topic, part))
        assert [m.commit for m in ms] == [True, False, True], ms
        assert len({(m.producer_id, m.producer_epoch) for m in ms}) == 1, ms


# -- transactional produce under dropped connections ----------------------------------------


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[TxnBroker]:
    b = TxnBroker(tmp_path / "data", proxied=True)
    try:
        yield b
    finally:
        b.close()


def _expected_after_drops(proxied: TxnBroker, topic: str, sent: list[bytes]) -> None:
    assert proxied.proxy is not None
    assert proxied.proxy.dropped == 3, "the faults did not hit"
    for part, s in enumerate(settled(proxied.direct, topic)):
        # Exactly once and in order: a retried batch was recognised, not appended again.
        assert s.committed_values == split(sent, part), part
        assert s.aborted_values == [] and s.undecided_values == [], part
        data = [b for b in read_log(proxied.direct, topic, part) if not b.header.is_control]
        seq = 0
        for batch in data:
            assert batch.header.is_transactional
            assert batch.header.base_sequence == seq, (part, batch.header)
            seq += len(batch.records)


def test_confluent_transactions_survive_dropped_produce_responses(proxied: TxnBroker) -> None:
    topic = f"drops-{uuid.uuid4().hex[:6]}"
    create_topic(proxied.direct, topic, PARTITIONS)
    assert proxied.proxy is not None
    p = txn_producer(proxied.bootstrap, f"drops-{topic}", **{"batch.num.messages": 5})
    proxied.proxy.drop_responses(PRODUCE, 3, pass_first=2, pass_between=2)
    sent: list[bytes] = []
    for t in range(3):
        vals = values(f"t{t}-", 40)
        p.begin_transaction()
        produce_all(p, topic, vals)
        p.commit_transaction(TIMEOUT)
        sent += vals
    _expected_after_drops(proxied, topic, sent)


def test_aiokafka_transactions_survive_dropped_produce_responses(proxied: TxnBroker) -> None:
    topic = f"aiodrops-{uuid.uuid4().hex[:6]}"
    create_topic(proxied.direct, topic, PARTITIONS)
    assert proxied.proxy is not None
    proxy = proxied.proxy
    sent: list[bytes] = []

    async def run() -> None:
        p = AIOKafkaProducer(
            bootstrap_servers=proxied.bootstrap,
            transactional_id=f"aiodrops-{topic}",
            linger_ms=1,
            max_batch_size=120,  # a few records per batch: many requests to fail
            retry_backoff_ms=20,
        )
        await p.start()
        proxy.drop_responses(PRODUCE, 3, pass_first=2, pass_between=2)
        try:
            for t in range(3):
                vals = values(f"t{t}-", 40)
                async with p.transaction():
                    futures = [
                        await p.send(topic, value=v, partition=i % PARTITIONS)
                        for i, v in enumerate(vals)
                    ]
                    await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
                sent.extend(vals)
        finally:
            await p.stop()

    asyncio.run(run())
    _expected_after_drops(proxied, topic, sent)


@pytest.mark.parametrize(
    "api_key",
    [24, 25, 26, 28],
    ids=["AddPartitionsToTxn", "AddOffsetsToTxn", "EndTxn", "TxnOffsetCommit"],
)
def test_confluent_transactions_survive_dropped_coordinator_responses(
    proxied: TxnBroker, api_key: int
) -> None:
    # The request took effect but the client never heard: its retry must get the same answer
    # (an EndTxn retried after the commit completed is a success, not INVALID_TXN_STATE).
    topic = f"coord-{api_key}-{uuid.uuid4().hex[:6]}"
    group = f"group-{topic}"
    create_topic(proxied.direct, topic, PARTITIONS)
    assert proxied.proxy is not None
    p = txn_producer(proxied.bootstrap, f"coord-{topic}")
    consumer = Consumer({"bootstrap.servers": proxied.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "log_level": 0})
    proxied.proxy.drop_responses(api_key, 2, pass_first=1, pass_between=1)
    sent: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        for t in range(4):
            vals = values(f"t{t}-", 6)
            p.begin_transaction()
            produce_all(p, topic, vals)
            p.send_offsets_to_transaction(
                [TopicPartition(topic, 0, t + 1)], consumer.consumer_group_metadata(), TIMEOUT
            )
            p.commit_transaction(TIMEOUT)
            sent += vals
        (committed,) = consumer.committed([TopicPartition(topic, 0)], TIMEOUT)
    finally:
        consumer.close()
    assert proxied.proxy.dropped == 2, "the faults did not hit"
    assert committed.offset == 4
    for part, s in enumerate(settled(proxied.direct, topic)):
        assert s.committed_values == split(sent, part), part
        assert s.aborted_values == [] and s.undecided_values == [], part
        assert [m.commit for m in markers(read_log(proxied.direct, topic, part))] == [True] * 4


# -- commit and abort -------------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_commit_and_abort_with_confluent(broker: TxnBroker, topic: str, isolation: str) -> None:
    p = txn_producer(broker.bootstrap, f"ca-{topic}")
    a, b, c = commit_abort_commit(p, topic)
    assert_commit_abort_commit_in_log(broker.direct, topic, a, b, c)
    got = by_partition(consume(broker.bootstrap, topic, PARTITIONS, isolation))
    for part in range(PARTITIONS):
        want = split(a, part) + split(c, part)
        if isolation == "read_uncommitted":
            want = split(a, part) + split(b, part) + split(c, part)
        assert got[part] == want, part


async def _aiokafka_read(bootstrap: str, topic: str, isolation: str) -> list[list[bytes]]:
    """Every record up to the end offsets at ``isolation`` (the LSO for read_committed)."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    await c.start()
    try:
        tps = [AioTP(topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: list[list[bytes]] = [[] for _ in range(PARTITIONS)]

        async def positions_reached() -> bool:
            return all([await c.position(tp) >= ends[tp] for tp in tps])

        async def loop() -> None:
            while not await positions_reached():
                for tp, msgs in (await c.getmany(timeout_ms=200)).items():
                    out[tp.partition].extend(m.value for m in msgs)

        await asyncio.wait_for(loop(), TIMEOUT)
        return out
    finally:
        await c.stop()


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_commit_and_abort_with_aiokafka(broker: TxnBroker, topic: str, isolation: str) -> None:
    a, b, c = values("a", 10), values("b", 10), values("c", 10)

    async def run() -> list[list[bytes]]:
        p = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, transactional_id=f"aio-{topic}", linger_ms=1
        )
        await p.start()
        try:
            for vals, commit in ((a, True), (b, False), (c, True)):
                await p.begin_transaction()
                futures = [
                    await p.send(topic, value=v, partition=i % PARTITIONS)
                    for i, v in enumerate(vals)
                ]
                await asyncio.gather(*futures)  # on the log before the marker
                if commit:
                    await p.commit_transaction()
                else:
                    await p.abort_transaction()
        finally:
            await p.stop()
        return await _aiokafka_read(broker.bootstrap, topic, isolation)

    got = asyncio.run(run())
    assert_commit_abort_commit_in_log(broker.direct, topic, a, b, c)
    for part in range(PARTITIONS):
        want = split(a, part) + split(c, part)
        if isolation == "read_uncommitted":
            want = split(a, part) + split(b, part) + split(c, part)
        assert got[part] == want, part


def test_open_transaction_is_hidden_from_read_committed(broker: TxnBroker, topic: str) -> None:
    p = txn_producer(broker.bootstrap, f"open-{topic}")
    a, b = values("a", 6), values("b", 6)
    p.begin_transaction()
    produce_all(p, topic, a)
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    produce_all(p, topic, b)
    assert p.flush(TIMEOUT) == 0
    # a's 3 records and its COMMIT marker are at offsets 0..3 of each partition; b starts at 4.
    for part in range(PARTITIONS):
        assert list_offset(broker.direct, topic, part, READ_UNCOMMITTED) == 7
        assert list_offset(broker.direct, topic, part, READ_COMMITTED) == 4
        view = stable_fetch(broker.direct, topic, part)
        assert (view.high_watermark, view.last_stable_offset) == (7, 4)
        assert view.data_offsets == (0, 1, 2)
    got = by_partition(consume(broker.bootstrap, topic, PARTITIONS, "read_committed"))
    assert got == [split(a, part) for part in range(PARTITIONS)]
    p.commit_transaction(TIMEOUT)
    for part in range(PARTITIONS):
        assert list_offset(broker.direct, topic, part, READ_COMMITTED) == 8
    got = by_partition(consume(broker.bootstrap, topic, PARTITIONS, "read_committed"))
    assert got == [split(a, part) + split(b, part) for part in range(PARTITIONS)]


def test_read_committed_fetch_lists_the_aborted_transactions(
    broker: TxnBroker, topic: str
) -> None:
    p = txn_producer(broker.bootstrap, f"aborted-{topic}")
    commit_abort_commit(p, topic)
    pid = describe_transaction(broker.direct, f"aborted-{topic}").producer_id
    for part in range(PARTITIONS):
        # Per partition: a at 0..4 + COMMIT 5, b at 6..10 + ABORT 11, c at 12..16 + COMMIT 17.
        view = stable_fetch(broker.direct, topic, part)
        assert (view.high_watermark, view.last_stable_offset) == (18, 18)
        assert view.aborted == ((pid, 6),)


# -- fencing ----------------------------------------------------------------------------------


def test_zombie_confluent_producer_is_fenced(broker: TxnBroker, topic: str) -> None:
    txn_id = f"zombie-{topic}"
    old = txn_producer(broker.bootstrap, txn_id)
    before = describe_transaction(broker.direct, txn_id)
    old.begin_transaction()
    produce_all(old, topic, values("old", 4))
    assert old.flush(TIMEOUT) == 0
    new = txn_producer(broker.bootstrap, txn_id)
    after = describe_transaction(broker.direct, txn_id)
    assert after.producer_id == before.producer_id
    # One bump to fence the open transaction, one for the new producer (as Kafka does).
    assert after.producer_epoch == before.producer_epoch + 2
    assert after.state == "Empty", after
    with pytest.raises(KafkaException) as excinfo:
        old.commit_transaction(TIMEOUT)
    err = fatal_error(excinfo)
    assert err.fatal(), err
    assert err.code() == KafkaError._FENCED, err
    new.begin_transaction()
    produce_all(new, topic, values("new", 4))
    new.commit_transaction(TIMEOUT)
    for part, s in enumerate(settled(broker.direct, topic)):
        assert s.aborted_values == split(values("old", 4), part)
        assert s.committed_values == split(values("new", 4), part)
        ms = markers(read_log(broker.direct, topic, part))
        assert [(m.commit, m.producer_epoch) for m in ms] == [
            (False, before.producer_epoch + 1),
            (True, before.producer_epoch + 2),
        ]


def test_zombie_aiokafka_producer_is_fenced(broker: TxnBroker, topic: str) -> None:
    txn_id = f"aiozombie-{topic}"

    async def run() -> None:
        old = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=txn_id)
        new = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=txn_id)
        await old.start()
        try:
            await old.begin_transaction()
            await old.send_and_wait(topic, b"old", partition=0)
            await new.start()
            try:
                with pytest.raises(AioKafkaError) as excinfo:
                    await old.commit_transaction()
                assert type(excinfo.value).__name__ in ("ProducerFenced", "InvalidProducerEpoch")
                async with new.transaction():
                    await new.send_and_wait(topic, b"new", partition=0)
            finally:
                await new.stop()
        finally:
            await old.stop()

    asyncio.run(run())
    s = settle(read_log(broker.direct, topic, 0))
    assert (s.aborted_values, s.committed_values) == ([b"old"], [b"new"])


# -- timeouts ---------------------------------------------------------------------------------


def _open_transaction(p: Producer, topic: str, vals: list[bytes]) -> None:
    p.begin_transaction()
    produce_all(p, topic, vals)
    assert p.flush(TIMEOUT) == 0


def _wait_for_state(address: str, txn_id: str, state: str, timeout: float = 15.0) -> None:
    wait_until(
        lambda: describe_transaction(address, txn_id).state == state,
        f"{txn_id} to become {state}",
        timeout=timeout,
        interval=0.1,
        detail=lambda: describe_transaction(address, txn_id),
    )


def test_open_transaction_times_out_and_is_aborted(broker: TxnBroker, topic: str) -> None:
    txn_id = f"timeout-{topic}"
    p = txn_producer(broker.bootstrap, txn_id, **{"transaction.timeout.ms": 2000})
    epoch = describe_transaction(broker.direct, txn_id).producer_epoch
    _open_transaction(p, topic, values("late", 4))
    assert describe_transaction(broker.direct, txn_id).state == "Ongoing"
    _wait_for_state(broker.direct, txn_id, "CompleteAbort")
    assert describe_transaction(broker.direct, txn_id).producer_epoch == epoch + 1
    for part, s in enumerate(settled(broker.direct, topic)):
        assert s.aborted_values == split(values("late", 4), part)
        assert s.committed_values == [] and s.undecided_values == []
    # The coordinator bumped the epoch when it aborted: the producer is fenced.
    with pytest.raises(KafkaException):
        p.produce(topic, value=b"too-late", partition=0)
        p.commit_transaction(TIMEOUT)
    # A new instance with the same id carries on.
    again = txn_producer(broker.bootstrap, txn_id)
    again.begin_transaction()
    produce_all(again, topic, values("next", 2))
    again.commit_transaction(TIMEOUT)
    assert settle(read_log(broker.direct, topic, 0)).committed_values == [b"next0"]


# -- DescribeTransactions / ListTransactions ------------------------------------------------


def test_describe_and_list_show_an_ongoing_transaction(broker: TxnBroker, topic: str) -> None:
    txn_id = f"desc-{topic}"
    group = f"group-{topic}"
    p = txn_producer(broker.bootstrap, txn_id, **{"transaction.timeout.ms": 45000})
    ready = describe_transaction(broker.direct, txn_id)
    assert (ready.error_code, ready.state, ready.partitions) == (ErrorCode.none, "Empty",
                                                                 frozenset())
    assert ready.timeout_ms == 45000
    _open_transaction(p, topic, values("x", 4))
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "log_level": 0})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        p.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 2)], consumer.consumer_group_metadata(), TIMEOUT
        )
        ongoing = describe_transaction(broker.direct, txn_id)
        assert ongoing.state == "Ongoing"
        assert (ongoing.producer_id, ongoing.producer_epoch) == (ready.producer_id,
                                                                 ready.producer_epoch)
        data = {(topic, part) for part in range(PARTITIONS)}
        assert data < ongoing.partitions
        (extra,) = ongoing.partitions - data
        assert extra[0] == OFFSETS_TOPIC
        listed, unknown = list_transactions(broker.direct, states=("Ongoing", "Bogus"))
        assert listed.get(txn_id) == (ongoing.producer_id, "Ongoing")
        assert unknown == ("Bogus",)
        assert txn_id not in list_transactions(broker.direct, states=("CompleteCommit",))[0]
        by_pid, _ = list_transactions(broker.direct, producer_ids=(ongoing.producer_id,))
        assert set(by_pid) == {txn_id}
        p.commit_transaction(TIMEOUT)
        done = describe_transaction(broker.direct, txn_id)
        assert (done.state, done.partitions) == ("CompleteCommit", frozenset())
        assert txn_id not in list_transactions(broker.direct, states=("Ongoing",))[0]
        assert list_transactions(broker.direct)[0][txn_id] == (ongoing.producer_id,
                                                                "CompleteCommit")
        # The offsets went in with the commit.
        (committed,) = consumer.committed([TopicPartition(topic, 0)], TIMEOUT)
        assert committed.offset == 2
    finally:
        consumer.close()
    unknown_id = describe_transaction(broker.direct, f"nobody-{topic}")
    assert unknown_id.error_code == ErrorCode.transactional_id_not_found


# -- across a broker restart ------------------------------------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_transactions_survive_a_restart(broker: TxnBroker, topic: str, isolation: str) -> None:
    txn_id = f"restart-{topic}"
    p = txn_producer(broker.bootstrap, txn_id)
    a, b, c = commit_abort_commit(p, topic)
    d = values("d", 6)
    _open_transaction(p, topic, d)
    before = describe_transaction(broker.direct, txn_id)
    assert before.state == "Ongoing"
    broker.restart()
    after = describe_transaction(broker.direct, txn_id)
    assert after == before  # the open transaction, its producer and partitions are reloaded
    # The same producer (it reconnects to the same port) commits the transaction it opened.
    p.commit_transaction(TIMEOUT)
    assert describe_transaction(broker.direct, txn_id).state == "CompleteCommit"
    for part, s in enumerate(settled(broker.direct, topic)):
        assert s.committed_values == split(a, part) + split(c, part) + split(d, part)
        assert s.aborted_values == split(b, part)
    got = by_partition(consume(broker.bootstrap, topic, PARTITIONS, isolation))
    for part in range(PARTITIONS):
        want = split(a, part) + split(c, part) + split(d, part)
        if isolation == "read_uncommitted":
            want = split(a, part) + split(b, part) + split(c, part) + split(d, part)
        assert got[part] == want, part


def test_zombie_is_fenced_across_a_restart(broker: TxnBroker, topic: str) -> None:
    txn_id = f"rzombie-{topic}"
    old = txn_producer(broker.bootstrap, txn_id)
    _open_transaction(old, topic, values("old", 4))
    broker.restart()
    new = txn_producer(broker.bootstrap, txn_id)
    with pytest.raises(KafkaException) as excinfo:
        old.commit_transaction(TIMEOUT)
    assert fatal_error(excinfo).code() == KafkaError._FENCED
    new.begin_transaction()
    produce_all(new, topic, values("new", 4))
    new.commit_transaction(TIMEOUT)
    for part, s in enumerate(settled(broker.direct, topic)):
        assert s.aborted_values == split(values("old", 4), part)
        assert s.committed_values == split(values("new", 4), part)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_transaction_open_at_a_restart_times_out(
    broker: TxnBroker, topic: str, isolation: str
) -> None:
    txn_id = f"rtimeout-{topic}"
    p = txn_producer(broker.bootstrap, txn_id, **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    produce_all(p, topic, values("kept", 4))
    p.commit_transaction(TIMEOUT)
    _open_transaction(p, topic, values("lost", 4))
    broker.stop()
    broker.start()
    _wait_for_state(broker.direct, txn_id, "CompleteAbort")
    for part, s in enumerate(settled(broker.direct, topic)):
        assert s.committed_values == split(values("kept", 4), part)
        assert s.aborted_values == split(values("lost", 4), part)
    got = by_partition(consume(broker.bootstrap, topic, PARTITIONS, isolation))
    for part in range(PARTITIONS):
        want = split(values("kept", 4), part)
        if isolation == "read_uncommitted":
            want += split(values("lost", 4), part)
        assert got[part] == want, part


# -- transactional offsets --------------------------------------------------------------------


def _committed(
    bootstrap: str, group: str, topic: str, *, isolation: str = "read_uncommitted",
    timeout: float = TIMEOUT,
) -> int:
    """The group's committed offset of partition 0. A read_committed consumer asks with
    require_stable (KIP-447), and librdkafka retries UNSTABLE_OFFSET_COMMIT until ``timeout``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0,
                  "isolation.level": isolation})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout)
    finally:
        c.close()
    return int(tp.offset)


def _assert_unstable(bootstrap: str, group: str, topic: str) -> None:
    with pytest.raises(KafkaException) as excinfo:
        _committed(bootstrap, group, topic, isolation="read_committed", timeout=1.0)
    assert fatal_error(excinfo).code() == KafkaError._TIMED_OUT


def _send_offset(p: Producer, consumer: Consumer, topic: str, offset: int) -> None:
    p.send_offsets_to_transaction(
        [TopicPartition(topic, 0, offset)], consumer.consumer_group_metadata(), TIMEOUT
    )


def test_transactional_offsets_follow_the_outcome_across_a_restart(
    broker: TxnBroker, topic: str
) -> None:
    group = f"offsets-{topic}"
    p = txn_producer(broker.bootstrap, f"offsets-{topic}")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "log_level": 0})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        p.begin_transaction()
        _send_offset(p, consumer, topic, 7)
        p.commit_transaction(TIMEOUT)
        p.begin_transaction()
        _send_offset(p, consumer, topic, 9)
        p.abort_transaction(TIMEOUT)
        assert _committed(broker.bootstrap, group, topic) == 7
        p.begin_transaction()
        _send_offset(p, consumer, topic, 11)
        assert _committed(broker.bootstrap, group, topic) == 7  # pending until the marker
        _assert_unstable(broker.bootstrap, group, topic)
        broker.restart()
        # Replaying __consumer_offsets honours the markers: the aborted 9 stays dropped and
        # the pending 11 stays pending.
        assert _committed(broker.bootstrap, group, topic) == 7
        _assert_unstable(broker.bootstrap, group, topic)
        p.commit_transaction(TIMEOUT)
        assert _committed(broker.bootstrap, group, topic, isolation="read_committed") == 11
        broker.restart()
        assert _committed(broker.bootstrap, group, topic) == 11
    finally:
        consumer.close()


def test_offsets_of_a_timed_out_transaction_are_dropped(broker: TxnBroker, topic: str) -> None:
    group = f"toffsets-{topic}"
    txn_id = f"toffsets-{topic}"
    p = txn_producer(broker.bootstrap, txn_id, **{"transaction.timeout.ms": 2000})
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "log_level": 0})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        p.begin_transaction()
        _send_offset(p, consumer, topic, 5)
        _wait_for_state(broker.direct, txn_id, "CompleteAbort")
    finally:
        consumer.close()
    assert _committed(broker.bootstrap, group, topic) < 0  # no offset was ever committed
    broker.restart()
    assert _committed(broker.bootstrap, group, topic) < 0
