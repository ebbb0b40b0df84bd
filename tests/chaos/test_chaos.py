"""The short form of the fault tests (``make test``; select or deselect with ``-m chaos``): one
round of every fault on a 3-broker cluster over a 3-member etcd, then the checker. The long form
is ``make chaos DURATION=600``.

The replication factor, acks and min.insync.replicas come from :mod:`chaos.harness`'s defaults:
the issue's configuration, rf=3, min.insync.replicas=2, acks=all with idempotence.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from chaos.checker import check
from chaos.faults import NETWORK_FAULTS
from chaos.harness import DEFAULTS, ChaosConfig
from chaos.history import Event, load_history
from chaos.net import unavailable
from chaos.run import RunResult, Unsupported, run
from odradek.cluster.etcd_process import etcd_binary

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.xdist_group("chaos"),  # one cluster of six processes at a time
    pytest.mark.timeout(420),
    pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed (make system-deps)"),
]

PROCESS_FAULTS = (
    "kill-leader", "kill-controller", "kill-two", "pause-leader", "kill-etcd", "slow-broker",
)


def _run(config: ChaosConfig, directory: Path) -> RunResult:
    try:
        result = run(config, directory)
    except Unsupported as e:
        pytest.skip(str(e))
    assert result.valid, result.describe()
    unsettled = [e for e in load_history(result.history_path)
                 if e["f"] == "fault" and e.get("phase") == "unsettled"]
    assert not unsettled, f"the cluster did not recover: {unsettled}\n{result.describe()}"
    return result


def test_process_faults(tmp_path: Path) -> None:
    result = _run(replace(DEFAULTS, faults=PROCESS_FAULTS, seed=13), tmp_path)
    assert result.rounds == len(PROCESS_FAULTS), result.describe()
    events = load_history(result.history_path)
    # The faults did something: partitions moved to other leaders...
    states = [e for e in events if e["f"] == "state" and e["topic"] == "chaos"]
    leaders: dict[int, set[int]] = {}
    for e in states:
        leaders.setdefault(e["partition"], set()).add(e["leader"])
    assert any(len(ls - {-1}) > 1 for ls in leaders.values()), result.describe()
    # ...and the paused leader was sent a produce after its epoch ended, which it refused.
    probes = [e for e in events if e["f"] == "send" and e.get("probe")]
    assert any(e["type"] == "invoke" for e in probes), result.describe()
    assert not [e for e in probes if e["type"] == "ok"], result.describe()
    assert result.report.stats["acknowledged"] > 500, result.describe()
    # The same real history with one acknowledged record taken out of every read and replica
    # is a lost write: the run's reads and replica logs are what the checker judges by.
    acked = next(e for e in events if e["f"] == "send" and e["type"] == "ok" and "txn" not in e)
    where = (acked["topic"], acked["partition"])

    def without(e: Event) -> Event:
        if e["f"] in ("poll", "read", "replica") and (e["topic"], e["partition"]) == where:
            return {**e, "records": [r for r in e["records"] if r[1] != acked["value"]]}
        return e

    found = {a.kind for a in check([without(e) for e in events]).anomalies}
    assert found == {"lost-write", "replica-divergence"}
    # Group members assigned partitions after commits started where the group had committed:
    # without the commits, the checker sees them start past offset 0, skipping records. (The
    # faults can hold the group in one rebalance for the whole short run: then there are none.)
    assert result.report.stats["commits"] > 0, result.describe()
    uncommitted = check([e for e in events if e["f"] != "commit"]).anomalies
    assert all(a.kind == "skip" and a.detail.get("from_committed") for a in uncommitted)
    committed: set[tuple[str, int]] = set()  # partitions with an offset committed past 0
    resumed: set[tuple[str, str, int]] = set()  # (consumer, partition) assigned after that
    polled_resumed = False
    for e in events:
        if e["f"] == "commit" and e["type"] == "ok":
            committed.update((t, p) for t, p, o in e["offsets"] if o > 0)
        elif e["f"] == "assign":
            resumed.update((e["consumer"], t, p) for t, p in e["partitions"] if (t, p) in committed)
        elif e["f"] == "poll" and (e.get("consumer"), e["topic"], e["partition"]) in resumed:
            polled_resumed = True
    assert bool(uncommitted) == polled_resumed, result.describe()


def test_network_faults(tmp_path: Path) -> None:
    why_not = unavailable()
    if why_not is not None:
        pytest.skip(f"network partitions unavailable here: {why_not}")
    result = _run(replace(DEFAULTS, faults=tuple(sorted(NETWORK_FAULTS)), seed=7), tmp_path)
    assert result.rounds == len(NETWORK_FAULTS), result.describe()
    events = load_history(result.history_path)
    # A broker cut off from etcd lost its registration (and so its leaderships).
    members = [e for e in events if e["f"] == "members"]
    assert any(len(e["brokers"]) < DEFAULTS.brokers for e in members[1:-1]), result.describe()


@pytest.mark.long  # the checker's blindness is also caught by test_process_faults' lost record
def test_acks_1_loses_writes_and_the_checker_says_so(tmp_path: Path) -> None:
    """The positive control: with acks=1 an isolated leader acknowledges writes its followers
    never get, which Kafka allows and the new leader's log drops. The run must be found invalid
    with lost writes, or the harness is blind."""
    if unavailable() is not None:
        pytest.skip(f"network partitions unavailable here: {unavailable()}")
    config = replace(DEFAULTS, replication_factor=3, min_insync_replicas=1, acks="1",
                     faults=("isolate-leader",), rounds=2, transactional=False, seed=5)
    try:
        result = run(config, tmp_path)
    except Unsupported as e:
        pytest.skip(str(e))
    assert not result.crashed, result.describe()
    assert "lost-write" in result.report.by_kind(), result.describe()
