"""``odradek cluster reassign`` and ``odradek cluster elect-leaders``: Kafka's
``kafka-reassign-partitions`` and ``kafka-leader-election`` over the protocol
(AlterPartitionReassignments, ListPartitionReassignments, ElectLeaders; :mod:`odradek.cli._raw`,
so librdkafka is not loaded).

A reassignment plan is Kafka's JSON (``--reassignment-json-file``)::

    {"version": 1, "partitions": [{"topic": "t", "partition": 0, "replicas": [2, 3]}]}

(``log_dirs``, if present, must be ``"any"``: a broker has one data dir). ``--execute`` prints the
current assignment of the plan's partitions (a plan that rolls it back) and starts it;
``--verify`` says for each partition whether it is complete, still in progress, or not running
and elsewhere than planned (exit 0 either way, as Kafka's tool); ``--cancel`` cancels those still in
progress; ``--list`` shows every reassignment in progress.

``elect-leaders --election-type preferred|unclean`` with ``--topic T --partition P``,
``--all-topic-partitions`` or ``--path-to-json-file F`` (``{"partitions": [{"topic",
"partition"}]}``); exit 1 when an election failed (ELECTION_NOT_NEEDED is not a failure).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from odradek.cli._common import CliError
from odradek.cli._options import client_options
from odradek.cli._raw import Cluster, request_module
from odradek.errors import ErrorCode
from odradek.protocol.build import build

__all__ = ["configure_reassign", "configure_elect_leaders"]

ELECT_LEADERS = 43
ALTER_PARTITION_REASSIGNMENTS = 45
LIST_PARTITION_REASSIGNMENTS = 46

_Plan = dict[tuple[str, int], list[int]]


def configure_reassign(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reassignment-json-file", metavar="FILE",
                        help="the plan: {\"version\":1,\"partitions\":[{\"topic\",\"partition\","
                             "\"replicas\"}]}")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--execute", action="store_true", help="start the plan's reassignments")
    action.add_argument("--verify", action="store_true",
                        help="whether the plan's reassignments are complete")
    action.add_argument("--cancel", action="store_true",
                        help="cancel the plan's reassignments still in progress")
    action.add_argument("--list", action="store_true", help="every reassignment in progress")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for an answer (default 30)")
    parser.set_defaults(func=_reassign)


def configure_elect_leaders(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--election-type", required=True, type=str.lower,
                        choices=["preferred", "unclean"], help="which leader to elect")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--topic", help="a topic (with --partition)")
    what.add_argument("--all-topic-partitions", action="store_true",
                      help="every partition of every topic")
    what.add_argument("--path-to-json-file", metavar="FILE",
                      help="{\"partitions\":[{\"topic\",\"partition\"}]}")
    parser.add_argument("--partition", type=int, help="the partition of --topic")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="how long to wait for an answer (default 30)")
    parser.set_defaults(func=_elect_leaders)


def _cluster(args: argparse.Namespace) -> Cluster:
    options = client_options(args)
    return Cluster(options.bootstrap, connect_timeout=options.connect_timeout,
                   request_timeout=args.timeout)


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CliError(f"{path} is not JSON: {e}") from None


def _partition_entries(raw: Any, path: str) -> list[dict[str, Any]]:
    entries = raw.get("partitions") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise CliError(f"{path}: expected {{\"partitions\": [...]}}")
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("topic"), str)
                and isinstance(entry.get("partition"), int)):
            raise CliError(f"{path}: each partition needs a \"topic\" and a \"partition\"")
    return entries


def read_plan(path: str) -> _Plan:
    """The reassignment plan in ``path`` (Kafka's format), partition → replicas."""
    plan: _Plan = {}
    for entry in _partition_entries(_read_json(path), path):
        key = (entry["topic"], entry["partition"])
        replicas = entry.get("replicas")
        if not (isinstance(replicas, list) and replicas
                and all(isinstance(r, int) for r in replicas)):
            raise CliError(f"{path}: {_name(key)} needs a non-empty list of \"replicas\"")
        dirs = entry.get("log_dirs")
        if dirs is not None and (not isinstance(dirs, list) or any(d != "any" for d in dirs)):
            raise CliError(f"{path}: {_name(key)}: log_dirs other than \"any\" are not supported")
        if key in plan:
            raise CliError(f"{path}: {_name(key)} appears more than once")
        plan[key] = list(replicas)
    if not plan:
        raise CliError(f"{path}: the plan names no partitions")
    return plan


def _name(key: tuple[str, int]) -> str:
    return f"{key[0]}-{key[1]}"


def _plan_json(plan: _Plan) -> str:
    return json.dumps({
        "version": 1,
        "partitions": [
            {"topic": t, "partition": p, "replicas": r, "log_dirs": ["any"] * len(r)}
            for (t, p), r in sorted(plan.items())
        ],
    })


def _current_assignment(cluster: Cluster, keys: Iterable[tuple[str, int]]) -> _Plan:
    wanted = sorted(set(keys))
    answer = cluster.metadata(sorted({t for t, _ in wanted}))
    replicas: _Plan = {}
    for topic in answer.topics:
        for p in topic.partitions:
            replicas[(topic.name, p.partition_index)] = list(p.replica_nodes)
    return {k: replicas[k] for k in wanted if k in replicas}


def _ongoing(cluster: Cluster, keys: Iterable[tuple[str, int]] | None) -> dict[tuple[str, int], Any]:
    m = request_module(LIST_PARTITION_REASSIGNMENTS)
    topics = None
    if keys is not None:
        by_topic: dict[str, list[int]] = {}
        for t, p in keys:
            by_topic.setdefault(t, []).append(p)
        topics = tuple(m.ListPartitionReassignmentsTopics(name=t, partition_indexes=tuple(ps))
                       for t, ps in sorted(by_topic.items()))
    answer = cluster.any_broker().request(build(m.ListPartitionReassignmentsRequest,
                                                topics=topics))
    if answer.error_code != ErrorCode.none:
        raise CliError(f"listing reassignments failed: {ErrorCode(answer.error_code).name.upper()}"
                       f"{': ' + answer.error_message if answer.error_message else ''}")
    return {(t.name, p.partition_index): p for t in answer.topics for p in t.partitions}


def _alter(cluster: Cluster, targets: dict[tuple[str, int], list[int] | None]) -> dict[
        tuple[str, int], tuple[ErrorCode, str | None]]:
    m = request_module(ALTER_PARTITION_REASSIGNMENTS)
    by_topic: dict[str, list[Any]] = {}
    for (t, p), replicas in sorted(targets.items()):
        by_topic.setdefault(t, []).append(m.ReassignablePartition(
            partition_index=p, replicas=None if replicas is None else tuple(replicas)))
    request = build(m.AlterPartitionReassignmentsRequest, topics=tuple(
        m.ReassignableTopic(name=t, partitions=tuple(ps)) for t, ps in by_topic.items()))
    answer = cluster.any_broker().request(request)
    if answer.error_code != ErrorCode.none:
        raise CliError(f"the reassignment was refused: {ErrorCode(answer.error_code).name.upper()}"
                       f"{': ' + answer.error_message if answer.error_message else ''}")
    return {(t.name, p.partition_index): (ErrorCode(p.error_code), p.error_message)
            for t in answer.responses for p in t.partitions}


def _reassign(args: argparse.Namespace) -> int:
    if not args.list and not args.reassignment_json_file:
        raise CliError("--reassignment-json-file is needed with --execute, --verify, --cancel")
    plan = read_plan(args.reassignment_json_file) if not args.list else {}
    with _cluster(args) as cluster:
        if args.list:
            ongoing = _ongoing(cluster, None)
            if not ongoing:
                print("No partition reassignments found.")
            else:
                print("Current partition reassignments:")
                for key, p in sorted(ongoing.items()):
                    print(f"{_name(key)}: replicas: {_ids(p.replicas)}. "
                          f"adding: {_ids(p.adding_replicas)}. "
                          f"removing: {_ids(p.removing_replicas)}.")
            return 0
        if args.execute:
            current = _current_assignment(cluster, plan)
            print("Current partition replica assignment\n")
            print(_plan_json(current))
            print("\nSave this to use as the --reassignment-json-file option during rollback")
            results = _alter(cluster, dict(plan))
            return _report(results, "started partition reassignments")
        if args.cancel:
            ongoing = _ongoing(cluster, plan)
            if not ongoing:
                print("None of the specified partition reassignments are active.")
                return 0
            results = _alter(cluster, dict.fromkeys(ongoing))
            return _report(results, "cancelled partition reassignments")
        ongoing = _ongoing(cluster, plan)
        current = _current_assignment(cluster, plan)
        print("Status of partition reassignment:")
        for key, target in sorted(plan.items()):
            if key in ongoing:
                print(f"Reassignment of partition {_name(key)} is still in progress.")
            elif current.get(key) == target:
                print(f"Reassignment of partition {_name(key)} is completed.")
            else:
                now = current.get(key)
                print(f"There is no active reassignment of partition {_name(key)}, but replica "
                      f"set is {_ids(now) if now is not None else 'unknown'} rather than "
                      f"{_ids(target)}.")
        return 0


def _ids(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in ids)


def _report(results: dict[tuple[str, int], tuple[ErrorCode, str | None]], done: str) -> int:
    failed = {k: v for k, v in results.items() if v[0] != ErrorCode.none}
    succeeded = sorted(k for k in results if k not in failed)
    if succeeded:
        print(f"Successfully {done} for {', '.join(_name(k) for k in succeeded)}")
    for key, (code, message) in sorted(failed.items()):
        print(f"Error for partition {_name(key)}: {code.name.upper()}{': ' + message if message else ''}")
    if failed:
        raise CliError(f"{len(failed)} partition(s) failed")
    return 0


def _elect_leaders(args: argparse.Namespace) -> int:
    partitions: list[tuple[str, int]] | None
    if args.all_topic_partitions:
        if args.partition is not None:
            raise CliError("--partition goes with --topic, not --all-topic-partitions")
        partitions = None
    elif args.topic is not None:
        if args.partition is None:
            raise CliError("--topic needs --partition")
        partitions = [(args.topic, args.partition)]
    else:
        if args.partition is not None:
            raise CliError("--partition goes with --topic")
        entries = _partition_entries(_read_json(args.path_to_json_file), args.path_to_json_file)
        partitions = [(e["topic"], e["partition"]) for e in entries]
    election = 0 if args.election_type == "preferred" else 1
    m = request_module(ELECT_LEADERS)
    topics = None
    if partitions is not None:
        by_topic: dict[str, list[int]] = {}
        for t, p in partitions:
            by_topic.setdefault(t, []).append(p)
        topics = tuple(m.TopicPartitions(topic=t, partitions=tuple(ps))
                       for t, ps in by_topic.items())
    with _cluster(args) as cluster:
        answer = cluster.any_broker().request(build(
            m.ElectLeadersRequest, election_type=election, topic_partitions=topics))
    if answer.error_code != ErrorCode.none:
        raise CliError(f"the election was refused: {ErrorCode(answer.error_code).name.upper()}")
    kind = args.election_type.upper()
    elected, not_needed, failed = [], [], []
    for t in answer.replica_election_results:
        for p in t.partition_result:
            key = (t.topic, p.partition_id)
            if p.error_code == ErrorCode.none:
                elected.append(key)
            elif p.error_code == ErrorCode.election_not_needed:
                not_needed.append(key)
            else:
                failed.append((key, ErrorCode(p.error_code), p.error_message))
    if elected:
        print(f"Successfully completed leader election ({kind}) for partitions "
              f"{', '.join(_name(k) for k in sorted(elected))}")
    if not_needed:
        print(f"Valid replica already elected for partitions "
              f"{', '.join(_name(k) for k in sorted(not_needed))}")
    for key, code, message in sorted(failed):
        print(f"Error completing leader election ({kind}) for partition: {_name(key)}: "
              f"{code.name.upper()}{': ' + message if message else ''}")
    if failed:
        raise CliError(f"{len(failed)} replica(s) could not be elected")
    if not (elected or not_needed):
        print("No partitions needed an election.")
    return 0
