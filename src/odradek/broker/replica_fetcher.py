"""The follower's side of replication: fetch every partition this broker follows from its leader.

Kafka's ``ReplicaFetcherManager`` / ``AbstractFetcherThread`` / ``ReplicaFetcherThread``, on the
broker's event loop. :class:`ReplicaFetcherManager` follows the broker's
:class:`~odradek.cluster.image.MetadataImage`: a partition whose replicas name this broker, whose
leader is another broker that is registered (live), is fetched by the :class:`ReplicaFetcher` of
that leader (``num.replica.fetchers`` per leader; a partition's fetcher is chosen by a hash of
its name). A change of leader or of leader epoch moves the partition to the new leader's fetcher
with the new epoch; a partition this broker now leads, or no longer holds, or whose leader is
gone, stops being fetched in the same step of the event loop, so nothing fetched from an old
leader is appended after the image showed the change.

A fetcher sends one Fetch (v16, no fetch session) for all its partitions at a time, over a
connection of its own (:class:`~odradek.broker.inter_broker.InterBrokerClient`), as the replica
of KIP-903 (``ReplicaState``: node id and broker epoch), with each partition's current leader
epoch (KIP-320), the log end offset as fetch offset and the log's latest epoch as last fetched
epoch (KIP-279), and ``replica.fetch.{wait.max.ms,min.bytes,max.bytes,response.max.bytes}``.
The response is decoded by :mod:`odradek.protocol.replica_fetch`: records are views of the
response frame, appended from there. Per partition of the response, as Kafka's fetcher does:

- records: appended with ``PartitionLog.append_as_follower`` (offsets, epochs, producer fields
  as the leader wrote them); then the high watermark moves to min(leader's, log end offset),
  never backwards, and the log start offset follows the leader's up to the high watermark
  (DeleteRecords and retention on the leader reach the follower).
- a diverging epoch (the leader's log is not an extension of ours): truncate to the end of the
  largest common epoch (:func:`truncation_offset`, Kafka's ``getOffsetTruncationState``) and
  fetch on; a truncation that could not be decided at once is refined by the next response.
- OFFSET_OUT_OF_RANGE: below the leader's log start, the log is emptied and restarts there
  (``truncate_fully_and_start_at``); otherwise the leader's end of our latest epoch is asked
  with OffsetForLeaderEpoch and the log truncated to it (a leader whose log ends before ours
  without a diverging epoch: an unclean election).
- FENCED_LEADER_EPOCH: our image is behind the leader's; the partition waits until the image
  shows a newer epoch (the listener re-adds it). NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH,
  unknown topics, storage and other errors: the partition is retried after
  ``replica.fetch.backoff.ms``; so is every partition of a request that failed as a whole
  (the leader unreachable). NOT_LEADER_OR_FOLLOWER and UNKNOWN_LEADER_EPOCH right after a
  leader change mostly mean that the new leader's image has not shown the change yet (both
  learn it from the same watch, a few milliseconds apart): those are retried after
  :data:`QUICK_RETRY_MS`, doubling with each repeat up to ``replica.fetch.backoff.ms``, so a
  failover does not wait a whole backoff for the new leader to count its follower.

Owned by the broker's event loop: the manager is changed only by the image's listeners and
:meth:`ReplicaFetcherManager.stop`; each fetcher's task alone sends its requests and appends to
its partitions' logs. Nothing is persisted here (the fetch position is the log's end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kio.schema.offset_for_leader_epoch.v4 import request as ofle_req
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i32

from odradek.broker.inter_broker import InterBrokerClient
from odradek.cluster.image import MetadataImage, TopicsChange
from odradek.cluster.model import NO_LEADER, TopicInfo
from odradek.config import BrokerConfig
from odradek.errors import CorruptRecordError, ErrorCode, KafkaError
from odradek.protocol.records import read_batch_header
from odradek.protocol.replica_fetch import (
    FetchPartitionRequest,
    ReplicaFetchRequest,
    decode_replica_fetch_response,
)
from odradek.storage.log import PartitionLog, UnexpectedAppendOffsetError

if TYPE_CHECKING:
    from odradek.broker.timings import RequestTimings

__all__ = [
    "QUICK_RETRY_MS",
    "FetcherConfig",
    "ReplicaFetcher",
    "ReplicaFetcherManager",
    "fetcher_id",
    "move_to_end",
    "truncation_offset",
]

log = logging.getLogger("odradek.broker.replica_fetcher")

_NO_DIVERGENCE = -1
#: The first retry after an answer that says the leader's image is behind ours (doubling).
QUICK_RETRY_MS = 20
_QUICK_RETRY_ERRORS = (ErrorCode.not_leader_or_follower, ErrorCode.unknown_leader_epoch)


@dataclass(frozen=True, slots=True)
class FetcherConfig:
    """The follower's settings, Kafka's ``replica.fetch.*`` and ``num.replica.fetchers``."""

    node_id: int
    max_bytes: int = 1048576  # replica.fetch.max.bytes, per partition
    response_max_bytes: int = 10485760  # replica.fetch.response.max.bytes
    wait_max_ms: int = 500  # replica.fetch.wait.max.ms
    min_bytes: int = 1  # replica.fetch.min.bytes
    backoff_ms: int = 1000  # replica.fetch.backoff.ms
    num_fetchers: int = 1  # num.replica.fetchers
    socket_timeout_ms: int = 30000  # replica.socket.timeout.ms
    receive_buffer_bytes: int = 4 << 20  # replica.socket.receive.buffer.bytes
    #: Told of each partition whose high watermark moved (wakes consumers' fetches served by
    #: this follower, KIP-392).
    on_high_watermark: Callable[[tuple[str, int]], None] | None = field(
        default=None, compare=False
    )

    @classmethod
    def from_broker_config(cls, config: BrokerConfig) -> FetcherConfig:
        return cls(
            node_id=config.node_id,
            max_bytes=config.replica_fetch_max_bytes,
            response_max_bytes=config.replica_fetch_response_max_bytes,
            wait_max_ms=config.replica_fetch_wait_max_ms,
            min_bytes=config.replica_fetch_min_bytes,
            backoff_ms=config.replica_fetch_backoff_ms,
            num_fetchers=config.num_replica_fetchers,
            socket_timeout_ms=config.replica_socket_timeout_ms,
            receive_buffer_bytes=config.replica_socket_receive_buffer_bytes,
        )


def move_to_end(partitions: dict[Any, Any], keys: Iterable[Any]) -> None:
    """Move ``keys`` (in their order) behind every other partition of ``partitions``, the
    order of the next Fetch: the leader fills its answer in request order up to the response's
    limit, so partitions that were just served go last and the others are read first next time
    (Kafka's ``updateAndMoveToEnd``). Keys no longer present are skipped."""
    for key in keys:
        state = partitions.pop(key, None)
        if state is not None:
            partitions[key] = state


def truncation_offset(
    log_end_offset: int,
    leader_epoch: int,
    leader_end_offset: int,
    follower_end: tuple[int, int],
) -> int:
    """Where a follower truncates given the leader's (epoch, end offset) for the largest epoch
    both may share, and the follower's own answer for that epoch, ``follower_end`` = (largest
    epoch <= ``leader_epoch`` it holds, where that epoch ends), (-1, -1) when it holds none.
    Kafka's ``getOffsetTruncationState``: the same epoch ends at the smaller of the two ends; a
    follower without the leader's epoch truncates to the end of its own largest smaller epoch
    (its next fetch then names that epoch, and the leader answers again). Never beyond the log
    end offset."""
    if leader_end_offset < 0:
        return log_end_offset  # the leader knows no such epoch: nothing to go by
    follower_epoch, follower_end_offset = follower_end
    if leader_epoch < 0 or follower_end_offset < 0:
        return min(leader_end_offset, log_end_offset)
    if follower_epoch != leader_epoch:
        return min(follower_end_offset, log_end_offset)
    return min(follower_end_offset, leader_end_offset, log_end_offset)


def fetcher_id(topic: str, partition: int, num_fetchers: int) -> int:
    """Which of a leader's fetchers takes a partition (stable across restarts)."""
    return (zlib.crc32(topic.encode()) * 31 + partition) % max(num_fetchers, 1)


class _FetchState:
    """One partition in one fetcher. A new object each time the partition is (re)added, so a
    response to a request sent for an earlier one is recognised by identity and dropped."""

    __slots__ = (
        "topic", "partition", "topic_id", "leader_epoch", "delayed_until", "fenced", "retry_ms"
    )

    def __init__(self, topic: str, partition: int, topic_id: uuid.UUID, leader_epoch: int):
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self.leader_epoch = leader_epoch
        self.delayed_until = 0.0  # loop time before which it is not fetched (after an error)
        self.fenced = False  # FENCED_LEADER_EPOCH: wait for the image
        self.retry_ms = QUICK_RETRY_MS  # the next quick retry's delay (see the module docs)

    def __repr__(self) -> str:
        return f"{self.topic}-{self.partition}@{self.leader_epoch}"


_Key = tuple[str, int]



def _error_code(code: int) -> ErrorCode:
    """An answer's error code; one this broker does not know (a newer leader's) is
    UNKNOWN_SERVER_ERROR, as Kafka's ``Errors.forCode`` reads it: its partition backs off, the
    others of the answer are applied (the answer's decoder keeps codes as plain ints)."""
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.unknown_server_error

class ReplicaFetcher:
    """Fetches the partitions one leader leads (a share of them with ``num.replica.fetchers``
    > 1) for this broker; see the module docs. Owned by the
    :class:`ReplicaFetcherManager`, which adds and removes partitions; its task is the only
    writer of those partitions' logs while they are here."""

    def __init__(
        self,
        leader_id: int,
        fetcher_index: int,
        config: FetcherConfig,
        image: MetadataImage,
        partition_log: Callable[[str, int], PartitionLog],
        broker_epoch: Callable[[], int],
        timings: RequestTimings | None = None,
    ) -> None:
        self.leader_id = leader_id
        self._timings = timings
        self.fetcher_index = fetcher_index
        self._config = config
        self._log = partition_log
        self._broker_epoch = broker_epoch
        self._client = InterBrokerClient(
            image, config.node_id, request_timeout_ms=config.socket_timeout_ms,
            receive_buffer_bytes=config.receive_buffer_bytes,
        )
        self.partitions: dict[_Key, _FetchState] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.name = f"replica fetcher {fetcher_index} of broker {config.node_id} from {leader_id}"

    # -- the manager's side --------------------------------------------------------------------

    def add(self, state: _FetchState) -> None:
        self.partitions[(state.topic, state.partition)] = state
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def remove(self, key: _Key) -> _FetchState | None:
        return self.partitions.pop(key, None)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._client.close()

    # -- the fetch loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # Checked as well as cancelled: 3.11's wait_for (in the inter-broker client) can lose a
        # cancellation that meets a failing connection.
        while not self._closed:
            try:
                now = loop.time()
                ready = [
                    s for s in self.partitions.values() if not s.fenced and s.delayed_until <= now
                ]
                if not ready:
                    await self._idle(now)
                    continue
                await self._fetch_once(ready)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not end replication of every partition of this leader.
                log.exception("%s: unexpected error; backing off", self.name)
                await asyncio.sleep(self._config.backoff_ms / 1000)

    async def _idle(self, now: float) -> None:
        self._wakeup.clear()
        waits = [s.delayed_until - now for s in self.partitions.values() if not s.fenced]
        timeout = max(min(waits), 0.0) if waits else None
        # asyncio.timeout, not wait_for: 3.11's wait_for can turn a cancellation that meets its
        # timeout into TimeoutError, and the fetcher would never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    def _delay(self, states: Iterable[_FetchState]) -> None:
        until = asyncio.get_running_loop().time() + self._config.backoff_ms / 1000
        for s in states:
            if self.partitions.get((s.topic, s.partition)) is s:
                s.delayed_until = until

    def _retry_soon(self, state: _FetchState) -> None:
        """Retry after the partition's quick-retry delay, which doubles up to the backoff."""
        delay_ms = min(state.retry_ms, self._config.backoff_ms)
        state.retry_ms = min(state.retry_ms * 2, self._config.backoff_ms)
        if self._current(state):
            state.delayed_until = asyncio.get_running_loop().time() + delay_ms / 1000

    def _current(self, state: _FetchState) -> bool:
        return self.partitions.get((state.topic, state.partition)) is state

    def _build(
        self, ready: list[_FetchState]
    ) -> tuple[ReplicaFetchRequest, dict[tuple[uuid.UUID, int], tuple[_FetchState, int]]]:
        """The Fetch request for ``ready`` and, by (topic id, partition), each partition's state
        and the fetch offset sent."""
        cfg = self._config
        sent: dict[tuple[uuid.UUID, int], tuple[_FetchState, int]] = {}
        by_topic: dict[uuid.UUID, list[FetchPartitionRequest]] = {}
        for s in ready:
            try:
                plog = self._log(s.topic, s.partition)
            except KafkaError:
                self._delay([s])  # no log (yet): the topic manager creates it with the image
                continue
            leo = plog.log_end_offset
            sent[(s.topic_id, s.partition)] = (s, leo)
            by_topic.setdefault(s.topic_id, []).append(
                FetchPartitionRequest(
                    partition=s.partition,
                    current_leader_epoch=s.leader_epoch,
                    fetch_offset=leo,
                    last_fetched_epoch=plog.leader_epoch,
                    log_start_offset=plog.log_start_offset,
                    partition_max_bytes=cfg.max_bytes,
                )
            )
        # No fetch session (session id 0, epoch -1): every request is a full one.
        request = ReplicaFetchRequest(
            replica_id=cfg.node_id,
            replica_epoch=self._broker_epoch(),
            max_wait_ms=cfg.wait_max_ms,
            min_bytes=cfg.min_bytes,
            max_bytes=cfg.response_max_bytes,
            topics=tuple((tid, tuple(parts)) for tid, parts in by_topic.items()),
        )
        return request, sent

    async def _fetch_once(self, ready: list[_FetchState]) -> None:
        request, sent = self._build(ready)
        if not sent:
            return
        timings = self._timings
        sent_ns = timings.now_ns() if timings is not None else 0
        try:
            response = await self._client.send(
                self.leader_id, request, decode_replica_fetch_response
            )
        except KafkaError as e:
            log.debug("%s: fetch failed: %s", self.name, e)
            self._delay(s for s, _ in sent.values())
            return
        if timings is not None:
            answered_ns = timings.now_ns()
            timings.replica_fetch_rtt.record(answered_ns - sent_ns)
        if response.error_code != ErrorCode.none:
            log.info("%s: fetch answered %s", self.name, _error_code(response.error_code).name)
            self._delay(s for s, _ in sent.values())
            return
        answered: set[tuple[uuid.UUID, int]] = set()
        served: list[_Key] = []  # partitions that got records: last in the next request
        for topic in response.responses:
            for data in topic.partitions:
                key = (topic.topic_id, data.partition_index)
                entry = sent.get(key)
                if entry is None:
                    continue
                answered.add(key)
                state, fetch_offset = entry
                if not self._current(state):
                    continue  # moved or stopped while the request was out
                if data.records:
                    served.append((state.topic, state.partition))
                await self._process(state, fetch_offset, data)
        move_to_end(self.partitions, served)
        # A partition the leader left out of its answer (it should not): retry it later.
        self._delay(s for k, (s, _) in sent.items() if k not in answered)
        if timings is not None:
            timings.replica_fetch_applied.record(timings.now_ns() - answered_ns)

    async def _process(self, state: _FetchState, fetch_offset: int, data: Any) -> None:
        code = _error_code(data.error_code)
        try:
            plog = self._log(state.topic, state.partition)
        except KafkaError:
            self._delay([state])
            return
        if plog.log_end_offset != fetch_offset:
            return  # the log changed under the request (truncated meanwhile): fetch again
        if code == ErrorCode.none:
            state.retry_ms = QUICK_RETRY_MS
            try:
                self._on_data(state, plog, data)
            except CorruptRecordError as e:
                log.warning("%s: %r from the leader: %s", self.name, state, e)
                self._delay([state])
            except KafkaError as e:
                log.warning("%s: cannot append %r: %s", self.name, state, e)
                self._delay([state])
        elif code == ErrorCode.offset_out_of_range:
            await self._on_out_of_range(state, plog, data)
        elif code == ErrorCode.fenced_leader_epoch:
            # The leader has a newer epoch than our image: wait until the image shows it (the
            # listener then re-adds the partition with that epoch).
            log.info("%s: %r fenced by the leader's newer epoch; waiting for metadata",
                     self.name, state)
            state.fenced = True
        elif code in _QUICK_RETRY_ERRORS:
            # Most likely the leader has not applied the change we fetch in yet.
            log.debug("%s: %r answered %s; retrying in %d ms", self.name, state, code.name,
                      min(state.retry_ms, self._config.backoff_ms))
            self._retry_soon(state)
        else:
            # Unknown topic, storage errors: retry after the backoff.
            log.debug("%s: %r answered %s", self.name, state, code.name)
            self._delay([state])

    def _on_data(self, state: _FetchState, plog: PartitionLog, data: Any) -> None:
        diverging = data.diverging_epoch
        if diverging.epoch != _NO_DIVERGENCE or diverging.end_offset != _NO_DIVERGENCE:
            self._truncate_diverging(state, plog, int(diverging.epoch), int(diverging.end_offset))
            return
        records = data.records
        if records:
            self._append(state, plog, records)
        leo = plog.log_end_offset
        high_watermark = min(int(data.high_watermark), leo)
        if high_watermark > plog.high_watermark:
            plog.update_high_watermark(high_watermark)
            if self._config.on_high_watermark is not None:
                self._config.on_high_watermark((state.topic, state.partition))
        leader_start = min(int(data.log_start_offset), plog.high_watermark)
        if leader_start > plog.log_start_offset:
            plog.delete_records_before(leader_start)

    def _append(
        self, state: _FetchState, plog: PartitionLog, records: bytes | memoryview
    ) -> None:
        try:
            plog.append_as_follower(records)
        except UnexpectedAppendOffsetError:
            # The leader's log start lies inside its first batch (DeleteRecords): an empty log
            # restarts at that batch's base offset, as Kafka's Partition does.
            first = read_batch_header(records)
            leo = plog.log_end_offset
            if leo == plog.log_start_offset and first.base_offset < leo <= first.last_offset:
                log.info("%s: %r restarts at %d, the base of the leader's first batch",
                         self.name, state, first.base_offset)
                plog.truncate_fully_and_start_at(first.base_offset)
                plog.append_as_follower(records)
            else:
                raise

    def _truncate_diverging(
        self, state: _FetchState, plog: PartitionLog, epoch: int, end_offset: int
    ) -> None:
        leo = plog.log_end_offset
        offset = truncation_offset(leo, epoch, end_offset, plog.end_offset_for_epoch(epoch))
        if offset < leo:
            log.info("%s: %r diverges from the leader at epoch %d (ends at %d there): "
                     "truncating %d..%d", self.name, state, epoch, end_offset, offset, leo)
            plog.truncate_to(offset)
        elif end_offset >= 0:
            # Nothing to cut and yet diverging: do not spin on it.
            self._delay([state])

    async def _on_out_of_range(self, state: _FetchState, plog: PartitionLog, data: Any) -> None:
        leo = plog.log_end_offset
        leader_start = int(data.log_start_offset)
        if 0 <= leo < leader_start:
            log.info("%s: %r is behind the leader's log start %d: restarting there",
                     self.name, state, leader_start)
            plog.truncate_fully_and_start_at(leader_start)
            return
        # Past the leader's end: ask where our latest epoch ends there.
        epoch = plog.leader_epoch
        if epoch < 0:
            self._delay([state])
            return
        request = ofle_req.OffsetForLeaderEpochRequest(
            replica_id=BrokerId(self._config.node_id),
            topics=(ofle_req.OffsetForLeaderTopic(
                topic=TopicName(state.topic),
                partitions=(ofle_req.OffsetForLeaderPartition(
                    partition=i32(state.partition),
                    current_leader_epoch=i32(state.leader_epoch),
                    leader_epoch=i32(epoch),
                ),),
            ),),
        )
        try:
            response = await self._client.send(self.leader_id, request)
        except KafkaError as e:
            log.debug("%s: OffsetForLeaderEpoch failed: %s", self.name, e)
            self._delay([state])
            return
        if not self._current(state) or plog.is_closed or plog.log_end_offset != leo:
            return
        answer = response.topics[0].partitions[0] if response.topics else None
        if answer is None or answer.error_code != ErrorCode.none:
            self._delay([state])
            return
        leader_epoch, leader_end = int(answer.leader_epoch), int(answer.end_offset)
        offset = truncation_offset(
            leo, leader_epoch, leader_end, plog.end_offset_for_epoch(leader_epoch)
        )
        if offset < leo:
            log.info("%s: %r is past the leader's end (epoch %d ends at %d there): "
                     "truncating %d..%d", self.name, state, leader_epoch, leader_end,
                     offset, leo)
            plog.truncate_to(offset)
        else:
            self._delay([state])


class ReplicaFetcherManager:
    """Which partitions this broker fetches, from whom; see the module docs. Owned by the
    broker's event loop; created by the broker and started once it is registered (its requests
    carry the broker epoch)."""

    def __init__(
        self,
        config: FetcherConfig,
        image: MetadataImage,
        partition_log: Callable[[str, int], PartitionLog],
        broker_epoch: Callable[[], int],
        timings: RequestTimings | None = None,
    ) -> None:
        self._config = config
        self._node = config.node_id
        self._timings = timings
        self._image = image
        self._log = partition_log
        self._broker_epoch = broker_epoch
        self._fetchers: dict[tuple[int, int], ReplicaFetcher] = {}
        self._assigned: dict[_Key, tuple[int, int]] = {}  # partition -> its fetcher's key
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Fetch every partition the image says this broker follows, and follow the image."""
        self._started = True
        self._image.add_topics_listener(self.on_topics_changed)
        self._image.add_brokers_listener(self.on_brokers_changed)
        for info in self._image.topics():
            self._reconcile_topic(info)

    async def stop(self) -> None:
        self._started = False
        fetchers = list(self._fetchers.values())
        self._fetchers.clear()
        self._assigned.clear()
        for fetcher in fetchers:
            await fetcher.close()
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- what the image says ----------------------------------------------------------------------

    def following(self) -> dict[_Key, int]:
        """The partitions being fetched and the leader each is fetched from."""
        return {key: fkey[0] for key, fkey in self._assigned.items()}

    def fetch_state(self, topic: str, partition: int) -> tuple[int, int, bool] | None:
        """(leader, leader epoch, fenced) of a partition being fetched; None when it is not."""
        fkey = self._assigned.get((topic, partition))
        if fkey is None:
            return None
        s = self._fetchers[fkey].partitions[(topic, partition)]
        return fkey[0], s.leader_epoch, s.fenced

    def on_topics_changed(self, change: TopicsChange) -> None:
        if not self._started:
            return
        for info in change.removed:
            for p in range(len(info.partitions)):
                self._stop_fetching((info.name, p), "topic deleted")
        for old, new in change.changed:
            if old.topic_id != new.topic_id or len(old.partitions) > len(new.partitions):
                for p in range(len(old.partitions)):
                    if old.topic_id != new.topic_id or p >= len(new.partitions):
                        self._stop_fetching((old.name, p), "topic replaced")
            self._reconcile_topic(new, old)
        for info in change.added:
            self._reconcile_topic(info)

    def on_brokers_changed(self) -> None:
        """A leader registered or gone: partitions led by it start or stop being fetched."""
        if not self._started:
            return
        for info in self._image.topics():
            self._reconcile_topic(info)

    def _reconcile_topic(self, info: TopicInfo, old: TopicInfo | None = None) -> None:
        node = self._node
        for p, state in enumerate(info.partitions):
            if old is not None and p < len(old.partitions) and old.partitions[p] is state \
                    and old.topic_id == info.topic_id:
                continue  # unchanged value: nothing to do (states are shared, identity holds)
            key = (info.name, p)
            if node not in state.replicas:
                self._stop_fetching(key, "not a replica")
            elif state.leader == node:
                self._stop_fetching(key, "leader")
            elif state.leader == NO_LEADER or self._image.broker(state.leader) is None:
                self._stop_fetching(key, "no live leader")
            else:
                self._fetch(info, p, state.leader, state.leader_epoch)

    def _fetch(self, info: TopicInfo, partition: int, leader: int, epoch: int) -> None:
        key = (info.name, partition)
        fkey = (leader, fetcher_id(info.name, partition, self._config.num_fetchers))
        current = self._assigned.get(key)
        if current == fkey:
            s = self._fetchers[fkey].partitions[key]
            if s.leader_epoch == epoch and s.topic_id == info.topic_id:
                return
        if current is not None:
            self._remove(key, current)
        fetcher = self._fetchers.get(fkey)
        if fetcher is None:
            fetcher = self._fetchers[fkey] = ReplicaFetcher(
                leader, fkey[1], self._config, self._image, self._log, self._broker_epoch,
                self._timings,
            )
        fetcher.add(_FetchState(info.name, partition, info.topic_id, epoch))
        self._assigned[key] = fkey
        log.info("broker %d follows %s-%d: fetching from broker %d in leader epoch %d",
                 self._node, info.name, partition, leader, epoch)

    def _stop_fetching(self, key: _Key, why: str) -> None:
        fkey = self._assigned.get(key)
        if fkey is not None:
            self._remove(key, fkey)
            log.info("broker %d stops fetching %s-%d from broker %d (%s)",
                     self._node, key[0], key[1], fkey[0], why)

    def _remove(self, key: _Key, fkey: tuple[int, int]) -> None:
        del self._assigned[key]
        fetcher = self._fetchers[fkey]
        fetcher.remove(key)
        if not fetcher.partitions:
            # An idle fetcher goes (Kafka's shutdownIdleFetcherThreads) with its connection.
            del self._fetchers[fkey]
            task = asyncio.get_running_loop().create_task(fetcher.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
