"""JoinGroup (key 11): join a classic group; the answer waits until the rebalance completes.

Version 4+ clients get MEMBER_ID_REQUIRED with an id on their first join (KIP-394); version 9
may tell a rejoining static leader to skip the assignment (KIP-814).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import CLIENT_HOST, ApiHandler
from odradek.broker.groups import then
from odradek.coordinator.group.classic import JoinResult
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 11
_ZERO = datetime.timedelta(0)


def _response(version: int, result: JoinResult) -> Any:
    mod = response_module(KEY, version)
    return build(
        mod.JoinGroupResponse,
        throttle_time=_ZERO,
        error_code=result.error,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name if version >= 7 else (result.protocol_name or ""),
        leader=result.leader,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=tuple(
            build(mod.JoinGroupResponseMember, member_id=m.member_id,
                  group_instance_id=m.group_instance_id, metadata=m.metadata)
            for m in result.members
        ),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    classic = broker.group_coordinator.classic
    pending = broker.groups.write(body.group_id, lambda: classic.join(
        group_id=body.group_id,
        member_id=body.member_id,
        group_instance_id=getattr(body, "group_instance_id", None),
        protocol_type=body.protocol_type,
        protocols=[(p.name, p.metadata) for p in body.protocols],
        session_timeout_ms=_ms(body.session_timeout),
        rebalance_timeout_ms=_ms(getattr(body, "rebalance_timeout", None)),
        client_id=request.client_id or "",
        client_host="/" + CLIENT_HOST.get(),
        require_known_member_id=version >= 4,
        supports_skip_assignment=version >= 9,
    ))
    return then(pending, lambda result: _response(version, result))


def _ms(value: Any) -> int:
    if value is None:
        return -1
    if isinstance(value, datetime.timedelta):
        return int(value / datetime.timedelta(milliseconds=1))
    return int(value)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, JoinResult(code, request.body.member_id))


API = ApiHandler(
    api_key=KEY,
    name="JoinGroup",
    min_version=0,
    max_version=9,
    handle=handle,
    error_response=error_response,
)
