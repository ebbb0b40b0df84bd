"""DeleteGroups (key 42): remove empty groups and their committed offsets.

A group with members is NON_EMPTY_GROUP; an unknown one GROUP_ID_NOT_FOUND.
"""

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

KEY = 42
_ZERO = datetime.timedelta(0)


def _response(version: int, results: list[tuple[str, ErrorCode]]) -> Any:
    mod = response_module(KEY, version)
    return build(
        mod.DeleteGroupsResponse,
        throttle_time=_ZERO,
        results=tuple(
            build(mod.DeletableGroupResult, group_id=g, error_code=code) for g, code in results
        ),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    results = broker.groups.delete_groups(list(request.body.groups_names))
    return _response(request.api_version, results)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, [(g, code) for g in request.body.groups_names])


API = ApiHandler(
    api_key=KEY,
    name="DeleteGroups",
    min_version=0,
    max_version=2,
    handle=handle,
    error_response=error_response,
)
