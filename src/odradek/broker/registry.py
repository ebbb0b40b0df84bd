"""The registry of API handlers: the one source of what the broker serves and advertises.

ApiVersions answers are computed from this table, so an API is advertised exactly when a handler
for it is registered, in exactly the versions that handler declares.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from odradek.errors import ErrorCode
from odradek.protocol.framing import Frame
from odradek.protocol.messages import Request, RequestPreamble

if TYPE_CHECKING:
    from odradek.broker.app import Broker

__all__ = ["ApiHandler", "handlers", "HANDLER_MODULES", "CLIENT_HOST"]

#: The address of the client whose request is being handled (set by the connection before it
#: dispatches; read synchronously by handlers that record it, such as JoinGroup).
CLIENT_HOST: ContextVar[str] = ContextVar("odradek_client_host", default="")

Response = Any
HandleFn = Callable[["Broker", Request], "Response | Awaitable[Response]"]
ErrorFn = Callable[[Request, ErrorCode], Response]
DecodeFn = Callable[[Frame, RequestPreamble], Request]


@dataclass(frozen=True, slots=True)
class ApiHandler:
    """One Kafka API: its key, the versions served, the handler and its whole-request error form.

    Codecs for every declared version must exist (checked by the test suite rather than at
    start-up: loading every version's generated classes would cost the broker ~0.4 s to start).

    ``handle`` returns the response body, or an awaitable of it for requests that wait (a long
    poll); ``error_response`` builds the response that reports ``code`` for every part of the
    request, used by the error boundary when ``handle`` raises.
    """

    api_key: int
    name: str
    min_version: int
    max_version: int
    handle: HandleFn
    error_response: ErrorFn
    # A specialised decoder for a hot path; None means the generic kio codec.
    decode: DecodeFn | None = None

    def versions(self) -> range:
        return range(self.min_version, self.max_version + 1)


HANDLER_MODULES = (
    "api_versions",
    "metadata",
    "produce",
    "fetch",
    "list_offsets",
    "create_topics",
    "init_producer_id",
    "offset_for_leader_epoch",
    "delete_topics", "create_partitions", "describe_configs", "alter_configs",
    "incremental_alter_configs", "delete_records", "describe_cluster", "describe_log_dirs",
    "find_coordinator", "join_group", "sync_group", "heartbeat", "leave_group", "offset_commit",
    "offset_fetch", "describe_groups", "list_groups", "delete_groups", "offset_delete",
    "consumer_group_heartbeat", "consumer_group_describe",
    "add_partitions_to_txn", "add_offsets_to_txn", "end_txn", "txn_offset_commit",
    "describe_transactions", "list_transactions", "describe_producers", "write_txn_markers",
)


@cache
def handlers() -> dict[int, ApiHandler]:
    table: dict[int, ApiHandler] = {}
    for name in HANDLER_MODULES:
        module = importlib.import_module(f"odradek.broker.handlers.{name}")
        api: ApiHandler = module.API
        table[api.api_key] = api
    return table
