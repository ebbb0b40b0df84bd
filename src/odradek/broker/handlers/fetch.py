"""Fetch (key 1): read record batches, long-polling until ``min_bytes`` arrive or ``max_wait``.

Record bytes go out as stored in the segment files, and mostly straight from them: a response
holds at most :data:`INLINE_RECORD_BYTES` of records read into memory (small reads, which keep
the tail-consuming path to one ``pread`` per partition); larger reads are
:class:`~odradek.storage.file_records.FileRecords` slices that the connection sends with
``sendfile`` (see ``encode`` and :mod:`odradek.protocol.fetch_response`). The response's records
total at most ``min(request max_bytes, fetch.max.bytes)``, except that the first batch found
goes out whole, as in Kafka, so a consumer always progresses. Incremental fetch sessions
(KIP-227) are not kept: every response carries session id 0, which tells clients to send full
fetch requests, and a request naming a session gets FETCH_SESSION_ID_NOT_FOUND so the client
starts over.
``read_committed`` fetches stop at the last stable offset and list the aborted transactions
that overlap the returned batches, so clients drop their records.

The leader serves a partition; from v11 a follower serves consumers too, up to its own high
watermark (KIP-392), and with ``replica.selector.class`` set the leader answers a consumer that
names its rack (``rack_id``, librdkafka's ``client.rack``) with ``preferred_read_replica``, a
replica in that rack, and no records. Any other broker answers NOT_LEADER_OR_FOLLOWER, and a
client's stale or future leader epoch is FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH (KIP-320).
From v16, NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH name the current leader and its epoch,
and the response lists its endpoint (KIP-951).

A *replica* fetch (``replica_id`` >= 0 before v15, ``replica_state.replica_id`` with the
follower's broker epoch from v15, KIP-903) is a follower's: it reads up to the log end offset,
may be answered with a diverging epoch instead of records (KIP-279, v12+), and records the
follower's position, which may move the high watermark
(:meth:`~odradek.broker.replica_manager.ReplicaManager.fetch_for_follower`). It long-polls on
the replica manager's wake-ups (appends at once, high watermark moves a moment later) and
returns as soon as the high watermark of one of its partitions moved, so followers learn it
without waiting for the next append.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import leader_hint
from odradek.errors import (
    ErrorCode,
    FetchSessionIdNotFoundError,
    NotLeaderOrFollowerError,
    OffsetNotAvailableError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.fetch_response import ResponseParts, encode_fetch_response
from odradek.protocol.messages import Request
from odradek.storage.file_records import FileRecords
from odradek.storage.log import (
    FetchDataInfo,
    FetchIsolation,
    FetchOffsetOutOfRangeError,
    PartitionLog,
)

if TYPE_CHECKING:
    from odradek.broker.delayed import AppendWatch
    from odradek.broker.services import BrokerServices

__all__ = ["API", "INLINE_RECORD_BYTES"]

KEY = 1
#: FetchRequest.isolation_level: 0 read_uncommitted, 1 read_committed (only up to the last
#: stable offset, with the aborted transactions of the returned range).
READ_COMMITTED = 1
_ZERO = datetime.timedelta(0)
ZERO_UUID = uuid.UUID(int=0)
#: The first version a consumer may send to a follower, with its rack (KIP-392).
_FIRST_FOLLOWER_FETCH = 11
#: The first version whose errors name the current leader (KIP-951).
_FIRST_LEADER_HINT = 16
_LEADER_HINT_ERRORS = (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch)
#: Record bytes one response may read into memory; reads beyond it are sent from the files.
#: Small enough that a few thousand concurrent fetches cost little, large enough that a consumer
#: at the tail (a few small batches per partition) never needs a file descriptor or sendfile.
INLINE_RECORD_BYTES = 64 * 1024


@dataclass(slots=True)
class _Partition:
    topic: str
    topic_id: uuid.UUID | None
    index: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int
    last_fetched_epoch: int
    log_start_offset: int


@dataclass(slots=True)
class _Read:
    bytes_read: int
    has_error: bool
    body: Any
    regions: list[FileRecords]
    #: A replica fetch's high watermarks, in request order (empty for consumers).
    high_watermarks: list[int]

    def release(self) -> None:
        """Close the file slices of a read that will not be sent."""
        for r in self.regions:
            r.close()


def _requested(broker: BrokerServices, request: Request) -> list[tuple[Any, list[_Partition | Any]]]:
    """Resolve topic names/ids; an unresolvable topic id keeps the raw partition for an error."""
    out: list[tuple[Any, list[_Partition | Any]]] = []
    for t in request.body.topics:
        topic_id = getattr(t, "topic_id", None)
        name = getattr(t, "topic", None)
        if name is None and topic_id is not None:
            info = broker.cluster.topic_by_id(topic_id)
            name = info.name if info is not None else None
        parts: list[_Partition | Any] = []
        for p in t.partitions:
            if name is None:
                parts.append(p)
                continue
            parts.append(
                _Partition(
                    topic=name,
                    topic_id=topic_id,
                    index=p.partition,
                    fetch_offset=p.fetch_offset,
                    max_bytes=p.partition_max_bytes,
                    current_leader_epoch=getattr(p, "current_leader_epoch", -1),
                    last_fetched_epoch=getattr(p, "last_fetched_epoch", -1),
                    log_start_offset=getattr(p, "log_start_offset", -1),
                )
            )
        out.append((t, parts))
    return out


class _LeaderIdAndEpoch(NamedTuple):
    leader_id: int = -1
    leader_epoch: int = -1


class _EpochEndOffset(NamedTuple):
    epoch: int = -1
    end_offset: int = -1


class _SnapshotId(NamedTuple):
    end_offset: int = -1
    epoch: int = -1


_NO_LEADER = _LeaderIdAndEpoch()
_NO_EPOCH = _EpochEndOffset()
_NO_SNAPSHOT = _SnapshotId()


class _PartitionData(NamedTuple):
    """A partition's answer with the field names of kio's ``PartitionData`` of every version:
    what :func:`~odradek.protocol.fetch_response.encode_fetch_response` reads, which writes
    those of the request's version. Plain tuples: building kio's frozen structs (through
    :func:`build`) cost a fifth of answering a one-partition fetch."""

    partition_index: int
    error_code: ErrorCode
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    aborted_transactions: tuple[Any, ...] | None
    preferred_read_replica: int
    records: bytes | FileRecords
    current_leader: Any = _NO_LEADER
    diverging_epoch: Any = _NO_EPOCH
    snapshot_id: Any = _NO_SNAPSHOT


class _TopicData(NamedTuple):
    topic: str | None
    topic_id: uuid.UUID | None
    partitions: tuple[_PartitionData, ...]


class _FetchResponse(NamedTuple):
    throttle_time: datetime.timedelta
    error_code: ErrorCode
    session_id: int
    responses: tuple[_TopicData, ...]
    node_endpoints: tuple[Any, ...]


def _partition_body(
    index: int,
    code: ErrorCode,
    high_watermark: int = -1,
    log_start_offset: int = -1,
    records: bytes | FileRecords = b"",
    last_stable_offset: int = -1,
    aborted: tuple[Any, ...] | None = None,
    current_leader: Any = None,
    diverging: tuple[int, int] | None = None,
    preferred_read_replica: int = -1,
) -> _PartitionData:
    return _PartitionData(
        index, code, high_watermark, last_stable_offset, log_start_offset, aborted,
        preferred_read_replica, records,
        _NO_LEADER if current_leader is None else current_leader,
        _NO_EPOCH if diverging is None else _EpochEndOffset(*diverging),
    )


def _aborted(mod: Any, info: FetchDataInfo) -> tuple[Any, ...] | None:
    if info.aborted_transactions is None:
        return None
    return tuple(
        build(mod.AbortedTransaction, producer_id=a.producer_id, first_offset=a.first_offset)
        for a in info.aborted_transactions
    )


def _read_log(
    log: PartitionLog,
    p: _Partition,
    on_follower: bool,
    *,
    max_bytes: int,
    isolation: FetchIsolation,
    min_one_message: bool,
    max_inline_bytes: int,
) -> FetchDataInfo:
    """A consumer's read of ``log``, on its leader or (KIP-392) on a follower, which serves up
    to its own high watermark: an offset it holds but has not seen replicated yet is
    OFFSET_NOT_AVAILABLE (retriable: it lags the leader), one past its log end
    OFFSET_OUT_OF_RANGE for a client that gave its leader epoch (it asks the leader next) and
    an empty answer for one that did not (its metadata may be stale), as Kafka answers."""
    if on_follower:
        offset = p.fetch_offset
        if log.high_watermark < offset <= log.log_end_offset:
            raise OffsetNotAvailableError(
                f"{p.topic}-{p.index}: offset {offset} is past this follower's high watermark "
                f"{log.high_watermark}"
            )
        if offset > log.log_end_offset and p.current_leader_epoch < 0:
            return FetchDataInfo(b"", offset, log.high_watermark, log.log_start_offset,
                                 log.log_end_offset, log.last_stable_offset)
    return log.fetch(
        p.fetch_offset,
        max_bytes=max_bytes,
        isolation=isolation,
        min_one_message=min_one_message,
        max_inline_bytes=max_inline_bytes,
    )


def _replica(request: Request) -> tuple[int, int] | None:
    """A replica fetch's (replica id, broker epoch); None for a consumer's fetch."""
    body = request.body
    if request.api_version >= 15:
        state = body.replica_state
        replica_id, epoch = state.replica_id, state.replica_epoch
    else:
        replica_id, epoch = body.replica_id, -1
    return (replica_id, epoch) if replica_id >= 0 else None


def _read(
    broker: BrokerServices,
    request: Request,
    topics: list[tuple[Any, list[Any]]],
    replica: tuple[int, int] | None,
) -> _Read:
    mod = response_module(KEY, request.api_version)
    isolation = (
        FetchIsolation.TXN_COMMITTED
        if getattr(request.body, "isolation_level", 0) == READ_COMMITTED
        else FetchIsolation.HIGH_WATERMARK
    )
    high_watermarks: list[int] = []
    remaining = min(request.body.max_bytes, broker.config.fetch_max_bytes)
    inline_left = INLINE_RECORD_BYTES
    total = 0
    has_error = False
    regions: list[FileRecords] = []
    responses = []
    endpoints: dict[int, Any] = {}  # KIP-951: the leaders named in errors
    replicas = broker.replicas
    client_rack = (
        getattr(request.body, "rack_id", "") or ""
        if broker.config.replica_selector_class is not None else ""
    )
    for t, parts in topics:
        out = []
        for p in parts:
            if not isinstance(p, _Partition):
                out.append(_partition_body(p.partition, ErrorCode.unknown_topic_id))
                has_error = True
                continue
            diverging = None
            try:
                if replica is None:
                    follower = (
                        replicas.follower_log(p.topic, p.index, p.current_leader_epoch)
                        if request.api_version >= _FIRST_FOLLOWER_FETCH else None
                    )
                    if follower is not None:
                        log = follower
                    else:
                        log = replicas.leader_log(p.topic, p.index, p.current_leader_epoch)
                        preferred = (
                            replicas.preferred_read_replica(
                                p.topic, p.index, p.fetch_offset, client_rack
                            ) if client_rack else -1
                        )
                        if preferred >= 0:
                            # KIP-392: no records, the replica to read from instead.
                            out.append(_partition_body(
                                p.index, ErrorCode.none, log.high_watermark,
                                log.log_start_offset, b"", log.last_stable_offset,
                                preferred_read_replica=preferred,
                            ))
                            has_error = True  # answer at once
                            continue
                    info = _read_log(
                        log, p, follower is not None,
                        max_bytes=max(0, min(p.max_bytes, remaining)),
                        isolation=isolation,
                        min_one_message=total == 0,
                        max_inline_bytes=inline_left,
                    )
                else:
                    served = replicas.fetch_for_follower(
                        replica[0], replica[1], p.topic, p.index,
                        current_leader_epoch=p.current_leader_epoch,
                        fetch_offset=p.fetch_offset,
                        last_fetched_epoch=p.last_fetched_epoch,
                        log_start_offset=p.log_start_offset,
                        max_bytes=max(0, min(p.max_bytes, remaining)),
                        min_one_message=total == 0,
                        max_inline_bytes=inline_left,
                    )
                    info, diverging = served.data, served.diverging_epoch
                    high_watermarks.append(info.high_watermark)
                    if diverging is not None:
                        has_error = True  # answer at once: the follower must truncate
            except Exception as e:
                if isinstance(e, UnknownTopicOrPartitionError) and p.topic_id is not None:
                    e = UnknownTopicIdError()
                if (
                    isinstance(e, FetchOffsetOutOfRangeError) and replica is None
                    and p.fetch_offset >= e.log_start_offset and broker.fenced
                ):
                    # Past the end of the log of a broker whose session may have expired: a
                    # leader elected meanwhile may hold that offset. OFFSET_OUT_OF_RANGE would
                    # send the consumer back to its reset policy (offset 0 after a commit far
                    # beyond, seen in the fault runs); this one makes it ask for metadata again.
                    e = NotLeaderOrFollowerError(
                        f"{p.topic}-{p.index}: this broker's cluster session may have expired"
                    )
                code = error_code_for(e, context=f"fetch from {p.topic}-{p.index}")
                has_error = True
                # As Kafka: the offsets to reset from with OFFSET_OUT_OF_RANGE, else unknown.
                if isinstance(e, FetchOffsetOutOfRangeError):
                    out.append(_partition_body(
                        p.index, code, e.high_watermark, e.log_start_offset
                    ))
                elif code in _LEADER_HINT_ERRORS and request.api_version >= _FIRST_LEADER_HINT:
                    leader = leader_hint(broker.cluster, mod, p.topic, p.index, endpoints)
                    out.append(_partition_body(p.index, code, current_leader=leader))
                else:
                    out.append(_partition_body(p.index, code))
                continue
            n = len(info.records)
            if isinstance(info.records, FileRecords):
                regions.append(info.records)
            else:
                inline_left -= n
            total += n
            remaining -= n
            out.append(
                _partition_body(
                    p.index,
                    ErrorCode.none,
                    info.high_watermark,
                    info.log_start_offset,
                    info.records,
                    info.last_stable_offset,
                    _aborted(mod, info),
                    diverging=diverging,
                )
            )
        responses.append(
            _TopicData(getattr(t, "topic", None), getattr(t, "topic_id", None), tuple(out))
        )
    body = _FetchResponse(
        _ZERO, ErrorCode.none, 0, tuple(responses), tuple(endpoints.values())
    )
    return _Read(total, has_error, body, regions, high_watermarks)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    if request.api_version >= 7 and body.session_id != 0:
        raise FetchSessionIdNotFoundError(f"fetch session {body.session_id} is not known")
    topics = _requested(broker, request)
    replica = _replica(request)
    first = _read(broker, request, topics, replica)
    wait_ms = body.max_wait.total_seconds() * 1000
    if first.bytes_read >= body.min_bytes or first.has_error or wait_ms <= 0 or not topics:
        return first.body
    first.release()
    tps = [(p.topic, p.index) for _, parts in topics for p in parts if isinstance(p, _Partition)]
    # Consumers wait for the high watermark to move; followers for appends (and for the high
    # watermark, which they must learn).
    watcher = broker.append_watch if replica is None else broker.replicas.replica_watch
    # Watch now, in the same step as the read: an append that lands before the coroutine
    # first runs must still wake it.
    watch = watcher.watch(tps)
    return _long_poll(broker, request, topics, replica, first.high_watermarks, watcher, tps,
                      watch, wait_ms / 1000)


async def _long_poll(
    broker: BrokerServices,
    request: Request,
    topics: list[tuple[Any, list[Any]]],
    replica: tuple[int, int] | None,
    high_watermarks: list[int],
    watcher: AppendWatch,
    tps: list[tuple[str, int]],
    first_watch: asyncio.Future[int],
    timeout: float,
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    fut: asyncio.Future[int] | None = first_watch
    while True:
        remaining = deadline - loop.time()
        if remaining > 0:
            if fut is None:
                fut = watcher.watch(tps)
            try:
                broker.timings.fetch_woken_by(await asyncio.wait_for(fut, remaining))
            except TimeoutError:
                pass
            finally:
                watcher.unwatch(tps, fut)
        elif fut is not None:
            watcher.unwatch(tps, fut)
        fut = None
        result = _read(broker, request, topics, replica)
        if result.bytes_read >= request.body.min_bytes or result.has_error:
            return result.body
        if result.high_watermarks != high_watermarks:
            return result.body
        if loop.time() >= deadline:
            return result.body
        result.release()


def encode(request: Request, body: Any) -> bytes | ResponseParts:
    """The response as one frame, or as parts when records are to be sent from the files (the
    connection then owns and closes the slices)."""
    try:
        parts = encode_fetch_response(request.correlation_id, request.api_version, body)
    except BaseException:
        for t in body.responses:
            for p in t.partitions:
                if isinstance(p.records, FileRecords):
                    p.records.close()
        raise
    if len(parts.parts) == 1:
        head = parts.parts[0]
        assert isinstance(head, bytes)
        return head
    return parts


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    responses = tuple(
        build(
            mod.FetchableTopicResponse,
            topic=getattr(t, "topic", None),
            topic_id=getattr(t, "topic_id", None),
            partitions=tuple(
                build(mod.PartitionData, partition_index=p.partition, error_code=code,
                      high_watermark=-1, last_stable_offset=-1, log_start_offset=-1,
                      aborted_transactions=None, preferred_read_replica=-1, records=b"")
                for p in t.partitions
            ),
        )
        for t in request.body.topics
    )
    top = code if code == ErrorCode.fetch_session_id_not_found else ErrorCode.none
    if top != ErrorCode.none:
        responses = ()
    return build(
        mod.FetchResponse, throttle_time=_ZERO, error_code=top, session_id=0, responses=responses
    )


API = ApiHandler(
    api_key=KEY,
    name="Fetch",
    min_version=4,
    max_version=16,
    handle=handle,
    error_response=error_response,
    encode=encode,
)
