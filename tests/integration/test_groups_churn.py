"""Membership churn: members of all three clients join, leave and crash at random while records
are produced. Afterwards every record was processed at least once, everything was committed, and
no committed offset ever moved back (checked on every commit the broker stored, read back from
``__consumer_offsets``).

The random choices come from a seeded generator; set ``ODRADEK_CHURN_SEED`` to replay a run.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from groupkit import (
    ChildConsumer,
    assert_commits_never_move_back,
    assert_every_record_processed,
    commit_history,
    committed,
    create_topic,
    describe,
    disjoint_and_complete,
    processed,
    start_broker,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 6
RECORDS = 2400
CLIENTS = ("confluent", "kafka-python", "aiokafka")
MAX_MEMBERS = 4
MIN_ACTIONS = 8


class BackgroundProducer:
    """Produces RECORDS records round-robin over the partitions from its own thread, paced by
    waiting on delivery reports; ``acked`` maps (partition, offset) to value."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.acked: dict[tuple[int, int], str] = {}
        self.errors: list[Any] = []
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                   "log_level": 3})
        self._topic = topic
        self._thread = threading.Thread(target=self._run, name="churn-producer", daemon=True)
        self._thread.start()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[(msg.partition(), msg.offset())] = msg.value().decode()

    def _run(self) -> None:
        for i in range(RECORDS):
            self._producer.produce(self._topic, value=f"r{i}".encode(), partition=i % PARTITIONS,
                                   on_delivery=self._on_delivery)
            self._producer.poll(0.004)  # about 250 records a second
        self._producer.flush(30)

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(60)
        assert not self._thread.is_alive(), "the producer did not finish"
        assert not self.errors, self.errors[:3]
        assert len(self.acked) == RECORDS


def test_random_churn_loses_nothing_and_never_moves_commits_back(tmp_path: Path) -> None:
    seed = int(os.environ.get("ODRADEK_CHURN_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    broker = start_broker(tmp_path / "data")
    bootstrap = broker.bootstrap
    topic = f"churn-{uuid.uuid4().hex[:6]}"
    group = f"group-{topic}"
    live: list[ChildConsumer] = []
    everyone: list[ChildConsumer] = []
    log: list[str] = []

    def join() -> None:
        client = rng.choice(CLIENTS)
        m = ChildConsumer(client, bootstrap, group, [topic], name=f"m{len(everyone)}",
                          assignor="range")
        live.append(m)
        everyone.append(m)
        log.append(f"join {m.name} ({client})")

    try:
        create_topic(bootstrap, topic, PARTITIONS)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        join()
        join()
        producer = BackgroundProducer(bootstrap, topic)
        actions = 0
        while producer.running() or actions < MIN_ACTIONS:
            # Churn only while the group makes progress: some records processed since the
            # last change (or, once production stopped, everything so far processed).
            mark = len(processed(everyone))
            target = min(mark + 60, len(producer.acked)) if producer.running() else -1

            def progressed(target: int = target) -> bool:
                for m in live:
                    m.check()
                if target < 0:
                    return set(producer.acked) <= processed(everyone)
                return len(processed(everyone)) >= target

            wait_until(progressed, f"progress after {log[-1:]} (seed {seed})",
                       detail=lambda: log)
            choice = rng.random()
            if len(live) < 2 or (choice < 0.4 and len(live) < MAX_MEMBERS):
                join()
            elif choice < 0.75:
                victim = live.pop(rng.randrange(len(live)))
                log.append(f"close {victim.name}")
                victim.close()
            else:
                victim = live.pop(rng.randrange(len(live)))
                log.append(f"kill {victim.name}")
                victim.kill()
            actions += 1
        producer.join()
        print("churn:", seed, log)

        # The survivors settle, process everything and commit it.
        def settled() -> bool:
            for m in live:
                m.check()
            view = describe(admin, group)
            return (
                disjoint_and_complete([m.owned() for m in live], PARTITIONS)
                and view.state == "STABLE" and len(view.members) == len(live)
            )

        wait_until(settled, f"the last members to settle (seed {seed})", detail=lambda: log)
        end = {p: len([k for k in producer.acked if k[0] == p]) for p in range(PARTITIONS)}
        wait_until(lambda: committed(admin, group, topic, PARTITIONS) == end,
                   f"everything committed (seed {seed})",
                   detail=lambda: (committed(admin, group, topic, PARTITIONS), log))
        for m in list(live):
            live.remove(m)
            m.close()
        assert_every_record_processed(everyone, producer.acked)
        history = commit_history(bootstrap, group)
        assert history, "no commit was stored"
        assert_commits_never_move_back(history)
        assert {(t, p) for t, p, _ in history} == {(topic, p) for p in range(PARTITIONS)}
    finally:
        for m in everyone:
            m.kill()
        broker.stop()
