"""Client commands: ``odradek topics ...``, ``odradek produce`` and ``odradek consume``.

They speak the Kafka protocol through confluent-kafka (librdkafka), so they work against any
Kafka-compatible broker, not only odradek. Each command runs on the calling thread, owns the
clients it creates and closes them before returning; nothing is persisted locally (a consumer
group's committed offsets live on the broker).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any, TypeAlias

from odradek.cli._kafka import (
    UNSUPPORTED_CODES,
    ClientOptions,
    client_config,
    cluster_metadata,
    error_of,
    explain,
    reachability_error,
    topic_metadata,
)
from odradek.cli._records import (
    ConsumedRecord,
    format_json,
    format_plain,
    parse_assignments,
    parse_bootstrap,
    parse_headers,
    parse_timestamp,
    split_line,
)
from odradek.cli.main import CliError

__all__ = ["add_commands", "DEFAULT_BOOTSTRAP", "BOOTSTRAP_ENV"]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "ODRADEK_BOOTSTRAP"
#: How long an admin request may take once the broker has answered a metadata request.
REQUEST_TIMEOUT_S = 30.0
#: Without --follow or --timeout, consume gives up after this long without any progress.
STALL_TIMEOUT_S = 30.0
#: With --group, give up when no partition has been assigned after this long.
JOIN_TIMEOUT_S = 30.0
#: At most this many per-record produce failures are printed; the rest are only counted.
MAX_REPORTED_FAILURES = 10

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: Subparsers) -> None:
    """Register ``topics``, ``produce`` and ``consume`` on the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap-server",
        metavar="HOST:PORT",
        help=f"broker to contact (default: ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})",
    )
    common.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="give up when the broker does not answer within this long (default: 5)",
    )
    common.add_argument(
        "--verbose", action="store_true", help="let the Kafka client log its own messages"
    )
    _add_topics(sub, common)
    _add_produce(sub, common)
    _add_consume(sub, common)
    from odradek.cli import groups  # here, not at the top: groups imports this module

    groups.add_commands(sub, common)
    from odradek.cli import transactions  # likewise

    transactions.add_commands(sub, common)


