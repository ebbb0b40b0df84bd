"""ClusterMember, the broker's membership: cluster id agreement, registration, the controller
hook, fencing and re-registration, shutdown. Several members in one process on one in-process
store (real time, 1 s sessions), and brokers on a real etcd."""

from __future__ import annotations

import asyncio
import itertools
import random
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
from odradek.cluster.controller import Controller
from odradek.cluster.etcd import EtcdStore
from odradek.cluster.image import MetadataImage
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys, DuplicateBrokerRegistration, current_controller
from odradek.cluster.store import ClusterStore, Put
from odradek.cluster.topic_admin import TopicAdmin
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


def test_a_single_node_restart_keeps_every_leader_epoch(tmp_path: Path) -> None:
    """The only replica of every partition restarted: nothing can diverge from it, so the
    controller writes nothing and clients keep their epochs (KIP-320 validation is not set off
    by every restart)."""
    controllers: list[Controller] = []

    async def work(term: ControllerTerm) -> None:
        controller = Controller(term.store, term.keys, term.election)
        controllers.append(controller)
        await controller.run()

    async def scenario() -> None:
        config = local_config(tmp_path / "d")
        async with Broker(config, controller=work) as broker:
            await broker.topics.create("t", num_partitions=4)
            await _until(lambda: bool(controllers) and controllers[-1].stats.settled > 0)
            before = broker.cluster.topic("t")
        for _ in range(2):
            controllers.clear()
            async with Broker(config, controller=work) as broker:
                controller = await _until_value(lambda: controllers[-1] if controllers else None)
                await _until(lambda c=controller: c.stats.settled > 0)  # type: ignore[misc]
                assert controller.stats.transactions == 0  # nothing written
                assert broker.cluster.topic("t") == before

    asyncio.run(scenario())


async def _until_value(get: object, timeout_s: float = 5.0) -> Controller:
    assert callable(get)
    async with asyncio.timeout(timeout_s):
        while (value := get()) is None:
            await asyncio.sleep(0.01)
    assert isinstance(value, Controller)
    return value


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


async def _run_controller(term: ControllerTerm) -> None:
    await Controller(term.store, term.keys, term.election).run()


def test_controlled_shutdown_hands_partitions_over_before_leaving(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = InProcessStore(SystemClock(), expiry_interval_s=0.1)
        keys = ClusterKeys()
        members = {
            n: ClusterMember(_Shared(store), _config(n), controller=_run_controller)  # type: ignore[arg-type]
            for n in (1, 2, 3)
        }
        images = {n: MetadataImage(_Shared(store), keys) for n in members}  # type: ignore[arg-type]
        for n, member in members.items():
            await member.join(tmp_path / f"b{n}", None)
            await member.register("127.0.0.1", 9000 + n)
            await images[n].start()
        await images[1].wait_for_revision(members[3].epoch)
        admin = TopicAdmin(_Shared(store), keys, images[1], rng=random.Random(1))  # type: ignore[arg-type]
        await admin.create_topic("t", partitions=6, replication_factor=3)
        await admin.create_topic("one", partitions=3, replication_factor=1)
        before = images[2].topic("t")
        assert before is not None and any(s.leader == 2 for s in before.partitions)
        single = images[2].topic("one")
        assert single is not None

        assert await members[2].controlled_shutdown(images[2], timeout_s=5)
        for n in (1, 2, 3):  # what broker 2 waited for, every broker sees
            await images[n].wait_for_revision(images[2].revision)
            after = images[n].topic("t")
            assert after is not None
            for old, new in zip(before.partitions, after.partitions, strict=True):
                assert new.leader != 2 and 2 not in new.isr and len(new.isr) == 2
                assert new.leader_epoch == old.leader_epoch + (old.leader == 2)
        # One replica: nobody to hand over to; the partition stays with broker 2 until it stops.
        assert images[1].topic("one") == single
        assert images[1].broker(2) is not None  # still registered, marked
        assert images[1].broker(2).info.shutting_down  # type: ignore[union-attr]

        await members[2].stop()  # then its partitions are leaderless (the controller's rules)

        def orphaned() -> bool:
            now = images[1].topic("one")
            assert now is not None
            return all(
                new.leader == -1 and new.isr == (2,)
                for new, old in zip(now.partitions, single.partitions, strict=True)
                if old.leader == 2
            )

        await _until(orphaned)

        # The last broker up has nobody to hand over to: it returns at once.
        await members[1].stop()
        await _until(lambda: len(images[3].live_brokers()) == 1)
        assert not await members[3].controlled_shutdown(images[3], timeout_s=5)
        await members[3].stop()
        for image in images.values():
            await image.close()
        await store.close()

    asyncio.run(scenario())


def test_controlled_shutdown_without_a_controller_gives_up_at_its_bound(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = InProcessStore(SystemClock(), expiry_interval_s=0.1)
        keys = ClusterKeys()
        members = {n: ClusterMember(_Shared(store), _config(n)) for n in (1, 2)}  # type: ignore[arg-type]
        images = {n: MetadataImage(_Shared(store), keys) for n in members}  # type: ignore[arg-type]
        for n, member in members.items():
            await member.join(tmp_path / f"b{n}", None)
            await member.register("127.0.0.1", 9000 + n)
            await images[n].start()
        await images[1].wait_for_revision(members[2].epoch)
        admin = TopicAdmin(_Shared(store), keys, images[1])  # type: ignore[arg-type]
        await admin.create_topic("t", assignments=[(1, 2)])
        started = asyncio.get_running_loop().time()
        assert not await members[1].controlled_shutdown(images[1], timeout_s=0.3)
        assert asyncio.get_running_loop().time() - started >= 0.3
        for member in members.values():
            await member.stop()
        for image in images.values():
            await image.close()
        await store.close()

    asyncio.run(scenario())
