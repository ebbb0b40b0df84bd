"""Routes a request frame to its handler and encodes the answer: the broker's one error boundary.

A handler raising anything becomes that handler's whole-request error response (the code from
:func:`odradek.broker.errors.error_code_for`); a version outside what the broker serves is
answered with UNSUPPORTED_VERSION in that version when a codec for it exists (ApiVersions answers
in v0, as clients expect), and an API key no codec knows closes the connection.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

from odradek.broker.errors import error_code_for
from odradek.broker.registry import ApiHandler, handlers
from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.build import error_body, has_field
from odradek.protocol.framing import Frame
from odradek.protocol.messages import (
    API_VERSIONS_KEY,
    Request,
    RequestPreamble,
    decode_request,
    encode_response,
    peek_preamble,
    request_schema,
    response_schema,
)

if TYPE_CHECKING:
    from odradek.broker.app import Broker

__all__ = ["Dispatcher", "NO_RESPONSE"]

log = logging.getLogger("odradek.broker")


class _NoResponse:
    """Returned by a handler when the request gets no response at all (produce with acks=0)."""


NO_RESPONSE: Final = _NoResponse()


class Dispatcher:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._handlers = handlers()

    def __call__(self, frame: Frame) -> bytes | None | Awaitable[bytes | None]:
        preamble = peek_preamble(frame)
        api = self._handlers.get(preamble.api_key)
        if api is None or not api.min_version <= preamble.api_version <= api.max_version:
            return self._unsupported(frame, preamble, api)
        if api.decode is not None:
            request = api.decode(frame, preamble)
        else:
            schema = request_schema(preamble.api_key, preamble.api_version)
            assert schema is not None  # the registry's tests check every declared version
            request = decode_request(frame, preamble, schema)
        try:
            result = api.handle(self._broker, request)
        except Exception as e:
            return self._error(api, request, e)
        if inspect.isawaitable(result):
            return self._complete(api, request, result)
        return self._encode(request, result)

    def _encode(self, request: Request, body: Any) -> bytes | None:
        if body is NO_RESPONSE:
            return None
        return encode_response(request.api_key, request.correlation_id, body)

    def _error(self, api: ApiHandler, request: Request, exc: Exception) -> bytes:
        code = error_code_for(exc, context=f"{api.name} v{request.api_version}")
        return encode_response(
            request.api_key, request.correlation_id, api.error_response(request, code)
        )

    async def _complete(
        self, api: ApiHandler, request: Request, pending: Awaitable[Any]
    ) -> bytes | None:
        try:
            body = await pending
        except Exception as e:
            return self._error(api, request, e)
        return self._encode(request, body)

    def _unsupported(
        self, frame: Frame, preamble: RequestPreamble, api: ApiHandler | None
    ) -> bytes:
        """UNSUPPORTED_VERSION in the request's own version where that can be said; otherwise
        the connection is closed, as Kafka closes it."""
        api_key, api_version = preamble.api_key, preamble.api_version
        if api_key == API_VERSIONS_KEY:
            from odradek.broker.handlers.api_versions import unsupported_version_response

            return encode_response(
                api_key, preamble.correlation_id, unsupported_version_response()
            )
        schema = request_schema(api_key, api_version)
        if schema is None:
            raise CorruptFrameError(f"unknown API key {api_key} version {api_version}")
        log.info(
            "unsupported request api_key=%d v%d: answering UNSUPPORTED_VERSION", api_key, api_version
        )
        response_cls = response_schema(api_key, api_version)
        body = None
        if api is not None:
            # The handler knows where its response carries errors (per partition, say), though
            # only for the versions it serves: the version's fields may differ.
            try:
                request = decode_request(frame, preamble, schema)
                body = api.error_response(request, ErrorCode.unsupported_version)
            except (CorruptFrameError, TypeError, AttributeError):
                body = None
        if body is not None:
            pass
        elif has_field(response_cls, "error_code"):
            body = error_body(response_cls, ErrorCode.unsupported_version)
        else:
            raise CorruptFrameError(
                f"API key {api_key} v{api_version} is not served and its response has no "
                "top-level error code to say so"
            )
        return encode_response(api_key, preamble.correlation_id, body)
