"""ApiVersions (key 18): the APIs and versions this broker serves, computed from the registry
(which the broker's services hand over, as the registry itself imports this module)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API", "versions_body"]

KEY = 18


def versions_body(version: int, code: ErrorCode, apis: Iterable[ApiHandler]) -> Any:
    """The ApiVersions response advertising ``apis`` in ``version``."""
    mod = response_module(KEY, version)
    api_keys = tuple(
        mod.ApiVersion(api_key=h.api_key, min_version=h.min_version, max_version=h.max_version)
        for h in sorted(apis, key=lambda h: h.api_key)
    )
    return build(
        mod.ApiVersionsResponse,
        error_code=code,
        api_keys=api_keys,
        throttle_time=datetime.timedelta(0),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    return versions_body(request.api_version, ErrorCode.none, broker.supported_apis().values())


def error_response(request: Request, code: ErrorCode) -> Any:
    # Only an unexpected failure gets here; the client learns nothing of the APIs then.
    return versions_body(request.api_version, code, ())


API = ApiHandler(
    api_key=KEY,
    name="ApiVersions",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
