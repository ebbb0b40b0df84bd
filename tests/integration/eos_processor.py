"""A consume-transform-produce processor for test_eos_loop.py, run as a child process so the
test can SIGKILL it.

    python eos_processor.py BOOTSTRAP IN OUT PARTITIONS GROUP TXN_ID END_OFFSETS SEED

For each input record (partition p, offset o) it writes one output record to partition p with
value ``b"p:o"``, in transactions of 1..15 records that also carry the consumer's positions
(send_offsets_to_transaction); one transaction in five is aborted on purpose (after a flush, so
its records reach the log) and its input re-read. It starts where the group's committed offsets
say, after InitProducerId has fenced any older instance and aborted its open transaction. It
prints ``done`` and exits 0 once the committed offsets reach END_OFFSETS (comma-separated, one
per partition); it exits 3 on a fatal error (the test starts a new instance).
"""

from __future__ import annotations

import faulthandler
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

DEADLINE_S = 60.0
OP_TIMEOUT_S = 10.0
ABORT_ONE_IN = 5
T = TypeVar("T")


def log(msg: str) -> None:
    print(f"processor: {msg}", file=sys.stderr, flush=True)


def retrying(what: str, op: Callable[..., T], *args: object) -> T:
    """Run ``op`` until it succeeds; retriable errors are retried, others raised."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            return op(*args)
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if err.fatal() or err.txn_requires_abort() or time.monotonic() > deadline:
                raise
            if not err.retriable() and err.code() != KafkaError._TIMED_OUT:
                raise
            log(f"{what}: {err.str()}; retrying")


def main() -> int:
    faulthandler.register(signal.SIGUSR1)  # the test asks for stacks when the run stalls
    bootstrap, src, dst, n_parts, group, txn_id, ends_arg, seed = sys.argv[1:]
    partitions = int(n_parts)
    ends = [int(x) for x in ends_arg.split(",")]
    rng = random.Random(int(seed))
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 20000,
        "message.timeout.ms": 15000,
        "linger.ms": 1,
        "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        # librdkafka's default ("rebootstrap") forgets every broker once all are down; after
        # that a pending send_offsets_to_transaction never sends its TxnOffsetCommit and
        # hangs past its timeout (librdkafka 2.16). Keep the known broker instead.
        "metadata.recovery.strategy": "none",
        "log_level": 0,
    })
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200,
        # librdkafka's default ("rebootstrap") forgets every broker once all are down; after
        # that a pending send_offsets_to_transaction never sends its TxnOffsetCommit and
        # hangs past its timeout (librdkafka 2.16). Keep the known broker instead.
        "metadata.recovery.strategy": "none",
        "log_level": 0,
    })
    # Fence older instances (aborting their open transaction, and with it their pending
    # offsets) before reading the committed offsets.
    retrying("init_transactions", producer.init_transactions, OP_TIMEOUT_S)
    tps = [TopicPartition(src, p) for p in range(partitions)]
    committed_tps = retrying("committed", consumer.committed, tps, OP_TIMEOUT_S)
    committed = [max(tp.offset, 0) for tp in committed_tps]
    log(f"starting at {committed}")

    def rewind() -> None:
        consumer.assign([TopicPartition(src, p, committed[p]) for p in range(partitions)])

    rewind()
    idle_since = time.monotonic()
    while committed != ends:
        msgs = consumer.consume(num_messages=rng.randint(1, 15), timeout=0.5)
        msgs = [m for m in msgs if m.error() is None or _check(m.error())]
        if not msgs:
            if time.monotonic() - idle_since > 5:
                log(f"no input for 5 s at {committed}")  # for the test's failure message
                idle_since = time.monotonic()
            continue
        idle_since = time.monotonic()
        positions = list(committed)
        producer.begin_transaction()
        try:
            for m in msgs:
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None
                assert o == positions[p], f"gap or repeat in input {p}: {o} != {positions[p]}"
                producer.produce(dst, value=f"{p}:{o}".encode(), partition=p)
                positions[p] = o + 1
            producer.send_offsets_to_transaction(
                [TopicPartition(src, p, positions[p]) for p in range(partitions)],
                consumer.consumer_group_metadata(),
                OP_TIMEOUT_S,
            )
            if rng.randrange(ABORT_ONE_IN) == 0:
                producer.flush(OP_TIMEOUT_S)
                producer.abort_transaction(OP_TIMEOUT_S)
                rewind()
                continue
            retrying("commit_transaction", producer.commit_transaction, OP_TIMEOUT_S)
            committed = positions
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if not err.txn_requires_abort():
                log(f"fatal: {err.str()}")
                return 3
            log(f"aborting: {err.str()}")
            retrying("abort_transaction", producer.abort_transaction, OP_TIMEOUT_S)
            rewind()
    print("done", flush=True)
    consumer.close()
    return 0


def _check(err: KafkaError) -> bool:
    """Consumer errors: transient ones (the broker went away) are skipped; others raise."""
    if err.retriable() or err.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
        return False
    raise KafkaException(err)


if __name__ == "__main__":
    sys.exit(main())
