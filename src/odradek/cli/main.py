"""The ``odradek`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


class CliError(Exception):
    """A user mistake or an unreachable broker: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    from odradek.cli import clients, serve

    parser = argparse.ArgumentParser(
        prog="odradek", description="A Kafka-compatible commit log broker and its tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.configure(sub.add_parser("serve", help="run a broker"))
    clients.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if "hypothesis" not in sys.modules:
        # kio imports hypothesis when it is installed, only to offer test strategies; the
        # command line never needs them and the import would add ~0.2 s to broker start-up.
        sys.modules["hypothesis"] = None  # type: ignore[assignment]
    parser = build_parser()
    args = parser.parse_args(argv)
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
