"""``odradek groups list|describe|delete|reset-offsets``: consumer groups, their committed
offsets and lag, spoken through confluent-kafka's AdminClient like the other client commands.

The output follows Kafka's ``kafka-consumer-groups.sh`` where scripts may depend on it: the
column names (``CURRENT-OFFSET``, ``LOG-END-OFFSET``, ``LAG``, ``NEW-OFFSET``), ``-`` for a
missing value, the state names (``Stable``, ``Empty``...), and how ``reset-offsets`` picks and
clamps offsets. Each command runs on the calling thread; the AdminClient it makes needs no
closing, and nothing is kept locally.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from odradek.cli._common import MISSING, REQUEST_TIMEOUT_S, CliError, Subparsers, format_table, warn
from odradek.cli._kafka import (
    UNREACHABLE_CODES,
    admin_client,
    admin_result,
    error_of,
    explain,
    reachability_error,
    require_topic,
)
from odradek.cli._options import ClientOptions, client_options
from odradek.cli._records import parse_timestamp

__all__ = [
    "GROUP_STATES",
    "GROUP_TYPES",
    "PartitionPosition",
    "ResetMode",
    "ResetRule",
    "add_commands",
    "lag",
    "parse_states",
    "parse_topic_partitions",
    "reset_target",
]

#: Kafka's spelling of each group state (librdkafka's enum names differ); ``--state`` takes these.
GROUP_STATES: dict[str, str] = {
    "EMPTY": "Empty",
    "STABLE": "Stable",
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "DEAD": "Dead",
    # librdkafka has no names for a consumer group's Assigning and Reconciling: they arrive here.
    "UNKNOWN": "Unknown",
}
GROUP_TYPES: dict[str, str] = {"UNKNOWN": "unknown", "CLASSIC": "classic", "CONSUMER": "consumer"}
#: Offsets are only reset in these states: no member may be consuming (Kafka's rule).
INACTIVE_STATES = frozenset({"EMPTY", "DEAD"})


# -- pure helpers -------------------------------------------------------------------------------


class ResetMode(enum.Enum):
    EARLIEST = "earliest"
    LATEST = "latest"
    DATETIME = "datetime"
    OFFSET = "offset"
    SHIFT = "shift"


@dataclass(frozen=True, slots=True)
class ResetRule:
    """Where ``reset-offsets`` moves each partition. ``value`` is the offset (OFFSET), the
    shift (SHIFT) or the time in ms (DATETIME); unused otherwise."""

    mode: ResetMode
    value: int = 0


@dataclass(frozen=True, slots=True)
class PartitionPosition:
    """What is known of one partition when planning a reset. ``committed`` is None when the
    group has no offset for it; ``offset_at_time`` is the first offset at or after the
    DATETIME rule's time, None when no record is that late."""

    committed: int | None
    log_start: int
    log_end: int
    offset_at_time: int | None = None


def reset_target(rule: ResetRule, position: PartitionPosition) -> int:
    """The new committed offset of one partition, always within [log start, log end].

    Like Kafka's tool: a time later than every record means the log end, and a shift needs a
    committed offset to shift from (ValueError otherwise)."""
    low, high = position.log_start, max(position.log_start, position.log_end)
    match rule.mode:
        case ResetMode.EARLIEST:
            wanted = low
        case ResetMode.LATEST:
            wanted = high
        case ResetMode.OFFSET:
            wanted = rule.value
        case ResetMode.DATETIME:
            wanted = high if position.offset_at_time is None else position.offset_at_time
        case ResetMode.SHIFT:
            if position.committed is None:
                raise ValueError("there is no committed offset to shift")
            wanted = position.committed + rule.value
    return min(max(wanted, low), high)


def lag(committed: int | None, log_end: int | None) -> int | None:
    """How far the group is behind: None when either offset is unknown."""
    if committed is None or log_end is None:
        return None
    return log_end - committed


def parse_topic_partitions(text: str) -> tuple[str, tuple[int, ...] | None]:
    """``TOPIC`` (every partition: None) or ``TOPIC:P,P...``. Raises ValueError."""
    topic, sep, rest = text.partition(":")
    if not topic:
        raise ValueError(f"--topic {text!r}: no topic name")
    if not sep:
        return topic, None
    partitions = []
    for item in rest.split(","):
        item = item.strip()
        if not item.isdigit():
            raise ValueError(f"--topic {text!r}: {item!r} is not a partition number")
        partitions.append(int(item))
    return topic, tuple(dict.fromkeys(partitions))


