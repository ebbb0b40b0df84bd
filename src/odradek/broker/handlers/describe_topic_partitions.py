"""DescribeTopicPartitions (key 75, KIP-966): topics and their partitions, a page at a time.

What the Java admin client (3.8+) and kafka-python's ``describe_topic_partitions`` use to
describe topics. Answered from the broker's :class:`~odradek.cluster.model.MetadataView` as
Kafka answers it:

- The named topics, or every topic when none is named, in name order, from the request's cursor
  (its topic, from its partition index) on. A cursor naming a topic that the request does not
  name, or a negative partition index, is INVALID_REQUEST.
- At most ``ResponsePartitionLimit`` partitions (capped at Kafka's
  ``max.request.partition.size.limit``, 2000; at least 1) in a response. A topic cut short sets
  ``NextCursor`` to its first partition not sent; a limit reached at the end of a topic sets it
  to the next topic's partition 0 (which may not exist).
- A named topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION for an
  illegal name) and takes no part of the limit.
- Partitions carry leader (-1 when it is not a live broker, with no error, as Kafka), leader
  epoch, replicas, ISR and offline replicas; ``EligibleLeaderReplicas`` and ``LastKnownElr`` are
  empty (no ELR without KIP-966's controller side).
- There is no authorizer: every topic's authorized operations are all a topic allows.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.handlers._common import NOT_REQUESTED, TOPIC_OPERATIONS
from odradek.broker.topics import validate_topic_name
from odradek.cluster.model import NO_LEADER, PartitionState, TopicInfo
from odradek.errors import ErrorCode, InvalidRequestError, InvalidTopicError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request
from odradek.topic_names import is_internal

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API", "MAX_PARTITIONS_PER_RESPONSE"]

KEY = 75
_ZERO = datetime.timedelta(0)
_ZERO_UUID = uuid.UUID(int=0)
#: Kafka's ``max.request.partition.size.limit`` default: the most partitions one response holds.
MAX_PARTITIONS_PER_RESPONSE = 2000


def _partition(mod: Any, index: int, state: PartitionState, live: frozenset[int]) -> Any:
    leader = state.leader if state.leader != NO_LEADER and state.leader in live else NO_LEADER
    return build(
        mod.DescribeTopicPartitionsResponsePartition,
        error_code=ErrorCode.none,
        partition_index=index,
        leader_id=leader,
        leader_epoch=state.leader_epoch,
        replica_nodes=state.replicas,
        isr_nodes=state.isr,
        eligible_leader_replicas=(),
        last_known_elr=(),
        offline_replicas=tuple(r for r in state.replicas if r not in live),
    )


def _topic(mod: Any, name: str, code: ErrorCode, topic_id: uuid.UUID = _ZERO_UUID,
           partitions: tuple[Any, ...] = (), operations: int = NOT_REQUESTED,
           internal: bool | None = None) -> Any:
    return build(
        mod.DescribeTopicPartitionsResponseTopic,
        error_code=code,
        name=name,
        topic_id=topic_id,
        is_internal=is_internal(name) if internal is None else internal,
        partitions=partitions,
        topic_authorized_operations=operations,
    )


def _missing(mod: Any, name: str) -> Any:
    try:
        validate_topic_name(name)
    except InvalidTopicError:
        return _topic(mod, name, ErrorCode.invalid_topic_exception)
    return _topic(mod, name, ErrorCode.unknown_topic_or_partition)


def _names(broker: BrokerServices, body: Any) -> tuple[list[str], bool]:
    """The topic names to describe from the cursor on, in order, and whether they are all."""
    cursor = body.cursor
    start = cursor.topic_name if cursor is not None else ""
    if body.topics:
        names = sorted({t.name for t in body.topics if t.name >= start})
        if cursor is not None and cursor.topic_name not in names:
            raise InvalidRequestError(
                f"the topics requested do not include the cursor's topic {cursor.topic_name!r}"
            )
        every = False
    else:
        names = [info.name for info in broker.cluster.topics() if info.name >= start]
        names.sort()
        every = True
    if cursor is not None and cursor.partition_index < 0:
        raise InvalidRequestError(f"the cursor's partition index {cursor.partition_index} < 0")
    return names, every


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    names, every = _names(broker, body)
    view = broker.cluster
    live = frozenset(b.info.node_id for b in view.live_brokers())
    cursor = body.cursor
    remaining = max(min(body.response_partition_limit, MAX_PARTITIONS_PER_RESPONSE), 1)
    topics: list[Any] = []
    next_cursor = None
    for name in names:
        if remaining == 0:
            # The page ended with the previous topic: the next one starts the next page.
            next_cursor = build(mod.Cursor, topic_name=name, partition_index=0)
            break
        info = view.topic(name)
        if info is None:
            if not every:
                topics.append(_missing(mod, name))
            continue
        first = cursor.partition_index if cursor is not None and name == cursor.topic_name else 0
        end = min(len(info.partitions), first + remaining)
        topics.append(_topic(
            mod, name, ErrorCode.none, info.topic_id,
            _partitions(mod, info, range(first, end), live), TOPIC_OPERATIONS,
        ))
        if end < len(info.partitions):
            next_cursor = build(mod.Cursor, topic_name=name, partition_index=end)
            break
        remaining -= max(end - first, 0)
    return build(
        mod.DescribeTopicPartitionsResponse,
        throttle_time=_ZERO,
        topics=tuple(topics),
        next_cursor=next_cursor,
    )


def _partitions(mod: Any, info: TopicInfo, indexes: Iterable[int], live: frozenset[int]) -> tuple[Any, ...]:
    return tuple(_partition(mod, i, info.partitions[i], live) for i in indexes)


def error_response(request: Request, code: ErrorCode) -> Any:
    """Every requested topic with the error (the response has no error of its own)."""
    mod = response_module(KEY, request.api_version)
    return build(
        mod.DescribeTopicPartitionsResponse,
        throttle_time=_ZERO,
        topics=tuple(_topic(mod, t.name, code, internal=False) for t in request.body.topics),
    )


API = ApiHandler(
    api_key=KEY,
    name="DescribeTopicPartitions",
    min_version=0,
    max_version=0,
    handle=handle,
    error_response=error_response,
)
