"""CreatePartitions (key 37): grow topics; partitions are never removed.

As Kafka's controller: an unknown topic is UNKNOWN_TOPIC_OR_PARTITION; a count that is not an
increase is INVALID_PARTITIONS; explicit assignments must cover exactly the new partitions, each
with as many replicas as the topic has (one) on registered brokers (only this one), else
INVALID_REPLICA_ASSIGNMENT; a topic named twice is INVALID_REQUEST (one result for it).
``validate_only`` checks everything and changes nothing; ``timeout_ms`` bounds the request
(REQUEST_TIMED_OUT past it).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._admin_deadline import AdminDeadline
from odradek.errors import (
    ErrorCode,
    InvalidReplicaAssignmentError,
    KafkaError,
    UnknownTopicOrPartitionError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 37
_ZERO = datetime.timedelta(0)
#: Every partition here has exactly one replica, on this broker.
REPLICATION_FACTOR = 1


def _check_assignments(broker: BrokerServices, additional: int, assignments: Sequence[Any]) -> None:
    if len(assignments) != additional:
        raise InvalidReplicaAssignmentError(
            f"Attempted to add {additional} additional partition(s), but only "
            f"{len(assignments)} assignment(s) were specified."
        )
    for a in assignments:
        replicas = sorted(a.broker_ids or ())
        if not replicas:
            raise InvalidReplicaAssignmentError(
                "The manual partition assignment includes an empty replica list."
            )
        previous = None
        for broker_id in replicas:
            if broker_id != broker.node_id:
                raise InvalidReplicaAssignmentError(
                    f"The manual partition assignment includes broker {broker_id}, but no such "
                    f"broker is registered (the only broker is {broker.node_id})."
                )
            if broker_id == previous:
                raise InvalidReplicaAssignmentError(
                    f"The manual partition assignment includes the broker {broker_id} more "
                    "than once."
                )
            previous = broker_id
        if len(replicas) != REPLICATION_FACTOR:
            raise InvalidReplicaAssignmentError(
                f"The manual partition assignment includes a partition with {len(replicas)} "
                f"replica(s), but this is not consistent with previous partitions, which have "
                f"{REPLICATION_FACTOR} replica(s)."
            )


async def _grow(broker: BrokerServices, topic: Any, validate_only: bool) -> None:
    meta = broker.topics.topic(topic.name)
    if meta is None:
        raise UnknownTopicOrPartitionError(f"topic {topic.name!r} does not exist")
    if topic.assignments is not None and topic.count > meta.partitions:
        _check_assignments(broker, topic.count - meta.partitions, topic.assignments)
    assignments = None
    if topic.assignments is not None and topic.count > meta.partitions:
        assignments = [list(a.broker_ids or ()) for a in topic.assignments]
    await broker.topics.create_partitions(
        topic.name, topic.count, validate_only=validate_only, assignments=assignments
    )


def _result(mod: Any, name: str, code: ErrorCode, message: str | None = None) -> Any:
    return build(mod.CreatePartitionsTopicResult, name=name, error_code=code, error_message=message)


async def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    names = [t.name for t in body.topics]
    results = []
    reported: set[str] = set()
    deadline = AdminDeadline(body.timeout)
    for t in body.topics:
        if names.count(t.name) > 1:
            if t.name not in reported:
                reported.add(t.name)
                results.append(_result(mod, t.name, ErrorCode.invalid_request,
                                       "Duplicate topic name."))
            continue
        try:
            async with deadline.bound(f"adding partitions to {t.name!r}"):
                await _grow(broker, t, body.validate_only)
        except Exception as e:
            code = error_code_for(e, context=f"create partitions of {t.name}")
            results.append(_result(mod, t.name, code, e.message if isinstance(e, KafkaError)
                                   else None))
        else:
            results.append(_result(mod, t.name, ErrorCode.none))
    return build(mod.CreatePartitionsResponse, throttle_time=_ZERO, results=tuple(results))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    results = tuple(_result(mod, t.name, code) for t in request.body.topics)
    return build(mod.CreatePartitionsResponse, throttle_time=_ZERO, results=results)


API = ApiHandler(
    api_key=KEY,
    name="CreatePartitions",
    min_version=0,
    max_version=3,
    handle=handle,
    error_response=error_response,
)
