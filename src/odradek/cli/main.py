"""The ``odradek`` command line: ``serve``, the client commands, ``storage`` (offline checks
of a data directory) and ``cluster`` (a local development cluster), one module each.

Only the module of the command being run is imported (every one of them for ``--help`` or a
mistyped command), so ``odradek serve`` starts without the client tools and ``odradek
transactions`` without librdkafka.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from odradek.cli._common import CliError, Subparsers

__all__ = ["COMMANDS", "build_parser", "main"]

#: The commands, in ``--help`` order.
COMMANDS = (
    "serve", "registry", "topics", "produce", "consume", "groups", "transactions", "schemas",
    "storage", "cluster",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; when ``command`` names a command, only that command is registered (and
    only its module imported), otherwise all of them."""
    parser = argparse.ArgumentParser(
        prog="odradek", description="A Kafka-compatible commit log broker and its tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common: argparse.ArgumentParser | None = None
    for name in [command] if command in COMMANDS else COMMANDS:
        # The imports are here, not at the top, so that only the command being run is loaded.
        if name == "serve":
            from odradek.cli import serve

            serve.configure(sub.add_parser("serve", help="run a broker"))
        elif name == "registry":
            from odradek.cli import registry

            registry.configure(sub.add_parser("registry", help="run a schema registry"))
        elif name == "schemas":
            from odradek.cli import schemas

            schemas.add_commands(sub)
        elif name == "storage":
            from odradek.cli import storage

            storage.add_commands(sub)
        elif name == "cluster":
            from odradek.cli import cluster

            cluster.add_commands(sub)
        else:
            if common is None:
                from odradek.cli._options import connection_parser

                common = connection_parser()
            _add_client_command(name, sub, common)
    return parser


def _add_client_command(name: str | None, sub: Subparsers, common: argparse.ArgumentParser) -> None:
    match name:
        case "topics":
            from odradek.cli import topics

            topics.add_commands(sub, common)
        case "produce":
            from odradek.cli import produce

            produce.add_commands(sub, common)
        case "consume":
            from odradek.cli import consume

            consume.add_commands(sub, common)
        case "groups":
            from odradek.cli import groups

            groups.add_commands(sub, common)
        case "transactions":
            from odradek.cli import transactions

            transactions.add_commands(sub, common)
        case _:
            raise AssertionError(f"no module registers command {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    if "hypothesis" not in sys.modules:
        # kio imports hypothesis when it is installed, only to offer test strategies; the
        # command line never needs them and the import would add ~0.2 s to broker start-up.
        sys.modules["hypothesis"] = None  # type: ignore[assignment]
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)
    try:
        result: int = args.func(args)
        return result
    except CliError as e:
        print(f"odradek {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
