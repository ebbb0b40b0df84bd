"""``odradek topics create|list|describe|alter|delete``: topics and their configs, through
confluent-kafka's AdminClient, so they work against any Kafka-compatible broker.

``describe`` prints the tab-separated layout of Kafka's ``kafka-topics.sh --describe``
(``Topic:``, ``PartitionCount:``, ``Leader:``, ``Isr:``...). Each command runs on the calling thread; the AdminClient it makes
needs no closing, and nothing is kept locally.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from typing import Any

from odradek.cli._common import REQUEST_TIMEOUT_S, CliError, Subparsers, require_positive, warn
from odradek.cli._kafka import (
    UNSUPPORTED_CODES,
    admin_client,
    admin_result,
    error_of,
    explain,
    reachability_error,
    require_topic,
)
from odradek.cli._options import ClientOptions, client_options
from odradek.cli._records import parse_assignments

__all__ = ["add_commands"]


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """Register ``topics`` on the top-level subparsers; ``common`` holds the connection options
    every client command shares."""
    topics = sub.add_parser("topics", help="create, list, describe, alter and delete topics")
    actions = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")

    p = actions.add_parser("create", parents=[common], help="create a topic")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--partitions", type=int, metavar="N", help="default: the broker's")
    p.add_argument("--replication-factor", type=int, metavar="N", help="default: the broker's")
    p.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="a topic config"
    )
    p.add_argument(
        "--if-not-exists", action="store_true", help="succeed when the topic already exists"
    )
    p.set_defaults(func=_create)

    p = actions.add_parser("list", parents=[common], help="list topic names")
    p.set_defaults(func=_list)

    p = actions.add_parser(
        "describe",
        parents=[common],
        help="partitions, leaders, replicas, ISR and non-default configs",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every topic")
    p.set_defaults(func=_describe)

    p = actions.add_parser("alter", parents=[common], help="add partitions or change configs")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--partitions", type=int, metavar="N", help="the new (larger) partition count")
    p.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="set a topic config"
    )
    p.add_argument(
        "--delete-config",
        action="append",
        default=[],
        metavar="KEY",
        help="remove a topic config override (back to the broker's default)",
    )
    p.set_defaults(func=_alter)

    p = actions.add_parser("delete", parents=[common], help="delete topics")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--if-exists", action="store_true", help="succeed when a topic does not exist")
    p.set_defaults(func=_delete)


# -- shared by the actions ----------------------------------------------------------------------


def _configs(items: list[str]) -> dict[str, str]:
    try:
        return parse_assignments(items, "config")
    except ValueError as e:
        raise CliError(str(e)) from None


# -- actions ------------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    options = client_options(args)
    configs = _configs(args.config)
    require_positive(args.partitions, "--partitions")
    require_positive(args.replication_factor, "--replication-factor")
    admin, _ = admin_client(options)
    new = NewTopic(
        args.name,
        num_partitions=args.partitions or -1,
        replication_factor=args.replication_factor or -1,
        config=configs,
    )
    try:
        futures = admin.create_topics(
            [new], operation_timeout=REQUEST_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S
        )
    except KafkaException as e:  # rejected by the client before sending
        raise CliError(f"topic {args.name!r}: {e}") from None
    future = futures[args.name]
    try:
        admin_result(future, f"topic {args.name!r}", options)
    except CliError:
        if args.if_not_exists and _failed_with(future, KafkaError.TOPIC_ALREADY_EXISTS):
            return 0
        raise
    print(f"Created topic {args.name}.")
    return 0


def _failed_with(future: concurrent.futures.Future[Any], *codes: int) -> bool:
    """Whether a finished admin future failed with one of these Kafka error codes."""
    exc = future.exception(timeout=0)
    error = error_of(exc) if exc is not None else None
    return error is not None and error.code() in codes


def _list(args: argparse.Namespace) -> int:
    _, cluster = admin_client(client_options(args))
    for name in sorted(cluster.topics):
        print(name)
    return 0


def _describe(args: argparse.Namespace) -> int:
    options = client_options(args)
    admin, cluster = admin_client(options)
    names = list(dict.fromkeys(args.names)) if args.names else sorted(cluster.topics)
    metas = [require_topic(cluster, name) for name in names]
    configs = _non_default_configs(admin, names, options, args)
    for name, meta in zip(names, metas, strict=True):
        partitions = [meta.partitions[i] for i in sorted(meta.partitions)]
        replication = len(partitions[0].replicas) if partitions else 0
        shown = configs.get(name)
        config_text = "?" if shown is None else ",".join(f"{k}={v}" for k, v in shown)
        print(
            f"Topic: {name}\tPartitionCount: {len(partitions)}\t"
            f"ReplicationFactor: {replication}\tConfigs: {config_text}"
        )
        for p in partitions:
            leader = "none" if p.leader < 0 else str(p.leader)
            line = (
                f"\tTopic: {name}\tPartition: {p.id}\tLeader: {leader}\t"
                f"Replicas: {_ids(p.replicas)}\tIsr: {_ids(p.isrs)}"
            )
            if p.error is not None:
                line += f"\tError: {p.error.name()}"
            print(line)
    return 0


def _ids(ids: list[int]) -> str:
    return ",".join(str(i) for i in ids)


def _non_default_configs(
    admin: Any, names: list[str], options: ClientOptions, args: argparse.Namespace
) -> dict[str, list[tuple[str, str | None]]]:
    """Per topic, the configs set on the topic itself (sorted); topics whose configs could
    not be read are missing from the result."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=REQUEST_TIMEOUT_S)
    out: dict[str, list[tuple[str, str | None]]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=REQUEST_TIMEOUT_S + options.connect_timeout)
        except concurrent.futures.TimeoutError:
            raise reachability_error(options) from None
        except KafkaException as e:
            error = error_of(e)
            if error is not None and error.code() in UNSUPPORTED_CODES:
                warn(args, "the broker does not describe configs; they are shown as '?'")
                return {}
            if error is None:
                raise CliError(f"topic {resource.name!r}: {e}") from None
            raise explain(error, f"topic {resource.name!r}", options) from None
        chosen = []
        for entry in entries.values():
            topic_level = entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
            unknown_source = entry.source == ConfigSource.UNKNOWN_CONFIG.value
            if topic_level or (unknown_source and not entry.is_default):
                chosen.append((entry.name, None if entry.is_sensitive else entry.value))
        out[resource.name] = sorted(chosen)
    return out


