"""DescribeGroups (key 15): state, protocol and members of classic groups.

Member metadata and assignments are shown only while the group is Stable, as Kafka does. An
unknown group, or a KIP-848 group (described by ConsumerGroupDescribe), answers as a Dead group
with no error in these versions.
"""

from __future__ import annotations

import datetime
import functools
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_of
from odradek.broker.handlers._common import GROUP_OPERATIONS, NOT_REQUESTED
from odradek.coordinator.group.classic import ClassicGroup, ClassicGroupState
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 15
_ZERO = datetime.timedelta(0)


def _group(mod: Any, group_id: str, group: Any, operations: int) -> Any:
    if not isinstance(group, ClassicGroup) or group.state is ClassicGroupState.DEAD:
        return build(mod.DescribedGroup, error_code=ErrorCode.none, group_id=group_id,
                     group_state="Dead", protocol_type="", protocol_data="", members=(),
                     authorized_operations=operations)
    stable = group.state is ClassicGroupState.STABLE
    members = tuple(
        build(
            mod.DescribedGroupMember,
            member_id=m.member_id,
            group_instance_id=m.group_instance_id,
            client_id=m.client_id,
            client_host=m.client_host,
            member_metadata=m.metadata(group.protocol_name) if stable else b"",
            member_assignment=m.assignment if stable else b"",
        )
        for m in group.members.values()
    )
    return build(
        mod.DescribedGroup,
        error_code=ErrorCode.none,
        group_id=group_id,
        group_state=group.state.value,
        protocol_type=group.protocol_type or "",
        protocol_data=(group.protocol_name or "") if stable else "",
        members=members,
        authorized_operations=operations,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    operations = (
        GROUP_OPERATIONS if getattr(body, "include_authorized_operations", False)
        else NOT_REQUESTED
    )
    groups = broker.group_coordinator.groups
    described = []
    for group_id in body.groups:
        try:
            # Its partition must be loaded (COORDINATOR_LOAD_IN_PROGRESS for this group).
            group = broker.groups.run(group_id, functools.partial(groups.get, group_id))
        except Exception as e:
            code, _ = error_of(e, context=f"describing group {group_id}", api_key=KEY,
                               version=request.api_version)
            described.append(_error_group(mod, group_id, code))
            continue
        described.append(_group(mod, group_id, group, operations))
    return build(mod.DescribeGroupsResponse, throttle_time=_ZERO, groups=tuple(described))


def _error_group(mod: Any, group_id: str, code: ErrorCode) -> Any:
    return build(mod.DescribedGroup, error_code=code, group_id=group_id, group_state="",
                 protocol_type="", protocol_data="", members=(),
                 authorized_operations=NOT_REQUESTED)


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(
        mod.DescribeGroupsResponse,
        throttle_time=_ZERO,
        groups=tuple(_error_group(mod, g, code) for g in request.body.groups),
    )


API = ApiHandler(
    api_key=KEY,
    name="DescribeGroups",
    min_version=0,
    max_version=5,
    handle=handle,
    error_response=error_response,
)
