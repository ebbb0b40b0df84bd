"""ListPartitionReassignments (key 46, KIP-455): the reassignments in progress, from the
broker's view of the cluster: each partition's replica set (target and replicas being removed)
and the replicas being added and removed.

As Kafka: null topics lists every reassignment in progress; named topics and partitions that do
not exist, or are not being reassigned, are left out of the answer (no error).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.cluster.model import PartitionState
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 46
_ZERO = datetime.timedelta(0)


def _ongoing(
    broker: BrokerServices, name: str, partitions: Iterable[int] | None
) -> list[tuple[int, PartitionState]]:
    info = broker.cluster.topic(name)
    if info is None:
        return []
    numbers = range(len(info.partitions)) if partitions is None else partitions
    found = []
    for p in numbers:
        if 0 <= p < len(info.partitions) and info.partitions[p].reassigning:
            found.append((p, info.partitions[p]))
    return found


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    wanted: list[tuple[str, list[int] | None]]
    if request.body.topics is None:
        wanted = [(info.name, None) for info in broker.cluster.topics()]
    else:
        wanted = [(t.name, [int(p) for p in t.partition_indexes]) for t in request.body.topics]
    topics = []
    for name, partitions in wanted:
        ongoing = _ongoing(broker, name, partitions)
        if ongoing:
            topics.append(build(
                mod.OngoingTopicReassignment,
                name=name,
                partitions=tuple(
                    build(mod.OngoingPartitionReassignment, partition_index=p,
                          replicas=s.replicas, adding_replicas=s.adding_replicas,
                          removing_replicas=s.removing_replicas)
                    for p, s in ongoing
                ),
            ))
    return build(mod.ListPartitionReassignmentsResponse, throttle_time=_ZERO,
                 error_code=ErrorCode.none, error_message=None, topics=tuple(topics))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(mod.ListPartitionReassignmentsResponse, throttle_time=_ZERO, error_code=code,
                 error_message=None, topics=())


API = ApiHandler(
    api_key=KEY,
    name="ListPartitionReassignments",
    min_version=0,
    max_version=0,
    handle=handle,
    error_response=error_response,
)
