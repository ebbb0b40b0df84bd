"""Transactional produce throughput next to idempotent and plain producers (librdkafka).

Each transaction is begin → ``per_txn`` records of ``size`` bytes → commit; the figure is
committed records per second over the whole run (commit latency included).
"""

from __future__ import annotations

import os
import time
import uuid

from confluent_kafka import Producer

__all__ = ["transactional_rate", "producer_rate"]

_COMMON = {"linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000}


def _produce_all(p: Producer, topic: str, payload: bytes, count: int) -> None:
    for _ in range(count):
        while True:
            try:
                p.produce(topic, payload)
                break
            except BufferError:
                p.poll(0.01)


def transactional_rate(bootstrap: str, topic: str, size: int, per_txn: int, total: int) -> float:
    p = Producer({"bootstrap.servers": bootstrap, **_COMMON,
                  "transactional.id": f"bench-{uuid.uuid4().hex[:8]}"})
    p.init_transactions(30)
    payload = os.urandom(size)
    t0 = time.perf_counter()
    for _ in range(max(total // per_txn, 1)):
        p.begin_transaction()
        _produce_all(p, topic, payload, per_txn)
        p.commit_transaction(60)
    return max(total // per_txn, 1) * per_txn / (time.perf_counter() - t0)


def producer_rate(bootstrap: str, topic: str, size: int, total: int, idempotent: bool) -> float:
    p = Producer({"bootstrap.servers": bootstrap, **_COMMON, "acks": "all",
                  "enable.idempotence": idempotent})
    payload = os.urandom(size)
    # Warm up: metadata, and for the idempotent producer its producer id, come before timing
    # (as init_transactions does for the transactional one).
    p.produce(topic, payload)
    p.flush(30)
    t0 = time.perf_counter()
    _produce_all(p, topic, payload, total)
    p.flush(120)
    return total / (time.perf_counter() - t0)
