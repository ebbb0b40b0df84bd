"""The connection options every client command takes: their parser, their defaults and their
parsed value, :class:`ClientOptions`.

No Kafka client is imported here: ``odradek transactions`` speaks the protocol itself and must
not load librdkafka. Nor is this module on the path of ``odradek serve``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from odradek.cli._common import CliError
from odradek.cli._records import parse_bootstrap

__all__ = [
    "BOOTSTRAP_ENV",
    "DEFAULT_BOOTSTRAP",
    "ClientOptions",
    "client_options",
    "connection_parser",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "ODRADEK_BOOTSTRAP"


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
    raw = args.bootstrap_server or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
    try:
        bootstrap = parse_bootstrap(raw)
    except ValueError as e:
        raise CliError(str(e)) from None
    if not args.connect_timeout > 0:
        raise CliError("--connect-timeout must be positive")
    return ClientOptions(bootstrap, args.connect_timeout, args.verbose)
