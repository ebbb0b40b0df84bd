"""LeaveGroup (key 13): members leave a classic group; v3+ batches members, identified by member
id and/or static instance id (KIP-345)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 13
_ZERO = datetime.timedelta(0)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    if version < 3:
        members = [(body.member_id, None)]
    else:
        members = [(m.member_id, m.group_instance_id) for m in body.members]
    classic = broker.group_coordinator.classic
    results = broker.groups.write(body.group_id, lambda: classic.leave(body.group_id, members))
    if version < 3:
        return build(mod.LeaveGroupResponse, throttle_time=_ZERO, error_code=results[0].error)
    return build(
        mod.LeaveGroupResponse,
        throttle_time=_ZERO,
        error_code=ErrorCode.none,
        members=tuple(
            build(mod.MemberResponse, member_id=r.member_id, group_instance_id=r.group_instance_id,
                  error_code=r.error)
            for r in results
        ),
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(mod.LeaveGroupResponse, throttle_time=_ZERO, error_code=code, members=())


API = ApiHandler(
    api_key=KEY,
    name="LeaveGroup",
    min_version=0,
    max_version=5,
    handle=handle,
    error_response=error_response,
)
