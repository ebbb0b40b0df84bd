"""A broker's local image of the cluster's metadata, following the store by a watch.

:class:`MetadataImage` is the :class:`~odradek.cluster.model.MetadataView` a broker answers
from: it reads the whole key space of one cluster (``ClusterKeys.root``) once, then follows a
watch of it from the revision after that read. Each store revision's events are applied together
(readers see one revision or the next, never half of one), and a watch that falls behind a
compaction re-reads everything and goes on from there.

Only *complete* topics are shown: a record and a state for every partition below its count (a
topic with many partitions is written in several transactions). Partition keys at or above the
count (the first writes of a CreatePartitions in progress) are held but not shown.

Cost: an event costs a dictionary update; at the end of its revision each topic it touched is
rebuilt once (a tuple of its partition states), and nothing else is. So following a change is
proportional to the topics it touches, whatever the number of topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from odradek.cluster.membership import BrokerInfo, ClusterKeys, RegisteredBroker
from odradek.cluster.model import PartitionState, TopicInfo, TopicRecord
from odradek.cluster.store import (
    ClusterStore,
    ClusterStoreError,
    EventType,
    KeyValue,
    RevisionCompacted,
    WatchEvent,
)
from odradek.errors import RequestTimedOutError

__all__ = ["MetadataImage", "TopicsChange", "TopicsListener", "BrokersListener"]

log = logging.getLogger(__name__)

_RESYNC_BACKOFF_S = 0.1
_RESYNC_BACKOFF_MAX_S = 2.0
_STATE_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TopicsChange:
    """What one revision (or a re-read) changed among the complete topics."""

    added: tuple[TopicInfo, ...]
    changed: tuple[tuple[TopicInfo, TopicInfo], ...]  # (old, new)
    removed: tuple[TopicInfo, ...]


#: Called after a revision that changed topics is visible; runs on the image's loop and must not
#: block (the broker creates or deletes partition logs here).
TopicsListener = Callable[[TopicsChange], None]
#: Called after a revision that changed the registered brokers or the controller is visible.
BrokersListener = Callable[[], None]



def _now() -> float:
    """Monotonic seconds from the running loop's clock (the real monotonic clock in a broker,
    the virtual one under deterministic simulation, ``odradek.sim``)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # no loop: a synchronous caller
        return time.monotonic()

