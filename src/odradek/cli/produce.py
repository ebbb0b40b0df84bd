"""``odradek produce``: one record per line of standard input, through confluent-kafka's
Producer (librdkafka), so it works against any Kafka-compatible broker.

The command runs on the calling thread, owns its producer and flushes it before returning;
nothing is kept locally. Keys are partitioned with murmur2, as Kafka's own tools do.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from odradek.cli._common import CliError, Subparsers, require_positive, warn
from odradek.cli._kafka import client_config, delivery_reason, error_of, topic_metadata
from odradek.cli._options import client_options
from odradek.cli._records import parse_headers, split_line

__all__ = ["MAX_REPORTED_FAILURES", "add_commands"]

#: At most this many per-record produce failures are printed; the rest are only counted.
MAX_REPORTED_FAILURES = 10


# -- argument parsing ---------------------------------------------------------------------------


def add_commands(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """Register ``produce`` on the top-level subparsers; ``common`` holds the connection options
    every client command shares."""
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
            self.fail(lineno, delivery_reason(error))


def _produce(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    options = client_options(args)
    require_positive(args.timeout, "--timeout")
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
    outcome = _ProduceOutcome(lambda message: warn(args, message))
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
                outcome.fail(lineno, delivery_reason(error) if error else str(e))
                break
        producer.poll(0)
    undelivered = producer.flush(args.timeout + options.connect_timeout)
    if undelivered:
        outcome.failed += undelivered
    if outcome.failed:
        if outcome.failed > MAX_REPORTED_FAILURES:
            warn(args, f"... and {outcome.failed - MAX_REPORTED_FAILURES} more failures")
        raise CliError(f"{outcome.failed} of {outcome.total} records failed")
    return 0
