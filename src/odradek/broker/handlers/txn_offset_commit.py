"""TxnOffsetCommit (key 28): offsets committed inside a transaction (send_offsets_to_transaction).

They are written to ``__consumer_offsets`` in a transactional batch and stay invisible (pending)
until the transaction's COMMIT marker reaches the group's partition; an ABORT drops them.
OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT for a partition with pending
offsets. v3 carries the member's generation (KIP-447), validated as for OffsetCommit.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.handlers._offsets import (
    Result,
    every_partition,
    in_request_order,
    known_partitions,
    requested_offsets,
    topic_results,
)
from odradek.errors import ErrorCode
from odradek.protocol.build import response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 28
_ZERO = datetime.timedelta(0)


def _response(version: int, results: list[Result]) -> Any:
    return topic_results(
        response_module(KEY, version),
        "TxnOffsetCommitResponse",
        "TxnOffsetCommitResponseTopic",
        "TxnOffsetCommitResponsePartition",
        results,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    offsets = requested_offsets(body)
    known, unknown = known_partitions(broker, offsets)
    txn_coordinator = broker.txn_coordinator
    broker.transactions.run(body.transactional_id, lambda: txn_coordinator.verify_offset_commit(
        body.transactional_id, body.producer_id, body.producer_epoch, body.group_id
    ))
    coordinator = broker.group_coordinator
    results = broker.groups.write(body.group_id, lambda: coordinator.txn_commit_offsets(
        body.group_id,
        producer_id=body.producer_id,
        producer_epoch=body.producer_epoch,
        member_id=getattr(body, "member_id", ""),
        generation_id=getattr(body, "generation_id", -1),
        instance_id=getattr(body, "group_instance_id", None),
        offsets=known,
    ))
    return _response(version, in_request_order(offsets, results, unknown))


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(request.api_version, every_partition(request.body, code))


API = ApiHandler(
    api_key=KEY,
    name="TxnOffsetCommit",
    min_version=0,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
