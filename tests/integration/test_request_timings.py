"""`odradek serve` answers SIGUSR1 with its request timings (a JSON line) and starts afresh."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = pytest.mark.integration


def _dump(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    proc.send_signal(signal.SIGUSR1)
    result: dict[str, Any] = json.loads(proc.stdout.readline())
    return result


def test_sigusr1_prints_and_resets_the_timings(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().split()[-1]
        topic = f"timings-{uuid.uuid4().hex[:6]}"
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        p.produce(topic, b"first")
        assert p.flush(10) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                      "fetch.wait.max.ms": 10_000})
        c.assign([TopicPartition(topic, 0, 0)])
        assert c.poll(10) is not None
        woken = []
        # A fetch waits at the end of the log and the next append wakes it, unless the append
        # came first (then the fetch finds the record at once): try a few times.
        for attempt in range(5):
            got: list[object] = []
            reader = threading.Thread(target=lambda out: out.append(c.poll(15)), args=(got,))
            reader.start()
            p.produce(topic, b"next %d" % attempt)
            assert p.flush(10) == 0
            reader.join(20)
            assert got and got[0] is not None
            dump = _dump(proc)
            if attempt == 0:
                assert dump["total"]["Produce"]["n"] >= 2
                assert dump["total"]["Fetch"]["n"] >= 2
                assert dump["produce.appended"]["n"] >= 2
                assert dump["produce.appended"]["max_us"] <= dump["total"]["Produce"]["max_us"]
            woken.append(dump["fetch.woken"]["n"])
            if dump["fetch.woken"]["n"]:
                assert dump["fetch.sent"]["n"] >= 1
                assert dump["fetch.sent"]["p50_us"] >= dump["fetch.woken"]["p50_us"]
                break
        c.close()
        assert any(woken), woken
        assert "Produce" not in _dump(proc)["total"]
    finally:
        proc.terminate()
        proc.wait(30)