def parse_states(items: Iterable[str]) -> set[str]:
    """librdkafka state names from Kafka's (``Stable``, ``PreparingRebalance``...), any case,
    repeated or comma-separated. Raises ValueError."""
    by_kafka_name = {v.lower(): k for k, v in GROUP_STATES.items() if k != "UNKNOWN"}
    chosen = set()
    for item in items:
        for name in item.split(","):
            key = by_kafka_name.get(name.strip().lower())
            if key is None:
                valid = ", ".join(GROUP_STATES[k] for k in by_kafka_name.values())
                raise ValueError(f"unknown group state {name.strip()!r}; valid states: {valid}")
            chosen.add(key)
    return chosen


def _show(value: object) -> str:
    return MISSING if value is None else str(value)


def _state_name(state: Any) -> str:
    return GROUP_STATES.get(getattr(state, "name", ""), "Unknown")


def _type_name(kind: Any) -> str:
    return GROUP_TYPES.get(getattr(kind, "name", ""), "unknown")


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """Register ``groups`` on the top-level subparsers; ``common`` holds the connection options
    every client command shares."""
    groups = sub.add_parser(
        "groups", help="list, describe and delete consumer groups; reset their offsets"
    )
    actions = groups.add_subparsers(dest="groups_command", required=True, metavar="ACTION")

    p = actions.add_parser("list", parents=[common], help="one line per group: id, type, state")
    p.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="STATE",
        help="only groups in this state (repeatable or comma-separated: Empty, Stable, "
        "PreparingRebalance, CompletingRebalance, Dead)",
    )
    p.add_argument(
        "--type",
        action="append",
        default=[],
        choices=("classic", "consumer"),
        help="only groups of this protocol (repeatable)",
    )
    p.set_defaults(func=_list)

    p = actions.add_parser(
        "describe",
        parents=[common],
        help="state, members, and committed offset, log end offset and lag per partition",
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=_describe)

    p = actions.add_parser("delete", parents=[common], help="delete groups that have no members")
    p.add_argument("groups", nargs="+", metavar="GROUP")
    p.set_defaults(func=_delete)

    p = actions.add_parser(
        "reset-offsets",
        parents=[common],
        help="move a group's committed offsets (a dry run unless --execute)",
        description=(
            "Print where the committed offsets of GROUP would move; with --execute, commit them. "
            "New offsets are clamped into [log start offset, log end offset]. Refused while "
            "the group has members."
        ),
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC[:P,P...]",
        help="the partitions to reset (default: all of the topic's; repeatable)",
    )
    p.add_argument(
        "--all-topics",
        action="store_true",
        help="every partition the group has a committed offset for",
    )
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the log start offset")
    to.add_argument("--to-latest", action="store_true", help="the log end offset")
    to.add_argument(
        "--to-datetime",
        metavar="ISO8601|MS",
        help="the first offset at or after this time (UTC unless an offset is given)",
    )
    to.add_argument("--to-offset", type=int, metavar="N", help="this offset")
    to.add_argument(
        "--shift-by", type=int, metavar="N", help="the committed offset plus N (N may be < 0)"
    )
    p.add_argument("--execute", action="store_true", help="commit the new offsets")
    p.set_defaults(func=_reset_offsets)


# -- broker calls -------------------------------------------------------------------------------


def _result(
    future: concurrent.futures.Future[Any],
    group: str,
    options: ClientOptions,
    subject: str | None = None,
) -> Any:
    """The result of an admin future about ``group`` (or ``subject``); failures become a
    one-line CliError."""
    return admin_result(
        future,
        subject or f"group {group!r}",
        options,
        lambda error: _group_error(error, group, options, subject),
    )


def _unreachable(future: concurrent.futures.Future[Any]) -> bool:
    """Whether an admin future failed because no broker answered."""
    if not future.done():
        return True
    exc = future.exception(timeout=0)
    error = error_of(exc) if exc is not None else None
    return error is not None and error.code() in UNREACHABLE_CODES


