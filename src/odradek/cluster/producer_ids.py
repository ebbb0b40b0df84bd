"""Producer ids unique across the cluster, handed out in blocks taken from the store.

``producer_ids`` holds ``{"next": N}``: the first id no broker has taken. A broker takes the
block ``[N, N + size)`` by a compare-and-swap of that key (absent, or its mod revision as read)
to ``N + size``, and hands ids out of it from memory. A block whose answer was lost is given up
rather than guessed at (a few ids are skipped, none is ever handed out twice), and a block is
taken before any id of it is used, so a restart never repeats one either.

As Kafka's brokers do, the next block is fetched in the background once 90 % of the current one
is used; a request that finds both used up is answered COORDINATOR_LOAD_IN_PROGRESS, which
clients retry.
"""

from __future__ import annotations

import asyncio
import json
import logging

from odradek.cluster.membership import ClusterKeys
from odradek.cluster.store import ClusterStore, OutcomeUnknown, Put, absent, mod_revision_is
from odradek.errors import CoordinatorLoadInProgressError

__all__ = ["PRODUCER_ID_BLOCK", "allocate_block", "encode_next", "ProducerIdManager"]

log = logging.getLogger(__name__)

PRODUCER_ID_BLOCK = 1000

#: How many losing compare-and-swaps in a row before giving up (each loss is another broker's
#: win, so this is only reached under extreme contention).
_ATTEMPTS = 100


def encode_next(next_id: int) -> bytes:
    return json.dumps({"next": next_id}).encode()


async def allocate_block(
    store: ClusterStore, keys: ClusterKeys, size: int = PRODUCER_ID_BLOCK
) -> range:
    """Take the next block of ``size`` producer ids for this broker alone."""
    key = keys.producer_ids
    for _ in range(_ATTEMPTS):
        kv = await store.get(key)
        start = int(json.loads(kv.value)["next"]) if kv is not None else 0
        guard = mod_revision_is(key, kv.mod_revision) if kv is not None else absent(key)
        try:
            result = await store.txn([guard], [Put(key, encode_next(start + size))])
        except OutcomeUnknown:
            # Maybe ours, maybe another broker's with the same value: never use it.
            continue
        if result.succeeded:
            return range(start, start + size)
    raise OutcomeUnknown(f"could not take a block of producer ids after {_ATTEMPTS} attempts")


class ProducerIdManager:
    """One broker's supply of producer ids. Owned by the broker's event loop: :meth:`allocate`
    is synchronous (the transaction coordinator's state machine calls it); blocks are fetched by
    tasks on the loop."""

    def __init__(
        self, store: ClusterStore, keys: ClusterKeys, block_size: int = PRODUCER_ID_BLOCK
    ) -> None:
        self._store = store
        self._keys = keys
        self._size = block_size
        self._current: range = range(0)
        self._next_index = 0
        self._prefetched: range | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Take the first block (raises what the store raises)."""
        # Remembered: allocate() may be called while the loop is not running (tests drive a
        # broker's handlers between run_until_complete calls); the fetch then runs on its next turn.
        self._loop = asyncio.get_running_loop()
        self._current = await allocate_block(self._store, self._keys, self._size)
        self._next_index = 0

    async def close(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
            try:
                await self._fetching
            except (asyncio.CancelledError, Exception):
                pass
            self._fetching = None

    def allocate(self) -> int:
        """The next producer id. Raises :class:`CoordinatorLoadInProgressError` while the next
        block is still being fetched."""
        if self._next_index >= len(self._current):
            if self._prefetched is None:
                self._maybe_fetch()
                raise CoordinatorLoadInProgressError("the next block of producer ids is loading")
            self._current, self._next_index, self._prefetched = self._prefetched, 0, None
        pid = self._current[self._next_index]
        self._next_index += 1
        if self._next_index >= len(self._current) * 9 // 10:
            self._maybe_fetch()
        return pid

    def _maybe_fetch(self) -> None:
        if self._prefetched is not None or self._fetching is not None:
            return
        loop = self._loop or asyncio.get_running_loop()
        self._fetching = loop.create_task(
            self._fetch(), name="producer id block"
        )

    async def _fetch(self) -> None:
        try:
            self._prefetched = await allocate_block(self._store, self._keys, self._size)
        except Exception:
            log.exception("could not take a block of producer ids; trying on the next request")
        finally:
            self._fetching = None
