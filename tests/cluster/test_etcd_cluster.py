"""EtcdStore against a 3-member etcd with one member killed: reads, writes, leases and a watch
go on through the other members (failover), and the member rejoins after a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path

import pytest
from cluster_harness import next_events

from odradek.cluster.etcd import EtcdStore
from odradek.cluster.membership import Session
from odradek.cluster.store import EventType
from odradek.testing.etcd import EtcdCluster, etcd_binary


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed (Debian's etcd-server; `make system-deps` installs it)")
    cluster = EtcdCluster(tmp_path / "etcd", 3)
    cluster.start()
    try:
        yield cluster
    finally:
        for member in cluster.members:
            member.kill()


def _wait_healthy(cluster: EtcdCluster, members: list[int], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(cluster.members[i].healthy() for i in members):
        assert time.monotonic() < deadline, "etcd members not healthy in time"
        time.sleep(0.05)


def test_the_store_goes_on_when_one_of_three_members_is_killed(etcd3: EtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStore(etcd3.endpoints, request_timeout_s=2)
        watcher = EtcdStore(etcd3.endpoints)
        try:
            first = await store.put("/c/a", b"1")
            session = await Session.open(store, 2)
            lease = await store.grant(30)
            await store.put("/c/leased", b"x", lease=lease.id)
            async with aclosing(
                watcher.watch("/c/", prefix=True, start_revision=first.revision)
            ) as watch:
                async with asyncio.timeout(10):
                    seen = await next_events(watch, 2)
                # Both stores talk to member 0 (the first endpoint): kill it.
                await asyncio.to_thread(etcd3.kill, 0)
                await asyncio.to_thread(_wait_healthy, etcd3, [1, 2])
                assert (await store.get("/c/a")) is not None
                await store.put("/c/b", b"2")
                result = await store.txn([], [], [])
                assert result.succeeded
                assert await store.keep_alive(lease.id) > 0
                await store.delete("/c/a")
                async with asyncio.timeout(10):
                    seen += await next_events(watch, 2)
                assert [(e.type, e.kv.key) for e in seen] == [
                    (EventType.PUT, "/c/a"),
                    (EventType.PUT, "/c/leased"),
                    (EventType.PUT, "/c/b"),
                    (EventType.DELETE, "/c/a"),
                ]
                # The session renewed through the other members: it never could have expired.
                await asyncio.sleep(session.ttl)
                assert not session.lost.is_set() and not session.may_have_expired()
                # The member comes back and catches up.
                await asyncio.to_thread(etcd3.restart, 0)
                only_member_0 = EtcdStore([etcd3.members[0].endpoint])
                try:
                    deadline = asyncio.get_running_loop().time() + 10
                    while (kv := await only_member_0.get("/c/b")) is None:
                        assert asyncio.get_running_loop().time() < deadline
                        await asyncio.sleep(0.05)
                    assert kv.value == b"2"
                finally:
                    await only_member_0.close()
            await session.close()
            assert (await store.get("/c/leased")) is not None  # another lease's key stays
        finally:
            await store.close()
            await watcher.close()

    asyncio.run(scenario())
