"""Ending the leases of brokers whose sessions ran out, as soon as that is certain.

etcd ends a lease that ran out in a sweep every 500 ms, so a dead broker's registration goes up
to half a second after its session timeout, and its partitions wait that long for new leaders.
The controller runs a :class:`LeaseReaper`, which asks etcd how long each registered broker's
lease has left and revokes a lease once it has certainly run out: the same end, sooner, and
never earlier than the session timeout after the broker's last renewal (liveness stays decided
by the session, as Kafka's ``broker.session.timeout.ms``).

etcd answers a lease's time to live in whole seconds, rounded down. The proof that a lease ran
out, for a lease granted at least 2 s (a renewal restarts the granted TTL, so for at least a
second after one the answer is 1 or more):

1. an answer of 0 received at time ``r`` says less than a second was left when etcd answered
   (before ``r``): without a renewal since, the lease runs out before ``r + 1 s``;
2. every answer since is 0, and no two consecutive asks are a second or more apart (from one's
   sending to the next one's answer): a renewal would have shown as an answer of 1 or more in
   the second after it;
3. an answer of 0 to an ask sent at or after ``r + 1 s`` (plus :data:`CLOCK_MARGIN_MS` for two
   clocks' rates), with the same lease term as the first (an etcd leader change restarts
   every lease's TTL): no renewal came before the deadline, and etcd renews no lease after its
   deadline. The lease has run out; revoking it ends what the sweep would.

A broker stops acting on its session one TTL after it *sent* its last answered renewal
(:meth:`~odradek.cluster.membership.Session.may_have_expired`), which is no later than etcd's
deadline, so a revocation under this proof comes after the broker has fenced itself.

Asks are spread by what each answer allows: a lease with ``n`` whole seconds left cannot reach
the last second before ``n - 1`` seconds have passed, so it is next asked then (a 9 s session:
every few seconds), and every :data:`POLL_S` within the last two seconds (a 2 s session: always).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from odradek.clock import Clock
from odradek.cluster.store import ClusterStore, ClusterStoreError, LeaseNotFound

__all__ = ["LeaseReaper", "POLL_S", "CLOCK_MARGIN_MS"]

log = logging.getLogger(__name__)

#: How often a lease within its last two seconds is asked about.
POLL_S = 0.1
#: Added to the second of step 3, for the rates of this process's clock and etcd's.
CLOCK_MARGIN_MS = 50


@dataclass(slots=True)
class _Watched:
    next_ask_ms: int = 0
    # Set from the first answer of 0: when it came, when the last ask was sent, in what term.
    zero_at_ms: int | None = None
    last_sent_ms: int = 0
    term: int = 0


class LeaseReaper:
    """Revokes the leases of ``leases()`` (node id, 0 for "the controller", → lease id; read
    before every round) once each has certainly run out. Owned by the controller's event loop; :meth:`run` until
    cancelled."""

    def __init__(
        self,
        store: ClusterStore,
        leases: Callable[[], Mapping[int, int]],
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._leases = leases
        self._clock = clock
        self._sleep = sleep
        self._watched: dict[int, _Watched] = {}
        #: Leases revoked here (a count, for tests and logs).
        self.revoked = 0

    async def run(self) -> None:
        while True:
            await self.round()
            current = self._watched.values()
            now = self._clock.monotonic_ms()
            due = min((w.next_ask_ms for w in current), default=now + int(POLL_S * 1000))
            await self._sleep(max(due - now, int(POLL_S * 1000 / 2)) / 1000)

    async def round(self) -> None:
        """Ask about every lease that is due, and revoke those proven to have run out."""
        leases = dict(self._leases())
        wanted = set(leases.values())
        for lease in list(self._watched):
            if lease not in wanted:
                del self._watched[lease]
        for node, lease in leases.items():
            watched = self._watched.setdefault(lease, _Watched())
            if watched.next_ask_ms > self._clock.monotonic_ms():
                continue
            try:
                await self._ask(node, lease, watched)
            except LeaseNotFound:
                self._watched.pop(lease, None)  # it ended: its registration goes with it
            except ClusterStoreError as e:
                # Start again once the store answers: the asks may now be too far apart.
                log.debug("lease %x of broker %d: %s", lease, node, e)
                self._watched.clear()
                return

    async def _ask(self, node: int, lease: int, watched: _Watched) -> None:
        poll_ms = int(POLL_S * 1000)
        sent = self._clock.monotonic_ms()
        answer = await self._store.time_to_live(lease)
        received = self._clock.monotonic_ms()
        if answer.granted_ttl < 2 or answer.ttl > 0:
            # Alive (or too short a TTL for the proof: etcd's sweep ends it).
            watched.zero_at_ms = None
            watched.next_ask_ms = sent + max(poll_ms, (answer.ttl - 1) * 1000)
            if answer.granted_ttl < 2:
                watched.next_ask_ms = sent + max(poll_ms, answer.granted_ttl * 1000)
            return
        if (
            watched.zero_at_ms is None
            or answer.term != watched.term
            or received - watched.last_sent_ms >= 1000
        ):
            watched.zero_at_ms, watched.term = received, answer.term  # step 1 (again)
        elif sent >= watched.zero_at_ms + 1000 + CLOCK_MARGIN_MS:  # step 3
            log.info("%s's session has run out (no renewal of its %d s lease %x); "
                     "ending it now rather than at etcd's next sweep",
                     f"broker {node}" if node else "the controller", answer.granted_ttl, lease)
            await self._store.revoke(lease)
            self.revoked += 1
            self._watched.pop(lease, None)
            return
        watched.last_sent_ms = sent
        # Step 2's asks, and step 3's as soon as it can be sent.
        proof_at = watched.zero_at_ms + 1000 + CLOCK_MARGIN_MS
        watched.next_ask_ms = min(sent + poll_ms, max(proof_at, sent + 1))