def _add_topics(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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
    p.set_defaults(func=_topics_create)

    p = actions.add_parser("list", parents=[common], help="list topic names")
    p.set_defaults(func=_topics_list)

    p = actions.add_parser(
        "describe",
        parents=[common],
        help="partitions, leaders, replicas, ISR and non-default configs",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every topic")
    p.set_defaults(func=_topics_describe)

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
    p.set_defaults(func=_topics_alter)

    p = actions.add_parser("delete", parents=[common], help="delete topics")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--if-exists", action="store_true", help="succeed when a topic does not exist")
    p.set_defaults(func=_topics_delete)


def _add_produce(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "produce",
        parents=[common],
        help="write one record per line of standard input",
        description="Write one record per line of standard input. Prints nothing on success.",
    )
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument(
        "--key-separator",
        metavar="SEP",
        help="the part of each line before the first SEP is the record key",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add this header to every record (repeatable)",
    )
    p.add_argument("--partition", type=int, metavar="N", help="default: by key hash (murmur2)")
    p.add_argument(
        "--compression", choices=("none", "gzip", "snappy", "lz4", "zstd"), default="none"
    )
    p.add_argument("--acks", choices=("0", "1", "all"), default="all")
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="fail a record not acknowledged within this long (default: 30)",
    )
    p.set_defaults(func=_produce)


def _add_consume(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "consume",
        parents=[common],
        help="print records",
        description=(
            "Print the records of a topic. Reading starts at the end (or at the group's committed "
            "offsets) unless --from-beginning, --offset or --timestamp says otherwise; without "
            "--follow it stops at the end offsets seen when it started."
        ),
    )
    p.add_argument("topic", metavar="TOPIC")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the log start")
    start.add_argument("--offset", type=int, metavar="N", help="start at this offset")
    start.add_argument(
        "--timestamp",
        metavar="ISO8601|MS",
        help="start at the first record at or after this time (UTC unless an offset is given)",
    )
    p.add_argument("--partition", type=int, metavar="N", help="read only this partition")
    p.add_argument("--max-messages", type=int, metavar="N", help="stop after N records")
    p.add_argument("--follow", action="store_true", help="keep waiting for new records")
    p.add_argument(
        "--group", metavar="GROUP", help="join this consumer group and commit its offsets"
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop when no record arrives for this long",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per record (bytes that are not UTF-8 as {"base64": ...})',
    )
    out.add_argument("--print-key", action="store_true")
    out.add_argument("--print-headers", action="store_true")
    out.add_argument("--print-timestamp", action="store_true")
    p.set_defaults(func=_consume)


# -- shared helpers -----------------------------------------------------------------------------


def _options(args: argparse.Namespace) -> ClientOptions:
    raw = args.bootstrap_server or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
    try:
        bootstrap = parse_bootstrap(raw)
    except ValueError as e:
        raise CliError(str(e)) from None
    if not args.connect_timeout > 0:
        raise CliError("--connect-timeout must be positive")
    return ClientOptions(bootstrap, args.connect_timeout, args.verbose)


def _warn(args: argparse.Namespace, message: str) -> None:
    print(f"odradek {args.command}: {message}", file=sys.stderr, flush=True)


def _admin(options: ClientOptions) -> tuple[Any, Any]:
    """An AdminClient and the cluster metadata, which also proves the broker is reachable."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(options))
    return admin, cluster_metadata(admin, options)


def _await(future: concurrent.futures.Future[Any], subject: str, options: ClientOptions) -> Any:
    """The result of an admin future, any failure turned into a CliError about ``subject``."""
    from confluent_kafka import KafkaException

    try:
        return future.result(timeout=REQUEST_TIMEOUT_S + options.connect_timeout)
    except concurrent.futures.TimeoutError:
        raise reachability_error(options) from None
    except KafkaException as e:
        error = error_of(e)
        if error is None:
            raise CliError(f"{subject}: {e}") from None
        raise explain(error, subject, options) from None


def _require_topic(cluster: Any, name: str) -> Any:
    meta = cluster.topics.get(name)
    if meta is None or meta.error is not None:
        raise CliError(f"topic {name!r} does not exist")
    return meta


def _positive(value: int | float | None, flag: str) -> None:
    if value is not None and not value > 0:
        raise CliError(f"{flag} must be positive")


def _configs(items: list[str]) -> dict[str, str]:
    try:
        return parse_assignments(items, "config")
    except ValueError as e:
        raise CliError(str(e)) from None


# -- topics -------------------------------------------------------------------------------------


def _topics_create(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    options = _options(args)
    configs = _configs(args.config)
    _positive(args.partitions, "--partitions")
    _positive(args.replication_factor, "--replication-factor")
    admin, _ = _admin(options)
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
        _await(future, f"topic {args.name!r}", options)
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


def _topics_list(args: argparse.Namespace) -> int:
    _, cluster = _admin(_options(args))
    for name in sorted(cluster.topics):
        print(name)
    return 0


def _topics_describe(args: argparse.Namespace) -> int:
    options = _options(args)
    admin, cluster = _admin(options)
    names = list(dict.fromkeys(args.names)) if args.names else sorted(cluster.topics)
    metas = [_require_topic(cluster, name) for name in names]
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
                _warn(args, "the broker does not describe configs; they are shown as '?'")
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


def _topics_alter(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        ResourceType,
    )

    options = _options(args)
    sets = _configs(args.config)
    deletes = list(dict.fromkeys(args.delete_config))
    both = sorted(set(sets) & set(deletes))
    if both:
        raise CliError(f"config {both[0]!r} is both set and deleted")
    if not sets and not deletes and args.partitions is None:
        raise CliError("nothing to alter: give --partitions, --config or --delete-config")
    _positive(args.partitions, "--partitions")
    admin, cluster = _admin(options)
    meta = _require_topic(cluster, args.name)
    subject = f"topic {args.name!r}"
    if sets or deletes:
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in sets.items()
        ] + [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in deletes]
        resource = ConfigResource(ResourceType.TOPIC, args.name, incremental_configs=entries)
        futures = admin.incremental_alter_configs([resource], request_timeout=REQUEST_TIMEOUT_S)
        for future in futures.values():
            _await(future, subject, options)
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
                _await(future, subject, options)
    print(f"Altered topic {args.name}.")
    return 0


def _topics_delete(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError

    options = _options(args)
    admin, _ = _admin(options)
    names = list(dict.fromkeys(args.names))
    futures = admin.delete_topics(
        names, operation_timeout=REQUEST_TIMEOUT_S, request_timeout=REQUEST_TIMEOUT_S
    )
    failed = 0
    for name in names:
        try:
            _await(futures[name], f"topic {name!r}", options)
        except CliError as e:
            if args.if_exists and _failed_with(futures[name], KafkaError.UNKNOWN_TOPIC_OR_PART):
                continue
            _warn(args, str(e))
            failed += 1
            continue
        print(f"Deleted topic {name}.")
    return 1 if failed else 0


# -- produce ------------------------------------------------------------------------------------


class _ProduceOutcome:
    """Counts and reports produce failures (on the command's thread: delivery callbacks run
    inside ``poll``/``flush``)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.failed = 0
        self.total = 0

    def fail(self, lineno: int, reason: str) -> None:
        self.failed += 1
        if self.failed <= MAX_REPORTED_FAILURES:
            self.report(f"line {lineno}: {reason}")

    def delivered(self, lineno: int, error: Any) -> None:
        if error is not None:
            self.fail(lineno, _delivery_reason(error))


def _delivery_reason(error: Any) -> str:
    text: str = error.str() or error.name()
    for prefix in ("Unable to produce message: ", "Broker: ", "Local: "):
        text = text.removeprefix(prefix)
    return text


def _produce(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    options = _options(args)
    _positive(args.timeout, "--timeout")
    try:
        headers = parse_headers(args.header)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.key_separator == "":
        raise CliError("--key-separator must not be empty")
    separator = args.key_separator.encode("utf-8") if args.key_separator is not None else None
    producer = Producer(
        client_config(
            options,
            **{
                "acks": args.acks,
                "compression.type": args.compression,
                # The Java client's partitioner, so keys land where Kafka's own tools put them.
                "partitioner": "murmur2_random",
                "message.timeout.ms": int(args.timeout * 1000),
                "linger.ms": 5,
            },
        )
    )
    meta = topic_metadata(producer, args.topic, options)
    if args.partition is not None and args.partition not in meta.partitions:
        raise CliError(
            f"topic {args.topic!r} has no partition {args.partition} "
            f"(it has {len(meta.partitions)})"
        )
    outcome = _ProduceOutcome(lambda message: _warn(args, message))
    extra: dict[str, Any] = {} if args.partition is None else {"partition": args.partition}
    if headers:
        extra["headers"] = headers
    for lineno, raw in enumerate(sys.stdin.buffer, start=1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        outcome.total += 1
        try:
            key, value = split_line(line, separator)
        except ValueError as e:
            outcome.fail(lineno, str(e))
            continue

        def on_delivery(error: Any, _msg: Any, lineno: int = lineno) -> None:
            outcome.delivered(lineno, error)

        while True:
            try:
                producer.produce(args.topic, value=value, key=key, on_delivery=on_delivery, **extra)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
            except KafkaException as e:
                error = error_of(e)
                outcome.fail(lineno, _delivery_reason(error) if error else str(e))
                break
        producer.poll(0)
    undelivered = producer.flush(args.timeout + options.connect_timeout)
    if undelivered:
        outcome.failed += undelivered
    if outcome.failed:
        if outcome.failed > MAX_REPORTED_FAILURES:
            _warn(args, f"... and {outcome.failed - MAX_REPORTED_FAILURES} more failures")
        raise CliError(f"{outcome.failed} of {outcome.total} records failed")
    return 0


# -- consume ------------------------------------------------------------------------------------


class _Printer:
    """Writes records to a binary stream in the format the flags ask for. Owned by the consume
    command's thread."""

    def __init__(self, args: argparse.Namespace, out: IO[bytes]) -> None:
        self._args = args
        self._out = out

    def write(self, message: Any) -> None:
        ts_type, ts = message.timestamp()
        record = ConsumedRecord(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            timestamp_type=ts_type,
            timestamp=ts,
            key=message.key(),
            value=message.value(),
            headers=tuple(message.headers() or ()),
        )
        args = self._args
        if args.json:
            line = format_json(record).encode("utf-8")
        else:
            line = format_plain(
                record,
                print_key=args.print_key,
                print_headers=args.print_headers,
                print_timestamp=args.print_timestamp,
            )
        self._out.write(line + b"\n")

    def flush(self) -> None:
        self._out.flush()


class _Progress:
    """Which partitions still have records to read before the end offsets seen at start.

    Owned by the consume command's thread (librdkafka runs the rebalance callbacks that update
    it inside ``consume``, on that same thread).
    """

    def __init__(self, ends: dict[int, int], follow: bool) -> None:
        self.ends = ends
        self.follow = follow
        self.active: set[int] = set()
        self.finished: set[int] = set()

    def assigned(self, partitions: list[int]) -> None:
        self.active.update(partitions)

    def revoked(self, partitions: list[int]) -> None:
        self.active.difference_update(partitions)

    def done(self) -> bool:
        return not self.follow and bool(self.active) and self.active <= self.finished

    def beyond_end(self, partition: int, offset: int) -> bool:
        """Whether a record was written after the command started (and is not to be printed)."""
        return not self.follow and offset >= self.ends.get(partition, 0)

    def consumed(self, partition: int, offset: int) -> None:
        if offset + 1 >= self.ends.get(partition, 0):
            self.finished.add(partition)

    def reached_end(self, partition: int) -> None:
        self.finished.add(partition)


def _consume(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer

    options = _options(args)
    _positive(args.max_messages, "--max-messages")
    _positive(args.timeout, "--timeout")
    if args.offset is not None and args.offset < 0:
        raise CliError("--offset must not be negative")
    if args.json and (args.print_key or args.print_headers or args.print_timestamp):
        raise CliError("--json already prints every field; drop the --print-* flags")
    if args.group and (
        args.offset is not None or args.timestamp is not None or args.partition is not None
    ):
        raise CliError(
            "--offset, --timestamp and --partition pick partitions and positions by hand; "
            "they cannot be combined with --group"
        )
    start_ms = None
    if args.timestamp is not None:
        try:
            start_ms = parse_timestamp(args.timestamp)
        except ValueError as e:
            raise CliError(str(e)) from None
    grouped = args.group is not None
    consumer = Consumer(
        client_config(
            options,
            **{
                # librdkafka wants a group id even for assign(); without --group none is joined.
                "group.id": args.group or "odradek-cli",
                "enable.auto.commit": grouped,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest" if args.from_beginning else "latest",
            },
        )
    )
    try:
        meta = topic_metadata(consumer, args.topic, options, attempts_for_new=0.0)
        partitions = sorted(meta.partitions)
        if args.partition is not None:
            if args.partition not in meta.partitions:
                raise CliError(
                    f"topic {args.topic!r} has no partition {args.partition} "
                    f"(it has {len(partitions)})"
                )
            partitions = [args.partition]
        if args.offset is not None and len(partitions) > 1:
            raise CliError(
                f"topic {args.topic!r} has {len(partitions)} partitions; "
                "give --partition with --offset"
            )
        watermarks = {p: _watermarks(consumer, args.topic, p, options) for p in partitions}
        progress = _Progress({p: high for p, (_, high) in watermarks.items()}, args.follow)
        if grouped:
            _subscribe(consumer, args.topic, progress)
        else:
            starts = _start_offsets(consumer, args, watermarks, start_ms, options)
            _assign(consumer, args.topic, starts, progress)
        return _consume_loop(consumer, args, progress, grouped)
    finally:
        consumer.close()


def _watermarks(
    consumer: Any, topic: str, partition: int, options: ClientOptions
) -> tuple[int, int]:
    from confluent_kafka import KafkaException, TopicPartition

    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=options.connect_timeout, cached=False
        )
    except KafkaException as e:
        error = error_of(e)
        if error is None:
            raise
        raise explain(error, f"partition {topic}-{partition}", options) from None
    return int(low), int(high)


def _start_offsets(
    consumer: Any,
    args: argparse.Namespace,
    watermarks: dict[int, tuple[int, int]],
    start_ms: int | None,
    options: ClientOptions,
) -> dict[int, int]:
    """Where to start reading each partition, as concrete offsets within [low, high]."""
    from confluent_kafka import KafkaException, TopicPartition

    if args.from_beginning:
        return {p: low for p, (low, _) in watermarks.items()}
    if args.offset is not None:
        ((p, (low, high)),) = watermarks.items()
        if args.offset > high:
            raise CliError(
                f"offset {args.offset} is beyond the end of {args.topic}-{p} "
                f"(log end offset {high})"
            )
        return {p: max(args.offset, low)}
    if start_ms is not None:
        query = [TopicPartition(args.topic, p, start_ms) for p in watermarks]
        try:
            found = consumer.offsets_for_times(query, timeout=options.connect_timeout)
        except KafkaException as e:
            error = error_of(e)
            if error is None:
                raise
            raise explain(error, f"topic {args.topic!r}", options) from None
        starts = {}
        for tp in found:
            if tp.error is not None:
                raise explain(tp.error, f"partition {args.topic}-{tp.partition}", options)
            low, high = watermarks[tp.partition]
            # -1: no record at or after that time, so there is nothing to read yet.
            starts[tp.partition] = high if tp.offset < 0 else max(tp.offset, low)
        return starts
    return {p: high for p, (_, high) in watermarks.items()}


def _assign(consumer: Any, topic: str, starts: dict[int, int], progress: _Progress) -> None:
    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    progress.assigned(list(starts))
    for p, offset in starts.items():
        if offset >= progress.ends[p]:
            progress.reached_end(p)


def _subscribe(consumer: Any, topic: str, progress: _Progress) -> None:
    def on_assign(_consumer: Any, partitions: list[Any]) -> None:
        progress.assigned([tp.partition for tp in partitions])

    def on_revoke(_consumer: Any, partitions: list[Any]) -> None:
        progress.revoked([tp.partition for tp in partitions])

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)


def _consume_loop(
    consumer: Any, args: argparse.Namespace, progress: _Progress, grouped: bool
) -> int:
    from confluent_kafka import KafkaError

    printer = _Printer(args, sys.stdout.buffer)
    remaining = args.max_messages
    idle_limit = (
        args.timeout if args.timeout is not None else (None if args.follow else STALL_TIMEOUT_S)
    )
    last_progress = time.monotonic()
    try:
        while not progress.done() and (remaining is None or remaining > 0):
            batch = consumer.consume(num_messages=min(remaining or 500, 500), timeout=0.2)
            if not batch:
                idle = time.monotonic() - last_progress
                if (
                    grouped
                    and not progress.active
                    and idle >= min(idle_limit or JOIN_TIMEOUT_S, JOIN_TIMEOUT_S)
                ):
                    raise CliError(
                        f"group {args.group!r} assigned no partitions within {idle:.0f} s; "
                        "does the broker support consumer groups?"
                    )
                if idle_limit is not None and idle >= idle_limit:
                    if args.timeout is not None:
                        break
                    raise CliError(
                        f"no progress for {idle_limit:g} s before reaching the end of "
                        f"topic {args.topic!r}; is the broker still up?"
                    )
                continue
            last_progress = time.monotonic()
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        progress.reached_end(message.partition())
                    elif error.fatal() or error.code() in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._UNKNOWN_TOPIC,
                        KafkaError.TOPIC_AUTHORIZATION_FAILED,
                        KafkaError.GROUP_AUTHORIZATION_FAILED,
                    ):
                        raise CliError(_delivery_reason(error))
                    continue
                partition, offset = message.partition(), message.offset()
                if progress.beyond_end(partition, offset):
                    progress.reached_end(partition)
                    continue
                printer.write(message)
                progress.consumed(partition, offset)
                if grouped:
                    consumer.store_offsets(message=message)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        break
            printer.flush()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python's shutdown flush
        # from failing on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
