"""What the commands of the ``odradek`` command line share: the one-line error, warnings, checks
of numeric flags, the column format of their tables, and the servers' log format. (The connection options of the client
commands are in :mod:`odradek.cli._options`.)

The entry point and ``odradek serve`` import this module for :class:`CliError`, so it stays
small and imports nothing beyond the standard library: a broker starts without the client tools.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import TypeAlias

__all__ = [
    "MISSING",
    "REQUEST_TIMEOUT_S",
    "CliError",
    "configure_logging",
    "Subparsers",
    "format_table",
    "require_positive",
    "warn",
]

#: How long an admin request may take once the broker has answered a metadata request.
REQUEST_TIMEOUT_S = 30.0
#: How a table shows a value that is not known or does not apply (Kafka's tools print "-").
MISSING = "-"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """A user mistake or an unreachable broker: printed as one line, exit status 1."""


def configure_logging(level: str) -> None:
    """The log format of the long-running commands (``serve``, ``registry``), on stderr."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
