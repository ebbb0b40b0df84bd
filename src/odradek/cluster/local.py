"""A development cluster on this machine: a local etcd (unless endpoints are given) and N broker
processes (``odradek serve``) on free loopback ports. ``odradek cluster up`` and the pytest
plugin's ``odradek_cluster`` fixture run it.

Layout of the cluster's directory (``DIR``):

- ``cluster.json`` — the description ``odradek cluster status`` reads: ``{"etcd": {"endpoints",
  "prefix", "managed", "client_port", "peer_port", "pid"}, "brokers": [{"node_id", "host", "port",
  "pid", "data_dir"}], "pid"}`` (``pid``: the process that runs the cluster).
- ``etcd/`` (and ``etcd.log``) — the local etcd's data, when it is managed here.
- ``broker-<id>/`` — broker ``id``'s data dir; ``broker-<id>.properties`` its config file;
  ``broker-<id>.log`` its output.

Starting again on the same directory reuses the data dirs and the etcd data, and the previous
ports when they are free. Owned by the thread that creates it; not thread-safe.

A process that exits by itself while the cluster runs (a broker crashes, someone kills etcd) is
reported by :meth:`LocalCluster.exited` and left down, the others running on, as a Kafka
cluster lives on without a broker nobody restarts: its partitions have no leader (one replica)
until it returns, and without etcd no metadata changes. :meth:`LocalCluster.restart_exited`
starts those again (``odradek cluster up`` does it on SIGUSR1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from odradek.cluster.etcd import EtcdStore
from odradek.cluster.etcd_process import EtcdProcess, free_ports
from odradek.cluster.membership import ClusterKeys
from odradek.cluster.status import ClusterStatus, read_status

__all__ = ["LocalCluster", "BrokerProcess", "ProcessExit", "DESCRIPTION", "read_description"]

#: The description file in a cluster's directory.
DESCRIPTION = "cluster.json"
#: What ``odradek serve`` prints once it serves (after it has registered).
_READY = b"odradek listening on "
#: How long a broker has to stop after SIGTERM before it is killed.
_STOP_TIMEOUT_S = 10.0


def read_description(directory: Path) -> dict[str, Any]:
    """The cluster's description; raises ``FileNotFoundError`` when there is none."""
    loaded: dict[str, Any] = json.loads((directory / DESCRIPTION).read_text(encoding="utf-8"))
    return loaded


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind (etcd and the broker set SO_REUSEADDR): a port whose old
        # connections linger in TIME_WAIT is free for them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclasses.dataclass(frozen=True)
class ProcessExit:
    """A process of the cluster that exited by itself (not stopped by the cluster)."""

    name: str  # "broker 2", "etcd"
    pid: int | None
    returncode: int
    log_path: Path
    log_tail: str

    def describe(self) -> str:
        """``exited with 1`` / ``killed by SIGKILL``."""
        if self.returncode < 0:
            try:
                return f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                return f"killed by signal {-self.returncode}"
        return f"exited with {self.returncode}"


