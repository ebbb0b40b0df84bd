"""SyncGroup (key 14): the leader hands in the assignment; every member gets its part once the
group's metadata is stored."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.groups import then
from odradek.coordinator.group.classic import SyncResult
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 14
_ZERO = datetime.timedelta(0)


def _response(version: int, result: SyncResult) -> Any:
    mod = response_module(KEY, version)
    return build(
        mod.SyncGroupResponse,
        throttle_time=_ZERO,
        error_code=result.error,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    classic = broker.group_coordinator.classic
    pending = broker.groups.write(body.group_id, lambda: classic.sync(
        group_id=body.group_id,
        generation_id=body.generation_id,
        member_id=body.member_id,
        group_instance_id=getattr(body, "group_instance_id", None),
        protocol_type=getattr(body, "protocol_type", None),
        protocol_name=getattr(body, "protocol_name", None),
        assignments=[(a.member_id, a.assignment) for a in body.assignments],
    ))
    return then(pending, lambda result: _response(version, result))


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, SyncResult(code))


API = ApiHandler(
    api_key=KEY,
    name="SyncGroup",
    min_version=0,
    max_version=5,
    handle=handle,
    error_response=error_response,
)
