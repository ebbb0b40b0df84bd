"""DescribeProducers (key 61, KIP-664): the producers a partition's leader knows.

Per partition, every producer id in the partition's producer state: its epoch, last sequence
and timestamp, the epoch of the transaction coordinator that wrote its last marker, and the
first offset of its open transaction (-1: none). Operators find hanging transactions with it.

As Kafka: an invalid topic name is INVALID_TOPIC_EXCEPTION, a topic or partition that does not
exist UNKNOWN_TOPIC_OR_PARTITION and one this broker does not lead NOT_LEADER_OR_FOLLOWER, per
partition; internal topics are described like any other. Producers are listed by producer id
(Kafka's order is a hash map's).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for, error_of
from odradek.broker.topics import validate_topic_name
from odradek.errors import ErrorCode, KafkaError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request
from odradek.storage.producer_state import ActiveProducer

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 61
_ZERO = datetime.timedelta(0)


def _producer(mod: Any, p: ActiveProducer) -> Any:
    return build(
        mod.ProducerState,
        producer_id=p.producer_id,
        producer_epoch=p.producer_epoch,
        last_sequence=p.last_sequence,
        last_timestamp=p.last_timestamp,
        coordinator_epoch=p.coordinator_epoch,
        current_txn_start_offset=p.current_txn_start_offset,
    )


def _partition(
    mod: Any,
    index: int,
    code: ErrorCode,
    message: str | None = None,
    producers: tuple[Any, ...] = (),
) -> Any:
    return build(
        mod.PartitionResponse,
        partition_index=index,
        error_code=code,
        error_message=message,
        active_producers=producers,
    )


def _describe(broker: BrokerServices, mod: Any, topic: str, index: int) -> Any:
    try:
        plog = broker.replicas.leader_log(topic, index)
        producers = sorted(plog.active_producers(), key=lambda p: p.producer_id)
    except Exception as e:
        code = error_code_for(e, context=f"describe producers of {topic}-{index}")
        return _partition(mod, index, code, e.message if isinstance(e, KafkaError) else None)
    return _partition(
        mod, index, ErrorCode.none, producers=tuple(_producer(mod, p) for p in producers)
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = []
    for t in request.body.topics:
        try:
            validate_topic_name(t.name)
        except Exception as e:
            code, message = error_of(e, api_key=KEY, version=request.api_version)
            parts = tuple(_partition(mod, i, code, message) for i in t.partition_indexes)
        else:
            parts = tuple(_describe(broker, mod, t.name, i) for i in t.partition_indexes)
        topics.append(build(mod.TopicResponse, name=t.name, partitions=parts))
    return build(mod.DescribeProducersResponse, throttle_time=_ZERO, topics=tuple(topics))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    return build(
        mod.DescribeProducersResponse,
        throttle_time=_ZERO,
        topics=tuple(
            build(
                mod.TopicResponse,
                name=t.name,
                partitions=tuple(_partition(mod, i, code) for i in t.partition_indexes),
            )
            for t in request.body.topics
        ),
    )


API = ApiHandler(
    api_key=KEY,
    name="DescribeProducers",
    min_version=0,
    max_version=0,
    handle=handle,
    error_response=error_response,
)
