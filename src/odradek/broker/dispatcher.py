"""Routes a request frame to its handler and encodes the answer: the broker's one error boundary.

A handler raising anything becomes that handler's whole-request error response (the code from
:func:`odradek.broker.errors.error_code_for`); a version outside what the broker serves is
answered with UNSUPPORTED_VERSION in that version when a codec for it exists (ApiVersions answers
in v0, as clients expect), and an API key no codec knows closes the connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import NO_RESPONSE, ApiHandler, Replicating
from odradek.broker.errors import error_code_for
from odradek.broker.handlers.api_versions import versions_body
from odradek.errors import CorruptFrameError, ErrorCode, KafkaError
from odradek.protocol.build import error_body, has_field
from odradek.protocol.fetch_response import ResponseParts
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
    from odradek.broker.services import BrokerServices

__all__ = ["COORDINATOR_WRITE_TIMEOUT_MS", "Dispatcher"]

log = logging.getLogger("odradek.broker")

#: How long a request waits for its coordinator records to replicate (Kafka's
#: ``offsets.commit.timeout.ms`` default).
COORDINATOR_WRITE_TIMEOUT_MS = 5000
#: WriteTxnMarkers answers a marker's replication error as it is (the coordinator retries it).
_WRITE_TXN_MARKERS = 27


class Dispatcher:
    """Owned by the broker's event loop; one for all connections."""

    def __init__(self, broker: BrokerServices) -> None:
        self._broker = broker
        self._handlers: Mapping[int, ApiHandler] = broker.supported_apis()

    def __call__(
        self, frame: Frame
    ) -> bytes | ResponseParts | None | Awaitable[bytes | ResponseParts | None]:
        preamble = peek_preamble(frame)
        api = self._handlers.get(preamble.api_key)
        if api is None or not api.accepts(preamble.api_version):
            return self._unsupported(frame, preamble, api)
        if api.decode is not None:
            request = api.decode(frame, preamble)
        else:
            schema = request_schema(preamble.api_key, preamble.api_version)
            assert schema is not None  # the registry's tests check every declared version
            request = decode_request(frame, preamble, schema)
        replicas = self._broker.replicas
        replicas.open_barrier()
        try:
            result = api.handle(self._broker, request)
        except Exception as e:
            for fut in replicas.close_barrier():
                fut.cancel()
            return self._error(api, request, e)
        waits = replicas.close_barrier()
        if waits:
            return self._after_replication(api, request, result, waits)
        if isinstance(result, Replicating):  # the connection may pipeline behind it
            return Replicating(self._complete(api, request, result.awaitable))
        if inspect.isawaitable(result):
            return self._complete(api, request, result)
        return self._encode(api, request, result)

    def _encode(self, api: ApiHandler, request: Request, body: Any) -> bytes | ResponseParts | None:
        if body is NO_RESPONSE:
            return None
        if api.encode is not None:
            return api.encode(request, body)
        return encode_response(request.api_key, request.correlation_id, body)

    def _error(self, api: ApiHandler, request: Request, exc: Exception) -> bytes:
        code = error_code_for(
            exc,
            context=f"{api.name} v{request.api_version}",
            api_key=api.api_key,
            version=request.api_version,
        )
        body = api.error_response(request, code)
        if isinstance(exc, KafkaError) and exc.message and has_field(type(body), "error_message"):
            body = dataclasses.replace(body, error_message=exc.message)
        return encode_response(request.api_key, request.correlation_id, body)

    async def _complete(
        self, api: ApiHandler, request: Request, pending: Awaitable[Any]
    ) -> bytes | ResponseParts | None:
        try:
            body = await pending
            if isinstance(body, Replicating):
                # A transactional Produce verified by a remote coordinator, then appended with
                # acks=all: its answer waits for the replication too.
                body = await body.awaitable
        except Exception as e:
            return self._error(api, request, e)
        return self._encode(api, request, body)

    async def _after_replication(
        self, api: ApiHandler, request: Request, result: Any, waits: list[asyncio.Future[None]]
    ) -> bytes | ResponseParts | None:
        """The answer of a request whose handler appended coordinator records (or markers),
        once they are replicated: the state they describe is already applied, as in Kafka."""
        try:
            body = (await result) if inspect.isawaitable(result) else result
            if isinstance(body, Replicating):  # a Produce that also wrote coordinator records
                body = await body.awaitable
            await self._broker.replicas.await_replication(
                waits,
                timeout_ms=COORDINATOR_WRITE_TIMEOUT_MS,
                coordinator=request.api_key != _WRITE_TXN_MARKERS,
            )
        except Exception as e:
            return self._error(api, request, e)
        return self._encode(api, request, body)

    def _unsupported(
        self, frame: Frame, preamble: RequestPreamble, api: ApiHandler | None
    ) -> bytes:
        """UNSUPPORTED_VERSION in the request's own version where that can be said; otherwise
        the connection is closed, as Kafka closes it."""
        api_key, api_version = preamble.api_key, preamble.api_version
        if api_key == API_VERSIONS_KEY:
            # Answered in v0, which every client can read, listing what is served.
            body = versions_body(0, ErrorCode.unsupported_version, self._handlers.values())
            return encode_response(api_key, preamble.correlation_id, body)
        schema = request_schema(api_key, api_version)
        if schema is None:
            if api is not None:  # advertised for clients' sake, never served (Produce v0-v2)
                raise CorruptFrameError(f"{api.name} v{api_version} is not served")
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
