"""``odradek cluster up`` and ``odradek cluster status``: a development cluster on this machine;
``odradek cluster reassign`` and ``elect-leaders`` (:mod:`odradek.cli._reassign`) for any cluster.

``up`` starts a local etcd (unless ``--etcd-endpoints`` names one) and N brokers
(:class:`odradek.cluster.local.LocalCluster`), prints ``bootstrap.servers=host:port,…`` once
every broker serves, and runs until SIGINT or SIGTERM, when it stops the brokers (SIGTERM, then
SIGKILL after a bound) and etcd, and exits 0.

A broker or the managed etcd that exits while ``up`` runs is reported on stderr (how it ended,
what that means for the cluster, the end of its log) and left down; the rest runs on. That is
what a Kafka user sees when a broker dies: the cluster carries on without it (its partitions
leaderless, with one replica), and nothing restarts it behind their back, so a failure being
tested is not masked and a crash is not hidden by a restart loop. Stopping everything would
turn one broker's crash into an outage, the opposite of what a cluster is for. SIGUSR1 to
``up`` (its pid is in ``cluster.json``) starts again whatever is down.

``status`` reads the cluster's state from etcd: the brokers with their epochs, the controller,
and partitions without a live leader.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from odradek.cli._common import MISSING, CliError, Subparsers, format_table
from odradek.cli._options import connection_parser
from odradek.cli._reassign import configure_elect_leaders, configure_reassign

if TYPE_CHECKING:
    from odradek.cluster.local import LocalCluster
    from odradek.cluster.status import ClusterStatus

__all__ = ["add_commands"]


def add_commands(sub: Subparsers) -> None:
    """Register ``cluster`` on the top-level subparsers."""
    cluster = sub.add_parser("cluster", help="run a local development cluster; show its state")
    actions = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up", help="start etcd and N brokers on free loopback ports until Ctrl-C or SIGTERM"
    )
    up.add_argument("--brokers", type=int, default=3, metavar="N", help="brokers (default 3)")
    up.add_argument("--data-dir", required=True, metavar="DIR",
                    help="the cluster's directory (data dirs, etcd data, cluster.json)")
    up.add_argument("--etcd-endpoints", metavar="URL,…",
                    help="use this etcd instead of starting one")
    up.add_argument("--etcd-prefix", default="/odradek", metavar="PREFIX",
                    help="the cluster's etcd key prefix (default /odradek)")
    up.add_argument("--session-timeout-ms", type=int, metavar="MS",
                    help="the brokers' broker.session.timeout.ms")
    up.add_argument("--broker-property", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every broker (repeatable)")
    up.set_defaults(func=_up)
    status = actions.add_parser("status", help="brokers, controller, leaderless partitions")
    status.add_argument("--data-dir", metavar="DIR", help="a directory `cluster up` runs in")
    status.add_argument("--etcd-endpoints", metavar="URL,…", help="etcd to read instead")
    status.add_argument("--etcd-prefix", metavar="PREFIX",
                        help="the cluster's etcd key prefix (default /odradek)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=_status)
    common = connection_parser()
    configure_reassign(actions.add_parser(
        "reassign", parents=[common],
        help="move partitions to other brokers (kafka-reassign-partitions)"))
    configure_elect_leaders(actions.add_parser(
        "elect-leaders", parents=[common],
        help="elect preferred or unclean leaders (kafka-leader-election)"))


def _endpoints(text: str | None) -> list[str]:
    endpoints = [e.strip() for e in (text or "").split(",") if e.strip()]
    for endpoint in endpoints:
        if not endpoint.startswith(("http://", "https://")):
            raise CliError(f"--etcd-endpoints: expected http://host:port URLs, got {endpoint!r}")
    return endpoints


# -- up ------------------------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    from odradek.cluster.etcd_process import etcd_binary
    from odradek.cluster.local import LocalCluster

    if args.brokers < 1:
        raise CliError("--brokers must be at least 1")
    endpoints = _endpoints(args.etcd_endpoints)
    if not endpoints and etcd_binary() is None:
        raise CliError(
            "etcd is not installed (Debian: apt-get install etcd-server; or give "
            "--etcd-endpoints)"
        )
    properties: dict[str, str] = {}
    for item in args.broker_property:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--broker-property: expected KEY=VALUE, got {item!r}")
        properties[key.strip()] = value.strip()
    if args.session_timeout_ms is not None:
        properties["broker.session.timeout.ms"] = str(args.session_timeout_ms)
    cluster = LocalCluster(
        Path(args.data_dir).resolve(),
        args.brokers,
        etcd_endpoints=endpoints,
        etcd_prefix=args.etcd_prefix,
        broker_properties=properties,
    )
    stop = threading.Event()
    revive = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_revive(signum: int, frame: FrameType | None) -> None:
        revive.set()

    # Installed first, so a signal during start-up stops the cluster once it is up.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_revive)
    try:
        try:
            cluster.start()
        except (RuntimeError, TimeoutError, OSError) as e:
            raise CliError(f"cannot start the cluster: {e}") from None
        print(f"etcd.endpoints={','.join(cluster.etcd_endpoints)}", flush=True)
        for broker in cluster.brokers.values():
            print(f"broker {broker.node_id}: {broker.address} (pid {broker.pid}, data in "
                  f"{broker.data_dir})", flush=True)
        print(f"bootstrap.servers={cluster.bootstrap}", flush=True)
        while not stop.wait(0.5):
            _report_exits(cluster)
            if revive.is_set() and not stop.is_set():
                revive.clear()
                _restart_exited(cluster)
        print("stopping the cluster", file=sys.stderr, flush=True)
        cluster.stop()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


_CONSEQUENCES = {
    "etcd": "the brokers refuse metadata changes, and writes once their sessions could have "
            "expired (broker.session.timeout.ms), until it is back",
    "broker": "its partitions have no leader until it is back; the other brokers carry on",
}


def _report_exits(cluster: LocalCluster) -> None:
    for gone in cluster.exited():
        kind = "etcd" if gone.name == "etcd" else "broker"
        tail = "\n".join("    " + line for line in gone.log_tail.splitlines())
        print(
            f"{gone.name} (pid {gone.pid}) {gone.describe()}: {_CONSEQUENCES[kind]}. "
            f"Left down; `kill -USR1 {os.getpid()}` starts it again. The end of "
            f"{gone.log_path}:\n{tail}",
            file=sys.stderr, flush=True,
        )


def _restart_exited(cluster: LocalCluster) -> None:
    for name, error in cluster.restart_exited():
        if error is None:
            print(f"{name} started again", file=sys.stderr, flush=True)
        else:
            print(f"{name} did not start again: {error}", file=sys.stderr, flush=True)


# -- status --------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    endpoints = _endpoints(args.etcd_endpoints)
    prefix = args.etcd_prefix
    if not endpoints:
        if args.data_dir is None:
            raise CliError("give --data-dir (of `cluster up`) or --etcd-endpoints")
        from odradek.cluster.local import read_description

        try:
            description = read_description(Path(args.data_dir))
        except FileNotFoundError:
            raise CliError(f"no cluster in {args.data_dir} (no cluster.json)") from None
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read the cluster description in {args.data_dir}: {e}") from None
        endpoints = list(description["etcd"]["endpoints"])
        prefix = prefix or description["etcd"].get("prefix")
    status = asyncio.run(_read(endpoints, prefix or "/odradek"))
    if args.json:
        print(json.dumps(status.to_json(), indent=1))
        return 0
    print(f"cluster id: {status.cluster_id or MISSING}")
    print(f"etcd: {','.join(endpoints)} (prefix {prefix or '/odradek'})")
    rows = [
        [str(b.info.node_id), f"{b.info.host}:{b.info.port}", b.info.rack or MISSING, str(b.epoch),
         "shutting down" if b.info.shutting_down else "up"]
        for b in status.brokers
    ]
    print(f"brokers: {len(rows)}")
    if rows:
        for line in format_table(["ID", "ADDRESS", "RACK", "EPOCH", "STATE"], rows):
            print("  " + line)
    if status.controller is None:
        print("controller: none")
    else:
        print(f"controller: broker {status.controller[0]} (controller epoch {status.controller[1]})")
    if status.leaderless:
        print(f"partitions without a leader: {len(status.leaderless)}")
        for topic, partition in status.leaderless:
            print(f"  {topic}-{partition}")
    else:
        print("partitions without a leader: none")
    if status.under_replicated:
        print(f"under-replicated partitions: {len(status.under_replicated)}")
        for topic, partition in status.under_replicated:
            print(f"  {topic}-{partition}")
    else:
        print("under-replicated partitions: none")
    return 0


async def _read(endpoints: list[str], prefix: str) -> ClusterStatus:
    from odradek.cluster.etcd import EtcdStore
    from odradek.cluster.membership import ClusterKeys
    from odradek.cluster.status import read_status
    from odradek.cluster.store import ClusterStoreError

    store = EtcdStore(endpoints, request_timeout_s=3)
    try:
        return await read_status(store, ClusterKeys(prefix=prefix))
    except ClusterStoreError as e:
        raise CliError(f"cannot read the cluster's state: {e}") from None
    finally:
        await store.close()
