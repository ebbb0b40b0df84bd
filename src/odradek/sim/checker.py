"""The simulation's checker: the ideas of ``tests/chaos/checker.py`` (Jepsen's Kafka workload)
over one run's history and the logs read once the cluster settled.

Anomalies (each a line naming its kind first):

- ``lost-write`` — an acknowledged record that the final log of its partition does not hold.
- ``inconsistent-offset`` — two different records at one offset of a partition, by any two
  sources (acknowledgements, reads, the final log, the replicas' logs below their high
  watermarks), or an acknowledged record found at another offset than acknowledged.
- ``duplicate`` — one value at two offsets of the final log (the producers are idempotent).
- ``nonmonotonic`` — a reader's offsets on a partition did not strictly increase.
- ``replica-divergence`` — a replica's log below its high watermark differs from the final log,
  or the replicas did not settle (some log end offsets or high watermarks still differ).
- ``lost-commit`` — the group's committed offset of a partition, read once the cluster
  settled, is below the last one a commit was acknowledged with (commits only move forward),
  or is missing.
- ``stale-commit-read`` — an OffsetFetch during the run (``offset-fetch`` when sent,
  ``offset-fetched`` with its answer) returned, for a partition, an offset below one that a
  commit of that group was acknowledged with before the OffsetFetch was sent (or none at all):
  a coordinator answered from state older than an acknowledged commit. The workload's commits
  of a partition only move forward (a reader's positions never go back, and it has one commit
  in flight at a time, the next sent only once the last was answered or given up on; group
  members commit offsets from counters they share, higher at each commit, and a partition's
  commits of an earlier generation are refused once a later one's are accepted), so every
  value read must be at least the last acknowledged.
- ``split-brain`` — two brokers acknowledged records that the final log holds in one leader
  epoch of a partition (only one broker leads an epoch). Counted only for records
  acknowledged at their first attempt: a retry's acknowledgement may come from a later leader
  that found the record already there (idempotence), in the epoch it was first written in.

Of the transactional topic (:func:`check_transactions`, over what its reader read during the
run, ``txn-read``, and the final read_committed read of every partition; with a reader that
does not filter, ``--read-uncommitted``, they must fail: the positive control):

- ``aborted-read`` — a record of a transaction whose abort was acknowledged, or that was never
  asked to commit, was read under read_committed (during the run or in the final read).
- ``lost-txn-write`` — a record of a transaction whose commit was acknowledged is not in the
  final read.
- ``partial-txn`` — some of a transaction's records are in the final read and others are not
  (its outcome unknown to its producer or not: a transaction is all or nothing), or a record
  read during the run is not in the final read although its transaction is.
- ``inconsistent-offset``, ``nonmonotonic``, ``duplicate`` — as above, for this topic.

Of the consumer group's members (:func:`check_members`):

- ``group-split`` — two members were told different leaders, or different member lists, for
  one generation they both synced (one generation is one rebalance's outcome; a generation
  only joined may legitimately be made again by the next coordinator: nothing of it is
  written until the leader's SyncGroup).
- ``double-assignment`` — one partition assigned to two members in one generation.
- ``generation-backwards`` — a member synced a generation below its previous one.

Pure functions over data: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["check", "check_members", "check_transactions"]

#: A partition's records: offset → value.
Log = Mapping[int, str]


def check(
    events: Sequence[Mapping[str, Any]],
    final: Mapping[int, Log],
    replicas: Mapping[int, Mapping[int, tuple[Log, int, int]]],
    committed: Mapping[int, int] | None = None,
    epochs: Mapping[int, Mapping[int, int]] | None = None,
    committed_group: str | None = None,
) -> list[str]:
    """Anomalies of a run. ``final``: partition → the final log read through the protocol
    (``epochs``: partition → offset → the leader epoch its batch was written in);
    ``replicas``: broker → partition → (its log below its high watermark, its high watermark,
    its log end offset); ``committed``: partition → the committed offset at the end of the
    group named ``committed_group`` in the commits (None: not read, so not checked)."""
    found: list[str] = []
    seen: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)

    def observe(p: int, offset: int, value: str, source: str) -> None:
        first = seen[p].get(offset)
        if first is None:
            seen[p][offset] = (value, source)
        elif first[0] != value:
            found.append(f"inconsistent-offset p{p}@{offset}: {first[0]!r} ({first[1]}) "
                         f"and {value!r} ({source})")

    for p, log in sorted(final.items()):
        for offset, value in sorted(log.items()):
            observe(p, offset, value, "final")
        at: dict[str, int] = {}
        for offset, value in sorted(log.items()):
            if value in at:
                found.append(f"duplicate p{p}: {value!r} at {at[value]} and {offset}")
            at[value] = offset

    last_read: dict[int, int] = {}
    last_commit: dict[int, int] = {}
    #: (group, partition) → (the highest offset acknowledged, when, by which coordinator).
    acked_commit: dict[tuple[Any, int], tuple[int, float, Any]] = {}
    #: (group, fetch number) → the OffsetFetch: when it was sent, to and through whom, and
    #: acked_commit of its group as it was then.
    fetches: dict[tuple[Any, Any], tuple[Mapping[str, Any], dict[int, tuple[int, float, Any]]]]
    fetches = {}
    retried: set[str] = set()
    leaders: dict[tuple[int, int], set[int]] = defaultdict(set)
    for e in events:
        kind = e["kind"]
        if kind in ("send-failed", "send-error"):
            retried.add(e["value"])
        elif kind == "ack" and epochs is not None and e["value"] not in retried:
            epoch = epochs.get(e["p"], {}).get(e["offset"])
            if epoch is not None and final.get(e["p"], {}).get(e["offset"]) == e["value"]:
                leaders[(e["p"], epoch)].add(e["by"])
        if kind == "commit-ack":
            for p, offset in zip(e.get("partitions", range(len(e["offsets"]))), e["offsets"],
                                 strict=True):
                if e.get("group") == committed_group:
                    last_commit[p] = offset
                key = (e.get("group"), p)
                if offset > acked_commit.get(key, (-1, 0.0, None))[0]:
                    acked_commit[key] = (offset, e["t"], e.get("by"))
        elif kind == "offset-fetch":
            group = e.get("group")
            fetches[(group, e["fetch"])] = (
                e, {p: v for (g, p), v in acked_commit.items() if g == group}
            )
        elif kind == "offset-fetched":
            sent, before = fetches.get((e.get("group"), e["fetch"]), (None, {}))
            for p, offset in zip(e.get("partitions", range(len(e["offsets"]))), e["offsets"],
                                 strict=True):
                floor = before.get(p)
                if floor is not None and offset < floor[0]:
                    via = "" if sent is None else (
                        f"sent at t={sent['t']} to {sent['to']}, the coordinator "
                        f"{sent['asked']} named, "
                    )
                    found.append(
                        f"stale-commit-read {e.get('group')} p{p}: OffsetFetch {e['fetch']} "
                        f"({via}answered by {e.get('by')} at t={e['t']}) read {offset}, but "
                        f"{floor[0]} was acknowledged at t={floor[1]} by {floor[2]}"
                    )
        elif kind == "ack":
            p, value, offset = e["p"], e["value"], e["offset"]
            log = final.get(p, {})
            if log.get(offset) == value:
                continue
            where = [o for o, v in log.items() if v == value]
            if where:
                found.append(f"inconsistent-offset p{p}: {value!r} acknowledged at {offset}, "
                             f"stored at {where}")
            else:
                found.append(f"lost-write p{p}: {value!r} acknowledged at {offset} "
                             f"(t={e['t']}, by broker {e['by']})")
        elif kind == "read":
            p = e["p"]
            for offset, value in e["records"]:
                if offset <= last_read.get(p, -1):
                    found.append(f"nonmonotonic p{p}: read {offset} after {last_read[p]}")
                last_read[p] = offset
                observe(p, offset, value, f"read t={e['t']}")

    for (p, epoch), brokers in sorted(leaders.items()):
        if len(brokers) > 1:
            found.append(f"split-brain p{p}: brokers {sorted(brokers)} acknowledged records "
                         f"written in leader epoch {epoch}")
    for node, partitions in sorted(replicas.items()):
        for p, (log, hw, _leo) in sorted(partitions.items()):
            for offset, value in sorted(log.items()):
                if offset < hw:
                    observe(p, offset, value, f"broker {node} below its high watermark {hw}")
    if committed is not None:
        for p, offset in sorted(last_commit.items()):
            if committed.get(p, -1) < offset:
                found.append(f"lost-commit p{p}: committed {committed.get(p, -1)} at the end, "
                             f"{offset} acknowledged")
    ends = {p: {(hw, leo) for parts in replicas.values() for q, (_, hw, leo) in parts.items()
                if q == p} for p in final}
    for p, pairs in sorted(ends.items()):
        if len(pairs) > 1:
            found.append(f"replica-divergence p{p}: replicas did not settle "
                         f"(high watermark, log end) = {sorted(pairs)}")
    return found


def check_transactions(
    events: Sequence[Mapping[str, Any]], final: Mapping[int, Log], topic: str = "txn"
) -> list[str]:
    """Anomalies of the transactions of a run (see the module docstring): ``final`` is
    partition → the final read_committed read of the transactional topic."""
    found: list[str] = []
    sent: dict[str, dict[int, str]] = defaultdict(dict)  # txn → partition → value
    of_value: dict[str, str] = {}  # value → txn
    decided: dict[str, bool] = {}  # txn → committed, once its EndTxn was acknowledged
    asked_commit: set[str] = set()
    reads: list[tuple[int, int, str, float]] = []
    for e in events:
        kind = e["kind"]
        if kind == "txn-send":
            sent[e["txn"]][e["p"]] = e["value"]
            of_value[e["value"]] = e["txn"]
        elif kind == "txn-end" and e["commit"]:
            asked_commit.add(e["txn"])
        elif kind == "txn-end-ack":
            decided[e["txn"]] = bool(e["committed"])
        elif kind == "txn-read":
            reads.extend((e["p"], offset, value, e["t"]) for offset, value in e["records"])

    visible: dict[str, str] = {}  # value → where (final log)
    for p, log in sorted(final.items()):
        at: dict[str, int] = {}
        for offset, value in sorted(log.items()):
            if value in at:
                found.append(f"duplicate {topic} p{p}: {value!r} at {at[value]} and {offset}")
            at[value] = offset
            visible[value] = f"p{p}@{offset}"

    def aborted(txn: str) -> bool:
        return decided.get(txn) is False or txn not in asked_commit

    for txn, values in sorted(sent.items()):
        shown = sorted(v for v in values.values() if v in visible)
        if aborted(txn):
            found.extend(f"aborted-read {topic}: {v!r} of aborted transaction {txn} is in the "
                         f"final read at {visible[v]}" for v in shown)
            continue
        missing = sorted(v for v in values.values() if v not in visible)
        if decided.get(txn) is True:
            found.extend(f"lost-txn-write {topic}: {v!r} of committed transaction {txn} is not "
                         f"in the final read" for v in missing)
        elif shown and missing:
            found.append(f"partial-txn {topic}: of transaction {txn} (outcome unknown to its "
                         f"producer) {shown} are visible and {missing} are not")

    last_read: dict[int, int] = {}
    for p, offset, value, t in reads:
        if offset <= last_read.get(p, -1):
            found.append(f"nonmonotonic {topic} p{p}: read {offset} after {last_read[p]}")
        last_read[p] = offset
        owner = of_value.get(value)
        if owner is not None and aborted(owner):
            found.append(f"aborted-read {topic} p{p}: {value!r} of aborted transaction {owner} "
                         f"read at {offset} (t={t})")
            continue
        stored = final.get(p, {}).get(offset)
        if stored != value:
            found.append(f"inconsistent-offset {topic} p{p}@{offset}: read {value!r} (t={t}), "
                         f"the final read has {stored!r}")
    return found


def check_members(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """Anomalies of the consumer group members (see the module docstring)."""
    found: list[str] = []
    leaders: dict[int, set[str]] = defaultdict(set)
    lists: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    owners: dict[tuple[int, int], set[str]] = defaultdict(set)
    last: dict[str, int] = {}
    for e in events:
        if e["kind"] == "member-assigned":
            generation = e["generation"]
            leaders[generation].add(e["leader"])
            if e["members"] is not None:
                lists[generation].add(tuple(e["members"]))
            for p in e["partitions"]:
                owners[(generation, p)].add(e["me"])
            if generation < last.get(e["member"], -1):
                found.append(f"generation-backwards {e['member']} synced generation "
                             f"{generation} after {last[e['member']]}")
            last[e["member"]] = generation
    for generation, names in sorted(leaders.items()):
        if len(names) > 1:
            found.append(f"group-split generation {generation} had leaders {sorted(names)}")
    for generation, member_lists in sorted(lists.items()):
        if len(member_lists) > 1:
            found.append(f"group-split generation {generation} had member lists "
                         f"{sorted(member_lists)}")
    for (generation, p), members in sorted(owners.items()):
        if len(members) > 1:
            found.append(f"double-assignment partition {p} in generation {generation} to "
                         f"{sorted(members)}")
    return found
