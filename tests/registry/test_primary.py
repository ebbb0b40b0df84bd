"""Two registry instances in one group: one primary, writes to the other forwarded to it, and
the survivor taking over when the primary stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from registrykit import Http, registered

from odradek.broker.runner import BrokerThread, local_config
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_forwarding_and_failover(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", group_initial_rebalance_delay_ms="0")
    options = {"group_id": "sr-test", "session_timeout_ms": 6000, "timeout": 30.0}
    with BrokerThread(config) as broker:
        a = RegistryThread(broker.bootstrap, **options).start()
        b = RegistryThread(broker.bootstrap, **options).start()
        try:
            electors = [a.server.elector, b.server.elector]
            assert all(e is not None for e in electors)
            _wait_for(lambda: sum(e.is_primary for e in electors) == 1)  # type: ignore[union-attr]
            primary, other = (a, b) if a.server.elector.is_primary else (b, a)  # type: ignore[union-attr]
            # A write sent to the other instance is forwarded and visible on both.
            status, body = Http(other.url)("POST", "/subjects/fwd-value/versions",
                                           {"schema": json.dumps("string")})
            assert status == 200, body
            first = body["id"]
            assert Http(primary.url)("GET", "/subjects") == (200, ["fwd-value"])
            assert Http(other.url)("GET", "/subjects") == (200, ["fwd-value"])
            primary.stop()
            # The survivor becomes primary and takes writes itself; ids go on from the log.
            status, body = Http(other.url)("POST", "/subjects/fwd-value/versions",
                                           {"schema": json.dumps("string"), "schemaType": "AVRO"})
            assert registered((status, body)) == (200, first)
            status, body = Http(other.url)("POST", "/subjects/after-value/versions",
                                           {"schema": json.dumps("long")})
            assert status == 200 and body["id"] > first, body
            assert other.server.elector.is_primary  # type: ignore[union-attr]
        finally:
            a.stop()
            b.stop()


def _start(bootstrap: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "registry", "--log-level", "WARNING", "--listen",
         "127.0.0.1:0", "--bootstrap-server", bootstrap, "--group-id", "sr-kill",
         "--session-timeout-ms", "6000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("schema registry listening on"), line
    return proc, line.split()[-1]


def test_primary_killed(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", group_initial_rebalance_delay_ms="0")
    with BrokerThread(config) as broker:
        first, first_url = _start(broker.bootstrap)
        try:
            # The first instance alone in the group becomes primary and takes a write.
            status, body = Http(first_url)("POST", "/subjects/k-value/versions",
                                           {"schema": json.dumps("string")})
            assert status == 200, body
            second, second_url = _start(broker.bootstrap)
            try:
                first.kill()  # no leave: the group notices when its session times out
                first.wait(10)
                status, body2 = Http(second_url)("POST", "/subjects/k2-value/versions",
                                                 {"schema": json.dumps("bytes")})
                assert status == 200 and body2["id"] > body["id"], body2
                assert Http(second_url)("GET", "/subjects") == (200, ["k-value", "k2-value"])
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(20) == 0
        finally:
            first.kill()
            first.wait(10)
