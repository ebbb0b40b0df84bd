"""One suite, both ClusterStore implementations: etcd (a real process) and the in-process store
must agree on revisions, ranges, compare-and-swap, leases and watches."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from cluster_harness import Harness, next_delete, next_events

from odradek.cluster.store import (
    ClusterStore,
    Compare,
    CompareOp,
    CompareTarget,
    Delete,
    DeleteResult,
    EventType,
    FutureRevision,
    Get,
    LeaseNotFound,
    Put,
    PutResult,
    RangeResult,
    RevisionCompacted,
    absent,
    create_revision_is,
    mod_revision_is,
    prefix_end,
    value_is,
    version_is,
)


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_put_get_and_revisions(harness: Harness) -> None:
    p = harness.prefix

    async def scenario(store: ClusterStore) -> None:
        start = (await store.range(p, prefix=True)).revision
        first = await store.put(p + "a", b"1")
        assert first.revision == start + 1
        second = await store.put(p + "a", b"2")
        assert second.revision == start + 2
        kv = await store.get(p + "a")
        assert kv is not None
        assert (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (
            b"2",
            start + 1,
            start + 2,
            2,
            0,
        )
        # A delete that deletes nothing makes no revision; one that does makes one.
        assert await store.delete(p + "missing") == DeleteResult(start + 2, 0)
        assert await store.delete(p + "a") == DeleteResult(start + 3, 1)
        assert await store.get(p + "a") is None
        # Re-created: a new create revision, version 1 again.
        again = await store.put(p + "a", b"3")
        kv = await store.get(p + "a")
        assert kv is not None and (kv.create_revision, kv.version) == (again.revision, 1)
        # Reads at a past revision see the past.
        old = await store.get(p + "a", revision=second.revision)
        assert old is not None and old.value == b"2"
        assert await store.get(p + "a", revision=start + 3) is None
        with pytest.raises(FutureRevision):
            await store.range(p, prefix=True, revision=again.revision + 1000)

    harness.run(scenario)


def test_range_by_prefix(harness: Harness) -> None:
    p = harness.prefix

    async def scenario(store: ClusterStore) -> None:
        for key in ("b/2", "b/1", "b", "b0", "c/1", "b/1/x"):
            await store.put(p + key, key.encode())
        result = await store.range(p + "b/", prefix=True)
        assert [kv.key for kv in result.kvs] == [p + "b/1", p + "b/1/x", p + "b/2"]
        assert result.revision == (await store.range(p, prefix=True)).revision
        limited = await store.range(p + "b/", prefix=True, limit=2)
        assert [kv.key for kv in limited.kvs] == [p + "b/1", p + "b/1/x"]
        # Without prefix, a range is the one key.
        assert [kv.key for kv in (await store.range(p + "b")).kvs] == [p + "b"]
        deleted = await store.delete(p + "b/", prefix=True)
        assert deleted.deleted == 3
        assert (await store.range(p + "b/", prefix=True)).kvs == ()
        assert (await store.get(p + "b")) is not None

    harness.run(scenario)


def test_compare_and_swap(harness: Harness) -> None:
    p = harness.prefix
    key = p + "controller"

    async def scenario(store: ClusterStore) -> None:
        # Create-if-absent: the first wins, the second sees the winner in its failure branch.
        won = await store.txn([absent(key)], [Put(key, b"broker-1")], [Get(key)])
        assert won.succeeded and isinstance(won.responses[0], PutResult)
        lost = await store.txn([absent(key)], [Put(key, b"broker-2")], [Get(key)])
        assert not lost.succeeded
        assert lost.revision == won.revision  # a failed compare writes nothing
        seen = lost.responses[0]
        assert isinstance(seen, RangeResult) and seen.kvs[0].value == b"broker-1"
        created = seen.kvs[0].create_revision
        assert created == won.revision

        # Swap on the mod revision: a stale revision fails, the current one succeeds.
        swapped = await store.txn([mod_revision_is(key, won.revision)], [Put(key, b"broker-1b")])
        assert swapped.succeeded and swapped.revision == won.revision + 1
        stale = await store.txn([mod_revision_is(key, won.revision)], [Put(key, b"late")])
        assert not stale.succeeded and stale.responses == ()
        kv = await store.get(key)
        assert kv is not None and kv.value == b"broker-1b"

        # The create revision fences: it survives updates and changes on re-creation.
        assert (await store.txn([create_revision_is(key, created)])).succeeded
        assert (await store.txn([version_is(key, 2), value_is(key, b"broker-1b")])).succeeded
        assert not (await store.txn([version_is(key, 2), value_is(key, b"other")])).succeeded
        greater = Compare(key, CompareTarget.MOD, CompareOp.GREATER, won.revision)
        less = Compare(key, CompareTarget.VERSION, CompareOp.LESS, 2)
        assert (await store.txn([greater])).succeeded
        assert not (await store.txn([less])).succeeded
        assert (
            await store.txn([Compare(key, CompareTarget.VALUE, CompareOp.NOT_EQUAL, b"x")])
        ).succeeded

        # On an absent key a value compare is false (even NOT_EQUAL); others compare with 0.
        missing = p + "missing"
        assert not (await store.txn([value_is(missing, b"")])).succeeded
        assert not (
            await store.txn([Compare(missing, CompareTarget.VALUE, CompareOp.NOT_EQUAL, b"x")])
        ).succeeded
        assert (await store.txn([version_is(missing, 0), mod_revision_is(missing, 0)])).succeeded

        # Every write of a transaction shares its one revision; reads after a write see it.
        multi = await store.txn(
            [create_revision_is(key, created)],
            [Put(p + "x", b"1"), Put(p + "y", b"2"), Delete(key), Get(p + "x")],
        )
        assert multi.succeeded
        assert multi.revision == swapped.revision + 1
        assert [getattr(r, "revision", None) for r in multi.responses[:3]] == [multi.revision] * 3
        assert isinstance(multi.responses[2], DeleteResult) and multi.responses[2].deleted == 1
        read = multi.responses[3]
        assert isinstance(read, RangeResult) and read.kvs[0].mod_revision == multi.revision
        # The fence is gone with the key.
        assert not (await store.txn([create_revision_is(key, created)])).succeeded
        # A read-only transaction makes no revision.
        only_reads = await store.txn([], [Get(p, prefix=True)])
        assert only_reads.revision == multi.revision

    harness.run(scenario)


def test_lease_expiry_deletes_its_keys(harness: Harness) -> None:
    p = harness.prefix

    async def scenario(store: ClusterStore) -> None:
        lease = await store.grant(1)
        assert lease.ttl >= 1
        granted_at = harness.now()
        await store.put(p + "a", b"1", lease=lease.id)
        await store.put(p + "b", b"2", lease=lease.id)
        put = await store.put(p + "kept", b"3")
        kv = await store.get(p + "a")
        assert kv is not None and kv.lease == lease.id
        async with aclosing(store.watch(p, prefix=True, start_revision=put.revision + 1)) as watch:
            first = await harness.until(next_delete(watch), max_s=lease.ttl + 5)
            second = await anext(watch)
        expired_after = harness.now() - granted_at
        # Not before its TTL; etcd sweeps expired leases every 500 ms.
        assert expired_after >= lease.ttl - 0.05
        # Both keys go in one revision, the lease's end.
        assert {first.kv.key, second.kv.key} == {p + "a", p + "b"}
        assert second.type is EventType.DELETE and first.revision == second.revision
        assert (await store.range(p, prefix=True)).kvs[0].key == p + "kept"
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.put(p + "c", b"4", lease=lease.id)

    harness.run(scenario)


def test_time_to_live_is_whole_seconds_left(harness: Harness) -> None:
    async def scenario(store: ClusterStore) -> None:
        lease = await store.grant(3)
        first = await store.time_to_live(lease.id)
        assert first.granted_ttl == 3
        assert 2 <= first.ttl <= 3  # rounded down: etcd has already used some of it
        await harness.pass_time(1.2)
        assert (await store.time_to_live(lease.id)).ttl == 1
        await harness.pass_time(1.0)
        assert (await store.time_to_live(lease.id)).ttl == 0  # under a second left
        await store.keep_alive(lease.id)
        assert (await store.time_to_live(lease.id)).ttl >= 2
        await store.revoke(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.time_to_live(lease.id)

    harness.run(scenario)


def test_keep_alive_keeps_keys_and_revoke_deletes_them(harness: Harness) -> None:
    p = harness.prefix

    async def scenario(store: ClusterStore) -> None:
        lease = await store.grant(2)
        await store.put(p + "a", b"1", lease=lease.id)
        detached = await store.grant(2)
        await store.put(p + "b", b"1", lease=detached.id)
        await store.put(p + "b", b"2")  # a put without a lease detaches the key
        start = harness.now()
        # Renew at a third of the TTL until well past the TTL (plus etcd's 500 ms sweep).
        while harness.now() - start < lease.ttl + 1.5:
            await harness.pass_time(lease.ttl / 3)
            assert await store.keep_alive(lease.id) == lease.ttl
        assert (await store.get(p + "a")) is not None
        assert (await store.get(p + "b")) is not None  # its old lease has ended meanwhile
        with pytest.raises(LeaseNotFound):
            await store.keep_alive(detached.id)
        before = (await store.range(p, prefix=True)).revision
        await store.revoke(lease.id)
        assert await store.get(p + "a") is None
        assert (await store.range(p, prefix=True)).revision == before + 1
        with pytest.raises(LeaseNotFound):
            await store.revoke(lease.id)

    harness.run(scenario)


def test_watch_delivers_ordered_events_from_a_past_revision(harness: Harness) -> None:
    p = harness.prefix

    async def scenario(store: ClusterStore) -> None:
        first = await store.put(p + "w/1", b"a")
        await store.put(p + "other", b"not watched")
        await store.txn([], [Put(p + "w/2", b"b"), Put(p + "w/3", b"c")])
        await store.delete(p + "w/1")
        async with aclosing(store.watch(p + "w/", prefix=True, start_revision=first.revision)) as w:
            past = await next_events(w, 4)
            assert [(e.type, e.kv.key) for e in past] == [
                (EventType.PUT, p + "w/1"),
                (EventType.PUT, p + "w/2"),
                (EventType.PUT, p + "w/3"),
                (EventType.DELETE, p + "w/1"),
            ]
            revisions = [e.revision for e in past]
            assert revisions == sorted(revisions) and revisions[1] == revisions[2]
            assert past[0].kv.value == b"a" and past[0].kv.version == 1
            # Then live events, in order, from writes made while watching.
            for i in range(5):
                await store.put(p + "w/live", str(i).encode())
            live = await next_events(w, 5)
            assert [e.kv.value for e in live] == [b"0", b"1", b"2", b"3", b"4"]
            assert [e.kv.version for e in live] == [1, 2, 3, 4, 5]
        # A watch on one key sees only that key's changes.
        now = (await store.range(p)).revision
        async with aclosing(store.watch(p + "w/2", start_revision=now + 1)) as one:
            reader = asyncio.ensure_future(next_events(one, 2))
            await store.put(p + "w/3", b"x")
            await store.put(p + "w/2", b"y")
            await store.delete(p + "w/2")
            events = await reader
            assert [(e.type, e.kv.key) for e in events] == [
                (EventType.PUT, p + "w/2"),
                (EventType.DELETE, p + "w/2"),
            ]

    harness.run(scenario)


def test_compacted_revisions_are_reported(harness: Harness) -> None:
    p = harness.prefix

    async def scenario(store: ClusterStore) -> None:
        first = await store.put(p + "k", b"1")
        second = await store.put(p + "k", b"2")
        await store.compact(second.revision)
        with pytest.raises(RevisionCompacted):
            await store.get(p + "k", revision=first.revision)
        kv = await store.get(p + "k", revision=second.revision)
        assert kv is not None and kv.value == b"2"
        with pytest.raises(RevisionCompacted) as caught:
            async with aclosing(store.watch(p + "k", start_revision=first.revision)) as w:
                await anext(w)
        assert caught.value.compact_revision == second.revision
        # From the compaction point on, the watch works.
        async with aclosing(store.watch(p + "k", start_revision=second.revision)) as w:
            assert (await anext(w)).kv.value == b"2"

    harness.run(scenario)
