"""ConsumerGroupDescribe (key 69): epochs, assignor and members of KIP-848 consumer groups.

Each member is shown with its current and its target assignment; topics that no longer exist
are left out of both, as Kafka does. An empty group id is INVALID_GROUP_ID; an unknown id, or
one held by a classic group, is GROUP_ID_NOT_FOUND. Version 1 adds the member type (KIP-1099),
always "consumer" here. There is no authorizer: when asked, the authorized operations are every
operation Kafka defines on a group.
"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_of
from odradek.broker.handlers._common import GROUP_OPERATIONS, NOT_REQUESTED
from odradek.coordinator.group.consumer import ConsumerGroup, ConsumerGroups
from odradek.errors import ErrorCode, InvalidGroupIdError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 69
_ZERO = datetime.timedelta(0)
_CONSUMER_MEMBER_TYPE = 1  # -1 unknown, 0 classic, 1 consumer


def _error_group(mod: Any, group_id: str, code: ErrorCode, message: str | None) -> Any:
    return build(
        mod.DescribedGroup,
        error_code=code,
        error_message=message,
        group_id=group_id,
        group_state="",
        group_epoch=0,
        assignment_epoch=0,
        assignor_name="",
        members=(),
        authorized_operations=NOT_REQUESTED,
    )


def _assignment(
    mod: Any, broker: BrokerServices, assignment: Mapping[uuid.UUID, frozenset[int]]
) -> Any:
    topics = []
    for topic_id in sorted(assignment):
        info = broker.group_coordinator.topic_by_id(topic_id)
        if info is None:
            continue
        topics.append(
            build(
                mod.TopicPartitions,
                topic_id=topic_id,
                topic_name=info.name,
                partitions=tuple(sorted(assignment[topic_id])),
            )
        )
    return build(mod.Assignment, topic_partitions=tuple(topics))


def _described(
    mod: Any, broker: BrokerServices, consumer: ConsumerGroups, group: ConsumerGroup, operations: int
) -> Any:
    members = tuple(
        build(
            mod.Member,
            member_id=m.member_id,
            instance_id=m.instance_id,
            rack_id=m.rack_id,
            member_epoch=m.member_epoch,
            client_id=m.client_id,
            client_host=m.client_host,
            subscribed_topic_names=m.subscribed_topic_names,
            subscribed_topic_regex=m.subscribed_topic_regex,
            assignment=_assignment(mod, broker, m.assigned_partitions),
            target_assignment=_assignment(
                mod, broker, group.target_assignment.get(m.member_id, {})
            ),
            member_type=_CONSUMER_MEMBER_TYPE,
        )
        for m in sorted(group.members.values(), key=lambda m: m.member_id)
    )
    return build(
        mod.DescribedGroup,
        error_code=ErrorCode.none,
        error_message=None,
        group_id=group.group_id,
        group_state=group.state,
        group_epoch=group.group_epoch,
        assignment_epoch=group.assignment_epoch,
        assignor_name=consumer.assignor_name(group),
        members=members,
        authorized_operations=operations,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    consumer = broker.group_coordinator.consumer
    operations = GROUP_OPERATIONS if body.include_authorized_operations else NOT_REQUESTED
    groups = []
    for group_id in body.group_ids:
        try:
            if not group_id:
                raise InvalidGroupIdError("Group id can't be empty.")
            group = broker.groups.run(group_id, functools.partial(consumer.describe, group_id))
        except Exception as e:
            code, message = error_of(e, context=f"describing group {group_id}", api_key=KEY,
                                     version=request.api_version)
            groups.append(_error_group(mod, group_id, code, message))
            continue
        groups.append(_described(mod, broker, consumer, group, operations))
    return build(mod.ConsumerGroupDescribeResponse, throttle_time=_ZERO, groups=tuple(groups))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(
        mod.ConsumerGroupDescribeResponse,
        throttle_time=_ZERO,
        groups=tuple(_error_group(mod, g, code, None) for g in request.body.group_ids),
    )


API = ApiHandler(
    api_key=KEY,
    name="ConsumerGroupDescribe",
    min_version=0,
    max_version=1,
    handle=handle,
    error_response=error_response,
)
