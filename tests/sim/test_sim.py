"""The deterministic simulation (odradek.sim): a seed determines a run, many seeds run quickly
and find nothing with the issue's settings, and the checker does find lost writes when the
settings allow them (the positive control)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def test_a_seed_replays_in_another_process_with_another_hash_seed() -> None:
    """The command a failure prints reproduces the run: same digest in a fresh interpreter,
    whatever its string hashing (``set`` iteration order) is."""
    here = run(SimConfig(seed=5, duration_s=_SHORT))
    env = dict(os.environ, PYTHONHASHSEED="12345")
    code = (
        "from odradek.sim.run import SimConfig, run;"
        f"print(run(SimConfig(seed=5, duration_s={_SHORT})).digest)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split()[-1] == here.digest


def test_without_faults_every_send_is_acknowledged() -> None:
    result = run(SimConfig(seed=1, duration_s=_SHORT, faults=False))
    assert result.ok, result.summary()
    sends = sum(1 for line in result.history if '"kind": "send"' in line)
    assert result.stats["acked"] == sends > 100
    assert result.stats["settled"]


@pytest.mark.parametrize("first", [1, 21])
def test_many_seeds_with_faults_find_nothing(first: int) -> None:
    failures = []
    for seed in range(first, first + 20):
        result = run(SimConfig(seed=seed, duration_s=_SHORT))
        if not result.ok or not result.stats["settled"]:
            failures.append(result.summary())
    assert not failures, "\n\n".join(failures)


def test_the_checker_finds_lost_writes_when_the_settings_allow_them() -> None:
    """The positive control: with unclean election and min.insync.replicas=1 the same faults
    lose acknowledged records on some seeds, and the failure names its replay command."""
    failed = [r for r in (run(SimConfig(seed=s, broker_properties=_UNSAFE))
                          for s in range(1, 31)) if not r.ok]
    assert failed
    kinds = {a.split()[0] for r in failed for a in r.anomalies}
    assert kinds & {"lost-write", "inconsistent-offset"}
    assert "python -m odradek.sim --seed" in failed[0].summary()


def test_the_replay_command_names_what_differs_from_the_defaults() -> None:
    assert replay_command(SimConfig(seed=3)) == "python -m odradek.sim --seed 3 --trace"
    assert replay_command(SimConfig(seed=3, duration_s=5, faults=False)) == (
        "python -m odradek.sim --seed 3 --duration 5 --no-faults --trace"
    )


@pytest.mark.long
def test_thousands_of_seeds() -> None:
    """``make chaos`` (or ``python -m odradek.sim --seed 1 --seeds 2000``)."""
    count = int(os.environ.get("ODRADEK_SIM_SEEDS", "2000"))
    failures = []
    for seed in range(1, count + 1):
        result = run(SimConfig(seed=seed))
        if not result.ok or not result.stats["settled"]:
            failures.append(result.summary())
    assert not failures, "\n\n".join(failures[:10])
