"""The simulation's checker over hand-made histories: each anomaly it exists to find."""

from __future__ import annotations

from typing import Any

from odradek.sim.checker import check, check_members, check_transactions


def _ack(p: int, offset: int, value: str) -> dict[str, Any]:
    return {"t": 0.0, "kind": "ack", "p": p, "offset": offset, "value": value, "by": 1}


def _read(p: int, *records: tuple[int, str]) -> dict[str, Any]:
    return {"t": 0.0, "kind": "read", "p": p, "records": [list(r) for r in records]}


def test_a_clean_run_has_no_anomalies() -> None:
    final = {0: {0: "a", 1: "b"}}
    replicas = {1: {0: ({0: "a", 1: "b"}, 2, 2)}, 2: {0: ({0: "a", 1: "b"}, 2, 2)}}
    events = [_ack(0, 0, "a"), _ack(0, 1, "b"), _read(0, (0, "a"), (1, "b"))]
    assert check(events, final, replicas) == []


def test_an_acknowledged_record_missing_from_the_final_log_is_a_lost_write() -> None:
    found = check([_ack(0, 0, "a"), _ack(0, 1, "b")], {0: {0: "a"}}, {})
    assert [f.split()[0] for f in found] == ["lost-write"]
    assert "'b'" in found[0]


def test_a_record_acknowledged_at_another_offset_is_inconsistent() -> None:
    found = check([_ack(0, 0, "a")], {0: {0: "x", 1: "a"}}, {})
    assert [f.split()[0] for f in found] == ["inconsistent-offset"]


def test_a_read_that_the_final_log_contradicts_is_inconsistent() -> None:
    found = check([_read(0, (0, "a"))], {0: {0: "b"}}, {})
    assert [f.split()[0] for f in found] == ["inconsistent-offset"]


def test_one_value_at_two_offsets_is_a_duplicate() -> None:
    found = check([], {0: {0: "a", 1: "a"}}, {})
    assert [f.split()[0] for f in found] == ["duplicate"]


def test_reads_going_backwards_are_nonmonotonic() -> None:
    found = check([_read(0, (0, "a"), (1, "b")), _read(0, (1, "b"))], {0: {0: "a", 1: "b"}}, {})
    assert [f.split()[0] for f in found] == ["nonmonotonic"]


def test_replicas_that_differ_below_their_high_watermark_diverge() -> None:
    final = {0: {0: "a", 1: "b"}}
    replicas = {1: {0: ({0: "a", 1: "b"}, 2, 2)}, 2: {0: ({0: "a", 1: "c"}, 2, 2)}}
    found = check([], final, replicas)
    assert [f.split()[0] for f in found] == ["inconsistent-offset"]
    assert "broker 2" in found[0]


def test_replicas_that_did_not_settle_diverge() -> None:
    final = {0: {0: "a"}}
    replicas = {1: {0: ({0: "a"}, 1, 1)}, 2: {0: ({}, 0, 0)}}
    found = check([], final, replicas)
    assert [f.split()[0] for f in found] == ["replica-divergence"]


def test_a_committed_offset_below_an_acknowledged_commit_is_lost() -> None:
    events = [{"t": 0.0, "kind": "commit-ack", "offsets": [3, 5], "by": "b1"}]
    final = {0: {0: "a"}, 1: {0: "b"}}
    assert check(events, final, {}, {0: 3, 1: 7}) == []
    found = check(events, final, {}, {0: 3, 1: 4})
    assert [f.split()[0] for f in found] == ["lost-commit"]
    assert [f.split()[0] for f in check(events, final, {}, {0: 3})] == ["lost-commit"]


def _commit_ack(t: float, offsets: list[int], by: str = "b1") -> dict[str, Any]:
    return {"t": t, "kind": "commit-ack", "group": "g", "offsets": offsets, "by": by}


def _offset_fetch(t: float, n: int, to: str = "b3") -> dict[str, Any]:
    return {"t": t, "kind": "offset-fetch", "group": "g", "fetch": n, "asked": to, "to": to}


