"""``odradek consume``: print the records of a topic, through confluent-kafka's Consumer
(librdkafka), so it works against any Kafka-compatible broker.

The command runs on the calling thread, owns its consumer and closes it before returning;
nothing is kept locally (with ``--group``, the group's committed offsets live on the broker).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import IO, Any

from odradek.cli._common import CliError, Subparsers, require_positive
from odradek.cli._kafka import client_config, delivery_reason, error_of, explain, topic_metadata
from odradek.cli._options import ClientOptions, client_options
from odradek.cli._records import ConsumedRecord, format_json, format_plain, parse_timestamp

__all__ = ["JOIN_TIMEOUT_S", "STALL_TIMEOUT_S", "add_commands"]

#: Without --follow or --timeout, consume gives up after this long without any progress.
STALL_TIMEOUT_S = 30.0
#: With --group, give up when no partition has been assigned after this long.
JOIN_TIMEOUT_S = 30.0


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """Register ``consume`` on the top-level subparsers; ``common`` holds the connection options
    every client command shares."""
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

    options = client_options(args)
    require_positive(args.max_messages, "--max-messages")
    require_positive(args.timeout, "--timeout")
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
                        raise CliError(delivery_reason(error))
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
