"""Broker registrations and the controller election, on both ClusterStore implementations: two
brokers register under their sessions' leases, one is elected controller, and when it stops
renewing its lease the other takes over and the old controller's writes are fenced off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cluster_harness import Harness

from odradek.cluster.etcd import EtcdStore
from odradek.cluster.membership import (
    BrokerInfo,
    BrokerRegistration,
    ClusterKeys,
    ControllerElection,
    DuplicateBrokerRegistration,
    NotController,
    Session,
    current_controller,
    live_brokers,
)
from odradek.cluster.store import (
    ClusterStore,
    Lease,
    OutcomeUnknown,
    Put,
    StoreUnavailable,
    absent,
)
from odradek.sim.cluster import SimClock
from odradek.sim.loop import SimLoop
from odradek.testing.etcd import EtcdProcess

TTL = 1  # seconds; etcd's minimum with the test etcd's election timeout


def _keys(harness: Harness) -> ClusterKeys:
    return ClusterKeys(cluster=harness.prefix.strip("/"), prefix="/odradek-test")


async def _session(harness: Harness, store: ClusterStore) -> Session:
    return await Session.open(store, TTL, clock=harness.session_clock, sleep=harness.sleep)


def test_key_layout() -> None:
    keys = ClusterKeys("c1")
    assert keys.broker(3) == "/odradek/c1/brokers/3"
    assert keys.brokers == "/odradek/c1/brokers/"
    assert keys.controller == "/odradek/c1/controller"
    assert ClusterKeys("c1", prefix="/x/").controller == "/x/c1/controller"


def test_two_brokers_register_and_elect_a_controller(harness: Harness) -> None:
    keys = _keys(harness)
    one, two = BrokerInfo(1, "127.0.0.1", 9092), BrokerInfo(2, "127.0.0.1", 9093, rack="r2")

    async def scenario(store: ClusterStore) -> None:
        s1, s2 = await _session(harness, store), await _session(harness, store)
        r1, r2 = BrokerRegistration(store, keys, s1, one), BrokerRegistration(store, keys, s2, two)
        epoch1, epoch2 = await r1.register(), await r2.register()
        assert epoch1 < epoch2
        assert await r1.register() == epoch1  # its own registration, recognised
        _, brokers = await live_brokers(store, keys)
        assert [(b.info, b.epoch) for b in brokers] == [(one, epoch1), (two, epoch2)]

        # A node id held by a live session cannot be taken.
        s3 = await _session(harness, store)
        with pytest.raises(DuplicateBrokerRegistration, match="127.0.0.1:9092"):
            await BrokerRegistration(store, keys, s3, BrokerInfo(1, "10.0.0.9", 9092)).register()
        await s3.close()

        c1, c2 = ControllerElection(store, keys, s1, 1), ControllerElection(store, keys, s2, 2)
        controller_epoch = await c1.campaign()
        assert await current_controller(store, keys) == (1, controller_epoch)
        waiting = asyncio.ensure_future(c2.campaign())
        # Past several TTLs, the sessions' renewals keep both registrations and the controller.
        await harness.pass_time(TTL * 2.5)
        assert not waiting.done()
        assert not s1.may_have_expired() and not s2.may_have_expired()
        assert len((await live_brokers(store, keys))[1]) == 2

        topic = keys.root + "topics/t"
        written = await c1.fenced_txn([absent(topic)], [Put(topic, b"1")])
        assert written.succeeded
        refused = await c1.fenced_txn([absent(topic)], [Put(topic, b"2")])
        assert not refused.succeeded and refused.responses == ()

        # Broker 1 stops renewing (as if it died): its lease ends, its keys go, 2 takes over.
        s1.abandon()
        new_epoch = await harness.until(waiting, max_s=TTL + 5)
        assert new_epoch > controller_epoch
        assert await current_controller(store, keys) == (2, new_epoch)
        assert s1.may_have_expired()
        assert [b.info for b in (await live_brokers(store, keys))[1]] == [two]
        with pytest.raises(NotController):
            await c1.fenced_txn([], [Put(topic, b"from the deposed controller")])
        kv = await store.get(topic)
        assert kv is not None and kv.value == b"1"
        assert (await c2.fenced_txn([], [Put(topic, b"3")])).succeeded

        # Broker 1 comes back under a new session: a new, higher broker epoch.
        s1b = await _session(harness, store)
        assert await BrokerRegistration(store, keys, s1b, one).register() > new_epoch

        # A controller that resigns hands over at once.
        c1b = ControllerElection(store, keys, s1b, 1)
        campaign = asyncio.ensure_future(c1b.campaign())
        await c2.resign()
        assert await harness.until(campaign, max_s=5) > new_epoch
        for session in (s1b, s2):
            await session.close()
        assert (await live_brokers(store, keys))[1] == []

    harness.run(scenario)


def test_a_session_notices_its_lease_has_ended(harness: Harness) -> None:
    async def scenario(store: ClusterStore) -> None:
        session = await _session(harness, store)
        assert not session.lost.is_set()
        await store.revoke(session.lease_id)  # as an operator's `etcdctl lease revoke` would
        await harness.until(session.lost.wait(), max_s=TTL + 3)
        assert session.may_have_expired()
        await session.close()  # revoking an ended lease is not an error for a session

    harness.run(scenario)


async def _answer_losing_proxy(target_port: int) -> asyncio.Server:
    """A TCP proxy that delivers requests to etcd but never their answers: it closes the
    client's connection as soon as etcd starts to answer, as a network failure would."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)

        async def forward() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()

        forwarding = asyncio.ensure_future(forward())
        await server_r.read(1)  # etcd has applied the request and is answering
        forwarding.cancel()
        client_w.transport.abort()
        server_w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_registration_whose_answer_is_lost_is_recognised(etcd: EtcdProcess) -> None:
    keys = ClusterKeys("lost-answer")
    info = BrokerInfo(7, "127.0.0.1", 9092)

    async def scenario() -> None:
        proxy = await _answer_losing_proxy(etcd.client_port)
        proxy_url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
        direct = EtcdStore([etcd.endpoint])
        # Calls go to the proxy first: the write's answer is lost (OutcomeUnknown), the re-read
        # fails over to etcd itself and finds the key under this session's lease.
        lossy = EtcdStore([proxy_url, etcd.endpoint])
        try:
            with pytest.raises(OutcomeUnknown):
                await lossy.put(keys.root + "probe", b"1")
            assert (await direct.get(keys.root + "probe")) is not None  # it did happen
            session = await Session.open(direct, 5)
            lossy_registration = BrokerRegistration(lossy, keys, session, info)
            epoch = await lossy_registration.register()
            kv = await direct.get(keys.broker(7))
            assert kv is not None and kv.lease == session.lease_id
            assert epoch == kv.create_revision and kv.version == 1
            await session.close()
        finally:
            await lossy.close()
            await direct.close()
            proxy.close()
            await proxy.wait_closed()

    asyncio.run(scenario())


