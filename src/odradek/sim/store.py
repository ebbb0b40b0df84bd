"""One node's view of the shared metadata store, across the simulated network.

Every broker of a simulation talks to the one :class:`~odradek.cluster.inprocess.InProcessStore`
(the metadata store of the whole cluster, as etcd would be) through its own :class:`NodeStore`,
which behaves as an etcd client over a network: each request and each answer takes a latency;
while the node's link to ``store`` is cut (or the node is dead) a request fails with
:class:`~odradek.cluster.store.StoreUnavailable` after the request timeout, and a write whose
answer is lost on the way back raises :class:`~odradek.cluster.store.OutcomeUnknown` although it
happened. A watch delivers each revision's events together, one latency after the store made
them; it falls silent while the link is cut (as an etcd watch does until its stream times out)
and fails once the node is dead. ``close`` closes this client only, never the shared store.

Owned by the simulation's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TypeVar

from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.store import (
    Compare,
    DeleteResult,
    KeyValue,
    Lease,
    LeaseTimeToLive,
    OutcomeUnknown,
    PutResult,
    RangeResult,
    StoreUnavailable,
    TxnOp,
    TxnResult,
    WatchEvent,
)
from odradek.sim.loop import Incarnation
from odradek.sim.network import SimNetwork

__all__ = ["STORE_NODE", "NodeStore"]

_T = TypeVar("_T")

#: The metadata store's node name on the simulated network.
STORE_NODE = "store"
#: How long a request to an unreachable store takes to fail (the etcd client's timeout).
_REQUEST_TIMEOUT_S = 5.0


class NodeStore:
    """A :class:`~odradek.cluster.store.ClusterStore` for one incarnation of one node."""

    def __init__(self, store: InProcessStore, network: SimNetwork, owner: Incarnation) -> None:
        self._store = store
        self._network = network
        self._owner = owner
        self._closed = False

    def _up(self) -> bool:
        return (
            not self._closed and self._owner.alive
            and self._network.reachable(self._owner.node, STORE_NODE)
        )

    async def _hop(self) -> None:
        await asyncio.sleep(self._network.latency_s(self._owner.node, STORE_NODE))

    async def _call(self, op: Callable[[], Awaitable[_T]], *, write: bool) -> _T:
        await self._hop()
        if not self._up():
            await asyncio.sleep(_REQUEST_TIMEOUT_S)
            raise StoreUnavailable(f"{self._owner.node} cannot reach the metadata store")
        result = await op()
        await self._hop()
        if not self._up():
            if write:
                raise OutcomeUnknown(f"{self._owner.node} lost the store's answer to a write")
            raise StoreUnavailable(f"{self._owner.node} lost the store's answer")
        return result

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        return await self._call(lambda: self._store.get(key, revision=revision), write=False)

    async def range(
        self, key: str, *, prefix: bool = False, revision: int = 0, limit: int = 0
    ) -> RangeResult:
        return await self._call(
            lambda: self._store.range(key, prefix=prefix, revision=revision, limit=limit),
            write=False,
        )

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult:
        return await self._call(lambda: self._store.put(key, value, lease=lease), write=True)

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        return await self._call(lambda: self._store.delete(key, prefix=prefix), write=True)

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        return await self._call(lambda: self._store.txn(compare, success, failure), write=True)

    async def grant(self, ttl: int) -> Lease:
        return await self._call(lambda: self._store.grant(ttl), write=True)

    async def keep_alive(self, lease_id: int) -> int:
        return await self._call(lambda: self._store.keep_alive(lease_id), write=True)

    async def revoke(self, lease_id: int) -> None:
        await self._call(lambda: self._store.revoke(lease_id), write=True)

    async def time_to_live(self, lease_id: int) -> LeaseTimeToLive:
        return await self._call(lambda: self._store.time_to_live(lease_id), write=False)

    async def compact(self, revision: int) -> None:
        await self._call(lambda: self._store.compact(revision), write=True)

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncGenerator[WatchEvent, None]:
        return self._watch(key, prefix, start_revision)

    async def _watch(
        self, key: str, prefix: bool, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        await self._hop()
        if not self._up():
            await asyncio.sleep(_REQUEST_TIMEOUT_S)
            raise StoreUnavailable(f"{self._owner.node} cannot reach the metadata store")
        inner = self._store.watch(key, prefix=prefix, start_revision=start_revision)
        async with contextlib.aclosing(inner):
            revision = 0
            async for event in inner:
                if event.revision != revision:
                    # A revision's events travel together: one latency, then all of them.
                    revision = event.revision
                    await self._hop()
                    while not self._up():
                        if self._closed or not self._owner.alive:
                            raise StoreUnavailable(f"{self._owner.node}'s watch is gone")
                        await asyncio.sleep(0.1)
                yield event
            if self._closed:
                return

    async def close(self) -> None:
        self._closed = True