def _group_error(
    error: Any, group: str, options: ClientOptions, subject: str | None = None
) -> CliError:
    from confluent_kafka import KafkaError

    code = error.code()
    if code == KafkaError.GROUP_ID_NOT_FOUND:
        return CliError(f"group {group!r} does not exist")
    if code == KafkaError.NON_EMPTY_GROUP:
        return CliError(f"group {group!r} has active members")
    if code in (
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
    ):
        # What a coordinator answers an admin commit once members have joined.
        return CliError(f"group {group!r} became active; stop its consumers and try again")
    return explain(error, subject or f"group {group!r}", options)


def _description(admin: Any, group: str, options: ClientOptions) -> Any:
    futures = admin.describe_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)
    return _result(futures[group], group, options)


def _committed(admin: Any, group: str, options: ClientOptions) -> dict[tuple[str, int], int]:
    """Every committed offset of ``group``; partitions without one are left out."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=REQUEST_TIMEOUT_S
    )
    found = _result(futures[group], group, options)
    out = {}
    for tp in found.topic_partitions or ():
        if tp.error is not None:
            raise _group_error(tp.error, group, options)
        if tp.offset >= 0:
            out[(tp.topic, tp.partition)] = tp.offset
    return out


def _log_offsets(
    admin: Any,
    partitions: Iterable[tuple[str, int]],
    which: str | int,
    options: ClientOptions,
    *,
    strict: bool = True,
) -> dict[tuple[str, int], int | None]:
    """One ListOffsets answer per partition: ``which`` is "earliest" (log start offset),
    "latest" (log end offset) or a time in ms (the first offset at or after it). None when the
    broker has no such offset. With ``strict`` a partition the broker cannot answer for is a
    CliError; otherwise it maps to None."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    if which == "earliest":
        spec = OffsetSpec.earliest()
    elif which == "latest":
        spec = OffsetSpec.latest()
    else:
        spec = OffsetSpec.for_timestamp(int(which))
    wanted = list(dict.fromkeys(partitions))
    if not wanted:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in wanted}, request_timeout=REQUEST_TIMEOUT_S
    )
    out: dict[tuple[str, int], int | None] = {}
    for tp, future in futures.items():
        key = (tp.topic, tp.partition)
        try:
            info = future.result(timeout=REQUEST_TIMEOUT_S + options.connect_timeout)
        except concurrent.futures.TimeoutError:
            raise reachability_error(options) from None
        except KafkaException as e:
            error = error_of(e)
            if error is None:
                raise CliError(f"partition {tp.topic}-{tp.partition}: {e}") from None
            if strict or error.code() in UNREACHABLE_CODES:
                raise explain(error, f"partition {tp.topic}-{tp.partition}", options) from None
            out[key] = None
            continue
        out[key] = info.offset if info.offset >= 0 else None
    return out


# -- list ---------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    try:
        states = parse_states(args.state)
    except ValueError as e:
        raise CliError(str(e)) from None
    options = client_options(args)
    admin, _ = admin_client(options)
    filters: dict[str, Any] = {}
    if states:
        filters["states"] = {ConsumerGroupState[s] for s in states}
    if args.type:
        filters["types"] = {ConsumerGroupType[t.upper()] for t in args.type}
    future = admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT_S, **filters)
    result = _result(future, "", options, subject="listing groups")
    for error in result.errors or ():
        warn(args, f"listing groups: {error}")
    listings = sorted(result.valid or (), key=lambda g: g.group_id)
    rows = [
        (g.group_id, _type_name(getattr(g, "type", None)), _state_name(getattr(g, "state", None)))
        for g in listings
    ]
    for line in format_table(("GROUP", "TYPE", "STATE"), rows):
        print(line)
    return 1 if result.errors else 0


# -- describe -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _OffsetRow:
    topic: str
    partition: int
    committed: int | None
    log_end: int | None
    member: Any  # the MemberDescription the partition is assigned to, or None


