"""One chaos run: start the cluster, create the topics, start the clients, inject faults in
rounds, stop the clients, read everything back, stop the cluster, read the replicas' logs, and
check the history.

``python -m chaos --duration 600`` (with ``tests`` on ``PYTHONPATH``; ``make chaos``) runs the
long form; the pytest tests in this package run the short form.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from chaos.checker import Report, check
from chaos.faults import FAULTS, run_fault
from chaos.harness import DEFAULTS, ChaosCluster, ChaosConfig, wait_for
from chaos.history import History
from chaos.net import NetFaults, unavailable
from chaos.workload import Workload, final_reads, replica_logs

__all__ = ["RunResult", "Unsupported", "run", "main"]

TOPIC = "chaos"
TXN_TOPIC = "chaos-txn"
#: Between a round's settling and the next fault: the clients' traffic in the new epochs.
ROUND_PAUSE_S = 0.5


class Unsupported(Exception):
    """The cluster refuses what the run needs (e.g. a replication factor above 1)."""


@dataclass(frozen=True, slots=True)
class RunResult:
    report: Report
    history_path: Path
    rounds: int
    network: str | None  # why network faults were skipped, or None
    crashed: tuple[str, ...] = ()  # workers that died: the history is incomplete

    @property
    def valid(self) -> bool:
        return self.report.valid and not self.crashed

    def describe(self) -> str:
        net = "" if self.network is None else f"\nnetwork faults skipped: {self.network}"
        crashed = "".join(f"\nworker crashed: {c}" for c in self.crashed)
        return (f"{self.rounds} fault rounds; history: {self.history_path}{net}{crashed}\n"
                f"{self.report.summary()}")


def _create_topics(cluster: ChaosCluster, config: ChaosConfig) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    topics = [
        NewTopic(t, config.partitions, config.replication_factor,
                 config={"min.insync.replicas": str(config.min_insync_replicas)})
        for t in (TOPIC, TXN_TOPIC)
    ]
    for topic, future in admin.create_topics(topics, request_timeout=30).items():
        try:
            future.result(60)
        except KafkaException as e:
            error = e.args[0]
            if getattr(error, "name", lambda: "")() == "INVALID_REPLICATION_FACTOR":
                raise Unsupported(
                    f"the cluster refuses replication factor {config.replication_factor} "
                    f"for {topic}: {error.str()}"
                ) from e
            raise


def run(config: ChaosConfig, directory: Path, *, log: bool = False) -> RunResult:
    """Run and check. Raises :class:`Unsupported` when the cluster refuses the topics."""
    directory.mkdir(parents=True, exist_ok=True)
    history_path = directory / "history.jsonl"
    why_not = unavailable()
    net = NetFaults([f"broker-{i}" for i in range(1, config.brokers + 1)]
                    + [f"etcd-{i}" for i in range(config.etcd_members)]) \
        if why_not is None else None
    rng = random.Random(config.seed)
    faults = list(config.faults or FAULTS)
    rounds = 0
    crashed: list[str] = []

    def say(text: str) -> None:
        if log:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)

    with History(history_path) as history:
        history.record("meta", config=config.to_json(), network=why_not or "nftables",
                       idempotent=config.acks in ("all", "-1"))
        if net is not None:
            net.setup()
        cluster = ChaosCluster(directory / "cluster", config, history, net)
        workload: Workload | None = None
        try:
            cluster.start()
            say(f"cluster up: {cluster.bootstrap}")
            _create_topics(cluster, config)
            topics = (TOPIC, TXN_TOPIC)
            wait_for(lambda: cluster.settled(topics), "every partition led", 60)
            workload = Workload(
                history, cluster.bootstrap, TOPIC,
                TXN_TOPIC if config.transactional else None, config.partitions,
                producers=config.producers, rate=config.produce_rate, acks=config.acks,
                seed=config.seed, group_members=config.group_members,
            )
            workload.start()
            time.sleep(2)
            started = time.monotonic()
            while True:
                if config.duration_s > 0:
                    if time.monotonic() - started >= config.duration_s:
                        break
                    name = rng.choice(faults)
                elif rounds >= (config.rounds or len(faults)):
                    break
                else:
                    name = faults[rounds % len(faults)]
                say(f"round {rounds + 1}: {name}")
                if run_fault(name, cluster, rng, TOPIC):
                    rounds += 1
                else:
                    faults.remove(name)
                    if not faults:
                        break
                    continue
                try:
                    wait_for(lambda: cluster.settled(topics), "the cluster to settle", 90)
                except TimeoutError as e:
                    history.record("fault", fault=name, phase="unsettled", error=str(e))
                    say(f"not settled after {name}: {e}")
                time.sleep(ROUND_PAUSE_S)
            say("stopping the clients")
            workload.stop()
            for error in workload.errors:
                history.record("workload", error=error)
            crashed = list(workload.crashed)
            workload = None
            say("final reads")
            final_reads(history, cluster.bootstrap, topics, config.partitions)
            say("stopping the cluster")
            cluster.stop()
            replica_logs(history, {n: b.data_dir for n, b in cluster.brokers.items()}, topics)
        except Unsupported:
            raise
        except BaseException as e:
            history.record("error", error=traceback.format_exc())
            e.add_note(f"chaos history: {history_path}")
            raise
        finally:
            if workload is not None:
                workload.stop(10)
            cluster.kill_everything()
            if net is not None:
                net.teardown()
    report = check(_load(history_path))
    result = RunResult(report, history_path, rounds, why_not, tuple(crashed))
    (directory / "report.json").write_text(json.dumps({
        "valid": result.valid, "rounds": rounds, "crashed": crashed, "stats": report.stats,
        "unchecked": list(report.unchecked),
        "anomalies": [a.to_json() for a in report.anomalies],
        "resent": [a.to_json() for a in report.resent],
    }, indent=1) + "\n", encoding="utf-8")
    return result


def _load(path: Path) -> list[dict[str, object]]:
    from chaos.history import load_history

    return load_history(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the chaos test against a local cluster.")
    parser.add_argument("--duration", type=float, default=600,
                        help="seconds of fault rounds (0: one round of each fault)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--replication-factor", type=int, default=DEFAULTS.replication_factor)
    parser.add_argument("--min-insync-replicas", type=int,
                        default=DEFAULTS.min_insync_replicas)
    parser.add_argument("--acks", default=DEFAULTS.acks)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma-separated, from: " + ", ".join(FAULTS))
    parser.add_argument("--session-timeout-ms", type=int, default=DEFAULTS.session_timeout_ms)
    parser.add_argument("--dir", type=Path, default=None, help="where the run's files go")
    args = parser.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults: {unknown}")
    config = replace(
        DEFAULTS, duration_s=args.duration, seed=args.seed, faults=faults,
        replication_factor=args.replication_factor,
        min_insync_replicas=args.min_insync_replicas, acks=args.acks,
        session_timeout_ms=args.session_timeout_ms,
    )
    directory = args.dir or Path(tempfile.mkdtemp(prefix="odradek-chaos-"))
    print(f"chaos run in {directory} (seed {args.seed})", flush=True)
    try:
        result = run(config, directory, log=True)
    except Unsupported as e:
        print(f"not run: {e}")
        return 2
    print(result.describe())
    return 0 if result.valid else 1


if __name__ == "__main__":
    sys.exit(main())
