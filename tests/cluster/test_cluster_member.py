"""ClusterMember, the broker's membership: cluster id agreement, registration, the controller
hook, fencing and re-registration, shutdown. Several members in one process on one in-process
store (real time, 1 s sessions), and brokers on a real etcd."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from cluster_harness import _Shared

from odradek.broker.app import Broker
from odradek.broker.cluster_member import (
    ClusterIdMismatch,
    ClusterMember,
    ControllerTerm,
    session_ttl_s,
)
from odradek.broker.runner import local_config
from odradek.clock import SystemClock
from odradek.cluster.etcd import EtcdStore
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys, DuplicateBrokerRegistration, current_controller
from odradek.cluster.store import ClusterStore, Put
from odradek.config import BrokerConfig
from odradek.testing.etcd import EtcdProcess

_prefixes = itertools.count()


def _config(node_id: int, **properties: str) -> BrokerConfig:
    props = {"node.id": str(node_id), "broker.session.timeout.ms": "1000", **properties}
    return BrokerConfig.from_properties(props)


async def _until(check: object, timeout_s: float = 5.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


def test_session_ttl_rounds_up_to_seconds() -> None:
    assert session_ttl_s(BrokerConfig()) == 9
    assert session_ttl_s(_config(1, **{"broker.session.timeout.ms": "1500"})) == 2
    assert session_ttl_s(_config(1)) == 1


def test_members_elect_one_controller_whose_work_moves_on_shutdown(tmp_path: Path) -> None:
    terms: list[tuple[int, int]] = []
    ended: list[int] = []

    async def work(term: ControllerTerm) -> None:
        terms.append((term.node_id, term.epoch))
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(term.node_id)

    async def scenario() -> None:
        store = InProcessStore(SystemClock(), expiry_interval_s=0.1)
        members = [
            ClusterMember(_Shared(store), _config(n), controller=work)  # type: ignore[arg-type]
            for n in (1, 2, 3)
        ]
        ids = set()
        for n, member in enumerate(members, 1):
            ids.add(await member.join(tmp_path / f"b{n}", None))
            assert member.fenced
            await member.register("127.0.0.1", 9000 + n)
            assert not member.fenced
        assert len(ids) == 1  # the first member's id, agreed by the others
        epochs = [m.epoch for m in members]
        assert epochs == sorted(set(epochs))
        await _until(lambda: sum(m.is_controller for m in members) == 1)
        first = next(m for m in members if m.is_controller)
        assert terms == [(first.node_id, first.controller_epoch)]
        await first.stop()  # resigns at once: no session timeout to wait for
        assert ended == [first.node_id]
        rest = [m for m in members if m is not first]
        await _until(lambda: any(m.is_controller for m in rest), 2)
        second = next(m for m in rest if m.is_controller)
        assert second.controller_epoch > terms[0][1]
        assert terms[-1] == (second.node_id, second.controller_epoch)
        assert await current_controller(store, ClusterKeys()) == (
            second.node_id, second.controller_epoch
        )
        for m in rest:
            await m.stop()
        assert (await store.range("/odradek/brokers/", prefix=True)).kvs == ()
        await store.close()

    asyncio.run(scenario())


def test_a_lost_session_fences_the_member_until_it_registers_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = InProcessStore(SystemClock(), expiry_interval_s=0.1)
        member = ClusterMember(store, _config(1))
        await member.join(tmp_path, None)
        first = await member.register("127.0.0.1", 9092)
        await _until(lambda: member.is_controller)
        session = member._session
        assert session is not None
        fenced_seen = asyncio.Event()

        async def watch_fenced() -> None:
            while not member.fenced:
                await asyncio.sleep(0)
            fenced_seen.set()

        watcher = asyncio.ensure_future(watch_fenced())
        await store.revoke(session.lease_id)  # as if etcd had let the lease expire
        await _until(lambda: member.registrations == 2 and not member.fenced, 5)
        await watcher
        assert fenced_seen.is_set()
        assert member.epoch > first
        await _until(lambda: member.is_controller)
        await member.stop()

    asyncio.run(scenario())


def test_a_live_duplicate_node_id_refuses_start_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = InProcessStore(SystemClock(), expiry_interval_s=0.1)
        one = ClusterMember(_Shared(store), _config(1))  # type: ignore[arg-type]
        await one.join(tmp_path / "a", None)
        await one.register("127.0.0.1", 9092)
        two = ClusterMember(_Shared(store), _config(1))  # type: ignore[arg-type]
        await two.join(tmp_path / "b", None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DuplicateBrokerRegistration, match="another live broker has this"):
            await two.register("127.0.0.1", 9093)
        # It waited a session timeout for a dead predecessor's lease to run out first.
        assert loop.time() - started >= one.ttl_s
        assert not one.fenced
        await two.stop()
        await one.stop()

    asyncio.run(scenario())


def test_a_predecessor_killed_without_leaving_is_waited_for(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = InProcessStore(SystemClock(), expiry_interval_s=0.1)
        old = ClusterMember(_Shared(store), _config(1))  # type: ignore[arg-type]
        await old.join(tmp_path, None)
        old_epoch = await old.register("127.0.0.1", 9092)
        # The process dies: nothing renews its lease any more.
        assert old._task is not None and old._session is not None
        old._task.cancel()
        old._session.abandon()
        new = ClusterMember(_Shared(store), _config(1))  # type: ignore[arg-type]
        await new.join(tmp_path, None)
        assert await new.register("127.0.0.1", 9092) > old_epoch
        await new.stop()

    asyncio.run(scenario())


def test_a_data_dir_of_another_cluster_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = InProcessStore(SystemClock())
        await store.put("/odradek/cluster_id", b"AAAAAAAAAAAAAAAAAAAAAA")
        (tmp_path / "meta.properties").write_text(
            "version=1\ncluster.id=BBBBBBBBBBBBBBBBBBBBBB\nnode.id=1\n"
        )
        member = ClusterMember(_Shared(store), _config(1))  # type: ignore[arg-type]
        with pytest.raises(ClusterIdMismatch, match="belongs to cluster BBBBBBBBBBBBBBBBBBBBBB, "
                           "but the cluster at the in-process store .* is AAAAAAAAAAAAAAAAAAAAAA"):
            await member.join(tmp_path, None)
        configured = ClusterMember(
            _Shared(store),  # type: ignore[arg-type]
            _config(1, **{"cluster.id": "CCCCCCCCCCCCCCCCCCCCCC"}),
        )
        with pytest.raises(ClusterIdMismatch, match="cluster.id is CCCCCCCCCCCCCCCCCCCCCC"):
            await configured.join(tmp_path / "empty", "CCCCCCCCCCCCCCCCCCCCCC")
        await store.close()

    asyncio.run(scenario())


def test_the_single_node_broker_registers_and_is_controller(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "d")) as broker:
            member = broker.cluster_member
            assert member is not None and member.epoch > 0 and not broker.fenced
            assert member.cluster_id == broker.metadata.cluster_id
            await _until(lambda: member.is_controller)
        assert broker.cluster_member is not None and broker.cluster_member.epoch == 0

    asyncio.run(scenario())


def test_brokers_on_etcd_share_the_cluster_id_and_refuse_a_foreign_data_dir(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    prefix = f"/member-test-{next(_prefixes)}"
    props = {"etcd_endpoints": shared_etcd.endpoint, "etcd_prefix": prefix,
             "broker_session_timeout_ms": "1000"}

    async def scenario() -> None:
        async with Broker(local_config(tmp_path / "one", node_id="1", **props)) as one, \
                Broker(local_config(tmp_path / "two", node_id="2", **props)) as two:
            assert one.metadata.cluster_id == two.metadata.cluster_id
            store: ClusterStore = EtcdStore([shared_etcd.endpoint])
            try:
                kv = await store.get(f"{prefix}/cluster_id")
                assert kv is not None and kv.value.decode() == one.metadata.cluster_id
                registered = await store.range(f"{prefix}/brokers/", prefix=True)
                assert len(registered.kvs) == 2
                # Another cluster under another prefix: broker one's data dir is not its.
                await store.txn([], [Put(f"{prefix}-other/cluster_id", b"A" * 22)])
            finally:
                await store.close()
        foreign = local_config(tmp_path / "one", node_id="1",
                               **{**props, "etcd_prefix": f"{prefix}-other"})
        with pytest.raises(ClusterIdMismatch, match=f"prefix {prefix}-other"):
            await Broker(foreign).start()

    asyncio.run(scenario())