def _describe(args: argparse.Namespace) -> int:
    options = client_options(args)
    admin, _ = admin_client(options)
    group = args.group
    description = _description(admin, group, options)
    if getattr(getattr(description, "state", None), "name", "") == "DEAD":
        # Brokers describe an unknown group id as a Dead group with no members.
        raise CliError(f"group {group!r} does not exist")
    committed = _committed(admin, group, options)
    members = sorted(description.members or (), key=lambda m: m.member_id)
    owner: dict[tuple[str, int], Any] = {}
    for member in members:
        for tp in member.assignment.topic_partitions:
            owner[(tp.topic, tp.partition)] = member
    keys = sorted(set(owner) | set(committed))
    ends = _log_offsets(admin, keys, "latest", options, strict=False)
    rows = [
        _OffsetRow(t, p, committed.get((t, p)), ends.get((t, p)), owner.get((t, p)))
        for t, p in keys
    ]
    if args.json:
        print(json.dumps(_describe_json(description, members, rows)))
    else:
        _print_description(description, members, rows)
    return 0


def _assignment_text(member: Any) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in member.assignment.topic_partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    if not by_topic:
        return MISSING
    return ";".join(
        f"{topic}:{','.join(str(p) for p in sorted(parts))}"
        for topic, parts in sorted(by_topic.items())
    )


def _coordinator_text(node: Any) -> str:
    if node is None:
        return MISSING
    return f"{node.host}:{node.port} ({node.id})"


def _print_description(description: Any, members: list[Any], rows: list[_OffsetRow]) -> None:
    group = description.group_id
    summary = [
        (
            group,
            _type_name(getattr(description, "type", None)),
            _state_name(description.state),
            description.partition_assignor or MISSING,
            _coordinator_text(description.coordinator),
            len(members),
        )
    ]
    header = ("GROUP", "TYPE", "STATE", "ASSIGNMENT-STRATEGY", "COORDINATOR (ID)", "#MEMBERS")
    lines = format_table(header, summary)
    if members:
        lines.append("")
        lines += format_table(
            ("CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"),
            [
                (
                    m.member_id,
                    m.group_instance_id or MISSING,
                    m.host,
                    m.client_id,
                    len(m.assignment.topic_partitions),
                    _assignment_text(m),
                )
                for m in members
            ],
        )
    if rows:
        lines.append("")
        lines += format_table(
            ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG")
            + ("CONSUMER-ID", "HOST", "CLIENT-ID"),
            [
                (
                    r.topic,
                    r.partition,
                    _show(r.committed),
                    _show(r.log_end),
                    _show(lag(r.committed, r.log_end)),
                    MISSING if r.member is None else r.member.member_id,
                    MISSING if r.member is None else r.member.host,
                    MISSING if r.member is None else r.member.client_id,
                )
                for r in rows
            ],
        )
    for line in lines:
        print(line)


def _describe_json(description: Any, members: list[Any], rows: list[_OffsetRow]) -> dict[str, Any]:
    node = description.coordinator
    return {
        "group": description.group_id,
        "type": _type_name(getattr(description, "type", None)),
        "state": _state_name(description.state),
        "assignment_strategy": description.partition_assignor or None,
        "coordinator": _node_json(node),
        "members": [
            {
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id or None,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": [
                    {"topic": tp.topic, "partition": tp.partition}
                    for tp in sorted(
                        m.assignment.topic_partitions, key=lambda tp: (tp.topic, tp.partition)
                    )
                ],
            }
            for m in members
        ],
        "offsets": [
            {
                "topic": r.topic,
                "partition": r.partition,
                "committed_offset": r.committed,
                "log_end_offset": r.log_end,
                "lag": lag(r.committed, r.log_end),
                "member_id": None if r.member is None else r.member.member_id,
            }
            for r in rows
        ],
    }


def _node_json(node: Any) -> dict[str, Any] | None:
    return None if node is None else {"id": node.id, "host": node.host, "port": node.port}


# -- delete -------------------------------------------------------------------------------------


def _delete(args: argparse.Namespace) -> int:
    options = client_options(args)
    admin, _ = admin_client(options)
    groups = list(dict.fromkeys(args.groups))
    futures = admin.delete_consumer_groups(groups, request_timeout=REQUEST_TIMEOUT_S)
    failed = 0
    for group in groups:
        try:
            _result(futures[group], group, options)
        except CliError as e:
            if _unreachable(futures[group]):
                raise
            warn(args, str(e))
            failed += 1
            continue
        print(f"Deleted group {group}.")
    return 1 if failed else 0


