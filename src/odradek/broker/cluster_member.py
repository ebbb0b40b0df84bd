"""The broker as a member of its cluster: cluster id, session, registration, controller
candidacy, and fencing when the session is lost.

:class:`ClusterMember` is owned by the broker's event loop. Its life:

1. :meth:`ClusterMember.join` (before the broker reads its data dir's metadata) agrees on the
   cluster id: the ``cluster_id`` key is created if absent from the data dir's
   ``meta.properties`` (or ``cluster.id``, or a new id); a data dir or a ``cluster.id`` naming
   another cluster is refused (:class:`ClusterIdMismatch`).
2. :meth:`ClusterMember.register` (once the broker listens, so its advertised port is known)
   opens a :class:`~odradek.cluster.membership.Session` whose TTL is
   ``broker.session.timeout.ms`` rounded up to seconds, and registers the broker
   (:class:`~odradek.cluster.membership.BrokerRegistration`); the create revision is the broker
   epoch. Another live broker with this node id refuses the start-up
   (:class:`~odradek.cluster.membership.DuplicateBrokerRegistration`). Then a background task
   campaigns for controller and watches the session.
3. While the session could have expired (:meth:`Session.may_have_expired`: no renewal answered
   within a TTL) the member is :attr:`~ClusterMember.fenced`: the broker must not accept writes
   (produce answers NOT_LEADER_OR_FOLLOWER), since another broker may have been given its
   partitions. The member then revokes the old lease (best effort), opens a new session and
   registers again, with a new epoch, retrying with a backoff while the store is unreachable. It
   never raises into the broker once started.
4. :meth:`ClusterMember.controlled_shutdown` (the broker's clean stop, before anything
   closes; ``controlled.shutdown.enable``) marks the registration ``shutting_down``; the
   controller then moves this broker's leaderships to other in-sync replicas and takes it out of
   the ISRs (:mod:`odradek.cluster.election`), and the member returns once the broker's image
   shows that (:func:`~odradek.cluster.election.controlled_shutdown_done` for every partition),
   or at a bound: clients meanwhile see only retriable errors as partitions move.
5. :meth:`ClusterMember.stop` resigns, deregisters, revokes the lease and closes the store,
   within a bound.

**The controller hook.** ``controller`` is the controller's work (``cluster/controller.py``): an
async callable given a :class:`ControllerTerm` and run, as a task, for as long as this broker is
the controller of that term's epoch. It is cancelled when the term ends (the session is lost, the
controller key is deleted or taken over, or the broker stops); the member then campaigns again.
Every write it makes should go through ``term.election.fenced_txn`` so that a deposed controller
cannot write. If it raises, the error is logged and the member resigns and campaigns again.

Membership times are real time (a :class:`~odradek.clock.SystemClock`), not the broker's
injected clock: an etcd lease runs out in real time, and tests that move a broker's manual clock
by hours must not fence it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from odradek.clock import Clock, SystemClock
from odradek.cluster.election import controlled_shutdown_done
from odradek.cluster.image import MetadataImage
from odradek.cluster.membership import (
    BrokerInfo,
    BrokerRegistration,
    ClusterKeys,
    ControllerElection,
    DuplicateBrokerRegistration,
    Session,
)
from odradek.cluster.store import (
    ClusterStore,
    ClusterStoreError,
    EventType,
    Get,
    LeaseNotFound,
    OutcomeUnknown,
    Put,
    RangeResult,
    StoreUnavailable,
    absent,
)
from odradek.config import BrokerConfig
from odradek.metadata.store import new_cluster_id

__all__ = [
    "ClusterMember",
    "ControllerTerm",
    "ControllerWork",
    "ClusterIdMismatch",
    "ClusterUnavailable",
    "session_ttl_s",
    "read_data_dir_cluster_id",
]

log = logging.getLogger("odradek.broker.cluster")

_T = TypeVar("_T")

#: How often a start-up waiting out a predecessor's registration looks again (twice this).
_CHECK_INTERVAL_S = 0.05
#: The longest the member's watch of its session sleeps between looks: it wakes when the
#: session is lost or could have expired (Session.wait_until_may_have_expired).
_SESSION_WATCH_MAX_S = 1.0
#: Backoff between attempts to reach the store, doubling up to the cap.
_BACKOFF_S = 0.1
_BACKOFF_MAX_S = 1.0
#: How long start-up waits for the store before refusing to start (Kafka's
#: initial.broker.registration.timeout.ms default).
_JOIN_TIMEOUT_S = 60.0
#: Beyond a session timeout, how long a start-up waits for a predecessor's registration to go
#: (etcd ends expired leases in a sweep every 500 ms).
_DUPLICATE_GRACE_MS = 1500
#: Bound on the clean leave (resign, deregister, revoke): the lease expires anyway.
_STOP_TIMEOUT_S = 3.0


class ClusterIdMismatch(Exception):
    """The data dir (or ``cluster.id``) names another cluster than the one in the store."""


class ClusterUnavailable(Exception):
    """The metadata store could not be reached at start-up within the bound."""


@dataclass(frozen=True, slots=True)
class ControllerTerm:
    """What the controller's work is given: the store, the key layout, this broker's id, and the
    election whose ``epoch`` (the controller epoch) fences its writes (``fenced_txn``)."""

    store: ClusterStore
    keys: ClusterKeys
    node_id: int
    election: ControllerElection

    @property
    def epoch(self) -> int:
        return self.election.epoch


#: The controller's work: run while this broker is controller, cancelled when the term ends.
ControllerWork = Callable[[ControllerTerm], Awaitable[None]]


def session_ttl_s(config: BrokerConfig) -> int:
    """``broker.session.timeout.ms`` as an etcd lease TTL: whole seconds, rounded up."""
    return max(1, math.ceil(config.broker_session_timeout_ms / 1000))


def read_data_dir_cluster_id(data_dir: Path) -> str | None:
    """The ``cluster.id`` of ``data_dir/meta.properties``, or None when there is none."""
    try:
        text = (data_dir / "meta.properties").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#") and key.strip() == "cluster.id":
            return value.strip() or None
    return None


class ClusterMember:
    """One broker's membership of the cluster in ``store`` (see the module docstring).

    Owned by the broker's event loop; it owns ``store`` and closes it in :meth:`stop`."""

    def __init__(
        self,
        store: ClusterStore,
        config: BrokerConfig,
        *,
        controller: ControllerWork | None = None,
        clock: Clock | None = None,
        ttl_s: int | None = None,
    ) -> None:
        self.store = store
        self.keys = ClusterKeys(prefix=config.etcd_prefix)
        self.node_id = config.node_id
        self.rack = config.broker_rack
        # The session's TTL: broker.session.timeout.ms, unless the owner knows better (a single
        # node, whose partitions nobody else can take, outlives any stall of its loop).
        self.ttl_s = ttl_s if ttl_s is not None else session_ttl_s(config)
        self._controller_work = controller
        self._clock: Clock = clock or SystemClock()
        self._label = ",".join(config.etcd_endpoints) or "the in-process store"
        self.cluster_id = ""
        self.info: BrokerInfo | None = None
        self._session: Session | None = None
        self._registration: BrokerRegistration | None = None
        self._election: ControllerElection | None = None
        #: The broker epoch of the current registration (0 while not registered).
        self.epoch = 0
        #: How many registrations this member has made (1 after start-up).
        self.registrations = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._changed = asyncio.Event()

    # -- state the broker reads ------------------------------------------------------------------

    @property
    def fenced(self) -> bool:
        """True while the broker must not act on its registration (accept writes): not
        registered, or its session's lease could have expired."""
        session = self._session
        return self.epoch == 0 or session is None or session.may_have_expired()

    @property
    def controller_epoch(self) -> int:
        """This broker's controller epoch while it is the controller, else 0."""
        election = self._election
        return election.epoch if election is not None and not self.fenced else 0

    @property
    def is_controller(self) -> bool:
        return self.controller_epoch != 0

    async def wait_changed(self) -> None:
        """Return at the next change of registration or controller state (tests await it)."""
        self._changed.clear()
        await self._changed.wait()

    # -- start-up ----------------------------------------------------------------------------

    async def join(self, data_dir: Path, configured: str | None) -> str:
        """Agree on the cluster id (see the module docstring) and return it."""
        local = read_data_dir_cluster_id(data_dir)
        if local and configured and local != configured:
            raise ClusterIdMismatch(
                f"the data dir {data_dir} belongs to cluster {local}, but cluster.id is "
                f"{configured}"
            )
        candidate = local or configured or new_cluster_id()
        key = self.keys.cluster_id
        if local:
            known = await self._until_reachable(lambda: self.store.get(key))
            if known is None:
                # This data dir belongs to a cluster the store does not hold (a wiped etcd, a
                # mistyped etcd.prefix, a single node pointed at etcd): starting would take
                # every topic on disk for deleted and remove its logs.
                raise ClusterIdMismatch(
                    f"the data dir {data_dir} belongs to cluster {local}, but the metadata "
                    f"store at {self._label} (prefix {self.keys.prefix}) holds no cluster; "
                    f"check etcd.endpoints and etcd.prefix (a single node's data dir cannot "
                    f"join etcd yet)"
                )
        cluster_id = await self._until_reachable(
            lambda: _create_if_absent(self.store, key, candidate)
        )
        if local and local != cluster_id:
            raise ClusterIdMismatch(
                f"the data dir {data_dir} belongs to cluster {local}, but the cluster at "
                f"{self._label} (prefix {self.keys.prefix}) is {cluster_id}; use an empty data "
                f"dir or the etcd prefix of cluster {local}"
            )
        if configured and configured != cluster_id:
            raise ClusterIdMismatch(
                f"cluster.id is {configured}, but the cluster at {self._label} "
                f"(prefix {self.keys.prefix}) is {cluster_id}"
            )
        self.cluster_id = cluster_id
        return cluster_id

    async def register(self, host: str, port: int) -> int:
        """Open a session, register the broker at ``host:port`` and start campaigning; returns
        the broker epoch. Raises :class:`DuplicateBrokerRegistration` when another live broker
        holds this node id, :class:`ClusterUnavailable` when the store stays unreachable."""
        self.info = BrokerInfo(self.node_id, host, port, self.rack)
        # A registration of this node id may be a predecessor that died (kill -9) and whose
        # lease has not run out yet: wait one session timeout for it to go before refusing.
        wait_ms = self.ttl_s * 1000 + _DUPLICATE_GRACE_MS
        try:
            await self._until_reachable(lambda: self._open_and_register(wait_ms))
        except DuplicateBrokerRegistration as e:
            raise DuplicateBrokerRegistration(
                f"cannot start broker {self.node_id}: {e}, and it stayed registered for a whole "
                f"session timeout: another live broker has this node.id"
            ) from None
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"broker {self.node_id} membership"
        )
        return self.epoch

    async def _until_reachable(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        deadline = self._clock.monotonic_ms() + _JOIN_TIMEOUT_S * 1000
        backoff = _BACKOFF_S
        while True:
            try:
                return await attempt()
            except StoreUnavailable as e:
                if self._clock.monotonic_ms() >= deadline:
                    raise ClusterUnavailable(
                        f"the cluster's metadata store ({self._label}) did not answer for "
                        f"{_JOIN_TIMEOUT_S:.0f} s: {e}"
                    ) from None
                log.warning("waiting for the metadata store: %s", e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _open_and_register(self, duplicate_wait_ms: int = 0) -> None:
        """Open a session and register under it; a registration of this node id held by
        another session is waited for up to ``duplicate_wait_ms``, then refused."""
        assert self.info is not None
        session = await Session.open(self.store, self.ttl_s, clock=self._clock)
        registration = BrokerRegistration(self.store, self.keys, session, self.info)
        give_up_at = self._clock.monotonic_ms() + duplicate_wait_ms
        waiting = False
        try:
            while True:
                try:
                    epoch = await registration.register()
                    break
                except DuplicateBrokerRegistration as e:
                    if self._clock.monotonic_ms() >= give_up_at or session.may_have_expired():
                        raise
                    if not waiting:
                        waiting = True
                        log.info("node id %d is still registered (%s); waiting for its session "
                                 "to end", self.node_id, e)
                    await asyncio.sleep(_CHECK_INTERVAL_S * 2)
        except BaseException:
            await _quietly(session.close())
            raise
        self._session, self._registration = session, registration
        self._election = ControllerElection(self.store, self.keys, session, self.node_id)
        self.epoch = epoch
        self.registrations += 1
        self._changed.set()
        log.info(
            "broker %d registered at %s:%d with broker epoch %d (session lease %x, %d s)",
            self.node_id, self.info.host, self.info.port, epoch, session.lease_id, session.ttl,
        )

    # -- the background task -----------------------------------------------------------------

    async def _run(self) -> None:
        """One round per session: campaign while the session holds, then fence and register
        again."""
        while not self._stopping:
            session = self._session
            assert session is not None
            campaign = asyncio.get_running_loop().create_task(
                self._campaign(session), name=f"broker {self.node_id} controller campaign"
            )
            try:
                await session.wait_until_may_have_expired(_SESSION_WATCH_MAX_S)
            finally:
                campaign.cancel()
                try:
                    await campaign
                except asyncio.CancelledError:
                    pass
                except Exception:
                    # Whatever ended the campaign, the member must go on registering.
                    log.exception("broker %d controller campaign failed", self.node_id)
            log.warning(
                "broker %d fenced: its session (lease %x) may have expired; registering again",
                self.node_id, session.lease_id,
            )
            self.epoch = 0
            self._changed.set()
            await self._register_again(session)

    async def _register_again(self, old: Session) -> None:
        old.abandon()
        backoff = _BACKOFF_S
        while not self._stopping:
            try:
                # The old lease may still live in etcd (it only *could* have expired): end it,
                # so that its registration does not block the new one.
                with contextlib.suppress(LeaseNotFound):
                    await self.store.revoke(old.lease_id)
                await self._open_and_register()
                return
            except DuplicateBrokerRegistration as e:
                log.error("broker %d cannot register again: %s", self.node_id, e)
            except ClusterStoreError as e:
                log.warning("broker %d cannot reach the metadata store: %s", self.node_id, e)
            except Exception:
                # Not a store error (a client library's, a bad answer): still never give up
                # registering, or the broker would stay fenced for good.
                log.exception("broker %d cannot register again", self.node_id)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _campaign(self, session: Session) -> None:
        election = self._election
        assert election is not None
        backoff = _BACKOFF_S
        while True:
            try:
                epoch = await election.campaign()
            except ClusterStoreError as e:
                log.warning("broker %d controller campaign: %s", self.node_id, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            except Exception:
                log.exception("broker %d controller campaign failed", self.node_id)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_S
            log.info("broker %d is the controller (controller epoch %d)", self.node_id, epoch)
            self._changed.set()
            try:
                await self._serve_term(election)
            finally:
                election.epoch = 0
                self._changed.set()
            log.info("broker %d is no longer the controller (epoch %d)", self.node_id, epoch)

    async def _serve_term(self, election: ControllerElection) -> None:
        """Run the controller's work until the controller key is no longer this term's."""
        epoch = election.epoch
        tasks = [asyncio.ensure_future(self._watch_term(epoch))]
        if self._controller_work is not None:
            term = ControllerTerm(self.store, self.keys, self.node_id, election)
            tasks.append(asyncio.ensure_future(self._controller_work(term)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("controller work failed", exc_info=task.exception())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Ended without losing the key (the work returned or failed): give the key up.
        await _quietly(election.resign())

    async def _watch_term(self, epoch: int) -> None:
        """Return when the controller key stops being the one created at ``epoch``."""
        key = self.keys.controller
        watch = self.store.watch(key, start_revision=epoch + 1)
        async with contextlib.aclosing(watch):
            async for event in watch:
                if event.type is EventType.DELETE or event.kv.create_revision != epoch:
                    return

    # -- shutdown ----------------------------------------------------------------------------

    async def controlled_shutdown(self, image: MetadataImage, timeout_s: float) -> bool:
        """Hand this broker's leaderships and ISR memberships over before it stops (see the
        module docstring); True once ``image`` shows it done, False when there was nobody to
        hand over to, the registration was no longer this one, or ``timeout_s`` passed."""
        registration = self._registration
        if registration is None or self.fenced:
            return False
        if not any(
            b.info.node_id != self.node_id and not b.info.shutting_down
            for b in image.live_brokers()
        ):
            return False  # a single node, or the last broker up: nobody can take over
        changed = asyncio.Event()
        image.add_topics_listener(lambda _change: changed.set())
        image.add_brokers_listener(changed.set)
        started = self._clock.monotonic_ms()
        pending = -1
        try:
            async with asyncio.timeout(timeout_s):
                if not await registration.mark_shutting_down():
                    return False
                log.info("broker %d: controlled shutdown: handing over its partitions",
                         self.node_id)
                while True:
                    changed.clear()
                    pending = self._handover_pending(image)
                    if not pending:
                        break
                    await changed.wait()
        except TimeoutError:
            log.warning(
                "broker %d: controlled shutdown: %d partitions not handed over after %.1f s; "
                "stopping anyway", self.node_id, pending, timeout_s,
            )
            return False
        except ClusterStoreError as e:
            log.warning("broker %d: controlled shutdown: %s; stopping anyway", self.node_id, e)
            return False
        log.info("broker %d: controlled shutdown: partitions handed over in %d ms",
                 self.node_id, self._clock.monotonic_ms() - started)
        return True

    def _handover_pending(self, image: MetadataImage) -> int:
        """How many partitions ``image`` shows this broker still leading or in the ISR of,
        where the controller would change that."""
        can_lead = {b.info.node_id for b in image.live_brokers() if not b.info.shutting_down}
        node = self.node_id
        return sum(
            not controlled_shutdown_done(state, node, can_lead)
            for info in image.topics()
            for state in info.partitions
        )

    async def stop(self) -> None:
        """Resign, deregister, revoke the lease and close the store, within a few seconds."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await self._leave()
        except TimeoutError:
            log.warning("broker %d left the cluster without deregistering (timed out)",
                        self.node_id)
        finally:
            self.epoch = 0
            if self._session is not None:
                self._session.abandon()
            await _quietly(self.store.close())

    async def _leave(self) -> None:
        if self._election is not None:
            await _quietly(self._election.resign())
        if self._registration is not None and self.epoch:
            await _quietly(self._registration.deregister())
        if self._session is not None:
            await _quietly(self._session.close())


async def _create_if_absent(store: ClusterStore, key: str, value: str) -> str:
    """Create ``key`` with ``value`` unless it exists; the key's value either way."""
    while True:
        try:
            result = await store.txn([absent(key)], [Put(key, value.encode())], [Get(key)])
        except OutcomeUnknown:
            kv = await store.get(key)
            if kv is not None:
                return kv.value.decode()
            continue
        if result.succeeded:
            return value
        read = result.responses[0]
        assert isinstance(read, RangeResult)
        if read.kvs:
            return read.kvs[0].value.decode()


async def _quietly(step: Awaitable[object]) -> None:
    """Run a best-effort step of leaving: the store may be gone, and the lease ends anyway."""
    try:
        await step
    except (ClusterStoreError, OSError) as e:
        log.debug("leaving the cluster: %s", e)