def _alter(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        ResourceType,
    )

    options = client_options(args)
    sets = _configs(args.config)
    deletes = list(dict.fromkeys(args.delete_config))
    both = sorted(set(sets) & set(deletes))
    if both:
        raise CliError(f"config {both[0]!r} is both set and deleted")
    if not sets and not deletes and args.partitions is None:
        raise CliError("nothing to alter: give --partitions, --config or --delete-config")
    require_positive(args.partitions, "--partitions")
    admin, cluster = admin_client(options)
    meta = require_topic(cluster, args.name)
    subject = f"topic {args.name!r}"
    if sets or deletes:
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in sets.items()
        ] + [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in deletes]
        resource = ConfigResource(ResourceType.TOPIC, args.name, incremental_configs=entries)
        futures = admin.incremental_alter_configs([resource], request_timeout=REQUEST_TIMEOUT_S)
        for future in futures.values():
            admin_result(future, subject, options)
    if args.partitions is not None:
        current = len(meta.partitions)
        if args.partitions < current:
            raise CliError(
                f"{subject} has {current} partitions; partitions can be added, not removed"
            )
        if args.partitions > current:
            futures = admin.create_partitions(
                [NewPartitions(args.name, args.partitions)],
                operation_timeout=REQUEST_TIMEOUT_S,
                request_timeout=REQUEST_TIMEOUT_S,
            )
            for future in futures.values():
                admin_result(future, subject, options)
    print(f"Altered topic {args.name}.")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError

    options = client_options(args)
    admin, _ = admin_client(options)
    names = list(dict.fromkeys(args.names))
    futures = admin.delete_topics(
        names, operation_timeout=REQUEST_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S
    )
    failed = 0
    for name in names:
        try:
            admin_result(futures[name], f"topic {name!r}", options)
        except CliError as e:
            if args.if_exists and _failed_with(futures[name], KafkaError.UNKNOWN_TOPIC_OR_PART):
                continue
            warn(args, str(e))
            failed += 1
            continue
        print(f"Deleted topic {name}.")
    return 1 if failed else 0
