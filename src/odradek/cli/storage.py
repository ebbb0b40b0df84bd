"""``odradek storage verify DIR``: check a data directory offline.

Reads every partition's segments and indexes without changing anything (see
:mod:`odradek.storage.verify` for what is checked) and prints one line per problem, then a
summary. Exit status: 0 when everything is intact, 1 when corruption was found, 2 for a usage
error (a directory that does not exist, or is not a directory). Meant for a stopped broker: a
running one may append or delete files while they are read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from odradek.cli._common import Subparsers

__all__ = ["add_commands"]

EXIT_CLEAN = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2


def add_commands(sub: Subparsers) -> None:
    """Register ``storage`` on the top-level subparsers."""
    storage = sub.add_parser("storage", help="check a broker's data directory offline")
    actions = storage.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    p = actions.add_parser(
        "verify",
        help="check every segment's batches (framing, CRC32C, offsets) and indexes; exit "
        "status 0 intact, 1 corruption found, 2 usage error",
    )
    p.add_argument("data_dir", metavar="DIR", help="the data directory (log.dirs)")
    p.add_argument("--quiet", action="store_true", help="print only problems and the summary")
    p.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from odradek.storage.verify import verify_data_dir

    path = Path(args.data_dir)
    if not path.exists():
        print(f"odradek storage verify: {path}: no such directory", file=sys.stderr)
        return EXIT_USAGE
    if not path.is_dir():
        print(f"odradek storage verify: {path}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = verify_data_dir(path)
    except OSError as e:
        print(f"odradek storage verify: cannot read {path}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    for part in report.partitions:
        state = "CORRUPT" if part.findings else "ok"
        if not args.quiet or part.findings:
            out.write(
                f"{part.name}: {state} ({part.segments} segments, {part.batches} batches, "
                f"{part.bytes} bytes, offsets up to {part.next_offset - 1})\n"
            )
        for finding in part.findings:
            out.write(f"  {finding}\n")
    findings = report.findings
    damaged = sum(1 for p in report.partitions if p.findings)
    out.write(
        f"{len(report.partitions)} partitions checked in {path}: "
        + (f"{_n(len(findings), 'problem')} in {_n(damaged, 'partition')}\n" if findings
           else "no problems\n")
    )
    if findings and not report.clean_shutdown:
        out.write(
            "note: the broker did not shut down cleanly; a torn tail at the end of a "
            "partition's last segment is truncated by the next start-up\n"
        )
    return EXIT_CORRUPT if findings else EXIT_CLEAN


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
