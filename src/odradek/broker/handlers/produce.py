"""Produce (key 0): append record batches to partition logs.

Batches are validated and stored as received (only the base offset and leader epoch are written
into them, and the timestamps for LogAppendTime topics). With one broker the in-sync replica set
is just the leader, so acks=all is complete as soon as the append returns; the high watermark
moves to the log end offset and waiting fetches are woken. A batch refused because of some of its
records (keyless records on a compacted topic) is answered, from v8, with their indexes in
``record_errors`` and the reason in ``error_message`` (KIP-467), so clients fail those records
and report the others as refused for their company.

A partition this broker does not lead (or any partition while the broker is fenced) is
NOT_LEADER_OR_FOLLOWER; from v10 the answer names the current leader and its epoch, and the
response lists that broker's endpoint (KIP-951), so the client retries there without a
Metadata round trip.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import NO_RESPONSE, ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import INTERNAL_TOPICS, leader_hint
from odradek.errors import (
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    ErrorCode,
    InvalidRecordError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    KafkaError,
    NotCoordinatorError,
    NotEnoughReplicasError,
    TransactionAbortableError,
)
from odradek.protocol.build import build, has_field, response_module
from odradek.protocol.messages import Request
from odradek.protocol.produce import decode_produce_request
from odradek.protocol.records import LOG_OVERHEAD, read_batch_size, read_producer

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 0
_ZERO = datetime.timedelta(0)


def _partition(
    mod: Any,
    index: int,
    code: ErrorCode,
    base_offset: int = -1,
    log_append_time_ms: int = -1,
    log_start_offset: int = -1,
    message: str | None = None,
    record_errors: Sequence[tuple[int, str]] = (),
    current_leader: Any = None,
) -> Any:
    return build(
        mod.PartitionProduceResponse,
        **({} if current_leader is None else {"current_leader": current_leader}),
        index=index,
        error_code=code,
        base_offset=base_offset,
        log_append_time=(
            None
            if log_append_time_ms < 0
            else datetime.datetime.fromtimestamp(log_append_time_ms / 1000, datetime.UTC)
        ),
        log_start_offset=log_start_offset,
        record_errors=_record_errors(mod, record_errors),
        error_message=message,
    )


def _record_errors(mod: Any, record_errors: Sequence[tuple[int, str]]) -> tuple[Any, ...]:
    """KIP-467 (v8+): the records that made a batch invalid, so that clients fail those records
    and report the rest of the batch as refused because of them."""
    if not record_errors or not has_field(mod.PartitionProduceResponse, "record_errors"):
        return ()
    return tuple(
        mod.BatchIndexAndErrorMessage(batch_index=index, batch_index_error_message=message)
        for index, message in record_errors
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    acks = body.acks
    mod = response_module(KEY, request.api_version)
    if acks not in (-1, 0, 1):
        raise InvalidRequiredAcksError(f"acks must be -1, 0 or 1, got {acks}")
    transactional_id = body.transactional_id
    replicas = broker.replicas
    responses = []
    endpoints: dict[int, Any] = {}  # KIP-951: the leaders named in NOT_LEADER_OR_FOLLOWER
    for topic_data in body.topic_data:
        name = topic_data.name
        partitions = []
        for pd in topic_data.partition_data:
            index = pd.index
            try:
                if name in INTERNAL_TOPICS:
                    raise InvalidTopicError(f"Cannot append to internal topic {name}")
                replicas.check_writable(name, index)  # fails before validation
                _check_one_batch(pd.records)
                if transactional_id is not None:
                    _verify_transaction(broker, transactional_id, name, index, pd.records)
                info = replicas.append_as_leader(name, index, pd.records)
                partitions.append(
                    _partition(
                        mod,
                        index,
                        ErrorCode.none,
                        info.first_offset,
                        info.log_append_time_ms,
                        info.log_start_offset,
                    )
                )
            except Exception as e:
                code = error_code_for(
                    e, context=f"produce to {name}-{index}", api_key=KEY,
                    version=request.api_version,
                )
                message = e.message if isinstance(e, KafkaError) else None
                record_errors = e.record_errors if isinstance(e, InvalidRecordError) else ()
                leader = None
                if code == ErrorCode.not_leader_or_follower and has_field(
                    mod.PartitionProduceResponse, "current_leader"
                ):
                    leader = leader_hint(broker.cluster, mod, name, index, endpoints)
                partitions.append(_partition(
                    mod, index, code, message=message, record_errors=record_errors,
                    current_leader=leader,
                ))
        responses.append(
            build(mod.TopicProduceResponse, name=name, partition_responses=tuple(partitions))
        )
    broker.timings.appended()
    if acks == 0:
        return NO_RESPONSE
    return build(
        mod.ProduceResponse, responses=tuple(responses), throttle_time=_ZERO,
        node_endpoints=tuple(endpoints.values()),
    )


def _verify_transaction(
    broker: BrokerServices, transactional_id: str, topic: str, partition: int, records: Any
) -> None:
    """KIP-890 part 1: a transactional write must go to a partition its transaction added."""
    if not broker.transactions.coordinates_here(transactional_id):
        # Another broker coordinates this transactional id. Kafka asks it (AddPartitionsToTxn
        # v4, verify only); odradek does not yet, so the write goes unverified, as with
        # transaction.partition.verification.enable=false.
        return
    producer_id, epoch = read_producer(records)
    tp = (topic, partition)
    coordinator = broker.txn_coordinator
    try:
        code = broker.transactions.write(transactional_id, lambda: coordinator.add_partitions(
            transactional_id, producer_id, epoch, [tp], verify_only=True
        ))[tp]
    except (
        ConcurrentTransactionsError,
        CoordinatorLoadInProgressError,
        CoordinatorNotAvailableError,
        NotCoordinatorError,
    ) as e:
        # Retriable for every client version, as Kafka answers it.
        raise NotEnoughReplicasError(e.message) from e
    if code is ErrorCode.none:
        return
    # Answered as INVALID_TXN_STATE to clients older than v11 (the error boundary's table).
    raise TransactionAbortableError(
        f"{topic}-{partition} is not in the transaction of {transactional_id}"
    )


def _check_one_batch(records: Any) -> None:
    """Produce v3+ carries exactly one record batch per partition (Kafka's
    ``ProduceRequest.validateRecords``); a batch that claims more bytes than are present is left
    to the storage engine, which reports it as corrupt."""
    if records is None or len(records) < LOG_OVERHEAD:
        raise InvalidRecordError("a produce request must carry exactly one record batch")
    if read_batch_size(records) < len(records):
        raise InvalidRecordError("a produce request must carry exactly one record batch")


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    responses = tuple(
        build(
            mod.TopicProduceResponse,
            name=t.name,
            partition_responses=tuple(_partition(mod, p.index, code) for p in t.partition_data),
        )
        for t in request.body.topic_data
    )
    return build(mod.ProduceResponse, responses=responses, throttle_time=_ZERO)


# Advertised from v0, as Kafka 4 does (KAFKA-18659): librdkafka builds without the fix for
# librdkafka#4956 (2.0.2 in Debian's kcat, for one) turn compression off unless the broker lists
# the old Produce versions. v0-v2 (message formats 0 and 1) are still refused: no codec exists
# for them, so the dispatcher closes the connection, as Kafka 4 does for an unsupported version.
API = ApiHandler(
    api_key=KEY,
    name="Produce",
    min_version=0,
    min_accepted_version=3,
    max_version=11,
    handle=handle,
    error_response=error_response,
    decode=decode_produce_request,
)
