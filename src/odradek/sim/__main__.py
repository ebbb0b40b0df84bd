"""``python -m odradek.sim``: run simulation seeds; a failing seed prints its replay command.

``--seed S`` runs one seed (``--trace`` prints its trace and history); ``--seeds N`` runs
seeds S..S+N-1 and reports the failures. A seed replays exactly in any process, whatever its
``PYTHONHASHSEED``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from odradek.sim.run import SimConfig, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m odradek.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="the (first) seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds from --seed on")
    parser.add_argument("--duration", type=float, default=SimConfig(seed=0).duration_s,
                        help="virtual seconds of workload per seed")
    parser.add_argument("--no-faults", action="store_true", help="run without faults")
    parser.add_argument("--fault-kinds", default="", metavar="KIND,...",
                        help="the kinds of fault to pick from (default: all of crash, isolate, "
                             "store, link, client, power, slow, pause)")
    parser.add_argument("--txn-producers", type=int, default=SimConfig(seed=0).txn_producers,
                        help="transactional producers (0: no transactional topic)")
    parser.add_argument("--members", type=int, default=SimConfig(seed=0).members,
                        help="consumer group members")
    parser.add_argument("--read-uncommitted", action="store_true",
                        help="the transactional topic's reader reads uncommitted records too")
    parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                        help="a broker property over the simulation's defaults (repeatable)")
    parser.add_argument("--trace", action="store_true", help="print each run's trace")
    parser.add_argument("--log", metavar="LEVEL", help="print the brokers' logs (INFO, DEBUG)")
    args = parser.parse_args(argv)
    failed: list[int] = []
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        config = SimConfig(
            seed=seed, duration_s=args.duration, faults=not args.no_faults,
            fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k),
            txn_producers=args.txn_producers, members=args.members,
            read_committed=not args.read_uncommitted,
            broker_properties=tuple(
                (key, value) for key, _, value in (p.partition("=") for p in args.property)
            ),
        )
        result = run(config, log_level=args.log.upper() if args.log else None)
        if args.trace:
            print("\n".join(result.trace))
            print("\n".join(result.history))
            print("\n".join(f"loop error: {e}" for e in result.loop_errors))
        print(result.summary(), flush=True)
        if not result.ok:
            failed.append(seed)
    elapsed = time.perf_counter() - started
    print(f"{args.seeds} seeds in {elapsed:.1f} s; {len(failed)} failed"
          + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
