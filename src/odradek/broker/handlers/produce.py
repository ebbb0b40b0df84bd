"""Produce (key 0): append record batches to partition logs.

Batches are validated and stored as received (only the base offset and leader epoch are written
into them, and the timestamps for LogAppendTime topics). With one broker the in-sync replica set
is just the leader, so acks=all is complete as soon as the append returns; the high watermark
moves to the log end offset and waiting fetches are woken.
"""

from __future__ import annotations

import datetime
import struct
from typing import TYPE_CHECKING, Any

from odradek.broker.dispatcher import NO_RESPONSE
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import INTERNAL_TOPICS, LEADER_EPOCH
from odradek.broker.registry import ApiHandler
from odradek.errors import (
    ConcurrentTransactionsError,
    ErrorCode,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    InvalidTxnStateError,
    KafkaError,
    NotEnoughReplicasError,
    ProducerFencedError,
    TransactionAbortableError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request
from odradek.protocol.produce import decode_produce_request
from odradek.protocol.records import LOG_OVERHEAD, batch_size_at, read_producer_id_and_epoch

if TYPE_CHECKING:
    from odradek.broker.app import Broker

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
) -> Any:
    return build(
        mod.PartitionProduceResponse,
        index=index,
        error_code=code,
        base_offset=base_offset,
        log_append_time=(
            None
            if log_append_time_ms < 0
            else datetime.datetime.fromtimestamp(log_append_time_ms / 1000, datetime.UTC)
        ),
        log_start_offset=log_start_offset,
        record_errors=(),
        error_message=message,
    )


def handle(broker: Broker, request: Request) -> Any:
    body = request.body
    acks = body.acks
    mod = response_module(KEY, request.api_version)
    if acks not in (-1, 0, 1):
        raise InvalidRequiredAcksError(f"acks must be -1, 0 or 1, got {acks}")
    transactional_id = body.transactional_id
    topics = broker.topics
    watch = broker.append_watch
    responses = []
    for topic_data in body.topic_data:
        name = topic_data.name
        partitions = []
        for pd in topic_data.partition_data:
            index = pd.index
            try:
                if name in INTERNAL_TOPICS:
                    raise InvalidTopicError(f"Cannot append to internal topic {name}")
                log = topics.log(name, index)
                _check_one_batch(pd.records)
                if transactional_id is not None:
                    _verify_transaction(
                        broker, transactional_id, name, index, pd.records, request.api_version
                    )
                info = log.append_as_leader(pd.records, leader_epoch=LEADER_EPOCH)
                if not info.duplicate:
                    log.update_high_watermark(log.log_end_offset)
                    watch.notify((name, index))
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
                code = error_code_for(e, context=f"produce to {name}-{index}")
                message = e.message if isinstance(e, KafkaError) else None
                partitions.append(_partition(mod, index, code, message=message))
        responses.append(
            build(mod.TopicProduceResponse, name=name, partition_responses=tuple(partitions))
        )
    if acks == 0:
        return NO_RESPONSE
    return build(mod.ProduceResponse, responses=tuple(responses), throttle_time=_ZERO)


def _verify_transaction(
    broker: Broker, transactional_id: str, topic: str, partition: int, records: Any, version: int
) -> None:
    """KIP-890 part 1: a transactional write must go to a partition its transaction added;
    errors are given in the forms each produce version knows."""
    try:
        producer_id, epoch = read_producer_id_and_epoch(records)
    except struct.error:
        raise InvalidRecordError("record batch too short") from None
    tp = (topic, partition)
    try:
        code = broker.txn_coordinator.add_partitions(
            transactional_id, producer_id, epoch, [tp], verify_only=True
        )[tp]
    except ProducerFencedError as e:
        raise InvalidProducerEpochError(e.message) from e
    except ConcurrentTransactionsError as e:
        # Retriable for every client version, as Kafka answers it.
        raise NotEnoughReplicasError(e.message) from e
    if code is ErrorCode.none:
        return
    message = f"{topic}-{partition} is not in the transaction of {transactional_id}"
    if version >= 11:
        raise TransactionAbortableError(message)
    raise InvalidTxnStateError(message)


def _check_one_batch(records: Any) -> None:
    """Produce v3+ carries exactly one record batch per partition (Kafka's
    ``ProduceRequest.validateRecords``); a batch that claims more bytes than are present is left
    to the storage engine, which reports it as corrupt."""
    if records is None or len(records) < LOG_OVERHEAD:
        raise InvalidRecordError("a produce request must carry exactly one record batch")
    if batch_size_at(records) < len(records):
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


API = ApiHandler(
    api_key=KEY,
    name="Produce",
    min_version=3,
    max_version=11,
    handle=handle,
    error_response=error_response,
    decode=decode_produce_request,
)
