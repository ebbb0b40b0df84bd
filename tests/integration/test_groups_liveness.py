"""Classic-group liveness as the Python clients' own suites check it against Kafka.

The brokers here run with the group settings those suites give Kafka
(``group.initial.rebalance.delay.ms=0``, ``group.min.session.timeout.ms=1000``; see
:func:`groupkit.group_broker_config`). With odradek's defaults, which are Kafka's own
(3000 ms and 6000 ms), a 3 s session is refused with INVALID_SESSION_TIMEOUT and every new
group waits 3 s before its first generation, on Kafka and here alike.

- Four kafka-python members with a 3 s session settle on one generation within 15 s, each with
  one of the four partitions, then stay in the group on their heartbeats alone: every member's
  heartbeats are answered NONE over more than a session timeout, and nothing rebalances.
- An aiokafka member that stops polling leaves the group after ``max.poll.interval.ms`` (3 s);
  the other member takes over its partition at once, and the first one rejoins and consumes
  again when it polls again.
- An aiokafka pattern subscription follows topics that producers' metadata requests create;
  the group rebalances with each new subscription and its records are consumed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as AioTP
from confluent_kafka.admin import AdminClient
from groupkit import (
    ChildConsumer,
    create_topic,
    describe,
    disjoint_and_complete,
    produce,
    start_broker,
    wait_until,
)
from kio.serial import entity_reader
from recording_proxy import Exchange, RecordingProxy

from odradek.broker.runner import BrokerThread
from odradek.protocol.messages import decode_request, peek_preamble, request_schema, response_schema

pytestmark = pytest.mark.integration

HEARTBEAT_KEY = 12


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerThread]:
    b = start_broker(tmp_path / "data", num_partitions="2")
    try:
        yield b
    finally:
        b.stop()


# -- four kafka-python members ----------------------------------------------------------------


def _heartbeats(exchanges: list[Exchange]) -> list[tuple[str, int, int]]:
    """(member id, generation, error code) of every answered Heartbeat, in request order."""
    out = []
    for ex in exchanges:
        if ex.api_key != HEARTBEAT_KEY or ex.response is None:
            continue
        preamble = peek_preamble(ex.request)
        schema = request_schema(HEARTBEAT_KEY, ex.api_version)
        assert schema is not None
        body = decode_request(ex.request, preamble, schema).body
        rschema = response_schema(HEARTBEAT_KEY, ex.api_version)
        _, n = entity_reader(rschema.__header_schema__)(ex.response, 0)
        answer, _ = entity_reader(rschema)(ex.response, n)
        out.append((body.member_id, body.generation_id, int(answer.error_code)))
    return out


def test_four_kafka_python_members_settle_and_stay_on_heartbeats(tmp_path: Path) -> None:
    session_ms, heartbeat_ms, partitions = 3000, 500, 4
    with RecordingProxy() as proxy:
        # The broker advertises the proxy, so every connection of the members goes through it.
        broker = start_broker(
            tmp_path / "data", advertised_listeners=f"PLAINTEXT://127.0.0.1:{proxy.port}"
        )
        try:
            proxy.upstream = (broker.broker.host, broker.broker.port)
            bootstrap = f"127.0.0.1:{proxy.port}"
            topic = f"four-{uuid.uuid4().hex[:6]}"
            group = f"group-{topic}"
            create_topic(bootstrap, topic, partitions)
            admin = AdminClient({"bootstrap.servers": bootstrap})
            coordinator = broker.broker.group_coordinator
            members = [
                ChildConsumer("kafka-python", bootstrap, group, [topic], name=f"c{i}",
                              session_ms=session_ms, heartbeat_ms=heartbeat_ms)
                for i in range(4)
            ]
            try:
                # Start the clock once every member polls (process start-up is not the broker's).
                def polling() -> bool:
                    for m in members:
                        m.check()
                    return all(m.events("owned") for m in members)

                wait_until(polling, "members polling")

                def settled() -> bool:
                    mine = [m.owned() for m in members]
                    if not (disjoint_and_complete(mine, partitions)
                            and all(len(p) == 1 for p in mine)):
                        return False
                    view = describe(admin, group)
                    return view.state == "STABLE" and sorted(
                        map(sorted, view.partitions())) == sorted(map(sorted, mine))

                wait_until(settled, "four members on one stable generation", timeout=15,
                           detail=lambda: ([sorted(m.owned()) for m in members],
                                           describe(admin, group)))
                generation = coordinator.groups[group].generation_id
                ids = {m.member_id for m in describe(admin, group).members}
                mark = len(proxy.snapshot())

                def beats_since_settled() -> dict[str, int]:
                    counts = dict.fromkeys(ids, 0)
                    for member_id, gen, error in _heartbeats(proxy.snapshot()[mark:]):
                        assert (member_id, gen, error) == (member_id, generation, 0), (
                            f"heartbeat of {member_id} in generation {gen} answered {error}"
                        )
                        counts[member_id] += 1
                    return counts

                # Seven answered heartbeats 500 ms apart span more than the 3 s session.
                enough = session_ms // heartbeat_ms + 1
                wait_until(lambda: min(beats_since_settled().values()) >= enough,
                           f"{enough} heartbeats of every member", timeout=30,
                           detail=beats_since_settled)
                view = describe(admin, group)
                assert view.state == "STABLE"
                assert {m.member_id for m in view.members} == ids
                assert coordinator.groups[group].generation_id == generation
                for m in members:
                    m.close()
            finally:
                for m in members:
                    m.kill()
        finally:
            broker.stop()


# -- aiokafka ---------------------------------------------------------------------------------


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assigned: list[set[AioTP]] = []

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned.append(set(assigned))


async def _until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_member_that_stops_polling_leaves_and_comes_back(broker: BrokerThread) -> None:
    bootstrap = broker.bootstrap
    topic = f"stall-{uuid.uuid4().hex[:6]}"
    group = f"group-{topic}"
    create_topic(bootstrap, topic, 2)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    first = produce(bootstrap, topic, [str(i) for i in range(20)], 2)
    max_poll_s = 3

    async def run() -> None:
        def consumer(name: str, **extra: Any) -> AIOKafkaConsumer:
            return AIOKafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, client_id=name,
                auto_offset_reset="earliest", heartbeat_interval_ms=100, **extra,
            )

        stalls = consumer("stalls", max_poll_interval_ms=max_poll_s * 1000)
        polls = consumer("polls")
        seen_by_stalls, seen_by_polls = _Assignments(), _Assignments()
        await stalls.start()
        await polls.start()
        try:
            stalls.subscribe([topic], listener=seen_by_stalls)
            polls.subscribe([topic], listener=seen_by_polls)
            await _until(lambda: stalls.assignment() and polls.assignment(),
                         "both members assigned")
            assert stalls.assignment().isdisjoint(polls.assignment())
            # Only "polls" polls from here on: it cannot read every record until "stalls",
            # silent for max.poll.interval.ms, has left the group and its partition moved.
            started = time.monotonic()
            values: set[str] = set()
            while len(values) < len(first):
                msg = await asyncio.wait_for(polls.getone(), timeout=max_poll_s + 10)
                values.add(msg.value.decode())
            took = time.monotonic() - started
            assert values == set(first.values())
            assert took < max_poll_s + 5, f"the partition moved after {took:.1f} s"
            view = describe(admin, group)
            assert [m.client_id for m in view.members] == ["polls"]
            assert view.partitions() == [frozenset({0, 1})]
            # Polling again, "stalls" rejoins, gets a partition back and reads new records.
            later = produce(bootstrap, topic, [str(i) for i in range(20, 40)], 2)
            mine: set[int] = set()
            for _ in range(5):
                msg = await asyncio.wait_for(stalls.getone(), timeout=30)
                assert msg.value.decode() in later.values()
                mine.add(msg.partition)
            assert stalls.assignment() and {tp.partition for tp in stalls.assignment()} >= mine
            await _until(lambda: len(describe(admin, group).members) == 2, "both in the group")
            assert len(seen_by_stalls.assigned) >= 2  # assigned, then assigned again
        finally:
            await stalls.stop()
            await polls.stop()

    asyncio.run(run())


def test_pattern_subscription_follows_auto_created_topics(broker: BrokerThread) -> None:
    bootstrap = broker.bootstrap
    prefix = f"auto-{uuid.uuid4().hex[:6]}"
    group = f"group-{prefix}"
    first, second = f"{prefix}-1", f"{prefix}-2"

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, metadata_max_age_ms=200,
            fetch_max_wait_ms=50, auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await consumer.start()
        await producer.start()
        try:
            consumer.subscribe(pattern=f"^{prefix}-.*$")
            waiting = asyncio.ensure_future(consumer.getone())
            assert consumer.subscription() == set()
            # A producer's metadata request creates the topic (auto.create.topics.enable);
            # the consumer's next metadata refresh matches it and the group rebalances.
            assert await producer.partitions_for(first) == {0, 1}
            await _until(lambda: consumer.subscription() == {first}, "first topic subscribed")
            assert await producer.partitions_for(second) == {0, 1}
            await _until(lambda: consumer.subscription() == {first, second},
                         "second topic subscribed")
            await _until(lambda: {tp.topic for tp in consumer.assignment()} == {first, second},
                         "both topics assigned")
            assert not waiting.done()
            await producer.send_and_wait(first, b"to the first")
            msg = await asyncio.wait_for(waiting, timeout=10)
            assert (msg.topic, msg.value) == (first, b"to the first")
            await producer.send_and_wait(second, b"to the second")
            msg = await asyncio.wait_for(consumer.getone(), timeout=10)
            assert (msg.topic, msg.value) == (second, b"to the second")
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(run())
