"""Real etcd processes for tests: one member on free loopback ports with its own data dir.

Uses the ``etcd`` binary (Debian's ``etcd-server``; ``make system-deps`` installs it). The
timing flags make leases usable in tests: etcd's minimum lease TTL is 1.5 election timeouts
rounded up to a second, so a 500 ms election timeout allows a 1 s TTL (the default, 1 s,
would make it 2 s). etcd ends expired leases in a sweep every 500 ms, so a lease ends between
its TTL and about half a second after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["EtcdProcess", "etcd_binary", "free_port"]


def etcd_binary() -> str | None:
    """The ``etcd`` executable, or None when it is not installed."""
    return os.environ.get("ODRADEK_ETCD") or shutil.which("etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EtcdProcess:
    """One single-member etcd. Owned by the test (or fixture) that creates it; not thread-safe.

    Its ports are chosen once, so :meth:`start` after :meth:`kill` brings the same member back
    on the same data dir and the same client URL (clients reconnect to it)."""

    def __init__(self, data_dir: Path, *, name: str = "odradek-test") -> None:
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError("etcd is not installed (Debian: apt-get install etcd-server)")
        self._binary = binary
        self.data_dir = data_dir
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self._log_path = data_dir.parent / f"{data_dir.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the member and return once it answers ``/health`` as healthy."""
        if self.running:
            raise RuntimeError("etcd is already running")
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self._binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        log = open(self._log_path, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self._process = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"etcd not healthy after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/health", timeout=1) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def kill(self) -> None:
        """SIGKILL: the member stops as in a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
