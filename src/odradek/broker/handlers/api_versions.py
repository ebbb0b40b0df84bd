"""ApiVersions (key 18): the APIs and versions this broker serves, computed from the registry
(which the broker's services hand over, as the registry itself imports this module).

Every new connection of every client asks first, so the answer is encoded once per version and
set of APIs and kept (:func:`_encoded`): building and encoding some 50 kio structs took a
few hundred microseconds per connection, the most expensive small request a consumer sends."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import EncodedBody, Request, encode_entity

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


#: (api key, min version, max version) of each API served, by key.
_ApiSpecs = tuple[tuple[int, int, int], ...]


@functools.lru_cache(maxsize=64)
def _encoded(version: int, specs: _ApiSpecs) -> EncodedBody:
    mod = response_module(KEY, version)
    body = build(
        mod.ApiVersionsResponse,
        error_code=ErrorCode.none,
        api_keys=tuple(
            mod.ApiVersion(api_key=k, min_version=lo, max_version=hi) for k, lo, hi in specs
        ),
        throttle_time=datetime.timedelta(0),
    )
    return EncodedBody(encode_entity(body), mod.ApiVersionsResponse.__flexible__)


#: The last mapping of APIs seen and its specs: a broker's never changes (its dispatcher keeps
#: the one it was made with), so every request but the first skips building and sorting them.
_last_specs: tuple[Mapping[int, ApiHandler], _ApiSpecs] | None = None


def _specs(apis: Mapping[int, ApiHandler]) -> _ApiSpecs:
    global _last_specs
    last = _last_specs
    if last is not None and last[0] is apis:
        return last[1]
    specs = tuple(sorted((h.api_key, h.min_version, h.max_version) for h in apis.values()))
    _last_specs = (apis, specs)
    return specs


def handle(broker: BrokerServices, request: Request) -> Any:
    return _encoded(request.api_version, _specs(broker.supported_apis()))


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
