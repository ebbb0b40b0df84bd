"""ApiVersions (key 18): the APIs and versions this broker serves, computed from the registry."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.registry import ApiHandler, handlers
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.app import Broker

__all__ = ["API", "unsupported_version_response"]

KEY = 18


def _body(version: int, code: ErrorCode) -> Any:
    mod = response_module(KEY, version)
    api_keys = tuple(
        mod.ApiVersion(api_key=h.api_key, min_version=h.min_version, max_version=h.max_version)
        for h in sorted(handlers().values(), key=lambda h: h.api_key)
    )
    return build(
        mod.ApiVersionsResponse,
        error_code=code,
        api_keys=api_keys,
        throttle_time=datetime.timedelta(0),
    )


def handle(broker: Broker, request: Request) -> Any:
    return _body(request.api_version, ErrorCode.none)


def error_response(request: Request, code: ErrorCode) -> Any:
    return _body(request.api_version, code)


def unsupported_version_response() -> Any:
    """The v0 answer to an ApiVersions request in a version the broker does not know."""
    return _body(0, ErrorCode.unsupported_version)


API = ApiHandler(
    api_key=KEY,
    name="ApiVersions",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
