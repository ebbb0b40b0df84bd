"""Consume from the start, pass by pass: odradek trees and librdkafka's mock broker interleaved.

``bench/vsmock.py``'s consume workloads report one rate per run; this looks inside them. Each
pass is what vsmock's ``consume`` does once: a new librdkafka consumer (connected before the
clock starts) reads a window of one partition from offset 0 to its end. For every broker the
bench reports the median pass time, and the CPU its process and this one (the load generator)
used per pass, so that a ratio can be told apart into the broker's latency and the share of
the two cores it takes from the client::

    python bench/consume_passes.py new=src base=/tmp/base/src mock --size 1024 --window 4000

A target is ``name=SRC`` (``odradek serve`` from the source tree SRC, first on PYTHONPATH) or
``mock``. The last target is the reference of the ratio column. CPU comes from ``/proc`` in
clock ticks (10 ms), so it is meaningful only over many passes (``--passes``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from vsmock import Target, fill, one_pass, start_mock, start_odradek

__all__ = ["main"]


@dataclass
class _Result:
    passes: list[float] = field(default_factory=list)  # seconds each
    broker_cpu: list[float] = field(default_factory=list)  # seconds per pass, per round
    client_cpu: list[float] = field(default_factory=list)


def _start(spec: str, tmp: str) -> Target:
    if spec == "mock":
        return start_mock()
    name, sep, src = spec.partition("=")
    if not sep or not src:
        raise SystemExit(f"a target is name=SRC or mock, not {spec!r}")
    return start_odradek(str(Path(tmp) / name), name, src)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", help="name=SRC (an odradek source tree) or mock")
    ap.add_argument("--size", type=int, default=1024, help="record size in bytes")
    ap.add_argument("--window", type=int, default=4_000,
                    help="records re-read by each pass (the mock keeps about 4.5 MB)")
    ap.add_argument("--passes", type=int, default=15, help="passes per broker per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="odradek-passes-") as tmp:
        targets: list[Target] = []
        try:
            for spec in args.targets:
                targets.append(_start(spec, tmp))
            topics = {t.name: fill(t, "passes", args.size, args.window) for t in targets}
            for t in targets:  # warm up: codecs, the page cache, the mock's first topic
                for _ in range(3):
                    one_pass(t.bootstrap, topics[t.name], args.window)
            results = {t.name: _Result() for t in targets}
            for r in range(args.rounds):
                for t in targets[r % len(targets):] + targets[: r % len(targets)]:
                    res = results[t.name]
                    broker0, client0 = t.cpu_seconds(), time.process_time()
                    for _ in range(args.passes):
                        res.passes.append(one_pass(t.bootstrap, topics[t.name], args.window))
                    res.broker_cpu.append((t.cpu_seconds() - broker0) / args.passes)
                    res.client_cpu.append((time.process_time() - client0) / args.passes)
        finally:
            for t in targets:
                t.stop()
    ref = statistics.median(results[targets[-1].name].passes)
    mb = args.size * args.window / 1e6
    print(f"{args.window:,} records of {args.size} B per pass, {args.rounds} interleaved rounds "
          f"of {args.passes} passes; medians")
    print(f"| broker | pass ms | MB/s | {targets[-1].name} pass / pass | broker CPU ms/pass "
          "| client CPU ms/pass |")
    print("|---|---|---|---|---|---|")
    for name, res in results.items():
        m = statistics.median(res.passes)
        print(f"| {name} | {m * 1000:.2f} | {mb / m:.1f} | {ref / m:.2f} "
              f"| {statistics.median(res.broker_cpu) * 1000:.2f} "
              f"| {statistics.median(res.client_cpu) * 1000:.2f} |")


if __name__ == "__main__":
    main()
