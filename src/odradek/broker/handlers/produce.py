"""Produce (key 0): append record batches to partition logs.

Batches are validated and stored as received (only the base offset and leader epoch are written
into them, and the timestamps for LogAppendTime topics). With one replica the in-sync replica
set is just the leader, so acks=all is complete as soon as the append returns; the high
watermark moves to the log end offset and waiting fetches are woken. With several, acks=all is
refused with NOT_ENOUGH_REPLICAS while the ISR is smaller than ``min.insync.replicas``, and
otherwise answered once the high watermark has passed the batch: NOT_ENOUGH_REPLICAS_AFTER_APPEND
if the ISR shrank below the minimum meanwhile, NOT_LEADER_OR_FOLLOWER if leadership moved,
REQUEST_TIMED_OUT when the request's ``timeout`` passes first (Kafka's delayed produce). acks=1
is answered once the leader has appended. A batch refused because of some of its
records (keyless records on a compacted topic) is answered, from v8, with their indexes in
``record_errors`` and the reason in ``error_message`` (KIP-467), so clients fail those records
and report the others as refused for their company.

A partition this broker does not lead (or any partition while the broker is fenced) is
NOT_LEADER_OR_FOLLOWER; from v10 the answer names the current leader and its epoch, and the
response lists that broker's endpoint (KIP-951), so the client retries there without a
Metadata round trip.

A transactional batch must go to a partition its transaction added (KIP-890 part 1): checked
in-process when this broker coordinates the transactional id, else by asking its coordinator
(AddPartitionsToTxn v4, ``verify_only``; ``broker/txn_verification.py``) before appending.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import NO_RESPONSE, ApiHandler, Replicating
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import INTERNAL_TOPICS, leader_hint
from odradek.broker.txn_verification import RETRIABLE, verify_remotely
from odradek.errors import (
    ConcurrentTransactionsError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    ErrorCode,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidRecordError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    KafkaError,
    NotCoordinatorError,
    NotEnoughReplicasError,
    ProducerFencedError,
    RequestTimedOutError,
    TransactionAbortableError,
)
from odradek.protocol.build import build, has_field, response_module
from odradek.protocol.messages import Request
from odradek.protocol.produce import (
    PartitionResult,
    decode_produce_request,
    encode_produce_response,
)
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
    record_errors: Sequence[tuple[int, str | None]] = (),
    current_leader: Any = None,
) -> Any:
    """One partition's answer as a kio struct (the whole-request error response)."""
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


def _record_errors(
    mod: Any, record_errors: Sequence[tuple[int, str | None]]
) -> tuple[Any, ...]:
    """KIP-467 (v8+): the records that made a batch invalid, so that clients fail those records
    and report the rest of the batch as refused because of them."""
    if not record_errors or not has_field(mod.PartitionProduceResponse, "record_errors"):
        return ()
    return tuple(
        mod.BatchIndexAndErrorMessage(batch_index=index, batch_index_error_message=message)
        for index, message in record_errors
    )


class ProduceAnswer:
    """What :func:`handle` answers: each topic's :class:`PartitionResult` list, in request
    order, and the KIP-951 endpoints of the leaders named in them; :func:`encode` writes the
    frame with ``struct`` (no kio structs on the produce path)."""

    __slots__ = ("responses", "endpoints")

    def __init__(
        self, responses: list[tuple[str, list[PartitionResult]]], endpoints: dict[int, Any]
    ) -> None:
        self.responses = responses
        self.endpoints = endpoints


def handle(broker: BrokerServices, request: Request) -> Any:
    acks = request.body.acks
    if acks not in (-1, 0, 1):
        raise InvalidRequiredAcksError(f"acks must be -1, 0 or 1, got {acks}")
    transactional_id = request.body.transactional_id
    if transactional_id is not None and not broker.transactions.coordinates_here(
        transactional_id
    ):
        return _after_remote_verification(broker, request, transactional_id)
    return _produce(broker, request, None)


async def _after_remote_verification(
    broker: BrokerServices, request: Request, transactional_id: str
) -> Any:
    """A transactional produce whose coordinator is another broker: ask it first (one
    AddPartitionsToTxn v4 per producer in the request, for the partitions this broker may
    write), then produce with its answers."""
    by_producer: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for topic_data in request.body.topic_data:
        for pd in topic_data.partition_data:
            try:
                broker.replicas.check_writable(topic_data.name, pd.index)
                _check_one_batch(pd.records)
                producer = read_producer(pd.records)
            except Exception:
                continue  # refused below, before any verification
            by_producer.setdefault(producer, []).append((topic_data.name, pd.index))
    verified: dict[tuple[str, int], ErrorCode] = {}
    for (producer_id, epoch), tps in by_producer.items():
        verified.update(
            await verify_remotely(broker, transactional_id, producer_id, epoch, tps)
        )
    # An acks=all append answers a Replicating wait: the dispatcher awaits it as part of this
    # coroutine's answer.
    return _produce(broker, request, verified)


