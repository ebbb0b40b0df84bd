"""Brokers as processes on a real etcd: ``odradek cluster up``/``status``, and the
``odradek_cluster_factory`` fixture's brokers killed, restarted, and cut off from etcd."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from odradek.cluster.local import LocalCluster
from odradek.cluster.status import ClusterStatus
from odradek.testing.etcd import etcd_binary

pytestmark = pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")

T = TypeVar("T")
# Short sessions keep the tests quick; 2 s leaves renewals (every 2/3 s) room on a busy machine.
SESSION_MS = 2000


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout_s} s")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (only its exit status is left for its parent).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def odradek(*args: str) -> list[str]:
    return [sys.executable, "-m", "odradek", *args]


def cluster_up(directory: Path, brokers: int = 3) -> tuple[subprocess.Popen[str], str]:
    """``odradek cluster up`` on ``directory``, and the bootstrap servers it printed."""
    up = subprocess.Popen(
        odradek("cluster", "up", "--brokers", str(brokers), "--data-dir", str(directory),
                "--session-timeout-ms", str(SESSION_MS)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert up.stdout is not None
    for line in up.stdout:
        if line.startswith("bootstrap.servers="):
            return up, line.split("=", 1)[1].strip()
    up.wait()
    raise AssertionError(f"cluster up exited with {up.returncode}: {up.stderr and up.stderr.read()}")


def status_json(directory: Path) -> dict[str, Any]:
    shown = subprocess.run(
        odradek("cluster", "status", "--data-dir", str(directory), "--json"),
        capture_output=True, text=True, check=True,
    )
    status: dict[str, Any] = json.loads(shown.stdout)
    return status


def test_cluster_up_status_sigterm_and_up_again(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    up, bootstrap = cluster_up(directory)
    try:
        assert len(bootstrap.split(",")) == 3
        status = status_json(directory)
        assert [b["node_id"] for b in status["brokers"]] == [1, 2, 3]
        assert {f"{b['host']}:{b['port']}" for b in status["brokers"]} == set(bootstrap.split(","))
        assert status["controller"]["node_id"] in (1, 2, 3)
        assert status["partitions_without_leader"] == []
        assert status["under_replicated_partitions"] == []
        assert not any(b["shutting_down"] for b in status["brokers"])
        text = subprocess.run(
            odradek("cluster", "status", "--data-dir", str(directory)),
            capture_output=True, text=True, check=True,
        ).stdout
        assert "brokers: 3" in text
        assert "under-replicated partitions: none" in text
        assert f"controller: broker {status['controller']['node_id']}" in text
        description = json.loads((directory / "cluster.json").read_text())
        pids = [b["pid"] for b in description["brokers"]]
        etcd_pid = description["etcd"]["pid"]
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
        for pid in [*pids, etcd_pid]:
            wait_for(lambda pid=pid: gone(pid), 5, f"process {pid} gone")
        for node_id in (1, 2, 3):
            log = (directory / f"broker-{node_id}.log").read_text()
            assert log.rstrip().endswith(f"odradek broker {node_id} stopped")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    # etcd is down now: status says so in one line.
    failed = subprocess.run(
        odradek("cluster", "status", "--data-dir", str(directory)), capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("odradek cluster: cannot read the cluster's state: etcd")
    assert len(failed.stderr.strip().splitlines()) == 1

    # Up again on the same directory: the same cluster (etcd's data and the data dirs kept).
    again, _ = cluster_up(directory)
    try:
        second = status_json(directory)
        assert second["cluster_id"] == status["cluster_id"]
        assert [b["node_id"] for b in second["brokers"]] == [1, 2, 3]
        assert min(b["epoch"] for b in second["brokers"]) > max(
            b["epoch"] for b in status["brokers"]
        )
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0
    finally:
        if again.poll() is None:
            again.kill()
            again.wait()


class Lines:
    """A child's text stream read on a thread, so a test can wait for a line with a bound."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def wait_for(self, text: str, timeout_s: float = 30) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; saw {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return line


