"""The deterministic simulation (odradek.sim): a seed determines a run, many seeds run quickly
and find nothing with the issue's settings, and the checker does find lost writes when the
settings allow them (the positive control)."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from odradek.sim.loop import START_TIME_S, Incarnation, SimLoop, current_node
from odradek.sim.run import SimConfig, replay_command, run

#: Short runs: seconds of virtual workload each, a fraction of a second of real time.
_SHORT = 10.0
#: Settings under which acknowledged writes can be lost: one in-sync replica is enough to
#: acknowledge, and an out-of-sync replica may be elected.
_UNSAFE = (("unclean.leader.election.enable", "true"), ("min.insync.replicas", "1"))


def test_a_seed_replays_exactly_and_another_seed_differs() -> None:
    first = run(SimConfig(seed=11, duration_s=_SHORT))
    again = run(SimConfig(seed=11, duration_s=_SHORT))
    other = run(SimConfig(seed=12, duration_s=_SHORT))
    assert first.trace == again.trace
    assert first.history == again.history
    assert first.digest == again.digest
    assert other.digest != first.digest
    # The run did something worth replaying: brokers crashed and came back, records went in.
    assert first.stats["faults"] > 0
    assert any(" crash b" in line for line in first.trace)
    assert first.stats["acked"] > 0


def test_a_seed_replays_in_fresh_processes_whatever_their_string_hashing() -> None:
    """The command a failure prints reproduces the run in a fresh interpreter, whatever its
    ``PYTHONHASHSEED`` (no set of strings is iterated on the simulated path: seed 5 diverged
    under hash seeds 1 and 777 while the metadata image told its listeners of a revision's
    topics in set order), and in a process that ran other seeds first (no state survives a
    run)."""
    code = (
        "import sys; from odradek.sim.run import SimConfig, run;"
        f"[run(SimConfig(seed=s, duration_s={_SHORT})) for s in sys.argv[1:]];"
        f"print(run(SimConfig(seed=5, duration_s={_SHORT})).digest)"
    )
    runs = [("1", []), ("777", ["11"])]
    digests = [
        subprocess.run([sys.executable, "-c", code, *before],
                       env=dict(os.environ, PYTHONHASHSEED=hash_seed), capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()[-1]
        for hash_seed, before in runs
    ]
    assert len(set(digests)) == 1, digests
    # And in this process, after the other tests' seeds.
    assert run(SimConfig(seed=5, duration_s=_SHORT)).digest == digests[0]


def test_a_run_never_reads_the_real_clock() -> None:
    """Nothing on the simulated path reads the wall or monotonic clock (only the request
    timings' ``perf_counter``, durations that decide nothing): a reading of real time is
    something the next run of the seed would see differently."""
    readings: list[str] = []
    saved = {name: getattr(time, name) for name in ("monotonic", "monotonic_ns", "time",
                                                    "time_ns")}

    def spy(name: str) -> Callable[[], float]:
        real = saved[name]

        def read() -> float:
            caller = sys._getframe(1)
            readings.append(f"{name} from {caller.f_code.co_filename}:{caller.f_lineno}")
            return real()

        return read

    for name in saved:
        setattr(time, name, spy(name))
    try:
        result = run(SimConfig(seed=5, duration_s=_SHORT))
    finally:
        for name, real in saved.items():
            setattr(time, name, real)
    assert not result.anomalies, result.summary()
    assert result.stats["faults"] > 0
    assert not readings, sorted(set(readings))


def test_without_faults_every_send_is_acknowledged() -> None:
    result = run(SimConfig(seed=1, duration_s=_SHORT, faults=False))
    assert result.ok, result.summary()
    sends = sum(1 for line in result.history if '"kind": "send"' in line)
    assert result.stats["acked"] == sends > 100
    assert result.stats["settled"]


def test_many_seeds_with_faults_find_nothing() -> None:
    failures = []
    kinds: set[str] = set()
    committed = aborted = generations = offset_reads = member_commits = 0
    for seed in range(1, 21):
        result = run(SimConfig(seed=seed, duration_s=_SHORT))
        kinds.update(line.split()[1] for line in result.trace)
        committed += result.stats["txn_committed"]
        aborted += result.stats["txn_aborted"]
        generations += result.stats["generations"]
        offset_reads += sum('"kind": "offset-fetched"' in line for line in result.history)
        member_commits += sum('"kind": "commit-ack"' in line and '"member": ' in line
                              for line in result.history)
        if result.anomalies or not result.stats["settled"]:
            failures.append(result.summary())  # each names its replay command
    assert not failures, "\n\n".join(failures)
    # Every kind of fault was tried: crashes, power losses, partitions, resets, slow links,
    # brokers stopped past their session timeout and resumed.
    assert {"crash", "power", "cut", "heal", "reset", "slow", "pause", "resume"} <= kinds
    # Transactions were committed and aborted (and checked under read_committed); group
    # members joined, synced, left and joined again.
    assert committed > 0 and aborted > 0
    assert generations > 40
    # The reader and the members read their groups' committed offsets back during the runs
    # (stale-commit-read), and the members committed.
    assert offset_reads > 100
    assert member_commits > 100


def test_the_checker_finds_lost_writes_when_the_settings_allow_them() -> None:
    """The positive control: with unclean election and min.insync.replicas=1 the same faults
    lose acknowledged records on some seeds (seed 23 when this was written, 55 since sessions
    survive a renewal lost to a blip, which fenced brokers more often; the search goes on until
    one does), and the failure names its replay command."""
    failed = None
    for seed in range(55, 105):
        result = run(SimConfig(seed=seed, broker_properties=_UNSAFE))
        # (Unsafe settings lose group and transaction state too: those anomalies come as well.)
        if {a.split()[0] for a in result.anomalies} & {"lost-write", "inconsistent-offset"}:
            failed = result
            break
    assert failed is not None, "no seed lost anything under unsafe settings"
    assert f"python -m odradek.sim --seed {failed.config.seed}" in failed.summary()


def test_the_replay_command_names_what_differs_from_the_defaults() -> None:
    assert replay_command(SimConfig(seed=3)) == "python -m odradek.sim --seed 3 --trace"
    assert replay_command(SimConfig(seed=3, duration_s=5, faults=False)) == (
        "python -m odradek.sim --seed 3 --duration 5 --no-faults --trace"
    )
    assert replay_command(SimConfig(seed=3, broker_properties=_UNSAFE)) == (
        "python -m odradek.sim --seed 3 --property unclean.leader.election.enable=true "
        "--property min.insync.replicas=1 --trace"
    )


@pytest.mark.parametrize("config", [
    # b1 paused (8.9-18.2 s) past its session; b2 took both groups over and acknowledged the
    # reader's 141 and a member's 7; b1, resumed, named itself coordinator and answered 52
    # and 3.
    SimConfig(seed=5, duration_s=_SHORT),
    # b3 cut from the store (6.3-11.6 s): fenced at 8.0 (its writes to __consumer_offsets
    # failed), b1 took the partition over at 8.5 and acknowledged 141; b3, still reachable,
    # named itself coordinator and answered 128.
    SimConfig(seed=27, duration_s=_SHORT, fault_kinds=("store",)),
], ids=lambda c: replay_command(c).removeprefix("python -m odradek.sim ").removesuffix(" --trace"))
def test_a_fenced_coordinator_does_not_serve_stale_committed_offsets(config: SimConfig) -> None:
    """Replays of seeds on which an OffsetFetch during the run read a committed offset below
    one acknowledged before it was sent (``python -m odradek.sim`` with the test's id), until
    coordinators refused every request while their broker was fenced or led the partition for
    an earlier incarnation of itself (seed 54 of ``--fault-kinds store,pause,isolate`` showed
    the second case before a fix of the first alone, but diverges on the code without either)."""
    result = run(config)
    stale = [a for a in result.anomalies if a.startswith("stale-commit-read ")]
    assert not stale, result.summary()


def test_a_restarted_coordinator_shows_what_its_log_held_when_it_began_to_lead() -> None:
    """Seed 30: b3 acknowledged commit 20, crashed, came back with a checkpointed high
    watermark below that commit and led ``__consumer_offsets`` again. OffsetFetch answers as of
    the durable log, but when that counted only what lies below the new leader's high
    watermark (as Kafka's runtime reads at its last committed offset), b3 answered 18 for
    seconds (stale-commit-read): what the log held when the leadership began is shown, as the
    load keeps it; only what is appended since waits for the high watermark."""
    result = run(SimConfig(seed=30))
    stale = [a for a in result.anomalies if a.startswith("stale-commit-read ")]
    assert not stale, result.summary()


@pytest.mark.long
def test_thousands_of_seeds() -> None:
    """In ``make chaos`` (``ODRADEK_SIM_SEEDS`` seeds, default 1000; ``make sim`` runs more)."""
    count = int(os.environ.get("ODRADEK_SIM_SEEDS", "1000"))
    failures = []
    for seed in range(1, count + 1):
        result = run(SimConfig(seed=seed))
        if not result.ok or not result.stats["settled"]:
            failures.append(result.summary())
    assert not failures, "\n\n".join(failures[:10])


def test_a_paused_process_runs_nothing_until_resumed() -> None:
    """SIGSTOP in the simulation: the paused incarnation's timers and task steps are held (in
    order) while the others run and virtual time goes on; resumed, they run late, in order."""
    loop = SimLoop()
    stopped, running = Incarnation("b1"), Incarnation("b2")
    ticks: list[tuple[str, float]] = []

    async def ticker(name: str) -> None:
        for _ in range(3):
            await asyncio.sleep(1.0)
            ticks.append((name, loop.time() - START_TIME_S))

    def in_context(inc: Incarnation) -> contextvars.Context:
        ctx = contextvars.copy_context()
        ctx.run(current_node.set, inc)
        return ctx

    async def main() -> None:
        a = loop.create_task(ticker("b1"), context=in_context(stopped))
        b = loop.create_task(ticker("b2"), context=in_context(running))
        await asyncio.sleep(1.5)
        loop.pause(stopped)
        await asyncio.sleep(5.0)
        loop.resume(stopped)
        await asyncio.gather(a, b)

    loop.run(main())
    assert [t for n, t in ticks if n == "b2"] == [1.0, 2.0, 3.0]
    # b1 ticked once, was stopped at 1.5 through 6.5: its 2.0 timer fired then, at 6.5.
    assert [t for n, t in ticks if n == "b1"] == [1.0, 6.5, 7.5]


def test_the_transaction_checks_find_aborted_reads_when_the_reader_does_not_filter() -> None:
    """The transactions' positive control: the same workload, its reader reading uncommitted
    records, is caught reading aborted transactions (and the failure names its replay
    command); no fault is needed."""
    config = SimConfig(seed=1, duration_s=_SHORT, faults=False, read_committed=False)
    result = run(config)
    kinds = {a.split()[0] for a in result.anomalies}
    assert "aborted-read" in kinds, result.summary()
    assert kinds <= {"aborted-read", "inconsistent-offset"}, result.summary()
    assert "--read-uncommitted" in result.summary()