# -- reset-offsets ------------------------------------------------------------------------------


def _rule(args: argparse.Namespace) -> ResetRule:
    if args.to_earliest:
        return ResetRule(ResetMode.EARLIEST)
    if args.to_latest:
        return ResetRule(ResetMode.LATEST)
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise CliError("--to-offset must not be negative")
        return ResetRule(ResetMode.OFFSET, args.to_offset)
    if args.shift_by is not None:
        return ResetRule(ResetMode.SHIFT, args.shift_by)
    try:
        return ResetRule(ResetMode.DATETIME, parse_timestamp(args.to_datetime))
    except ValueError as e:
        raise CliError(str(e)) from None


def _requested_topics(args: argparse.Namespace) -> list[tuple[str, tuple[int, ...] | None]]:
    try:
        return [parse_topic_partitions(text) for text in args.topic]
    except ValueError as e:
        raise CliError(str(e)) from None


def _partitions_to_reset(
    args: argparse.Namespace,
    requested: list[tuple[str, tuple[int, ...] | None]],
    cluster: Any,
    committed: Mapping[tuple[str, int], int],
) -> list[tuple[str, int]]:
    chosen: list[tuple[str, int]] = []
    if args.all_topics:
        chosen += sorted(committed)
        if not chosen:
            raise CliError(
                f"group {args.group!r} has no committed offsets; name the partitions with --topic"
            )
    for topic, partitions in requested:
        meta = require_topic(cluster, topic)
        if partitions is None:
            partitions = tuple(sorted(meta.partitions))
        for p in partitions:
            if p not in meta.partitions:
                raise CliError(
                    f"topic {topic!r} has no partition {p} (it has {len(meta.partitions)})"
                )
            chosen.append((topic, p))
    return list(dict.fromkeys(chosen))


def _reset_offsets(args: argparse.Namespace) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    options = client_options(args)
    rule = _rule(args)
    if not args.topic and not args.all_topics:
        raise CliError("give the partitions to reset with --topic or --all-topics")
    requested = _requested_topics(args)
    group = args.group
    admin, cluster = admin_client(options)
    description = _description(admin, group, options)
    state = getattr(getattr(description, "state", None), "name", "UNKNOWN")
    if state not in INACTIVE_STATES:
        count = len(description.members or ())
        raise CliError(
            f"group {group!r} is active (state {_state_name(description.state)}, "
            f"{count} member{'' if count == 1 else 's'}); offsets can only be reset while it "
            "has no members"
        )
    committed = _committed(admin, group, options)
    keys = _partitions_to_reset(args, requested, cluster, committed)
    starts = _log_offsets(admin, keys, "earliest", options)
    ends = _log_offsets(admin, keys, "latest", options)
    at_time: dict[tuple[str, int], int | None] = {}
    if rule.mode is ResetMode.DATETIME:
        at_time = _log_offsets(admin, keys, rule.value, options)
    plan: list[tuple[str, int, int | None, int]] = []
    for key in keys:
        position = PartitionPosition(
            committed=committed.get(key),
            log_start=starts.get(key) or 0,
            log_end=ends.get(key) or 0,
            offset_at_time=at_time.get(key),
        )
        try:
            target = reset_target(rule, position)
        except ValueError as e:
            raise CliError(f"partition {key[0]}-{key[1]}: {e}") from None
        plan.append((key[0], key[1], position.committed, target))

    header = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET")
    for line in format_table(header, [(group, t, p, _show(c), n) for t, p, c, n in plan]):
        print(line)
    if not args.execute:
        print("Dry run: nothing was changed; add --execute to commit these offsets.")
        return 0
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(t, p, new) for t, p, _, new in plan]
    )
    futures = admin.alter_consumer_group_offsets([request], request_timeout=REQUEST_TIMEOUT_S)
    result = _result(futures[group], group, options)
    for tp in result.topic_partitions or ():
        if tp.error is not None:
            raise _group_error(tp.error, group, options)
    print(f"Committed the new offsets of group {group}.")
    return 0