def test_cluster_up_reports_a_process_that_dies_and_starts_it_again_on_sigusr1(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "c"
    up, _ = cluster_up(directory, brokers=2)
    assert up.stderr is not None
    lines = Lines(up.stderr)
    try:
        description = json.loads((directory / "cluster.json").read_text())
        first, second = (b["pid"] for b in description["brokers"])
        os.kill(second, signal.SIGKILL)
        line = lines.wait_for("broker 2 (pid")
        assert f"broker 2 (pid {second}) killed by SIGKILL" in line
        assert "its partitions have no leader until it is back" in line
        assert f"kill -USR1 {up.pid}" in line
        os.kill(description["etcd"]["pid"], signal.SIGKILL)
        line = lines.wait_for("etcd (pid")
        assert "killed by SIGKILL" in line and "refuse metadata changes" in line
        # Rounds of the supervisor later, broker 2 is still down (nothing restarted it) and
        # the rest runs on.
        assert not any("started again" in seen for seen in lines.seen)
        assert json.loads((directory / "cluster.json").read_text()) == description
        assert not gone(first) and up.poll() is None

        up.send_signal(signal.SIGUSR1)
        assert "etcd started again" in lines.wait_for("etcd ")
        assert "broker 2 started again" in lines.wait_for("broker 2 ", timeout_s=60)
        again = json.loads((directory / "cluster.json").read_text())
        restarted = again["brokers"][1]["pid"]
        assert restarted != second and not gone(restarted)
        status = wait_for(
            lambda: (lambda s: s if [b["node_id"] for b in s["brokers"]] == [1, 2] else None)(
                status_json(directory)
            ),
            30, "both brokers registered",
        )
        assert status["controller"]["node_id"] in (1, 2)

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def controller_of(status: ClusterStatus) -> int | None:
    return status.controller[0] if status.controller else None


def test_controller_failover_and_broker_restart(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(3, session_timeout_ms=SESSION_MS)
    before = cluster.status()
    assert [b.info.node_id for b in before.brokers] == [1, 2, 3]
    controller = controller_of(before)
    assert controller is not None
    epochs = {b.info.node_id: b.epoch for b in before.brokers}

    cluster.broker(controller).kill()
    killed_at = time.monotonic()
    after = wait_for(
        lambda: (s := cluster.status()).controller and controller_of(s) != controller and s,
        SESSION_MS / 1000 + 3,
        "a new controller",
    )
    # Not before the dead controller's lease could have run out, and within about one.
    assert time.monotonic() - killed_at < SESSION_MS / 1000 + 3
    assert after.controller is not None and before.controller is not None
    assert after.controller[1] > before.controller[1]
    assert controller not in {b.info.node_id for b in after.brokers}

    # Restarted at once: it waits for its old registration's lease to end, then registers anew.
    cluster.broker(controller).restart()
    again = cluster.status()
    assert [b.info.node_id for b in again.brokers] == [1, 2, 3]
    new_epochs = {b.info.node_id: b.epoch for b in again.brokers}
    assert new_epochs[controller] > max(epochs.values())
    assert controller_of(again) == controller_of(after)  # the new controller stays

    # A second broker with a live broker's node id refuses to start, saying why.
    duplicate = subprocess.run(
        odradek("serve", "--config", str(cluster.broker(2).config_path),
                "--data-dir", str(cluster.directory / "intruder"), "--listen", "127.0.0.1:0"),
        capture_output=True, text=True, timeout=60,
    )
    assert duplicate.returncode == 1
    assert "odradek serve: cannot start: cannot start broker 2: node id 2 is registered by" in (
        duplicate.stderr
    )
    assert "another live broker has this node.id" in duplicate.stderr


def test_brokers_fence_themselves_without_etcd_and_recover(
    odradek_cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = odradek_cluster_factory(2, session_timeout_ms=SESSION_MS)
    etcd = cluster.etcd
    assert etcd is not None
    epochs = {b.info.node_id: b.epoch for b in cluster.status().brokers}
    etcd.kill()
    killed_at = time.monotonic()
    for broker in cluster.brokers.values():
        wait_for(lambda b=broker: "fenced" in b.output(), SESSION_MS / 1000 + 5,
                 f"broker {broker.node_id} fenced")
    assert time.monotonic() - killed_at > SESSION_MS / 1000 * 2 / 3
    # Still running and serving clients (reads go on).
    for broker in cluster.brokers.values():
        assert broker.running
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=broker.address, request_timeout_ms=5000)
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()
    etcd.start()
    status = wait_for(
        lambda: (s := cluster.status()) and len(s.brokers) == 2 and s.controller and s,
        15,
        "both brokers registered again",
    )
    for registered in status.brokers:
        assert registered.epoch > max(epochs.values())
    for broker in cluster.brokers.values():
        assert broker.output().count("registered at") == 2

    # A broker that hangs (SIGSTOP) past its session loses its registration; woken, it finds
    # its session could have expired, fences itself and registers again.
    paused = cluster.broker(1)
    paused.pause()
    wait_for(lambda: [b.info.node_id for b in cluster.status().brokers] == [2],
             SESSION_MS / 1000 + 5, "broker 1's registration gone")
    paused.resume()
    back = wait_for(
        lambda: (s := cluster.status()) and len(s.brokers) == 2 and s,
        10,
        "broker 1 registered again",
    )
    assert back.brokers[0].epoch > max(b.epoch for b in status.brokers)
    assert paused.output().count("registered at") == 3
