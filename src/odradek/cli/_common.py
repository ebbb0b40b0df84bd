"""What the commands of the ``odradek`` command line share: the one-line error, the connection
options of the client commands, and the column format of their tables.

Nothing here imports a Kafka client or another command module: ``odradek serve`` imports this
module (for :class:`CliError`) and must start without the client tools, and the commands that
speak the protocol themselves (``transactions``) must not load librdkafka either.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "BOOTSTRAP_ENV",
    "DEFAULT_BOOTSTRAP",
    "MISSING",
    "REQUEST_TIMEOUT_S",
    "ClientOptions",
    "CliError",
    "Subparsers",
    "client_options",
    "connection_parser",
    "format_table",
    "require_positive",
    "warn",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "ODRADEK_BOOTSTRAP"
#: How long an admin request may take once the broker has answered a metadata request.
REQUEST_TIMEOUT_S = 30.0
#: How a table shows a value that is not known or does not apply (Kafka's tools print "-").
MISSING = "-"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """A user mistake or an unreachable broker: printed as one line, exit status 1."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """The options every client command shares."""

    bootstrap: str
    connect_timeout: float
    verbose: bool = False


def connection_parser() -> argparse.ArgumentParser:
    """The options every client command takes, as a parent parser for its actions."""
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
    return common


def client_options(args: argparse.Namespace) -> ClientOptions:
    """The parsed connection options; CliError for a bad address or time-out."""
    # Here, not at the top: `odradek serve` imports this module and needs no record helpers.
    from odradek.cli._records import parse_bootstrap

    raw = args.bootstrap_server or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
    try:
        bootstrap = parse_bootstrap(raw)
    except ValueError as e:
        raise CliError(str(e)) from None
    if not args.connect_timeout > 0:
        raise CliError("--connect-timeout must be positive")
    return ClientOptions(bootstrap, args.connect_timeout, args.verbose)


def warn(args: argparse.Namespace, message: str) -> None:
    """One line on stderr, prefixed like a CliError, for a failure the command goes on after."""
    print(f"odradek {args.command}: {message}", file=sys.stderr, flush=True)


def require_positive(value: int | float | None, flag: str) -> None:
    """CliError unless ``value`` (the value of ``flag``, None when not given) is positive."""
    if value is not None and not value > 0:
        raise CliError(f"{flag} must be positive")


def format_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Left-aligned columns as wide as their widest cell, no trailing blanks."""
    cells = [list(header)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        " ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