class _Ports:
    """Ports for one start: the previous ones when still free, else new ones, all distinct."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def pick(self, previous: object) -> int:
        if (
            isinstance(previous, int)
            and previous > 0
            and previous not in self._taken
            and _port_free(previous)
        ):
            port = previous
        else:
            port = next(p for p in free_ports(len(self._taken) + 1) if p not in self._taken)
        self._taken.add(port)
        return port


class BrokerProcess:
    """One ``odradek serve`` child. ``start``/``restart`` wait until it serves.

    ``launch_prefix`` is put before the command (the fault tests start each broker in a cgroup
    of its own through a small shell wrapper that ends with ``exec "$@"``)."""

    def __init__(
        self, node_id: int, port: int, data_dir: Path, config_path: Path,
        *, launch_prefix: Sequence[str] = (),
    ) -> None:
        self.node_id = node_id
        self.launch_prefix = tuple(launch_prefix)
        self.host = "127.0.0.1"
        self.port = port
        self.data_dir = data_dir
        self.config_path = config_path
        self.log_path = data_dir.parent / f"broker-{node_id}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._terminating = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of a broker that exited other than by :meth:`terminate` / :meth:`stop`
        (crashed, killed); None while it runs or before it started."""
        if self._process is None or self._terminating:
            return None
        return self._process.poll()

    def launch(self) -> None:
        if self.running:
            raise RuntimeError(f"broker {self.node_id} is already running")
        args = [
            *self.launch_prefix,
            sys.executable, "-m", "odradek", "serve",
            "--config", str(self.config_path),
            "--data-dir", str(self.data_dir),
            "--listen", self.address,
        ]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._terminating = False
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            # A session of its own: a Ctrl-C in the terminal reaches whoever runs the cluster,
            # which stops the brokers in order, not every child at once.
            self._process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Return once the broker has printed that it serves (it has registered by then)."""
        assert self._process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while True:
            if self._output_since_launch().find(_READY) >= 0:
                return
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"broker {self.node_id} exited with {self._process.returncode}:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"broker {self.node_id} not serving after {timeout_s}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def start(self, timeout_s: float = 60.0) -> None:
        self.launch()
        self.wait_serving(timeout_s)

    def _output_since_launch(self) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read()
        except OSError:
            return b""

    def output(self) -> str:
        """What the broker wrote since it was last launched."""
        return self._output_since_launch().decode(errors="replace")

    def signal(self, sig: int) -> None:
        if self.running:
            assert self._process is not None
            self._process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash: the registration stays until its session times out."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()

    def pause(self) -> None:
        """SIGSTOP: the process stops answering and renewing its session (a hung broker)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self) -> None:
        """Ask for a clean shutdown (SIGTERM) without waiting; once only, since ``odradek serve``
        takes a second SIGTERM as "exit at once"."""
        if self.running and not self._terminating:
            self._terminating = True
            self.signal(signal.SIGCONT)  # a paused broker must see the SIGTERM
            self.signal(signal.SIGTERM)

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after ``timeout_s``."""
        if self._process is None:
            return
        self.terminate()
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def restart(self, timeout_s: float = 60.0) -> None:
        """Start it again (after kill or stop) on the same data dir and port."""
        self.start(timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:]) or "(no output)"


class LocalCluster:
    """etcd plus ``brokers`` broker processes with node ids 1..N under ``directory``.

    ``etcd_endpoints`` given: that etcd is used and none is started. ``broker_properties`` are
    added to every broker's config file (Kafka's names, e.g. ``broker.session.timeout.ms``)."""

    def __init__(
        self,
        directory: Path,
        brokers: int,
        *,
        etcd_endpoints: Sequence[str] = (),
        etcd_prefix: str = "/odradek",
        broker_properties: Mapping[str, str] | None = None,
        racks: Mapping[int, str] | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError("a cluster needs at least one broker")
        self.directory = directory
        self.prefix = etcd_prefix
        self._properties = dict(broker_properties or {})
        #: node id -> its ``broker.rack``
        self._racks = dict(racks or {})
        try:
            previous = read_description(directory)
        except (OSError, ValueError):
            previous = {}
        old_etcd = previous.get("etcd", {}) if isinstance(previous.get("etcd"), dict) else {}
        old_ports = {
            b.get("node_id"): b.get("port")
            for b in previous.get("brokers", ())
            if isinstance(b, dict)
        }
        ports = _Ports()
        self.etcd: EtcdProcess | None = None
        if etcd_endpoints:
            self.etcd_endpoints = list(etcd_endpoints)
        else:
            self.etcd = EtcdProcess(
                directory / "etcd",
                name="odradek",
                client_port=ports.pick(old_etcd.get("client_port")),
                peer_port=ports.pick(old_etcd.get("peer_port")),
            )
            self.etcd_endpoints = [self.etcd.endpoint]
        self.brokers = {
            node_id: BrokerProcess(
                node_id,
                ports.pick(old_ports.get(node_id)),
                directory / f"broker-{node_id}",
                directory / f"broker-{node_id}.properties",
            )
            for node_id in range(1, brokers + 1)
        }
        # Names of the processes exited() reported and nobody restarted since.
        self._reported: set[str] = set()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values())

    def broker(self, node_id: int) -> BrokerProcess:
        return self.brokers[node_id]

    def start(self, timeout_s: float = 60.0) -> None:
        """Start etcd and every broker; return once all serve. On failure everything started is
        stopped again."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.etcd is not None:
                self.etcd.start()
            for broker in self.brokers.values():
                self._write_config(broker)
                broker.launch()
            for broker in self.brokers.values():
                broker.wait_serving(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.write_description()

    def _write_config(self, broker: BrokerProcess) -> None:
        props = {
            "node.id": str(broker.node_id),
            "etcd.endpoints": ",".join(self.etcd_endpoints),
            "etcd.prefix": self.prefix,
            # Kafka's quick-start setting: a new group's first join does not wait 3 s.
            "group.initial.rebalance.delay.ms": "0",
            **self._properties,
        }
        if broker.node_id in self._racks:
            props["broker.rack"] = self._racks[broker.node_id]
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        broker.config_path.write_text(
            "# Written by odradek cluster up; rewritten at every start.\n" + text,
            encoding="utf-8",
        )

    def write_description(self) -> None:
        etcd = self.etcd
        description = {
            "etcd": {
                "endpoints": self.etcd_endpoints,
                "prefix": self.prefix,
                "managed": etcd is not None,
                "client_port": etcd.client_port if etcd is not None else None,
                "peer_port": etcd.peer_port if etcd is not None else None,
                "pid": etcd.pid if etcd is not None else None,
            },
            "brokers": [
                {
                    "node_id": b.node_id,
                    "host": b.host,
                    "port": b.port,
                    "pid": b.pid,
                    "data_dir": str(b.data_dir),
                }
                for b in self.brokers.values()
            ],
            "pid": os.getpid(),
        }
        path = self.directory / DESCRIPTION
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def status(self) -> ClusterStatus:
        """The cluster's state as etcd has it (``odradek cluster status``); call it from
        blocking code (it runs its own event loop)."""

        async def read() -> ClusterStatus:
            store = EtcdStore(self.etcd_endpoints, request_timeout_s=3)
            try:
                return await read_status(store, ClusterKeys(prefix=self.prefix))
            finally:
                await store.close()

        return asyncio.run(read())

    def exited(self) -> list[ProcessExit]:
        """The processes (etcd when managed here, brokers) that exited by themselves since they
        were last started, each reported once."""
        found: list[ProcessExit] = []
        if self.etcd is not None and "etcd" not in self._reported:
            code = self.etcd.returncode
            if code is not None:
                found.append(ProcessExit(
                    "etcd", self.etcd.pid, code, self.directory / "etcd.log",
                    self.etcd.log_tail(10),
                ))
        for broker in self.brokers.values():
            name = f"broker {broker.node_id}"
            code = broker.returncode
            if code is not None and name not in self._reported:
                found.append(ProcessExit(name, broker.pid, code, broker.log_path,
                                         broker.log_tail(10)))
        self._reported.update(e.name for e in found)
        return found

    def restart_exited(self, timeout_s: float = 60.0) -> list[tuple[str, str | None]]:
        """Start again every process that is down, etcd first, each waited for until it
        serves: (name, None) for each started, (name, why) for each that failed to."""
        outcomes: list[tuple[str, str | None]] = []
        if self.etcd is not None and not self.etcd.running:
            try:
                self.etcd.kill()  # forget the exited process
                self.etcd.start()
                self._reported.discard("etcd")
                outcomes.append(("etcd", None))
            except (RuntimeError, TimeoutError, OSError) as e:
                outcomes.append(("etcd", str(e)))
        for broker in self.brokers.values():
            if broker.running:
                continue
            name = f"broker {broker.node_id}"
            try:
                broker.restart(timeout_s)
                self._reported.discard(name)
                outcomes.append((name, None))
            except (RuntimeError, TimeoutError, OSError) as e:
                outcomes.append((name, str(e)))
        self.write_description()
        return outcomes

    def pids(self) -> list[int]:
        """The process ids of everything running (brokers and the managed etcd)."""
        pids = [b.pid for b in self.brokers.values() if b.running and b.pid is not None]
        if self.etcd is not None and self.etcd.running and self.etcd.pid is not None:
            pids.append(self.etcd.pid)
        return pids

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM every broker (together, so they shut down in parallel), SIGKILL those still
        running after ``timeout_s``, then stop etcd."""
        for broker in self.brokers.values():
            broker.terminate()
        deadline = time.monotonic() + timeout_s
        for broker in self.brokers.values():
            broker.stop(max(0.0, deadline - time.monotonic()))
        if self.etcd is not None:
            self.etcd.stop()
