"""Broker membership on a :class:`~odradek.cluster.store.ClusterStore`: sessions, broker
registrations and the controller election, in the shapes of etcd's concurrency package.

- A :class:`Session` is a lease kept alive in the background. It knows when the lease *could*
  have expired (no renewal answered for a TTL), which is when a broker must stop acting on it.
- A broker registers by creating ``<prefix>/<cluster>/brokers/<node.id>`` under its session's
  lease (:class:`BrokerRegistration`); the key's create revision is the **broker epoch**. The
  key vanishes with the lease, so the live brokers are the keys under ``brokers/``.
- The controller is whoever created ``<prefix>/<cluster>/controller`` under its lease
  (:class:`ControllerElection`); the key's create revision is the **controller epoch**, and
  every write the controller makes compares it (:meth:`ControllerElection.fenced_txn`), so a
  deposed controller cannot write.

Values are JSON (UTF-8), so ``etcdctl get`` shows them readably.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from odradek.clock import Clock, SystemClock
from odradek.cluster.lease_reaper import LeaseReaper
from odradek.cluster.store import (
    ClusterStore,
    ClusterStoreError,
    Compare,
    Delete,
    EventType,
    Get,
    KeyValue,
    LeaseNotFound,
    OutcomeUnknown,
    Put,
    RangeResult,
    StoreUnavailable,
    TxnOp,
    TxnResult,
    absent,
    create_revision_is,
)
from odradek.tasks import cancel_and_wait

__all__ = [
    "ClusterKeys",
    "Session",
    "BrokerInfo",
    "RegisteredBroker",
    "BrokerRegistration",
    "live_brokers",
    "ControllerElection",
    "current_controller",
    "DuplicateBrokerRegistration",
    "NotController",
]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The key layout of one cluster under ``prefix`` (``etcd.prefix``, default ``/odradek``),
    optionally in a named sub-tree ``cluster``."""

    cluster: str = ""
    prefix: str = "/odradek"

    @property
    def root(self) -> str:
        # A broker uses ``etcd.prefix`` alone (one cluster per prefix); tests name clusters to
        # share one etcd.
        base = self.prefix.rstrip("/")
        return f"{base}/{self.cluster}/" if self.cluster else f"{base}/"

    @property
    def brokers(self) -> str:
        return self.root + "brokers/"

    def broker(self, node_id: int) -> str:
        return f"{self.brokers}{node_id}"

    @property
    def controller(self) -> str:
        return self.root + "controller"

    @property
    def cluster_id(self) -> str:
        """The cluster id (a 22-character base64 UUID), created if absent by the first broker."""
        return self.root + "cluster_id"

    @property
    def producer_ids(self) -> str:
        """The next unallocated producer id; blocks are taken from it by compare-and-swap."""
        return self.root + "producer_ids"

    @property
    def topics(self) -> str:
        return self.root + "topics/"

    def topic(self, name: str) -> str:
        """A topic's record (:class:`odradek.cluster.model.TopicRecord`)."""
        return self.topics + name

    @property
    def partitions(self) -> str:
        return self.root + "partitions/"

    def topic_partitions(self, name: str) -> str:
        """The prefix of one topic's partition states (the trailing '/' keeps ``a`` from
        matching ``ab``)."""
        return f"{self.partitions}{name}/"

    def partition(self, name: str, partition: int) -> str:
        """One partition's state (:class:`odradek.cluster.model.PartitionState`)."""
        return f"{self.partitions}{name}/{partition}"


class DuplicateBrokerRegistration(ClusterStoreError):
    """Another live broker holds this node id (Kafka's DUPLICATE_BROKER_REGISTRATION)."""


class NotController(ClusterStoreError):
    """The controller epoch a write was fenced with is no longer the controller's."""


# --- sessions ---------------------------------------------------------------------------------


