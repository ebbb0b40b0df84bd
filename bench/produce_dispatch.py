"""The Python cost of one Produce request on the broker's path, without sockets or a client.

``bench/produce_cpu.py`` measures a broker process's CPU per request in clock ticks, with the
kernel's share (receiving, writing the segment file) and a shared machine's noise in it: a
change of a microsecond or two per request is lost there. This bench calls the broker's
:class:`~odradek.broker.dispatcher.Dispatcher` directly with ready-made Produce frames
(v10, one partition, one batch of ``--records`` records of ``--size`` bytes) on a broker
started in this process (its default single-node configuration, a temporary data dir) and
reports the process CPU time per call: decoding, the handler, the append (the file write
included) and the response's encoding. Each target (``name=SRC``: the source tree put first on
``PYTHONPATH``) runs in a process of its own; rounds alternate the targets::

    python bench/produce_dispatch.py new=src base=/tmp/base/src --records 1

The last target is the reference of the ratio columns. On a shared machine the median of a
target's rounds wanders by 10-30% with the other processes' load; the best round (``best``)
is the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _measure(records: int, size: int, requests: int, acks_list: list[int]) -> dict[str, float]:
    """One round in this process: us of CPU per dispatched request, for each acks."""
    from produce_cpu import produce_frame

    from odradek.broker.app import Broker
    from odradek.broker.dispatcher import Dispatcher
    from odradek.broker.runner import local_config
    from odradek.protocol.records import SimpleRecord, encode_batch

    batch = encode_batch([SimpleRecord(os.urandom(size)) for _ in range(records)])
    out: dict[str, float] = {}

    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="odradek-produce-dispatch-") as tmp:
            broker = Broker(local_config(Path(tmp) / "data"))
            await broker.start()
            try:
                dispatcher = Dispatcher(broker)
                for acks in acks_list:
                    topic = f"dispatch{acks}"
                    await broker.topics.create(topic, num_partitions=1)
                    # Without the size prefix, as the connection hands frames over.
                    frames = [produce_frame(topic, batch, acks, i)[4:]
                              for i in range(requests + 100)]
                    for frame in frames[:100]:  # warm-up
                        dispatcher(frame)
                    c0 = time.process_time()
                    for frame in frames[100:]:
                        answer = dispatcher(frame)
                        if not isinstance(answer, bytes):
                            raise SystemExit(f"not answered at once: {answer!r}")
                    out[str(acks)] = (time.process_time() - c0) / requests * 1e6
            finally:
                await broker.stop()

    asyncio.run(run())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", metavar="NAME=SRC")
    ap.add_argument("--records", type=int, default=1, help="records per request")
    ap.add_argument("--size", type=int, default=100, help="bytes of each record's value")
    ap.add_argument("--requests", type=int, default=5000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--acks", default="1,-1", help="comma-separated: 1 and/or -1")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    acks_list = [int(a) for a in args.acks.split(",")]
    if args.child:
        print(json.dumps(_measure(args.records, args.size, args.requests, acks_list)))
        return
    if not args.targets:
        ap.error("name at least one target (NAME=SRC)")
    here = Path(__file__).resolve().parent
    results: dict[str, dict[str, list[float]]] = {}
    names = [spec.partition("=")[0] for spec in args.targets]
    for r in range(args.rounds):
        order = args.targets[r % len(args.targets):] + args.targets[: r % len(args.targets)]
        for spec in order:
            name, _, src = spec.partition("=")
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(Path(src).resolve()), str(here), env.get("PYTHONPATH")])
            )
            line = subprocess.run(
                [sys.executable, __file__, "--child", "--records", str(args.records),
                 "--size", str(args.size), "--requests", str(args.requests),
                 "--acks", args.acks],
                env=env, check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
            for acks, us in json.loads(line).items():
                results.setdefault(name, {}).setdefault(acks, []).append(us)
    ref = names[-1]
    print(f"\nCPU per dispatched Produce request (v10, {args.records} x {args.size} B), "
          f"medians of {args.rounds} interleaved rounds of {args.requests}")
    print(f"| target | acks | us per request | / {ref} | best | / {ref} | rounds (us) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for acks in (str(a) for a in acks_list):
            values = results[name][acks]
            med = statistics.median(values)
            base = statistics.median(results[ref][acks])
            best, base_best = min(values), min(results[ref][acks])
            print(f"| {name} | {'all' if acks == '-1' else acks} | {med:.1f} | "
                  f"{med / base:.3f} | {best:.1f} | {best / base_best:.3f} | " + " ".join(f"{v:.1f}" for v in sorted(values)) + " |")


if __name__ == "__main__":
    main()
