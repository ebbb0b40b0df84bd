"""TxnOffsetCommit (key 28): offsets committed inside a transaction (send_offsets_to_transaction).

They are written to ``__consumer_offsets`` in a transactional batch and stay invisible (pending)
until the transaction's COMMIT marker reaches the group's partition; an ABORT drops them.
OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT for a partition with pending
offsets. v3 carries the member's generation (KIP-447), validated as for OffsetCommit.

The group's partition must be in the producer's transaction (KIP-890 part 1, put there by
AddOffsetsToTxn): checked in-process when this broker also coordinates the transactional id,
else by asking its coordinator (AddPartitionsToTxn v4, ``verify_only``).
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
from odradek.broker.txn_verification import RETRIABLE, verify_remotely
from odradek.errors import (
    CoordinatorNotAvailableError,
    ErrorCode,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidTxnStateError,
    UnknownTopicOrPartitionError,
)
from odradek.protocol.build import response_module
from odradek.protocol.messages import Request
from odradek.topic_names import OFFSETS_TOPIC

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
    if not broker.transactions.coordinates_here(body.transactional_id):
        return _after_remote_verification(broker, request)
    txn_coordinator = broker.txn_coordinator
    broker.transactions.run(body.transactional_id, lambda: txn_coordinator.verify_offset_commit(
        body.transactional_id, body.producer_id, body.producer_epoch, body.group_id
    ))
    return _commit(broker, request)


async def _after_remote_verification(broker: BrokerServices, request: Request) -> Any:
    """The transactional id's coordinator is another broker: ask it whether the group's
    ``__consumer_offsets`` partition is in the transaction (AddPartitionsToTxn v4,
    ``verify_only``), answering as the local check would."""
    body = request.body
    # Fails here, not after the remote call, when this broker is not the group's coordinator.
    broker.groups.run(body.group_id, lambda: None)
    tp = (OFFSETS_TOPIC, broker.groups.partition_for(body.group_id))
    code = (await verify_remotely(
        broker, body.transactional_id, body.producer_id, body.producer_epoch, [tp]
    ))[tp]
    if code in RETRIABLE:
        raise CoordinatorNotAvailableError(
            f"the coordinator of {body.transactional_id} could not verify: {code.name}"
        )
    if code in (ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch):
        raise InvalidProducerEpochError(f"the producer of {body.transactional_id} is fenced")
    if code is ErrorCode.invalid_producer_id_mapping:
        raise InvalidProducerIdMappingError(
            f"the producer id is not the producer id of {body.transactional_id}"
        )
    if code is ErrorCode.unknown_topic_or_partition:
        raise UnknownTopicOrPartitionError(f"{OFFSETS_TOPIC}-{tp[1]} does not exist")
    if code is not ErrorCode.none:
        raise InvalidTxnStateError(
            f"{OFFSETS_TOPIC}-{tp[1]} is not in the transaction of {body.transactional_id}; "
            "call AddOffsetsToTxn first"
        )
    return _commit(broker, request)


def _commit(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    offsets = requested_offsets(body)
    known, unknown = known_partitions(broker, offsets)
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