class Session:
    """A lease kept alive by a background task (create with :meth:`open`).

    Owned by the event loop that opened it. Renews every third of the TTL, each renewal given
    a third of the TTL (on the loop's clock) to be answered, a failed one tried again after a
    twelfth. :attr:`lost` is set
    once the lease is known to be gone (etcd said so) or could be gone: no renewal has been
    answered within a TTL of when it was sent, measured on the injected clock. ``sleep`` is
    what the renewal task waits with (tests pass one driven by a manual clock).
    """

    def __init__(self, store: ClusterStore, lease_id: int, ttl: int, clock: Clock, sleep: Sleep):
        self._store = store
        self.lease_id = lease_id
        self.ttl = ttl
        self._clock = clock
        self._sleep = sleep
        self._valid_until_ms = 0
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Set by :meth:`abandon`: no renewal is sent after it, whatever became of the
        #: cancellation of the renewal task.
        self._abandoned = False

    @classmethod
    async def open(
        cls,
        store: ClusterStore,
        ttl: int,
        *,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> Session:
        clock = clock or SystemClock()
        asked_at = clock.monotonic_ms()
        lease = await store.grant(ttl)
        session = cls(store, lease.id, lease.ttl, clock, sleep)
        session._valid_until_ms = asked_at + lease.ttl * 1000
        session._task = asyncio.get_running_loop().create_task(
            session._keep_alive(), name=f"session {lease.id:x} keep-alive"
        )
        return session

    @property
    def clock(self) -> Clock:
        """The clock the session measures its lease on (real time with a real store)."""
        return self._clock

    @property
    def sleep(self) -> Sleep:
        return self._sleep

    def may_have_expired(self) -> bool:
        return self.lost.is_set() or self._clock.monotonic_ms() >= self._valid_until_ms

    async def wait_until_may_have_expired(self, max_sleep_s: float = 1.0) -> None:
        """Return once :meth:`may_have_expired`: at once when :attr:`lost` is set, else at the
        renewal deadline (a renewal answered meanwhile moves it on: the wake-up finds it later
        and sleeps again), looking at least every ``max_sleep_s``. The deadline is on the
        session's clock and the sleeps on the loop's, the same time for a broker (real, or
        the simulation's virtual time); a wake-up a little early sleeps again for what is
        left, and with a clock of its own (a test's manual clock) expiry is seen within
        ``max_sleep_s``. (ClusterMember polled every 50 ms instead: ~7 ms of CPU a second
        for an idle broker.)"""
        if self.may_have_expired():
            return
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            while not self.may_have_expired():
                left_s = (self._valid_until_ms - self._clock.monotonic_ms()) / 1000
                await asyncio.wait((lost,), timeout=min(max(left_s, 0.001), max_sleep_s))
        finally:
            lost.cancel()

    async def _keep_alive(self) -> None:
        # A renewal is given a third of the TTL, and a failed one is tried again soon: a renewal
        # lost to a blip of the network must not wait out the store client's own timeout (5 s,
        # against a 6 s TTL) and then a whole interval more, which fenced a broker for a store
        # outage of a second.
        wait = self.ttl / 3
        while True:
            await self._sleep(wait)
            if self._abandoned:
                return
            sent_at = self._clock.monotonic_ms()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the
                # cancellation of abandon() when the renewal answers at that moment, and the
                # abandoned session then renews for ever (a test's crashed broker never expired).
                async with asyncio.timeout(self.ttl / 3):
                    ttl = await self._store.keep_alive(self.lease_id)
            except LeaseNotFound:
                log.warning("session lease %x has ended", self.lease_id)
                self.lost.set()
                return
            except (StoreUnavailable, TimeoutError) as e:
                if self.may_have_expired():
                    log.warning("session lease %x may have expired: %r", self.lease_id, e)
                    self.lost.set()
                    return
                wait = self.ttl / 12
                continue
            self._valid_until_ms = sent_at + ttl * 1000
            wait = self.ttl / 3

    async def close(self) -> None:
        """Stop renewing and revoke the lease, deleting its keys (best effort: an unreachable
        store lets the lease expire instead)."""
        self.abandon()
        with contextlib.suppress(LeaseNotFound, StoreUnavailable):
            await self._store.revoke(self.lease_id)
        self.lost.set()

    def abandon(self) -> None:
        """Stop renewing without revoking: the lease runs out as if the process had died."""
        self._abandoned = True
        if self._task is not None:
            self._task.cancel()
            self._task = None


# --- brokers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """What a broker registers: its id and where clients reach it, and whether it is in
    controlled shutdown (``shutting_down``, written only when true: the controller then moves
    its leaderships away and takes it out of ISRs)."""

    node_id: int
    host: str
    port: int
    rack: str | None = None
    shutting_down: bool = False

    def encode(self) -> bytes:
        raw: dict[str, object] = {
            "node_id": self.node_id, "host": self.host, "port": self.port, "rack": self.rack
        }
        if self.shutting_down:
            raw["shutting_down"] = True
        return json.dumps(raw, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> BrokerInfo:
        raw = json.loads(data)
        return cls(
            int(raw["node_id"]),
            str(raw["host"]),
            int(raw["port"]),
            raw.get("rack"),
            bool(raw.get("shutting_down", False)),
        )


@dataclass(frozen=True, slots=True)
class RegisteredBroker:
    info: BrokerInfo
    epoch: int  # the registration key's create revision


class BrokerRegistration:
    """One broker's registration under a session. Owned by the broker's event loop."""

    def __init__(self, store: ClusterStore, keys: ClusterKeys, session: Session, info: BrokerInfo):
        self._store = store
        self._key = keys.broker(info.node_id)
        self._session = session
        self.info = info
        self.epoch = 0

    async def register(self) -> int:
        """Create the registration; returns the broker epoch. Raises
        :class:`DuplicateBrokerRegistration` when another session holds the node id."""
        kv = await _create_under_lease(
            self._store, self._key, self.info.encode(), self._session.lease_id
        )
        if kv.lease != self._session.lease_id:
            holder = BrokerInfo.decode(kv.value)
            raise DuplicateBrokerRegistration(
                f"node id {self.info.node_id} is registered by {holder.host}:{holder.port} "
                f"(broker epoch {kv.create_revision})"
            )
        self.epoch = kv.create_revision
        return self.epoch

    async def mark_shutting_down(self) -> bool:
        """Rewrite the registration with ``shutting_down`` set (same lease, so the same key and
        broker epoch); False when it is no longer this one (the session was lost)."""
        info = replace(self.info, shutting_down=True)
        result = await self._store.txn(
            [create_revision_is(self._key, self.epoch)],
            [Put(self._key, info.encode(), self._session.lease_id)],
        )
        if result.succeeded:
            self.info = info
        return result.succeeded

    async def deregister(self) -> None:
        """Delete the registration, if it is still this one (a controlled shutdown)."""
        await self._store.txn([create_revision_is(self._key, self.epoch)], [Delete(self._key)])


async def live_brokers(
    store: ClusterStore, keys: ClusterKeys
) -> tuple[RangeResult, list[RegisteredBroker]]:
    """The registered brokers, by node id, and the read they come from (watch the brokers'
    prefix from its revision + 1 to follow changes)."""
    result = await store.range(keys.brokers, prefix=True)
    brokers = [
        RegisteredBroker(BrokerInfo.decode(kv.value), kv.create_revision) for kv in result.kvs
    ]
    return result, sorted(brokers, key=lambda b: b.info.node_id)


# --- the controller ---------------------------------------------------------------------------


class ControllerElection:
    """One broker's candidacy for controller under its session. Owned by the broker's loop."""

    def __init__(self, store: ClusterStore, keys: ClusterKeys, session: Session, node_id: int):
        self._store = store
        self._key = keys.controller
        self._session = session
        self.node_id = node_id
        self.epoch = 0

    async def campaign(self) -> int:
        """Wait until this broker is controller; returns the controller epoch."""
        value = json.dumps({"node_id": self.node_id}).encode()
        while True:
            kv = await _create_under_lease(self._store, self._key, value, self._session.lease_id)
            if kv.lease == self._session.lease_id:
                self.epoch = kv.create_revision
                return self.epoch
            await self._wait_for_deletion(kv)

    async def _wait_for_deletion(self, holder: KeyValue) -> None:
        # A controller that died takes its key with its lease: end that lease as soon as it has
        # certainly run out rather than at etcd's next sweep (a controller's own reaper does
        # that for the other brokers; nobody else would for the controller).
        reaper = LeaseReaper(
            self._store, lambda: {0: holder.lease} if holder.lease else {}, self._session.clock,
            self._session.sleep,
        )
        reaping = asyncio.get_running_loop().create_task(
            reaper.run(), name=f"node {self.node_id} controller lease reaper"
        )
        try:
            watch = self._store.watch(self._key, start_revision=holder.mod_revision + 1)
            async with contextlib.aclosing(watch):
                async for event in watch:
                    if event.type is EventType.DELETE:
                        return
        finally:
            # Not 'with suppress(CancelledError): await reaping', which also swallowed a
            # cancellation of this task arriving meanwhile (the broker stopping just as the old
            # controller's key went), and the campaign went on to win and serve a term nobody
            # would end (odradek.tasks).
            await cancel_and_wait(reaping)

    async def resign(self) -> None:
        if self.epoch:
            await self._store.txn([create_revision_is(self._key, self.epoch)], [Delete(self._key)])
            self.epoch = 0

    async def fenced_txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp] = ()
    ) -> TxnResult:
        """A transaction that runs only while this broker is still the controller of its epoch.
        Raises :class:`NotController` when it is not; otherwise returns the result (whose
        ``succeeded`` says whether the caller's own compares held)."""
        result = await self._store.txn(
            [create_revision_is(self._key, self.epoch), *compare],
            success,
            [Get(self._key), *failure],
        )
        if not result.succeeded:
            current = result.responses[0]
            assert isinstance(current, RangeResult)
            if not current.kvs or current.kvs[0].create_revision != self.epoch:
                raise NotController(f"controller epoch {self.epoch} has ended")
            result = TxnResult(False, result.revision, result.responses[1:])
        return result


async def current_controller(
    store: ClusterStore, keys: ClusterKeys, *, revision: int = 0
) -> tuple[int, int] | None:
    """The controller's node id and epoch (at ``revision`` when not 0), or None while there is
    none."""
    kv = await store.get(keys.controller, revision=revision)
    if kv is None:
        return None
    return int(json.loads(kv.value)["node_id"]), kv.create_revision


async def _create_under_lease(store: ClusterStore, key: str, value: bytes, lease: int) -> KeyValue:
    """Create ``key`` if absent; the key as it then is (ours when its lease is ``lease``). A lost
    answer is resolved by re-reading: a key under our lease is our own write."""
    while True:
        try:
            result = await store.txn([absent(key)], [Put(key, value, lease)], [Get(key)])
        except OutcomeUnknown:
            kv = await store.get(key)
        else:
            if result.succeeded:
                return KeyValue(key, value, result.revision, result.revision, 1, lease)
            read = result.responses[0]
            assert isinstance(read, RangeResult)
            kv = read.kvs[0] if read.kvs else None
        if kv is not None:
            return kv
        # The key vanished between the compare and the read: try again.