class MetadataImage:
    """The metadata of one cluster as of :attr:`revision`, kept current by a watch.

    Owned by one event loop (the broker's): the watch task, the readers and the listeners all run
    on it. Reads are synchronous and never see a revision half applied. Nothing is persisted; the
    store is the truth and a restart reads it again.
    """

    def __init__(self, store: ClusterStore, keys: ClusterKeys) -> None:
        self._store = store
        self._keys = keys
        self._root = keys.root
        self._revision = 0
        # -- as the store holds it (applied event by event) --
        self._records: dict[str, TopicRecord] = {}
        self._states: dict[str, dict[int, PartitionState]] = {}
        #: The store revision that last wrote each partition's state.
        self._written_at: dict[tuple[str, int], int] = {}
        self._raw_brokers: dict[int, RegisteredBroker] = {}
        self._raw_controller = -1
        self._raw_cluster_id = ""
        # -- as readers see it (changed at the end of a revision) --
        self._topics: dict[str, TopicInfo] = {}
        self._by_id: dict[uuid.UUID, TopicInfo] = {}
        self._sorted: tuple[TopicInfo, ...] | None = ()
        self._brokers: tuple[RegisteredBroker, ...] = ()
        self._broker_by_id: dict[int, RegisteredBroker] = {}
        #: Brokers whose registration went, and when (monotonic seconds): see
        #: :meth:`recently_departed`.
        self._departed: dict[int, tuple[RegisteredBroker, float]] = {}
        self._controller = -1
        self._cluster_id = ""
        # -- the revision being applied --
        self._pending = 0
        #: The topics the revision being applied touched, in the order its events named them (a
        #: dict, not a set: the listeners hear of them in an order that does not depend on the
        #: string hash seed, so that a simulated run replays exactly).
        self._dirty: dict[str, None] = {}
        self._brokers_dirty = False
        self._flush_scheduled = False
        self._topics_listeners: list[TopicsListener] = []
        self._brokers_listeners: list[BrokersListener] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._state_memo: dict[bytes, PartitionState] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the cluster's keys and start following them (raises what the store raises when
        the first read fails)."""
        await self._reload()
        self._task = asyncio.get_running_loop().create_task(
            self._follow(), name=f"metadata image {self._root}"
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ClusterStoreError("the metadata image is closed"))
        self._waiters.clear()

    # --- MetadataView -------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store revision this image shows (everything written up to it is visible)."""
        return self._revision

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def controller_id(self) -> int:
        return self._controller

    def live_brokers(self) -> Sequence[RegisteredBroker]:
        return self._brokers

    def broker(self, node_id: int) -> RegisteredBroker | None:
        return self._broker_by_id.get(node_id)

    def recently_departed(self, within_s: float) -> Sequence[RegisteredBroker]:
        """The brokers whose registration went (and has not come back) within the last
        ``within_s`` seconds, by node id. Not live: Metadata keeps listing them a moment (see
        ``broker/handlers/metadata.py``)."""
        now = _now()
        for node_id in [n for n, (_, at) in self._departed.items() if now - at > 60.0]:
            del self._departed[node_id]  # bounded: nobody asks about older departures
        return tuple(
            b for _, (b, at) in sorted(self._departed.items()) if now - at <= within_s
        )

    def topics(self) -> Sequence[TopicInfo]:
        """Every complete topic, by name."""
        if self._sorted is None:
            self._sorted = tuple(sorted(self._topics.values(), key=_name))
        return self._sorted

    def topic(self, name: str) -> TopicInfo | None:
        return self._topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicInfo | None:
        return self._by_id.get(topic_id)

    def partition(self, topic: str, partition: int) -> PartitionState | None:
        info = self._topics.get(topic)
        if info is None or not 0 <= partition < len(info.partitions):
            return None
        return info.partitions[partition]

    def partition_written_at(self, topic: str, partition: int) -> int:
        """The store revision that last wrote the partition's state (0: none seen). A state
        written before a broker's registration (its broker epoch) was written for an earlier
        incarnation of it, as the controller's election rules say (``election.Brokers.lost``)."""
        return self._written_at.get((topic, partition), 0)

    def topic_count(self) -> int:
        return len(self._topics)

    # --- waiting and listening ----------------------------------------------------------------

    async def wait_for_revision(self, revision: int, timeout_s: float = 30.0) -> None:
        """Return once this image shows ``revision`` (a writer waits for its own write); raise
        RequestTimedOutError (retriable) after ``timeout_s``, when the watch is cut off from
        the store: the write happened, this broker just cannot see it yet."""
        if revision <= self._revision:
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._waiter_seq), waiter))
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(waiter)
        except asyncio.CancelledError:
            # The caller went away: a close() failing the waiter later would log "exception
            # never retrieved" (found by the simulation, seed 20184).
            waiter.cancel()
            raise
        except TimeoutError:
            waiter.cancel()  # dropped from the heap when its revision comes
            raise RequestTimedOutError(
                f"the metadata change (revision {revision}) was made, but this broker has not "
                f"seen it within {timeout_s:.0f} s: its metadata store may be unreachable"
            ) from None

    def add_topics_listener(self, listener: TopicsListener) -> None:
        self._topics_listeners.append(listener)

    def add_brokers_listener(self, listener: BrokersListener) -> None:
        self._brokers_listeners.append(listener)

    # --- following the store ------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = _RESYNC_BACKOFF_S
        while True:
            try:
                watch = self._store.watch(
                    self._root, prefix=True, start_revision=self._revision + 1
                )
                async with contextlib.aclosing(watch):
                    async for event in watch:
                        self._on_event(event)
                        backoff = _RESYNC_BACKOFF_S
                # A watch ends only when its store closes: do not spin on a closed store.
                log.warning("metadata watch ended: re-reading in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RESYNC_BACKOFF_MAX_S)
            except RevisionCompacted:
                log.info("metadata watch from revision %d was compacted: re-reading",
                         self._revision + 1)
            except ClusterStoreError as e:
                log.warning("metadata watch failed (%s): re-reading in %.1f s", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RESYNC_BACKOFF_MAX_S)
            except Exception:
                # A bug or an unexpected answer must not leave the image stale for good.
                log.exception("metadata watch failed: re-reading in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RESYNC_BACKOFF_MAX_S)
            # Whatever the watch ended with, what arrived of a revision is not the whole of it.
            self._discard_pending()
            try:
                await self._reload()
            except ClusterStoreError as e:
                log.warning("metadata re-read failed (%s): trying again", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RESYNC_BACKOFF_MAX_S)

    async def _reload(self) -> None:
        """Replace the image with one read of the whole key space."""
        result = await self._store.range(self._root, prefix=True)
        self._discard_pending()
        before = set(self._records) | set(self._states) | set(self._topics)
        self._records.clear()
        self._states.clear()
        self._written_at.clear()
        self._raw_brokers.clear()
        self._raw_controller = -1
        self._raw_cluster_id = ""
        for kv in result.kvs:
            self._apply(kv.key, kv)
        self._dirty = dict.fromkeys(sorted(before | set(self._records) | set(self._states)))
        self._brokers_dirty = True
        self._pending = result.revision
        self._flush()

    def _discard_pending(self) -> None:
        # A watch that failed mid-revision: the re-read that follows replaces the raw state.
        self._pending = 0

    def _on_event(self, event: WatchEvent) -> None:
        revision = event.revision
        if self._pending and revision != self._pending:
            self._flush()  # the previous revision's events are all in
        self._pending = revision
        self._apply(event.kv.key, event.kv if event.type is EventType.PUT else None)
        if not self._flush_scheduled:
            # Runs once the watch has no more events at hand: the store delivers a revision's
            # events without suspending between them, so this is after the revision's last.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _apply(self, key: str, kv: KeyValue | None) -> None:
        """One key's change into the raw state (``kv`` None: deleted)."""
        rel = key[len(self._root):]
        try:
            if rel.startswith("partitions/"):
                name, _, index = rel[len("partitions/"):].rpartition("/")
                partition = int(index)
                if kv is None:
                    self._written_at.pop((name, partition), None)
                    states = self._states.get(name)
                    if states is not None:
                        states.pop(partition, None)
                        if not states:
                            del self._states[name]
                else:
                    self._states.setdefault(name, {})[partition] = self._decode_state(kv.value)
                    self._written_at[(name, partition)] = kv.mod_revision
                self._dirty[name] = None
            elif rel.startswith("topics/"):
                name = rel[len("topics/"):]
                if kv is None:
                    self._records.pop(name, None)
                else:
                    self._records[name] = TopicRecord.decode(kv.value)
                self._dirty[name] = None
            elif rel.startswith("brokers/"):
                node_id = int(rel[len("brokers/"):])
                if kv is None:
                    self._raw_brokers.pop(node_id, None)
                else:
                    info = BrokerInfo.decode(kv.value)
                    self._raw_brokers[node_id] = RegisteredBroker(info, kv.create_revision)
                self._brokers_dirty = True
            elif rel == "controller":
                self._raw_controller = -1 if kv is None else int(json.loads(kv.value)["node_id"])
                self._brokers_dirty = True
            elif rel == "cluster_id":
                self._raw_cluster_id = "" if kv is None else kv.value.decode()
        except (ValueError, KeyError, TypeError) as e:
            # One bad value must not stop the image from following the others.
            log.warning("ignoring metadata key %r: its value does not decode (%r)", key, e)

    def _decode_state(self, value: bytes) -> PartitionState:
        # Most partitions of a cluster share a handful of states (same replicas, epochs 0), so
        # one decoded value serves them all; the memo is bounded and refilled when full.
        state = self._state_memo.get(value)
        if state is None:
            if len(self._state_memo) >= _STATE_MEMO_SIZE:
                self._state_memo.clear()
            state = self._state_memo[value] = PartitionState.decode(value)
        return state

    def _flush(self) -> None:
        """Make the raw state of the revision applied so far visible, and tell the listeners."""
        self._flush_scheduled = False
        if not self._pending:
            return
        added: list[TopicInfo] = []
        changed: list[tuple[TopicInfo, TopicInfo]] = []
        removed: list[TopicInfo] = []
        for name in self._dirty:
            old = self._topics.get(name)
            new = self._complete(name, old)
            if new is old:
                continue
            self._sorted = None
            if old is not None:
                del self._topics[name]
                if self._by_id.get(old.topic_id) is old:
                    del self._by_id[old.topic_id]
            if new is not None:
                self._topics[name] = new
                self._by_id[new.topic_id] = new
            if old is None:
                assert new is not None
                added.append(new)
            elif new is None:
                removed.append(old)
            else:
                changed.append((old, new))
        self._dirty.clear()
        brokers_changed = False
        if self._brokers_dirty:
            self._brokers_dirty = False
            brokers = tuple(self._raw_brokers[i] for i in sorted(self._raw_brokers))
            if brokers != self._brokers or self._controller != self._raw_controller:
                now = _now()
                for b in self._brokers:
                    if b.info.node_id not in self._raw_brokers:
                        self._departed[b.info.node_id] = (b, now)
                for node_id in self._raw_brokers:
                    self._departed.pop(node_id, None)
                self._brokers = brokers
                self._broker_by_id = dict(self._raw_brokers)
                self._controller = self._raw_controller
                brokers_changed = True
        self._cluster_id = self._raw_cluster_id
        self._revision = max(self._revision, self._pending)
        self._pending = 0
        while self._waiters and self._waiters[0][0] <= self._revision:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
        if added or changed or removed:
            change = TopicsChange(tuple(added), tuple(changed), tuple(removed))
            for listener in self._topics_listeners:
                _call(listener, change)
        if brokers_changed:
            for broker_listener in self._brokers_listeners:
                _call(broker_listener)

    def _complete(self, name: str, old: TopicInfo | None) -> TopicInfo | None:
        """``name`` as it should now be shown: None while incomplete, ``old`` when unchanged."""
        record = self._records.get(name)
        states = self._states.get(name)
        if record is None or states is None or len(states) < record.partition_count:
            return None
        try:
            partitions = tuple(states[p] for p in range(record.partition_count))
        except KeyError:
            return None
        if (
            old is not None
            and old.topic_id == record.topic_id
            and old.configs == record.configs
            and old.partitions == partitions
        ):
            return old
        return TopicInfo(name, record.topic_id, record.configs, partitions)


def _name(info: TopicInfo) -> str:
    return info.name


def _call(listener: Callable[..., None], *args: object) -> None:
    try:
        listener(*args)
    except Exception:
        log.exception("metadata listener %r failed", listener)
