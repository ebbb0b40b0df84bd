"""The checker on synthetic histories: each anomaly is found, and a clean history passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos.checker import KINDS, check, main
from chaos.history import Event, History, load_history

T = "t"


def ev(f: str, type_: str = "ok", t: float = 0.0, **fields: Any) -> Event:
    return {"t": t, "f": f, "type": type_, **fields}


def send(value: str, offset: int, partition: int = 0, *, epoch: int = -1, t: float = 1.0,
         txn: str | None = None) -> list[Event]:
    extra = {} if txn is None else {"txn": txn}
    return [
        ev("send", "invoke", t, topic=T, partition=partition, value=value, **extra),
        ev("send", "ok", t + 0.1, topic=T, partition=partition, value=value, offset=offset,
           epoch=epoch, invoked=t, **extra),
    ]


def read(records: list[list[Any]], *, partition: int = 0, isolation: str = "read_uncommitted",
         t: float = 50.0) -> Event:
    return ev("read", t=t, topic=T, partition=partition, isolation=isolation, records=records)


def poll(consumer: str, records: list[list[Any]], *, isolation: str = "read_uncommitted",
         t: float = 10.0) -> Event:
    return ev("poll", t=t, consumer=consumer, topic=T, partition=0, isolation=isolation,
              records=records)


def replica(node: int, records: list[list[Any]], hw: int) -> Event:
    return ev("replica", t=60.0, node=node, topic=T, partition=0, high_watermark=hw,
              log_start_offset=0, log_end_offset=hw, records=records)


def clean() -> list[Event]:
    """Three acknowledged sends, a committed and an aborted transaction, consumers in order,
    final reads at both isolations, two identical replicas."""
    h: list[Event] = [ev("meta", "info", config={})]
    h += send("a", 0, epoch=1) + send("b", 1, epoch=1) + send("c", 2, epoch=1)
    h.append(ev("state", "info", t=3.0, topic=T, partition=0, leader=2, leader_epoch=2))
    h += send("t1", 3, t=4.0, txn="x1") + send("t2", 4, t=4.0, txn="x1")
    h.append(ev("txn", "ok", t=4.5, txn="x1", outcome="commit", values=["t1", "t2"]))
    # offset 5: x1's commit marker; 6: an aborted record; 7: its abort marker
    h += send("u1", 6, t=5.0, txn="x2")
    h.append(ev("txn", "ok", t=5.5, txn="x2", outcome="abort", values=["u1"]))
    h += send("d", 8, t=6.0)
    h.append(poll("c1", [[0, "a", 1], [1, "b", 1]]))
    h.append(poll("c1", [[2, "c", 1], [3, "t1", 2], [4, "t2", 2], [6, "u1", 2]], t=11.0))
    h.append(poll("c2", [[0, "a", 1], [1, "b", 1], [2, "c", 1]], isolation="read_committed"))
    h.append(poll("c2", [[3, "t1", 2], [4, "t2", 2], [8, "d", 2]],
                  isolation="read_committed", t=12.0))
    data = [[0, "a", 1], [1, "b", 1], [2, "c", 1], [3, "t1", 2], [4, "t2", 2], [6, "u1", 2],
            [8, "d", 2]]
    h.append(read(data))
    h.append(read([r for r in data if r[1] != "u1"], isolation="read_committed"))
    h.append(replica(1, data, 9))
    h.append(replica(2, data, 9))
    return h


def kinds(history: list[Event]) -> set[str]:
    return {a.kind for a in check(history).anomalies}


def test_a_clean_history_passes() -> None:
    report = check(clean())
    assert report.valid, report.summary()
    assert report.stats["acknowledged"] == 6  # a b c d t1 t2 (u1 was aborted)
    assert report.unchecked == ()


def _replace_read(h: list[Event], isolation: str, records: list[list[Any]]) -> list[Event]:
    return [read(records, isolation=isolation) if e["f"] == "read"
            and e["isolation"] == isolation else e for e in h]


def test_lost_write() -> None:
    h = clean()
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [r for r in old["records"] if r[1] != "d"])
    h = [e for e in h if e["f"] != "replica"]
    report = check(h)
    assert {a.kind for a in report.anomalies} == {"lost-write"}
    assert report.anomalies[0].detail == {"offset": 8, "value": "d"}


def test_an_acknowledgement_without_offset_must_be_somewhere() -> None:
    h = clean()
    h.append(ev("send", "ok", 7.0, topic=T, partition=0, value="d", offset=None, invoked=6.5))
    assert check(h).valid  # "d" is at offset 8
    h.append(ev("send", "ok", 7.0, topic=T, partition=0, value="nowhere", offset=None,
                invoked=6.5))
    report = check(h)
    assert [(a.kind, a.detail["value"]) for a in report.anomalies] == [("lost-write", "nowhere")]


def test_committed_transaction_lost() -> None:
    h = [e for e in clean() if e["f"] not in ("replica", "poll")]
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [r for r in old["records"] if r[1] != "t2"])
    assert kinds(h) == {"lost-write"}


def test_inconsistent_offsets_across_reads() -> None:
    h = clean()
    h.append(poll("c3", [[2, "zz", 3]]))
    assert kinds(h) == {"inconsistent-offset"}


def test_split_epoch_two_leaders_in_one_epoch() -> None:
    h = clean()
    h.append(poll("c3", [[2, "zz", 1]]))  # offset 2 held "c" in epoch 1 too
    assert kinds(h) == {"inconsistent-offset", "split-epoch"}


def test_duplicate() -> None:
    h = clean()
    h += send("e", 9, epoch=2, t=7.0)
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [*old["records"], [9, "e", 2], [10, "e", 2]])
    h = [e for e in h if e["f"] != "replica"]
    assert kinds(h) == {"duplicate"}
    h[0] = ev("meta", "info", config={}, idempotent=False)  # acks=1: Kafka allows it
    assert check(h).valid


def test_a_record_the_client_sent_again_under_a_new_producer_epoch_is_reported_apart() -> None:
    h = clean()
    h += send("e", 10, epoch=2, t=7.0)
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [*old["records"], [9, "e", 2], [10, "e", 2]])
    records = next(e for e in h if e["f"] == "read")["records"]
    writers = {9: (7, 0), 10: (7, 1)}  # producer 7 in epoch 0, then again in epoch 1
    h = [e for e in h if e["f"] != "replica"]
    h += [replica(n, [[*r, *writers.get(r[0], (7, 0))] for r in records], 11) for n in (1, 2)]
    report = check(h)
    assert report.valid, report.summary()
    assert [(a.detail["value"], a.detail["producer"]) for a in report.resent] \
        == [("e", [[7, 0], [7, 1]])]
    assert "re-sent by the client" in report.summary()
    writers[10] = (7, 0)  # the same producer epoch twice: idempotence failed
    h = [e for e in h if e["f"] != "replica"]
    h += [replica(n, [[*r, *writers.get(r[0], (7, 0))] for r in records], 11) for n in (1, 2)]
    assert kinds(h) == {"duplicate"}


def test_nonmonotonic() -> None:
    h = clean()
    h.append(poll("c1", [[1, "b", 1]], t=13.0))
    assert kinds(h) == {"nonmonotonic"}


def test_skip() -> None:
    h = [e for e in clean() if e.get("consumer") != "c1"]
    h.append(poll("c1", [[0, "a", 1]]))
    h.append(poll("c1", [[3, "t1", 2]], t=11.0))  # 1 and 2 hold records
    report = check(h)
    assert {a.kind for a in report.anomalies} == {"skip"}
    assert report.anomalies[0].detail["skipped"] == [1, 2]


def test_gaps_of_markers_and_aborted_records_are_not_skips() -> None:
    h = clean()  # c2 goes 4 -> 8 under read_committed: 5 and 7 are markers, 6 aborted
    assert "skip" not in kinds(h)


def test_aborted_read() -> None:
    h = clean()
    h.append(poll("c2", [[6, "u1", 2]], isolation="read_committed", t=13.0))
    assert kinds(h) == {"aborted-read", "nonmonotonic"}
    h = clean()
    h = _replace_read(h, "read_committed", next(
        e for e in h if e["f"] == "read" and e["isolation"] == "read_uncommitted")["records"])
    assert kinds(h) == {"aborted-read"}


def test_stale_epoch_ack_from_a_zombie_leader() -> None:
    h = clean()
    h.append(ev("state", "info", t=20.0, topic=T, partition=0, leader=-1, leader_epoch=3))
    # invoked after epoch 2 ended, yet stored in epoch 2
    h += send("z", 9, t=21.0)
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [*old["records"], [9, "z", 2]])
    h = [e for e in h if e["f"] != "replica"]
    report = check(h)
    assert {a.kind for a in report.anomalies} == {"stale-epoch-ack"}
    assert report.anomalies[0].detail["epoch"] == 2


def test_an_ack_in_the_new_epoch_is_not_stale() -> None:
    h = clean()
    h.append(ev("state", "info", t=20.0, topic=T, partition=0, leader=1, leader_epoch=3))
    h += send("z", 9, t=21.0)
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [*old["records"], [9, "z", 3]])
    h = [e for e in h if e["f"] != "replica"]
    assert check(h).valid


def test_an_ack_of_a_leader_that_leads_the_next_epoch_too_is_not_stale() -> None:
    h = clean()  # broker 2 leads epoch 2; the controller gives it epoch 3 (a rebuilt ISR)
    h.append(ev("state", "info", t=20.0, topic=T, partition=0, leader=2, leader_epoch=3))
    h += send("z", 9, t=21.0)  # appended before broker 2 learned of epoch 3
    for iso in ("read_uncommitted", "read_committed"):
        old = next(e for e in h if e["f"] == "read" and e["isolation"] == iso)
        h = _replace_read(h, iso, [*old["records"], [9, "z", 2]])
    h = [e for e in h if e["f"] != "replica"]
    assert check(h).valid
    h.append(ev("state", "info", t=20.5, topic=T, partition=0, leader=1, leader_epoch=4))
    assert kinds(h) == {"stale-epoch-ack"}  # broker 1 led from 20.5 s: 21 s is a zombie's


def test_replica_divergence_below_the_high_watermark() -> None:
    h = [e for e in clean() if e["f"] != "replica"]
    data = next(e for e in h if e["f"] == "read" and e["isolation"] == "read_uncommitted")
    h.append(replica(1, data["records"], 9))
    # node 2 lacks offset 3 below its high watermark; a different tail above it is fine
    h.append(replica(2, [r for r in data["records"] if r[0] != 3] + [[9, "tail", 3]], 9))
    report = check(h)
    assert {a.kind for a in report.anomalies} == {"replica-divergence"}
    h[-1] = replica(2, data["records"][:5] + [[7, "tail", 3]], 6)  # lagging, consistent
    assert check(h).valid


G = "group"


def gpoll(consumer: str, records: list[list[Any]]) -> Event:
    return {**poll(consumer, records, isolation="read_committed"), "group": G}


def assign(consumer: str) -> Event:
    return ev("assign", consumer=consumer, group=G, member=consumer.split("#")[0],
              partitions=[[T, 0]])


def commit(cid: str, offset: int, type_: str = "ok", **extra: Any) -> Event:
    return ev("commit", type_, group=G, member=cid.split("-")[0], commit=cid,
              offsets=[[T, 0, offset]], **extra)


def members(first_of_second: int, *between: Event) -> list[Event]:
    """clean(), plus a group: g0.1 is assigned partition 0, reads a b c (0-2) and commits 3;
    then g1.1 is assigned the partition (with ``between`` in between) and starts reading at
    ``first_of_second``."""
    data = {0: "a", 1: "b", 2: "c", 3: "t1", 4: "t2", 8: "d"}
    h = clean()
    h += [assign("g0.1#1"), gpoll("g0.1#1", [[0, "a", 1], [1, "b", 1], [2, "c", 1]]),
          commit("g0.1-1", 3, "invoke"), commit("g0.1-1", 3),
          ev("revoke", consumer="g0.1#1", group=G, partitions=[[T, 0]]),
          *between, assign("g1.1#1")]
    h.append(gpoll("g1.1#1", [[o, v, 2] for o, v in data.items() if o >= first_of_second]))
    return h


def test_a_group_member_starts_at_the_committed_offset() -> None:
    report = check(members(3))
    assert report.valid, report.summary()
    assert (report.stats["assignments"], report.stats["commits"]) == (2, 1)


def test_a_group_member_below_the_committed_offset_is_nonmonotonic() -> None:
    report = check(members(1))  # 1 and 2 were committed: delivered again
    assert [(a.kind, a.detail["offset"], a.detail["committed"]) for a in report.anomalies] \
        == [("nonmonotonic", 1, 3)]


def test_a_group_member_above_the_committed_offset_skips() -> None:
    report = check(members(4))  # offset 3 (t1) is never seen by the group
    assert [(a.kind, a.detail["skipped"]) for a in report.anomalies] == [("skip", [3])]
    # from a committed offset below markers and aborted records to the next visible one
    h = members(8, commit("g0.1-2", 5, "invoke"), commit("g0.1-2", 5))
    assert check(h).valid


def test_a_commit_in_flight_or_in_doubt_may_be_where_the_next_member_starts() -> None:
    # g0.1's second commit is answered after g1.1 recorded its assignment
    h = members(4, commit("g0.1-2", 4, "invoke"))
    h.append(commit("g0.1-2", 4))
    assert check(h).valid
    h = members(4, commit("g0.1-2", 4, "invoke"), commit("g0.1-2", 4, "info"))
    assert check(h).valid
    # refused in the answer, yet an earlier attempt of the client's may have been stored
    h = members(4, commit("g0.1-2", 4, "invoke"),
                ev("commit", "ok", group=G, member="g0.1", commit="g0.1-2", offsets=[],
                   refused=[[T, 0, 4, "UNKNOWN_MEMBER_ID"]]))
    assert check(h).valid
    # certainly not stored, so the group's offset is still 3
    h = members(4, commit("g0.1-2", 4, "invoke"), commit("g0.1-2", 4, "fail"))
    assert kinds(h) == {"skip"}


def test_a_group_member_goes_back_within_one_assignment() -> None:
    h = members(3)
    h.append(gpoll("g1.1#1", [[4, "t2", 2]]))
    assert kinds(h) == {"nonmonotonic"}


def test_every_kind_is_covered_here() -> None:
    tested = {"lost-write", "inconsistent-offset", "duplicate", "nonmonotonic", "skip",
              "aborted-read", "split-epoch", "stale-epoch-ack", "replica-divergence"}
    assert tested == set(KINDS)


def test_a_saved_history_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.jsonl"
    with History(path) as history:
        for e in clean():
            history.record(e["f"], e["type"], **{k: v for k, v in e.items()
                                                  if k not in ("t", "f", "type")})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"t": 1, "f": "po')  # a run killed mid-line
    assert len(load_history(path)) == len(clean())
    assert main([str(path)]) == 0
    assert capsys.readouterr().out.startswith("valid")
    h = clean() + [poll("c1", [[1, "b", 1]], t=13.0)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(__import__("json").dumps(e) + "\n" for e in h), encoding="utf-8")
    assert main([str(bad)]) == 1
    assert "nonmonotonic: 1" in capsys.readouterr().out