def _offset_fetched(t: float, n: int, offsets: list[int], by: str = "b3") -> dict[str, Any]:
    return {"t": t, "kind": "offset-fetched", "group": "g", "fetch": n, "offsets": offsets,
            "by": by}


def test_an_offset_fetch_below_a_commit_acknowledged_before_it_was_sent_is_stale() -> None:
    """The chaos run's case: 6779 committed through the new coordinator (b2), then a fetch
    through the old, fenced one (b3) reads 6765, its commit from before."""
    final = {0: {0: "a"}, 1: {0: "b"}}
    committed = {0: 6779, 1: 10}
    history = [_commit_ack(1.0, [6765, 10], by="b3"), _commit_ack(2.0, [6779, 10], by="b2"),
               _offset_fetch(3.0, 1), _offset_fetched(3.1, 1, [6765, 10])]
    found = check(history, final, {}, committed)
    assert _kinds(found) == ["stale-commit-read"]
    assert "p0" in found[0] and "read 6765" in found[0] and "6779" in found[0]
    # No commit at all where one was acknowledged is stale too.
    assert _kinds(check([*history[:3], _offset_fetched(3.1, 1, [-1, -1])], final, {},
                        committed)) == ["stale-commit-read", "stale-commit-read"]
    # The same answer is fine when the commit was acknowledged only after the fetch was sent
    # (the coordinator may have answered before writing it) ...
    raced = [history[0], _offset_fetch(1.5, 1), history[1], _offset_fetched(3.1, 1, [6765, 10])]
    assert check(raced, final, {}, committed) == []
    # ... and so are answers at or past the last acknowledged commit, of each group alone.
    assert check([*history[:3], _offset_fetched(3.1, 1, [6779, 12])], final, {},
                 committed) == []
    other = [history[0], history[1], {**_offset_fetch(3.0, 1), "group": "h"},
             {**_offset_fetched(3.1, 1, [-1, -1]), "group": "h"}]
    assert check(other, final, {}, committed) == []


def test_commits_and_fetches_of_some_partitions_are_compared_partition_by_partition() -> None:
    """Group members commit and fetch only the partitions they hold (``partitions``); the end's
    lost-commit check is of ``committed_group``'s commits only."""
    final = {0: {0: "a"}, 1: {0: "b"}}
    member_ack = {**_commit_ack(1.0, [9]), "partitions": [1]}
    fetch = _offset_fetch(2.0, 1)
    assert check([member_ack, fetch, {**_offset_fetched(2.1, 1, [9]), "partitions": [1]}],
                 final, {}, {0: -1, 1: -1}, committed_group="other") == []
    found = check([member_ack, fetch, {**_offset_fetched(2.1, 1, [5]), "partitions": [1]}],
                  final, {}, {0: -1, 1: -1}, committed_group="other")
    assert _kinds(found) == ["stale-commit-read"] and "p1" in found[0]
    # Partition 0 was never committed: any answer for it is fine.
    assert check([member_ack, fetch, {**_offset_fetched(2.1, 1, [-1]), "partitions": [0]}],
                 final, {}) == []
    # The end's committed offsets are compared with the named group's commits.
    assert _kinds(check([member_ack], final, {}, {0: -1, 1: -1}, committed_group="g")) == [
        "lost-commit"
    ]


# -- transactions (check_transactions) ---------------------------------------------------------


def _txn(txn: str, *, commit: bool | None, acked: bool = True) -> list[dict[str, Any]]:
    """A transaction writing ``<txn>-p0`` and ``<txn>-p1``; ``commit``: the decision sent
    (None: never ended); ``acked``: whether the EndTxn was acknowledged."""
    events: list[dict[str, Any]] = [{"t": 0.0, "kind": "txn-begin", "txn": txn}]
    for p in (0, 1):
        events.append({"t": 0.0, "kind": "txn-send", "txn": txn, "p": p, "value": f"{txn}-p{p}"})
    if commit is not None:
        events.append({"t": 0.0, "kind": "txn-end", "txn": txn, "commit": commit})
        if acked:
            events.append({"t": 0.0, "kind": "txn-end-ack", "txn": txn, "committed": commit})
    return events


