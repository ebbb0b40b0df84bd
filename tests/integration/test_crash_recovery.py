"""kill -9 the broker under acks=all load; every acknowledged record must come back intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.integration


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(data_dir), "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("odradek listening on "), line
    return proc, line.split()[-1]


def test_kill_9_under_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, bootstrap = _start(data)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("crash", 3, 1)])["crash"].result(timeout=10)
        acked: dict[tuple[int, int], bytes] = {}
        enough = threading.Event()
        lock = threading.Lock()

        def on_delivery(err: object, msg: object) -> None:
            if err is None:
                with lock:
                    acked[(msg.partition(), msg.offset())] = msg.value()  # type: ignore[attr-defined]
                    if len(acked) >= 20_000:
                        enough.set()

        p = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 2000,
            "reconnect.backoff.max.ms": 200,
        })
        i = 0
        while not enough.is_set():
            try:
                p.produce("crash", key=str(i % 11).encode(), value=f"v{i}".encode() * 8,
                          on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0)
            if i % 5000 == 0:
                p.poll(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        p.flush(4)  # deliveries after the kill fail; they were never acknowledged
        with lock:
            expected = dict(acked)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc, bootstrap = _start(data)
    try:
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                      "enable.auto.commit": False})
        found: dict[tuple[int, int], bytes] = {}
        for part in range(3):
            low, high = c.get_watermark_offsets(TopicPartition("crash", part), timeout=10)
            assert low == 0
            if high == 0:
                continue
            c.assign([TopicPartition("crash", part, 0)])
            next_offset = 0
            while next_offset < high:
                msgs = c.consume(num_messages=min(high - next_offset, 10_000), timeout=10)
                assert msgs, f"stalled reading partition {part}"
                for m in msgs:
                    assert m.error() is None, m.error()
                    found[(part, m.offset())] = m.value()
                next_offset = msgs[-1].offset() + 1
        c.close()
    finally:
        proc.terminate()
        proc.wait(10)
    missing = [k for k in expected if k not in found]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:5]}"
    wrong = [k for k, v in expected.items() if found[k] != v]
    assert not wrong, f"{len(wrong)} acknowledged records changed, e.g. {wrong[:5]}"
