"""The ``odradek`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


class CliError(Exception):
    """A user mistake or an unreachable broker: printed as one line, exit status 1."""


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from odradek.cli import serve

    p = sub.add_parser("serve", help="run a broker")
    serve.configure(p)


def _commands() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    adders = [_add_serve]
    try:
        from odradek.cli import clients
    except ImportError:  # the client commands are optional while being built
        return adders
    adders.append(clients.add_commands)
    return adders


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="odradek", description="A Kafka-compatible commit log broker and its tools."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _commands():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