def _produce(
    broker: BrokerServices, request: Request, verified: dict[tuple[str, int], ErrorCode] | None
) -> Any:
    """The produce itself; ``verified`` holds a remote coordinator's answers (None: the
    transaction, if any, is verified here)."""
    body = request.body
    acks = body.acks
    transactional_id = body.transactional_id
    replicas = broker.replicas
    responses: list[tuple[str, list[PartitionResult]]] = []
    endpoints: dict[int, Any] = {}  # KIP-951: the leaders named in NOT_LEADER_OR_FOLLOWER
    # acks=all batches still to be replicated: (response index, partition index, future).
    waiting: list[tuple[int, int, asyncio.Future[None]]] = []
    for topic_data in body.topic_data:
        name = topic_data.name
        partitions: list[PartitionResult] = []
        for pd in topic_data.partition_data:
            index = pd.index
            try:
                if name in INTERNAL_TOPICS:
                    raise InvalidTopicError(f"Cannot append to internal topic {name}")
                replicas.check_writable(name, index)  # fails before validation
                _check_one_batch(pd.records)
                if transactional_id is not None and verified is None:
                    _verify_transaction(broker, transactional_id, name, index, pd.records)
                elif transactional_id is not None and verified is not None:
                    _check_verified(verified.get((name, index)), transactional_id, name, index)
                info = replicas.append_as_leader(name, index, pd.records, required_acks=acks)
                if acks == -1:
                    fut = replicas.wait_for_replication(name, index, info)
                    if fut is not None:
                        waiting.append((len(responses), len(partitions), fut))
                partitions.append(PartitionResult(
                    index, 0, info.first_offset, info.log_append_time_ms, info.log_start_offset
                ))
            except Exception as e:
                code = error_code_for(
                    e, context=f"produce to {name}-{index}", api_key=KEY,
                    version=request.api_version,
                )
                message = e.message if isinstance(e, KafkaError) else None
                record_errors = e.record_errors if isinstance(e, InvalidRecordError) else ()
                leader = None
                if code == ErrorCode.not_leader_or_follower:
                    mod = response_module(KEY, request.api_version)
                    if has_field(mod.PartitionProduceResponse, "current_leader"):
                        hint = leader_hint(broker.cluster, mod, name, index, endpoints)
                        leader = (hint.leader_id, hint.leader_epoch)
                partitions.append(PartitionResult(
                    index, code, error_message=message, record_errors=record_errors,
                    current_leader=leader,
                ))
        responses.append((name, partitions))
    broker.timings.appended()
    if acks == 0:
        return NO_RESPONSE
    if waiting:
        # Appended: only the replication is awaited, so the connection may go on with the
        # Produce requests behind this one.
        return Replicating(_after_replication(request, responses, endpoints, waiting))
    return ProduceAnswer(responses, endpoints)


def encode(request: Request, answer: ProduceAnswer) -> bytes:
    return encode_produce_response(
        request.correlation_id, request.api_version, answer.responses,
        tuple(answer.endpoints.values()),
    )


async def _after_replication(
    request: Request,
    responses: list[tuple[str, list[PartitionResult]]],
    endpoints: dict[int, Any],
    waiting: list[tuple[int, int, asyncio.Future[None]]],
) -> ProduceAnswer:
    """acks=all: answer once every waiting batch is replicated (or failed), or at the request's
    timeout, when those still waiting are REQUEST_TIMED_OUT."""
    futures = [fut for _, _, fut in waiting]
    timeout = max(0.0, request.body.timeout.total_seconds())
    try:
        await asyncio.wait(futures, timeout=timeout)
    finally:
        # Timed out, or cancelled (the client went away): nobody reads how the rest end, so a
        # leadership change failing them later must not log "exception never retrieved".
        for fut in futures:
            if not fut.done():
                fut.cancel()
    for topic_i, part_i, fut in waiting:
        if fut.cancelled():
            e: BaseException = RequestTimedOutError(
                f"not replicated to the in-sync replicas within {timeout * 1000:.0f} ms"
            )
        else:
            exc = fut.exception()
            if exc is None:
                continue
            e = exc
        name, partitions = responses[topic_i]
        index = partitions[part_i].partition
        code = error_code_for(e, context=f"produce to {name}-{index}", api_key=KEY,
                              version=request.api_version)
        message = e.message if isinstance(e, KafkaError) else None
        partitions[part_i] = PartitionResult(index, code, error_message=message)
    return ProduceAnswer(responses, endpoints)


def _verify_transaction(
    broker: BrokerServices, transactional_id: str, topic: str, partition: int, records: Any
) -> None:
    """KIP-890 part 1: a transactional write must go to a partition its transaction added."""
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


def _check_verified(
    code: ErrorCode | None, transactional_id: str, topic: str, partition: int
) -> None:
    """Raise what a remote coordinator's answer to the verification means, as
    :func:`_verify_transaction` raises for a local one."""
    if code is ErrorCode.none:
        return
    if code is None or code in RETRIABLE:
        # Retriable for every client version, as Kafka answers it.
        raise NotEnoughReplicasError(
            f"the coordinator of {transactional_id} could not verify {topic}-{partition}: "
            f"{code.name if code is not None else 'not asked'}"
        )
    if code is ErrorCode.producer_fenced:
        raise ProducerFencedError(f"the producer of {transactional_id} is fenced")
    if code is ErrorCode.invalid_producer_epoch:
        raise InvalidProducerEpochError(f"the producer of {transactional_id} is fenced")
    if code is ErrorCode.invalid_producer_id_mapping:
        raise InvalidProducerIdMappingError(
            f"the producer id is not the producer id of {transactional_id}"
        )
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
    encode=encode,
)
