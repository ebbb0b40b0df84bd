"""Exactly-once consume-transform-produce across SIGKILLs of the processor and of the broker.

The broker runs as ``python -m odradek serve`` in a child process; the processor
(``eos_processor.py``, confluent-kafka, one transactional id) in another. The processor copies
every input record (p, o) to output partition p as ``b"p:o"``, committing its input positions
inside each transaction and aborting one transaction in five on purpose. At random points of
progress the test SIGKILLs the processor (a new instance fences the old one's transaction) or
the broker (restarted on the same port and data directory, recovering its logs). Afterwards a
checker proves that every input record appears in the output exactly once and in order: on the
log as written (markers settled on the client side) and through a read_committed consumer.

The scenario runs once per module; each test checks one property of its outcome.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from txnkit import (
    READ_UNCOMMITTED,
    Batch,
    ServeProcess,
    consume,
    create_topic,
    list_offset,
    markers,
    read_log,
    settle,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3
N = 240
KILLS = ("processor", "broker", "processor", "broker", "broker", "processor")
PROCESSOR = Path(__file__).resolve().parent / "eos_processor.py"
SEED = 20240611
FINISH_S = 60.0


@dataclass
class Outcome:
    work: Path
    broker: ServeProcess
    input_topic: str
    output_topic: str
    group: str
    ends: list[int]
    processor_starts: int
    fatal_exits: int
    output_log: list[list[Batch]]


class Processor:
    """One eos_processor.py child at a time; owned by the test thread."""

    def __init__(self, work: Path, args: list[str]) -> None:
        self.work = work
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0
        self.fatal_exits = 0
        self.done = False
        self.log = work / "processor.log"

    def start(self, bootstrap: str) -> None:
        assert self.proc is None
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROCESSOR), bootstrap, *self.args, str(SEED + self.starts)],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def restart(self, bootstrap: str) -> None:
        """SIGKILL the running instance and start a new one (unless the work is done)."""
        if not self.done:
            self.kill()
            self.start(bootstrap)

    def finished(self, bootstrap: str) -> bool:
        """Whether an instance has exited 0 (all input committed); one that died of a fatal
        client error (exit 3) is replaced. Any other exit fails the test."""
        if self.done or self.proc is None:
            return self.done
        code = self.proc.poll()
        if code is None:
            return False
        assert code in (0, 3), f"processor exited {code}:\n{self.log_tail()}"
        self._close()
        if code == 0:
            self.done = True
        else:
            self.fatal_exits += 1
            self.start(bootstrap)
        return self.done

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def diagnose(self) -> str:
        """The log tail, with the running instance's Python stack (it dumps it on SIGUSR1)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(AssertionError):
                wait_until(lambda: "most recent call first" in self.log_tail(),
                           "a stack dump", timeout=2)
        return self.log_tail()


def _output_progress(broker: ServeProcess, topic: str) -> int:
    """Sum of the output partitions' high watermarks (grows with every append, aborted
    records and markers included); -1 while the broker does not answer."""
    try:
        return sum(list_offset(broker.bootstrap, topic, p, READ_UNCOMMITTED)
                   for p in range(PARTITIONS))
    except (OSError, AssertionError):
        return -1


def _produce_input(bootstrap: str, topic: str) -> list[int]:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2,
                  "log_level": 0})
    for i in range(N):
        p.produce(topic, value=f"in-{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0
    return [len(range(p, N, PARTITIONS)) for p in range(PARTITIONS)]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    work = tmp_path_factory.mktemp("eos")
    rng = random.Random(SEED)
    broker = ServeProcess(work).start()
    run = uuid.uuid4().hex[:6]
    src, dst, group = f"eos-in-{run}", f"eos-out-{run}", f"eos-group-{run}"
    processor = Processor(work, [src, dst, str(PARTITIONS), group, f"eos-{run}", ""])
    try:
        create_topic(broker.bootstrap, src, PARTITIONS)
        create_topic(broker.bootstrap, dst, PARTITIONS)
        ends = _produce_input(broker.bootstrap, src)
        processor.args[-1] = ",".join(map(str, ends))
        processor.start(broker.bootstrap)
        # Kill points: output high-watermark sums the run must pass (it ends above N).
        thresholds = sorted(rng.sample(range(N // 10, N * 8 // 10), len(KILLS)))
        for target, threshold in zip(KILLS, thresholds, strict=True):

            def reached(t: int = threshold) -> bool:
                return processor.finished(broker.bootstrap) or _output_progress(broker, dst) >= t

            wait_until(
                reached,
                f"output progress {threshold} before killing the {target}",
                timeout=FINISH_S,
                interval=0.02,
                detail=processor.diagnose,
            )
            if target == "processor":
                processor.restart(broker.bootstrap)
            else:
                broker.kill()
                broker.start()
        wait_until(
            lambda: processor.finished(broker.bootstrap),
            "the processor to finish",
            timeout=FINISH_S,
            interval=0.05,
            detail=lambda: f"{processor.diagnose()}\nbroker:\n{broker.log_tail()}",
        )
        yield Outcome(
            work=work,
            broker=broker,
            input_topic=src,
            output_topic=dst,
            group=group,
            ends=ends,
            processor_starts=processor.starts,
            fatal_exits=processor.fatal_exits,
            output_log=[read_log(broker.bootstrap, dst, p) for p in range(PARTITIONS)],
        )
    finally:
        processor.kill()
        broker.kill()


def _expected(ends: list[int], partition: int) -> list[bytes]:
    return [f"{partition}:{o}".encode() for o in range(ends[partition])]


def test_the_run_was_disturbed(outcome: Outcome) -> None:
    # Two processor kills and two broker kills happened, and the log shows aborts.
    assert outcome.broker.starts == 1 + KILLS.count("broker")
    assert outcome.processor_starts >= 1 + KILLS.count("processor")
    assert any(not m.commit for log in outcome.output_log for m in markers(log))
    # Records were processed more than once (aborted, then committed): a checker that let
    # aborted records through would see duplicates.
    redone = [
        set(settle(log).aborted_values) & set(settle(log).committed_values)
        for log in outcome.output_log
    ]
    assert any(redone)


def test_every_input_record_is_committed_once_in_order(outcome: Outcome) -> None:
    for p, log in enumerate(outcome.output_log):
        s = settle(log)
        assert s.undecided_values == [], f"partition {p}: a transaction was left open"
        assert s.committed_values == _expected(outcome.ends, p), f"partition {p}"


def test_the_group_committed_the_end_offsets(outcome: Outcome) -> None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": outcome.broker.bootstrap, "group.id": outcome.group,
                  "log_level": 0})
    try:
        got = c.committed(
            [TopicPartition(outcome.input_topic, p) for p in range(PARTITIONS)], 10
        )
    finally:
        c.close()
    assert [tp.offset for tp in got] == outcome.ends


def test_read_committed_consumer_sees_every_record_once(outcome: Outcome) -> None:
    got = consume(outcome.broker.bootstrap, outcome.output_topic, PARTITIONS, "read_committed")
    for p in range(PARTITIONS):
        assert [v for part, _, v in got if part == p] == _expected(outcome.ends, p), p
