"""ListGroups (key 16): every group, filtered by state (v4, KIP-518) and type (v5, KIP-848)."""

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

KEY = 16
_ZERO = datetime.timedelta(0)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    listings = broker.groups.list_groups(
        getattr(body, "states_filter", ()) or (), getattr(body, "types_filter", ()) or ()
    )
    return build(
        mod.ListGroupsResponse,
        throttle_time=_ZERO,
        error_code=ErrorCode.none,
        groups=tuple(
            build(mod.ListedGroup, group_id=g.group_id, protocol_type=g.protocol_type,
                  group_state=g.state, group_type=g.group_type)
            for g in listings
        ),
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(mod.ListGroupsResponse, throttle_time=_ZERO, error_code=code, groups=())


API = ApiHandler(
    api_key=KEY,
    name="ListGroups",
    min_version=0,
    max_version=5,
    handle=handle,
    error_response=error_response,
)
