"""The checker: reads a history (:mod:`chaos.history`) and finds what Jepsen's Kafka workload
looks for, plus the replication-specific anomalies of issue 13.

Anomaly kinds (:data:`KINDS`):

- ``lost-write`` — an acknowledged record (a plain send answered ok, or a send of a transaction
  whose commit was answered ok) that the final read of its partition does not hold.
- ``inconsistent-offset`` — two different records observed at one offset of a partition (by
  acknowledgements, consumers, final reads, or replica logs below their high watermark), or an
  acknowledged record found at another offset than the one acknowledged.
- ``duplicate`` — one record (values are unique per send) at two offsets: with idempotence a
  retried send must never be stored twice (not checked when the ``meta`` event says the
  producers were not idempotent, as with acks other than all). Not an anomaly but reported
  (:attr:`Report.resent`) when the replica logs show the second copy written by the same
  producer under a later producer epoch: the client bumped its epoch and sent the record again
  under new sequence numbers, which no broker can recognise (librdkafka does so after an
  OUT_OF_ORDER_SEQUENCE_NUMBER that follows a failed request, its issue #4953).
- ``nonmonotonic`` — a consumer's offsets on a partition did not strictly increase (for a
  group member: within one assignment), or a group member's first record of a partition it was
  assigned lies below the offset the group had committed for it (committed data delivered
  again: the commit was lost, or the member did not start from it).
- ``skip`` — a consumer jumped over an offset that the final read (same isolation) shows holds
  a record it should have seen, or a group member's first record of an assigned partition lies
  above the group's committed offset with such a record in between.
- ``aborted-read`` — a read_committed consumer or read saw a record of an aborted transaction.
- ``split-epoch`` — two different records at one offset written in one leader epoch: two
  brokers acted as leader of the same epoch.
- ``stale-epoch-ack`` — an acknowledged record stored in leader epoch E although the send was
  invoked after the metadata store had already given the partition a later epoch with another
  leader (a zombie leader acknowledged). A later epoch of the same leader (the controller
  re-elects a leader whose ISR it rebuilt) does not end E for it.
- ``replica-divergence`` — once the cluster is stopped, two replicas' logs differ below both
  their high watermarks, or a replica lacks an acknowledged record below its high watermark.

``python -m chaos.checker HISTORY.jsonl`` (with ``tests`` on ``PYTHONPATH``) re-checks a saved
history and prints the report; it exits 1 when anything was found. Pure functions over the
events: no I/O beyond reading the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.history import Event, load_history

__all__ = ["KINDS", "Anomaly", "Report", "check", "main"]

KINDS = (
    "lost-write",
    "inconsistent-offset",
    "duplicate",
    "nonmonotonic",
    "skip",
    "aborted-read",
    "split-epoch",
    "stale-epoch-ack",
    "replica-divergence",
)

TP = tuple[str, int]
#: Isolation names as the events spell them.
COMMITTED = "read_committed"
UNCOMMITTED = "read_uncommitted"


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    topic: str
    partition: int
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "topic": self.topic, "partition": self.partition,
                **self.detail}


@dataclass(frozen=True, slots=True)
class Report:
    anomalies: tuple[Anomaly, ...]
    stats: dict[str, int] = field(default_factory=dict)
    unchecked: tuple[str, ...] = ()
    #: Records stored twice because the client re-sent them under a new producer epoch.
    resent: tuple[Anomaly, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def by_kind(self) -> dict[str, list[Anomaly]]:
        out: dict[str, list[Anomaly]] = defaultdict(list)
        for a in self.anomalies:
            out[a.kind].append(a)
        return dict(out)

    def summary(self, examples: int = 3) -> str:
        lines = [f"{'valid' if self.valid else 'INVALID'}: "
                 + ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))]
        for kind, found in self.by_kind().items():
            lines.append(f"  {kind}: {len(found)}")
            for a in found[:examples]:
                lines.append(f"    {json.dumps(a.to_json(), sort_keys=True)}")
        if self.resent:
            lines.append(f"  re-sent by the client under a new producer epoch (not counted): "
                         f"{len(self.resent)}")
            for a in self.resent[:examples]:
                lines.append(f"    {json.dumps(a.to_json(), sort_keys=True)}")
        for note in self.unchecked:
            lines.append(f"  unchecked: {note}")
        return "\n".join(lines)


@dataclass(slots=True)
class _Seen:
    """Every observation of one partition: offset -> value -> [(source, epoch)]."""

    at: dict[int, dict[str, list[tuple[str, int]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, offset: int, value: str, source: str, epoch: int) -> None:
        self.at[offset][value].append((source, epoch))


def _tp(e: Event) -> TP:
    return (str(e["topic"]), int(e["partition"]))


def _records(e: Event) -> Iterable[tuple[int, str, int]]:
    for r in e.get("records", ()):
        offset, value = int(r[0]), str(r[1])
        epoch = int(r[2]) if len(r) > 2 and r[2] is not None else -1
        yield offset, value, epoch


def check(events: Sequence[Event]) -> Report:
    """Check a whole history (in recorded order) and report every anomaly found."""
    anomalies: list[Anomaly] = []
    unchecked: list[str] = []

    def found(kind: str, tp: TP, **detail: Any) -> None:
        anomalies.append(Anomaly(kind, tp[0], tp[1], detail))

    # -- transactions: which values were committed, which certainly aborted -------------------
    committed_txns: set[str] = set()
    aborted_values: set[str] = set()
    for e in events:
        if e["f"] == "txn" and e["type"] == "ok":
            if e.get("outcome") == "commit":
                committed_txns.add(str(e["txn"]))
            elif e.get("outcome") == "abort":
                aborted_values.update(str(v) for v in e.get("values", ()))

    # -- acknowledgements ----------------------------------------------------------------------
    acked: dict[str, tuple[TP, int, int, float]] = {}  # value -> (tp, offset, epoch, invoked)
    seen: dict[TP, _Seen] = defaultdict(_Seen)
    for e in events:
        if e["f"] != "send" or e["type"] != "ok":
            continue
        tp, value = _tp(e), str(e["value"])
        # No offset: acknowledged, but the client does not know where (librdkafka reports a
        # retried batch the broker recognised as a duplicate so); it must be somewhere.
        offset = -1 if e.get("offset") is None else int(e["offset"])
        epoch = int(e.get("epoch", -1))
        if offset >= 0:
            seen[tp].add(offset, value, "ack", epoch)
        txn = e.get("txn")
        if txn is None or str(txn) in committed_txns:
            acked[value] = (tp, offset, epoch, float(e.get("invoked", e["t"])))

    # -- consumers, final reads, replicas ------------------------------------------------------
    final: dict[tuple[TP, str], dict[int, tuple[str, int]]] = defaultdict(dict)
    replicas: dict[TP, list[Event]] = defaultdict(list)
    producers: dict[tuple[TP, int], tuple[int, int]] = {}  # (tp, offset) -> (id, epoch)
    polls: dict[tuple[str, TP], list[tuple[int, str, str]]] = defaultdict(list)
    for e in events:
        kind = e["f"]
        if kind not in ("poll", "read", "replica") or e["type"] != "ok":
            continue
        tp = _tp(e)
        if kind == "replica":
            replicas[tp].append(e)
            hw = int(e["high_watermark"])
            for offset, value, epoch in _records(e):
                if offset < hw:
                    seen[tp].add(offset, value, f"replica-{e['node']}", epoch)
            for r in e.get("records", ()):
                if len(r) >= 5:
                    producers[(tp, int(r[0]))] = (int(r[3]), int(r[4]))
            continue
        isolation = str(e.get("isolation", UNCOMMITTED))
        source = f"{kind}-{e.get('consumer', 'final')}"
        for offset, value, epoch in _records(e):
            seen[tp].add(offset, value, source, epoch)
            if isolation == COMMITTED and value in aborted_values:
                found("aborted-read", tp, offset=offset, value=value, source=source)
            if kind == "read":
                final[(tp, isolation)][offset] = (value, epoch)
            else:
                polls[(str(e["consumer"]), tp)].append((offset, value, isolation))

    # -- one offset, one record; one record, one offset ----------------------------------------
    where: dict[tuple[TP, str], set[int]] = defaultdict(set)
    for tp, s in seen.items():
        for offset, values in s.at.items():
            for value in values:
                where[(tp, value)].add(offset)
            if len(values) > 1:
                found("inconsistent-offset", tp, offset=offset,
                      values={v: sorted({src for src, _ in obs}) for v, obs in values.items()})
                by_epoch: dict[int, set[str]] = defaultdict(set)
                for v, obs in values.items():
                    for _, epoch in obs:
                        if epoch >= 0:
                            by_epoch[epoch].add(v)
                for epoch, vs in sorted(by_epoch.items()):
                    if len(vs) > 1:
                        found("split-epoch", tp, offset=offset, epoch=epoch, values=sorted(vs))
    # Without idempotence (acks other than all) a retried send may be stored twice: Kafka's
    # contract then, not an anomaly.
    idempotent = all(e.get("idempotent", True) for e in events if e["f"] == "meta")
    resent: list[Anomaly] = []
    for (tp, value), offsets in where.items():
        if idempotent and len(offsets) > 1:
            ordered = sorted(offsets)
            writers = [producers.get((tp, o)) for o in ordered]
            if _resent_under_new_epochs(writers):
                resent.append(Anomaly("duplicate", tp[0], tp[1], {
                    "value": value, "offsets": ordered,
                    "producer": [list(w) for w in writers if w is not None],
                }))
            else:
                found("duplicate", tp, value=value, offsets=ordered)

    # -- lost writes ---------------------------------------------------------------------------
    read_tps = {tp for tp, _ in final}
    missing_reads: set[TP] = set()
    for value, (tp, offset, _, _) in acked.items():
        if tp not in read_tps:
            missing_reads.add(tp)
            continue
        holders = [iso for iso in (UNCOMMITTED, COMMITTED) if (tp, iso) in final]
        if offset < 0:
            if not any(value == v for iso in holders for v, _ in final[(tp, iso)].values()):
                found("lost-write", tp, offset=None, value=value)
        elif not any(final[(tp, iso)].get(offset, (None,))[0] == value for iso in holders):
            elsewhere = sorted(o for o in where.get((tp, value), ()) if o != offset)
            if elsewhere:
                found("inconsistent-offset", tp, offset=offset, value=value, found_at=elsewhere)
            else:
                found("lost-write", tp, offset=offset, value=value)
    if missing_reads:
        unchecked.append(f"lost writes of {len(missing_reads)} partitions (no final read)")

    # -- consumers: monotonic, no skips --------------------------------------------------------
    for (consumer, tp), seq in polls.items():
        for (prev, _, iso), (cur, value, _) in zip(seq, seq[1:], strict=False):
            if cur <= prev:
                found("nonmonotonic", tp, consumer=consumer, offset=cur, previous=prev,
                      value=value)
            elif cur > prev + 1:
                visible = final.get((tp, iso))
                if visible is None:
                    continue
                # an aborted record in a read_committed final read is reported once, as such
                missed = [o for o in range(prev + 1, cur) if o in visible
                          and not (iso == COMMITTED and visible[o][0] in aborted_values)]
                if missed:
                    found("skip", tp, consumer=consumer, previous=prev, offset=cur,
                          skipped=missed[:10])

    # -- consumer groups: an assignment starts at the committed offset -------------------------
    for a in _group_starts(events):
        kind, tp, consumer, first, lo, hi, iso = a
        if kind == "below":
            found("nonmonotonic", tp, consumer=consumer, offset=first, committed=lo,
                  from_committed=True)
            continue
        visible = final.get((tp, iso))
        if visible is None:
            continue
        missed = [o for o in range(hi, first) if o in visible
                  and not (iso == COMMITTED and visible[o][0] in aborted_values)]
        if missed:
            found("skip", tp, consumer=consumer, committed=hi, offset=first,
                  skipped=missed[:10], from_committed=True)

    # -- zombie acknowledgements ---------------------------------------------------------------
    # (time seen, epoch now, its leader); and who led each epoch
    ended: dict[TP, list[tuple[float, int, int]]] = defaultdict(list)
    led: dict[tuple[TP, int], int] = {}
    for e in events:
        if e["f"] == "state":
            tp, epoch, leader = _tp(e), int(e["leader_epoch"]), int(e.get("leader", -1))
            ended[tp].append((float(e["t"]), epoch, leader))
            led.setdefault((tp, epoch), leader)
    for value, (tp, offset, epoch, invoked) in acked.items():
        if offset < 0:
            offset = min(where.get((tp, value), {-1}))
        if epoch < 0:
            epoch = _stored_epoch(seen.get(tp), offset, value)
        if epoch < 0:
            continue
        # Epoch E ends for its leader when a later epoch has another leader: the controller
        # also starts a new epoch for the same leader (its ISR rebuilt after the others left),
        # and what that leader appended before it learned so is no zombie's.
        leader = led.get((tp, epoch))
        end = next((t for t, now, by in ended.get(tp, ())
                    if now > epoch and (leader is None or by != leader)), None)
        if end is not None and invoked > end:
            found("stale-epoch-ack", tp, offset=offset, value=value, epoch=epoch,
                  epoch_ended_at=end, invoked_at=invoked)

    # -- replicas once stopped -----------------------------------------------------------------
    for tp, reps in replicas.items():
        logs = {str(r["node"]): (r, {o: (v, ep) for o, v, ep in _records(r)}) for r in reps}
        nodes = sorted(logs)
        for i, a in enumerate(nodes):
            ra, la = logs[a]
            for b in nodes[i + 1:]:
                rb, lb = logs[b]
                lo = max(int(ra.get("log_start_offset", 0)), int(rb.get("log_start_offset", 0)))
                hi = min(int(ra["high_watermark"]), int(rb["high_watermark"]))
                diff = [o for o in sorted(set(la) | set(lb)) if lo <= o < hi
                        and la.get(o) != lb.get(o)]
                if diff:
                    found("replica-divergence", tp, nodes=[a, b], offsets=diff[:10],
                          count=len(diff))
            hw = int(ra["high_watermark"])
            start = int(ra.get("log_start_offset", 0))
            for value, (atp, offset, _, _) in acked.items():
                if atp == tp and offset >= 0 and start <= offset < hw and la.get(offset, (None,))[0] != value:
                    found("replica-divergence", tp, nodes=[a], offset=offset, value=value,
                          missing_acknowledged=True)

    stats = {
        "acknowledged": len(acked),
        "sends": sum(1 for e in events if e["f"] == "send" and e["type"] == "invoke"),
        "polled": sum(len(e.get("records", ())) for e in events if e["f"] == "poll"),
        "read": sum(len(e.get("records", ())) for e in events if e["f"] == "read"),
        "faults": sum(1 for e in events if e["f"] == "fault" and e.get("phase") == "start"),
        "partitions": len(seen),
        "assignments": sum(1 for e in events if e["f"] == "assign"),
        "commits": sum(1 for e in events if e["f"] == "commit" and e["type"] == "ok"),
    }
    return Report(tuple(anomalies), stats, tuple(unchecked), tuple(resent))


def _resent_under_new_epochs(writers: list[tuple[int, int] | None]) -> bool:
    """Whether the copies (in offset order) were written by one producer id, each under a
    later producer epoch than the one before."""
    if any(w is None for w in writers):
        return False
    ids = {w[0] for w in writers if w is not None}
    epochs = [w[1] for w in writers if w is not None]
    return len(ids) == 1 and all(a < b for a, b in zip(epochs, epochs[1:], strict=False))


def _group_starts(
    events: Sequence[Event],
) -> Iterable[tuple[str, TP, str, int, int, int, str]]:
    """Each group member's first record of each partition it was assigned, against what the
    group had committed for that partition when the assignment was recorded: yields
    ``("below" | "above", tp, consumer, first offset, lowest, highest possible committed
    offset, isolation)`` when the first offset is outside that range.

    The committed offset is the last commit answered ok (0, the log start, before any), or any
    commit in flight or in doubt at that moment (``info``, or refused for that partition in an
    ok answer: the client retries commits, and an earlier attempt may have been stored): a
    member kicked out of the group may have had its last commit stored just before the
    rebalance, and its thread record the answer after the next member recorded its
    assignment. A commit answered ``fail`` certainly stored nothing."""
    last_ok: dict[tuple[str, TP], int] = {}
    inflight: dict[tuple[str, TP], dict[str, int]] = defaultdict(dict)
    doubtful: dict[tuple[str, TP], set[int]] = defaultdict(set)
    expect: dict[tuple[str, TP], tuple[int, int]] = {}  # (consumer, tp) -> (lo, hi)
    for e in events:
        kind = e["f"]
        if kind == "commit":
            group, cid = str(e["group"]), str(e["commit"])
            for t, p, o, *_ in e.get("offsets", ()):
                key = (group, (str(t), int(p)))
                if e["type"] == "invoke":
                    inflight[key][cid] = int(o)
                    continue
                inflight[key].pop(cid, None)
                if e["type"] == "ok":
                    last_ok[key] = int(o)
                    doubtful[key].clear()
                elif e["type"] == "info":
                    doubtful[key].add(int(o))
            for t, p, o, *_ in e.get("refused", ()):
                # refused in the last answer, but an attempt the client retried may be stored
                key = (group, (str(t), int(p)))
                inflight[key].pop(cid, None)
                doubtful[key].add(int(o))
        elif kind == "assign" and e["type"] == "ok":
            group = str(e["group"])
            for t, p in e.get("partitions", ()):
                key = (group, (str(t), int(p)))
                possible = {last_ok.get(key, 0), *inflight[key].values(), *doubtful[key]}
                expect[(str(e["consumer"]), key[1])] = (min(possible), max(possible))
        elif kind == "poll" and e["type"] == "ok" and "group" in e:
            tp = _tp(e)
            bounds = expect.pop((str(e["consumer"]), tp), None)
            records = list(_records(e))
            if bounds is None or not records:
                continue
            first = records[0][0]
            iso = str(e.get("isolation", UNCOMMITTED))
            if first < bounds[0]:
                yield ("below", tp, str(e["consumer"]), first, bounds[0], bounds[1], iso)
            elif first > bounds[1]:
                yield ("above", tp, str(e["consumer"]), first, bounds[0], bounds[1], iso)


def _stored_epoch(s: _Seen | None, offset: int, value: str) -> int:
    if s is None:
        return -1
    epochs = [ep for _, ep in s.at.get(offset, {}).get(value, ()) if ep >= 0]
    return max(epochs) if epochs else -1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a saved chaos history.")
    parser.add_argument("history", type=Path)
    parser.add_argument("--json", action="store_true", help="every anomaly as JSON lines")
    args = parser.parse_args(argv)
    report = check(load_history(args.history))
    if args.json:
        for a in report.anomalies:
            print(json.dumps(a.to_json(), sort_keys=True))
    print(report.summary(), file=sys.stderr if args.json else sys.stdout)
    return 0 if report.valid else 1


if __name__ == "__main__":
    sys.exit(main())
