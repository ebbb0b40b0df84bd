"""CPU an idle broker uses: ``odradek serve`` trees interleaved, nothing connected.

Whatever a broker does with no requests (timers, session watches, background loops) is paid
during every bench run as well, and shares the machine's cores with the load generator. Each
round starts every target afresh (a temporary data dir, one topic created), lets it settle,
then reads its process CPU (``/proc``, 10 ms ticks) over ``--seconds``::

    python bench/idle_cpu.py new=src base=/tmp/base/src --seconds 10 --rounds 3

A target is ``name=SRC`` (``odradek serve`` from the source tree SRC, first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from vsmock import start_odradek

__all__ = ["main"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", metavar="NAME=SRC")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured idle time per round")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before measuring")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    specs = [spec.partition("=") for spec in args.targets]
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in specs}
    with tempfile.TemporaryDirectory(prefix="odradek-idle-cpu-") as tmp:
        for r in range(args.rounds):
            order = specs[r % len(specs):] + specs[: r % len(specs)]
            for name, _, src in order:
                t = start_odradek(str(Path(tmp) / f"{name}-{r}"), name, src or None)
                try:
                    t.topic("idle")
                    time.sleep(args.settle)
                    c0 = t.cpu_seconds()
                    time.sleep(args.seconds)
                    cpu[name].append((t.cpu_seconds() - c0) / args.seconds)
                finally:
                    t.stop()
    print(f"\nidle broker CPU, ms per second (medians of {args.rounds} rounds of "
          f"{args.seconds:g} s)")
    print("| target | ms/s | rounds |")
    print("|---|---|---|")
    for name, values in cpu.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | "
              + " ".join(f"{v * 1000:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main()