def _read_committed(p: int, *records: tuple[int, str]) -> dict[str, Any]:
    return {"t": 0.0, "kind": "txn-read", "p": p, "records": [list(r) for r in records]}


def _kinds(found: list[str]) -> list[str]:
    return sorted(f.split()[0] for f in found)


def test_committed_and_aborted_transactions_as_they_should_be_are_clean() -> None:
    events = [*_txn("a", commit=True), *_txn("b", commit=False), *_txn("c", commit=None),
              _read_committed(0, (0, "a-p0"))]
    assert check_transactions(events, {0: {0: "a-p0"}, 1: {0: "a-p1"}}) == []


def test_a_record_of_an_aborted_transaction_read_under_read_committed() -> None:
    events = [*_txn("b", commit=False), _read_committed(1, (0, "b-p1"))]
    assert _kinds(check_transactions(events, {0: {}, 1: {}})) == ["aborted-read"]
    # ... or found in the final read; so is one of a transaction never asked to commit.
    assert _kinds(check_transactions(_txn("c", commit=None), {0: {0: "c-p0"}, 1: {}})) == [
        "aborted-read"
    ]


def test_a_committed_transactions_record_missing_from_the_final_read_is_lost() -> None:
    found = check_transactions(_txn("a", commit=True), {0: {0: "a-p0"}, 1: {}})
    assert _kinds(found) == ["lost-txn-write"]
    assert "'a-p1'" in found[0]


def test_a_transaction_of_unknown_outcome_must_be_all_or_nothing() -> None:
    unknown = _txn("u", commit=True, acked=False)
    assert check_transactions(unknown, {0: {}, 1: {}}) == []
    assert check_transactions(unknown, {0: {0: "u-p0"}, 1: {0: "u-p1"}}) == []
    assert _kinds(check_transactions(unknown, {0: {0: "u-p0"}, 1: {}})) == ["partial-txn"]


def test_two_brokers_acknowledging_in_one_leader_epoch_is_a_split_brain() -> None:
    final = {0: {0: "a", 1: "b", 2: "c"}}
    epochs = {0: {0: 3, 1: 3, 2: 4}}
    acks = [_ack(0, 0, "a"), {**_ack(0, 1, "b"), "by": 2}]
    assert _kinds(check(acks, final, {}, epochs=epochs)) == ["split-brain"]
    # A retried send's acknowledgement may come from the next leader (the record found there
    # already, in the epoch it was written in): not counted.
    retried = [{"t": 0.0, "kind": "send-failed", "p": 0, "value": "b"}, *acks]
    assert check(retried, final, {}, epochs=epochs) == []
    # Another epoch, another leader: fine.
    assert check([_ack(0, 0, "a"), {**_ack(0, 2, "c"), "by": 2}], final, {}, epochs=epochs) == []


# -- consumer group members (check_members) ----------------------------------------------------


def _assigned(member: str, generation: int, partitions: list[int], leader: str = "a",
              members: list[str] | None = None) -> dict[str, Any]:
    return {"t": 0.0, "kind": "member-assigned", "member": member, "me": member,
            "generation": generation, "partitions": partitions, "leader": leader,
            "members": members}


def test_members_of_one_generation_share_its_leader_members_and_partitions() -> None:
    clean = [_assigned("a", 1, [0], members=["a", "b"]), _assigned("b", 1, [1]),
             _assigned("a", 2, [0, 1], members=["a"]), _assigned("a", 2, [0, 1])]
    assert check_members(clean) == []
    assert _kinds(check_members([_assigned("a", 1, [0]), _assigned("b", 1, [0])])) == [
        "double-assignment"
    ]
    assert _kinds(check_members([_assigned("a", 1, [0]), _assigned("b", 1, [1], leader="b")])) == [
        "group-split"
    ]
    assert _kinds(check_members([_assigned("a", 3, [0]), _assigned("a", 2, [0])])) == [
        "generation-backwards"
    ]