class _BlippingStore:
    """A store whose link drops for ``[down_from, down_until)`` of the loop's time: a renewal
    sent then hangs for the client's timeout (5 s, as the etcd client's) and fails, as one sent
    into a dead connection does; a renewal at any other time is answered at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, down_from: float, down_until: float,
                 ttl: int) -> None:
        self.loop = loop
        self.down = (down_from, down_until)
        self.ttl = ttl
        self.renewals: list[float] = []

    async def grant(self, ttl: int) -> Any:
        return Lease(id=1, ttl=ttl)

    async def keep_alive(self, lease_id: int) -> int:
        now = self.loop.time()
        if self.down[0] <= now < self.down[1]:
            await asyncio.sleep(5.0)
            raise StoreUnavailable("the store's answer never came")
        self.renewals.append(now)
        return self.ttl


def test_a_renewal_lost_to_a_short_blip_is_retried_before_the_session_runs_out() -> None:
    """A 6 s session renewing every 2 s, its store link down for 1.3 s just as a renewal is
    sent: the renewal that hung must not cost the session (it did: the renewal waited out the
    client's 5 s timeout, then 2 s more, and the broker was fenced 6 s after its last renewal;
    simulation seed 1243, whose two brokers fenced so left a power-lost one alone in an ISR
    and lost acknowledged records)."""
    loop = SimLoop()
    clock = SimClock(loop)

    async def scenario() -> tuple[bool, list[float]]:
        start = loop.time()
        store = _BlippingStore(loop, start + 1.5, start + 2.8, ttl=6)
        session = await Session.open(store, 6, clock=clock)  # type: ignore[arg-type]
        expired = False
        for _ in range(200):  # 20 s, looking every 0.1 s
            await asyncio.sleep(0.1)
            expired = expired or session.may_have_expired()
        session.abandon()
        return expired, [t - start for t in store.renewals]

    expired, renewals = loop.run(scenario())
    assert not expired, renewals
    assert renewals and renewals[0] < 6.0, renewals


def test_a_campaign_cancelled_as_the_controller_key_goes_ends_cancelled() -> None:
    """A campaign waiting for the controller key to go, cancelled (its broker stopping) at any
    moment around the key's deletion, ends cancelled: it must not swallow the cancellation and
    go on to win (then its broker serves a term that nothing ends, and its stop never
    returns; session 10 saw it as a hang of test_cluster_member once the member's session
    watch stopped polling)."""
    from odradek.clock import SystemClock
    from odradek.cluster.inprocess import InProcessStore

    async def trial(steps: int) -> bool:
        """Whether the campaign, cancelled ``steps`` loop turns after the resignation while
        still running, ended cancelled (True when it had already won: nothing to check)."""
        store = InProcessStore(SystemClock())
        keys = ClusterKeys("c")
        s1 = await Session.open(store, 30)
        s2 = await Session.open(store, 30)
        try:
            c1, c2 = ControllerElection(store, keys, s1, 1), ControllerElection(store, keys, s2, 2)
            await c1.campaign()
            waiting = asyncio.ensure_future(c2.campaign())
            for _ in range(5):  # the watch of the key is set up
                await asyncio.sleep(0)
            assert not waiting.done()
            await c1.resign()
            for _ in range(steps):
                await asyncio.sleep(0)
            if waiting.done():
                return True
            waiting.cancel()
            await asyncio.wait((waiting,), timeout=5)
            assert waiting.done()
            return waiting.cancelled()
        finally:
            s1.abandon()
            s2.abandon()
            await store.close()

    async def scenario() -> list[int]:
        return [steps for steps in range(30) if not await trial(steps)]

    assert asyncio.run(scenario()) == []


def test_waiting_for_a_session_to_expire_wakes_at_its_deadline_or_when_lost() -> None:
    """Session.wait_until_may_have_expired (what a broker's membership waits with): it
    returns only once the session may have expired, at the renewal deadline rather than at
    its longest sleep, later when a renewal moved the deadline on meanwhile, at once when the
    session is lost; cancelled, it leaves no task behind."""
    from odradek.clock import SystemClock
    from odradek.cluster.inprocess import InProcessStore

    async def scenario() -> None:
        clock = SystemClock()
        store = InProcessStore(clock)
        session = await Session.open(store, 30)
        loop = asyncio.get_running_loop()
        try:
            async def timed(max_sleep_s: float = 5.0) -> float:
                start = loop.time()
                await session.wait_until_may_have_expired(max_sleep_s)
                assert session.may_have_expired()
                return loop.time() - start

            # The deadline, well before the longest sleep.
            session._valid_until_ms = clock.monotonic_ms() + 200
            assert 0.19 <= await timed() < 2.0
            assert not session.lost.is_set()
            # A renewal answered meanwhile moves it on.
            session._valid_until_ms = clock.monotonic_ms() + 200
            loop.call_later(0.1, lambda: setattr(
                session, "_valid_until_ms", clock.monotonic_ms() + 400))
            assert 0.49 <= await timed() < 2.5
            # Lost: at once, whatever the deadline.
            session._valid_until_ms = clock.monotonic_ms() + 60_000
            loop.call_later(0.05, session.lost.set)
            assert await timed() < 2.0
            # Cancelled: nothing of it stays behind.
            session.lost.clear()
            before = len(asyncio.all_tasks())
            waiting = asyncio.ensure_future(session.wait_until_may_have_expired())
            await asyncio.sleep(0.05)
            waiting.cancel()
            await asyncio.wait((waiting,))
            await asyncio.sleep(0)
            assert waiting.cancelled() and len(asyncio.all_tasks()) == before
        finally:
            session.abandon()
            await store.close()

    asyncio.run(scenario())
