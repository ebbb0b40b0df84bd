"""Local etcd processes on loopback: one member (:class:`EtcdProcess`) or a static cluster of
several (:class:`EtcdCluster`), for ``odradek cluster up`` and for tests.

Uses the ``etcd`` binary (Debian's ``etcd-server``; ``make system-deps`` installs it; the
``ODRADEK_ETCD`` environment variable names another). The timing flags make leases usable in
tests: etcd's minimum lease TTL is 1.5 election timeouts rounded up to a second, so a 500 ms
election timeout allows a 1 s TTL (the default, 1 s, would make it 2 s). etcd ends expired
leases in a sweep every 500 ms, so a lease ends between its TTL and about half a second after.

A member's ports are chosen once, so :meth:`EtcdProcess.start` after :meth:`EtcdProcess.kill`
brings it back on the same data dir and URLs (clients reconnect to it). On a data dir that
already holds a member, etcd ignores the ``--initial-cluster*`` flags and rejoins as it was.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["EtcdProcess", "EtcdCluster", "etcd_binary", "free_port", "free_ports"]


def etcd_binary() -> str | None:
    """The ``etcd`` executable, or None when it is not installed."""
    return os.environ.get("ODRADEK_ETCD") or shutil.which("etcd")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, all held at once while choosing.

    They are drawn at random from outside the kernel's ephemeral range, where it never picks the
    source port of an outgoing connection: a port chosen here and bound a moment later by a
    broker or etcd cannot have been taken by some client's connection meanwhile (it can only by
    another process choosing the same way, which the random draw makes unlikely)."""
    low, high = _unassigned_range()
    sockets: list[socket.socket] = []
    try:
        for _ in range(50 * count):
            if len(sockets) == count:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", _RANDOM.randrange(low, high)))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        while len(sockets) < count:  # a crowded range: let the kernel choose
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


#: Not the process's ``random`` state, which tests seed: two test processes would draw alike.
_RANDOM = random.SystemRandom()


def _unassigned_range() -> tuple[int, int]:
    """Ports [low, high) outside ``net.ipv4.ip_local_port_range`` (32768-60999 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            first, last = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        first, last = 32768, 60999
    if first - 10000 >= 4096:
        return 10000, first
    if 65535 - last >= 4096:
        return last + 1, 65536
    return 1024, 65536


class EtcdProcess:
    """One etcd member. Owned by whoever creates it (a test, a fixture, ``cluster up``); not
    thread-safe.

    Alone (the default) it is a one-member cluster. As a member of an :class:`EtcdCluster`,
    ``initial_cluster`` is the static ``name=peer-url,…`` list of all members."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str = "odradek-test",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "odradek",
        launch_prefix: Sequence[str] = (),
    ) -> None:
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError("etcd is not installed (Debian: apt-get install etcd-server)")
        self._binary = binary
        self.data_dir = data_dir
        self.name = name
        spare = free_ports(2)
        self.client_port = client_port or next(p for p in spare if p != peer_port)
        self.peer_port = peer_port or next(p for p in spare if p != self.client_port)
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self._token = cluster_token
        # A command the member is run through, e.g. one that moves it into a cgroup and execs
        # (the fault tests' network partitions); it must exec, so that the pid is etcd's.
        self._launch_prefix = tuple(launch_prefix)
        self._log_path = data_dir.parent / f"{data_dir.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of a member that exited by itself (or was killed from outside);
        None while it runs, before it started, and after :meth:`kill` or :meth:`stop`."""
        return self._process.poll() if self._process is not None else None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the member and return once it answers ``/health`` as healthy (which, in a
        cluster, needs a quorum of members running)."""
        self.launch()
        self.wait_healthy(timeout_s)

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        if self.running:
            raise RuntimeError(f"etcd {self.name} is already running")
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        args = [
            *self._launch_prefix,
            self._binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self._token}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        log = open(self._log_path, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self._process = subprocess.Popen(
                args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()

    def wait_healthy(self, timeout_s: float = 20.0) -> None:
        assert self._process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"etcd {self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            if self.healthy():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"etcd {self.name} not healthy after {timeout_s}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def healthy(self) -> bool:
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


class EtcdCluster:
    """A static etcd cluster of ``size`` members on loopback, data under ``base_dir/member-<i>``.
    Owned by its creator; not thread-safe. Members are addressed by index (0 … size-1)."""

    def __init__(
        self, base_dir: Path, size: int = 3, *, token: str | None = None,
        launch_prefixes: Sequence[Sequence[str]] = (),
    ) -> None:
        """``launch_prefixes``: one command prefix per member (see :class:`EtcdProcess`), or
        none."""
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        chosen = free_ports(2 * size)
        ports = [(chosen[2 * i], chosen[2 * i + 1]) for i in range(size)]
        names = [f"member-{i}" for i in range(size)]
        initial = ",".join(
            f"{name}=http://127.0.0.1:{peer}" for name, (_, peer) in zip(names, ports, strict=True)
        )
        token = token or f"odradek-{os.getpid()}-{id(self):x}"
        self.members = [
            EtcdProcess(
                base_dir / name,
                name=name,
                client_port=client,
                peer_port=peer,
                initial_cluster=initial,
                cluster_token=token,
                launch_prefix=launch_prefixes[i] if launch_prefixes else (),
            )
            for i, (name, (client, peer)) in enumerate(zip(names, ports, strict=True))
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every member and return once all are healthy."""
        for member in self.members:
            member.launch()
        for member in self.members:
            member.wait_healthy(timeout_s)

    def kill(self, index: int) -> None:
        self.members[index].kill()

    def restart(self, index: int, timeout_s: float = 20.0) -> None:
        self.members[index].start(timeout_s)

    def stop(self, members: Sequence[int] | None = None) -> None:
        """SIGTERM the members (all by default)."""
        for i in range(len(self.members)) if members is None else members:
            self.members[i].stop()
