"""The handler contract: what an API handler module provides and what it may return.

Every module in :mod:`odradek.broker.handlers` exports ``API``, an :class:`ApiHandler`; the
registry collects them and the dispatcher calls them. Handlers see the broker only through
:class:`odradek.broker.services.BrokerServices`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from odradek.errors import ErrorCode
from odradek.protocol.fetch_response import ResponseParts
from odradek.protocol.framing import Frame
from odradek.protocol.messages import Request, RequestPreamble

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = [
    "ApiHandler",
    "CLIENT_HOST",
    "NO_RESPONSE",
    "Replicating",
    "DecodeFn",
    "EncodeFn",
    "ErrorFn",
    "HandleFn",
    "Response",
]

#: The address of the client whose request is being handled (set by the connection before it
#: dispatches; read synchronously by handlers that record it, such as JoinGroup).
CLIENT_HOST: ContextVar[str] = ContextVar("odradek_client_host", default="")


class _NoResponse:
    """Returned by a handler when the request gets no response at all (produce with acks=0)."""

    def __repr__(self) -> str:
        return "NO_RESPONSE"


NO_RESPONSE: Final = _NoResponse()


class Replicating:
    """An answer still to come from a request that has made all its writes and only waits for
    them to be replicated (Produce with acks=all). The connection may dispatch the Produce
    requests pipelined behind it meanwhile (their appends follow in request order, answers
    still go out in request order), instead of holding them back for a whole replication
    round each."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable

    def __await__(self) -> Generator[Any, None, Any]:
        return self.awaitable.__await__()

Response = Any
HandleFn = Callable[["BrokerServices", Request], "Response | Awaitable[Response]"]
ErrorFn = Callable[[Request, ErrorCode], Response]
DecodeFn = Callable[[Frame, RequestPreamble], Request]
EncodeFn = Callable[[Request, Response], "bytes | ResponseParts"]


@dataclass(frozen=True, slots=True)
class ApiHandler:
    """One Kafka API: its key, the versions served, the handler and its whole-request error form.

    Codecs for every declared version must exist (checked by the test suite rather than at
    start-up: loading every version's generated classes would cost the broker ~0.4 s to start).

    ``handle`` returns the response body, an awaitable of it for requests that wait (a long
    poll), or :data:`NO_RESPONSE`; it raises :class:`~odradek.errors.KafkaError` for an error of
    the whole request, which the dispatcher (the one error boundary) answers with
    ``error_response(request, code)``. ``min_accepted_version`` is for APIs advertised from a
    version lower than any they accept (Produce: Kafka 4 advertises v0 but refuses v0–v2 with
    UNSUPPORTED_VERSION), so older clients still negotiate the features they key off it.
    ``encode`` replaces the generic encoder of the handler's own responses (not of its
    whole-request errors); it may return :class:`ResponseParts` whose file regions the
    connection sends from their files and then closes (Fetch).
    """

    api_key: int
    name: str
    min_version: int
    max_version: int
    handle: HandleFn
    error_response: ErrorFn
    # A specialised decoder for a hot path; None means the generic kio codec.
    decode: DecodeFn | None = None
    encode: EncodeFn | None = None
    min_accepted_version: int | None = None

    def versions(self) -> range:
        return range(self.min_version, self.max_version + 1)

    def accepts(self, version: int) -> bool:
        low = self.min_version if self.min_accepted_version is None else self.min_accepted_version
        return low <= version <= self.max_version
