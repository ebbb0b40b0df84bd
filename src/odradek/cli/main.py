"""The ``odradek`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


class CliError(Exception):
    """A user mistake or an unreachable broker: printed as one line, exit status 1."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command="serve"`` only that command, so starting a broker
    does not import the client tools (confluent-kafka and friends cost ~0.1 s)."""
    from odradek.cli import serve

    parser = argparse.ArgumentParser(
        prog="odradek", description="A Kafka-compatible commit log broker and its tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.configure(sub.add_parser("serve", help="run a broker"))
    if command != "serve":
        from odradek.cli import clients

        clients.add_commands(sub)
    return parser


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
