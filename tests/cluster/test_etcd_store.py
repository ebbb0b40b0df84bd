"""EtcdStore against a real etcd that is killed and restarted: watches resume from the last
revision they delivered, calls fail clearly while etcd is down and work again after."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from cluster_harness import next_events

from odradek.cluster.etcd import EtcdStore
from odradek.cluster.membership import Session
from odradek.cluster.store import EventType, Put, StoreUnavailable, WatchEvent
from odradek.testing.etcd import EtcdProcess, free_port


def test_watch_resumes_after_etcd_restarts(etcd: EtcdProcess) -> None:
    async def scenario() -> None:
        watcher_store = EtcdStore([etcd.endpoint])
        writer = EtcdStore([etcd.endpoint])
        try:
            first = await writer.put("/w/a", b"before")
            seen: list[WatchEvent] = []
            got_first = asyncio.Event()

            async def follow() -> None:
                async with aclosing(
                    watcher_store.watch("/w/", prefix=True, start_revision=first.revision)
                ) as watch:
                    async for event in watch:
                        seen.append(event)
                        got_first.set()
                        if len(seen) == 4:
                            return

            follower = asyncio.ensure_future(follow())
            async with asyncio.timeout(10):
                await got_first.wait()
            await asyncio.to_thread(etcd.kill)
            with pytest.raises(StoreUnavailable):
                await writer.get("/w/a")
            await asyncio.to_thread(etcd.start)
            # Written at once after the restart, likely before the watch has reconnected: it
            # must resume after the revision it saw, neither missing these nor repeating "before".
            await writer.put("/w/b", b"after-1")
            await writer.txn([], [])  # no revision: nothing to deliver
            await writer.put("/w/a", b"after-2")
            await writer.delete("/w/b")
            async with asyncio.timeout(20):
                await follower
            assert [(e.type, e.kv.key, e.kv.value) for e in seen] == [
                (EventType.PUT, "/w/a", b"before"),
                (EventType.PUT, "/w/b", b"after-1"),
                (EventType.PUT, "/w/a", b"after-2"),
                (EventType.DELETE, "/w/b", b""),
            ]
            revisions = [e.revision for e in seen]
            assert revisions == sorted(set(revisions))
        finally:
            await watcher_store.close()
            await writer.close()

    asyncio.run(scenario())


def test_calls_fail_clearly_while_etcd_is_down_and_work_after(etcd: EtcdProcess) -> None:
    async def scenario() -> None:
        store = EtcdStore([etcd.endpoint], request_timeout_s=2)
        try:
            await store.put("/d/k", b"1")
            lease = await store.grant(5)
            await asyncio.to_thread(etcd.kill)
            for call in (
                store.get("/d/k"),
                store.range("/d/", prefix=True),
                store.put("/d/k", b"2"),
                store.delete("/d/k"),
                store.txn([], []),
                store.grant(5),
                store.keep_alive(lease.id),
                store.revoke(lease.id),
            ):
                with pytest.raises(StoreUnavailable) as caught:
                    await call
                assert str(etcd.client_port) in str(caught.value)
            await asyncio.to_thread(etcd.start)
            kv = await store.get("/d/k")
            assert kv is not None and kv.value == b"1"
            assert await store.keep_alive(lease.id) == lease.ttl
        finally:
            await store.close()

    asyncio.run(scenario())


def test_fails_over_to_an_endpoint_that_answers(etcd: EtcdProcess) -> None:
    async def scenario() -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        store = EtcdStore([dead, etcd.endpoint])
        try:
            await store.put("/f/k", b"1")
            assert (await store.get("/f/k")) is not None
            async with aclosing(store.watch("/f/k", start_revision=1)) as watch:
                assert (await next_events(watch, 1))[0].kv.value == b"1"
        finally:
            await store.close()
        unreachable = EtcdStore([dead])
        try:
            with pytest.raises(StoreUnavailable, match="etcd is unreachable"):
                await unreachable.get("/f/k")
        finally:
            await unreachable.close()

    asyncio.run(scenario())


def test_a_session_that_cannot_renew_is_lost_once_its_lease_could_have_expired(
    etcd: EtcdProcess,
) -> None:
    async def scenario() -> None:
        store = EtcdStore([etcd.endpoint], request_timeout_s=1)
        try:
            session = await Session.open(store, 2)
            await asyncio.to_thread(etcd.kill)
            killed_at = asyncio.get_running_loop().time()
            async with asyncio.timeout(10):
                await session.lost.wait()
            # Not before a TTL has passed since the last renewal that etcd answered.
            assert asyncio.get_running_loop().time() - killed_at > session.ttl * 2 / 3 - 0.1
            assert session.may_have_expired()
            await session.close()  # etcd is down: the lease is left to expire
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_revision_larger_than_a_line_buffer_is_delivered_whole(etcd: EtcdProcess) -> None:
    async def scenario() -> None:
        store = EtcdStore([etcd.endpoint])
        try:
            value = bytes(range(256)) * 16
            # One revision of 100 keys (etcd allows 128 operations in a transaction): one watch
            # message of about 550 KB of JSON.
            written = await store.txn([], [Put(f"/big/{i:03}", value) for i in range(100)])
            async with aclosing(store.watch("/big/", prefix=True, start_revision=1)) as watch:
                events = await next_events(watch, 100)
            assert {e.revision for e in events} == {written.revision}
            assert [e.kv.key for e in events] == [f"/big/{i:03}" for i in range(100)]
            assert all(e.kv.value == value for e in events)
        finally:
            await store.close()

    asyncio.run(scenario())
