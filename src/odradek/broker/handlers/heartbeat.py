"""Heartbeat (key 12): a classic member is alive; REBALANCE_IN_PROGRESS tells it to rejoin."""

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

KEY = 12
_ZERO = datetime.timedelta(0)


def _response(version: int, code: ErrorCode) -> Any:
    mod = response_module(KEY, version)
    return build(mod.HeartbeatResponse, throttle_time=_ZERO, error_code=code)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    classic = broker.group_coordinator.classic
    broker.groups.run(body.group_id, lambda: classic.heartbeat(
        group_id=body.group_id,
        generation_id=body.generation_id,
        member_id=body.member_id,
        group_instance_id=getattr(body, "group_instance_id", None),
    ))
    return _response(request.api_version, ErrorCode.none)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, code)


API = ApiHandler(
    api_key=KEY,
    name="Heartbeat",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
