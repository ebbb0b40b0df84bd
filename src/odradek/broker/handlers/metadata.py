"""Metadata (key 3): brokers, controller, topics and partition leadership.

This broker is every partition's leader and its own controller, so admin clients can send
CreateTopics and friends to the controller id it names. Unknown topics are created here when
``auto.create.topics.enable`` is on and the request allows it (always, before v4).
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import (
    CLUSTER_OPERATIONS,
    LEADER_EPOCH,
    TOPIC_OPERATIONS,
    is_internal,
)
from odradek.broker.topics import validate_topic_name
from odradek.errors import ErrorCode, InvalidRequestError
from odradek.metadata.store import TopicMetadata
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 3
ZERO_UUID = uuid.UUID(int=0)
NOT_REQUESTED = -(2**31)


def _topic(mod: Any, broker: BrokerServices, meta: TopicMetadata, operations: int) -> Any:
    node = broker.node_id
    partitions = tuple(
        build(
            mod.MetadataResponsePartition,
            error_code=ErrorCode.none,
            partition_index=p,
            leader_id=node,
            leader_epoch=LEADER_EPOCH,
            replica_nodes=(node,),
            isr_nodes=(node,),
            offline_replicas=(),
        )
        for p in range(meta.partitions)
    )
    return build(
        mod.MetadataResponseTopic,
        error_code=ErrorCode.none,
        name=meta.name,
        topic_id=meta.topic_id,
        is_internal=is_internal(meta.name),
        partitions=partitions,
        topic_authorized_operations=operations,
    )


def _error_topic(mod: Any, name: str | None, topic_id: uuid.UUID | None, code: ErrorCode) -> Any:
    if name is None and mod.MetadataResponseTopic.__version__ < 12:
        name = ""  # the response's name is nullable only from v12, as Kafka answers too
    return build(
        mod.MetadataResponseTopic,
        error_code=code,
        name=name,
        topic_id=topic_id or ZERO_UUID,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=NOT_REQUESTED,
    )


def _lookup(broker: BrokerServices, mod: Any, name: str | None, topic_id: uuid.UUID | None,
            auto_create: bool, operations: int) -> Any:
    if not name:
        if topic_id is None or topic_id == ZERO_UUID:
            return _error_topic(mod, name, topic_id, ErrorCode.invalid_request)
        meta = broker.topics.topic_by_id(topic_id)
        if meta is None:
            return _error_topic(mod, None, topic_id, ErrorCode.unknown_topic_id)
        return _topic(mod, broker, meta, operations)
    try:
        validate_topic_name(name)
        meta = broker.topics.topic(name)
        if meta is None and auto_create:
            meta = broker.maybe_auto_create(name)
    except Exception as e:
        return _error_topic(mod, name, None, error_code_for(e, context=f"metadata of {name}"))
    if meta is None:
        return _error_topic(mod, name, None, ErrorCode.unknown_topic_or_partition)
    return _topic(mod, broker, meta, operations)


def _body(broker: BrokerServices, version: int, topics: tuple[Any, ...], cluster_ops: int) -> Any:
    mod = response_module(KEY, version)
    brokers = (
        build(
            mod.MetadataResponseBroker,
            node_id=broker.node_id,
            host=broker.advertised_host,
            port=broker.advertised_port,
            rack=None,
        ),
    )
    return build(
        mod.MetadataResponse,
        throttle_time=datetime.timedelta(0),
        brokers=brokers,
        cluster_id=broker.metadata.cluster_id,
        controller_id=broker.node_id,
        topics=topics,
        cluster_authorized_operations=cluster_ops,
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    requested = body.topics
    topic_ops = (
        TOPIC_OPERATIONS
        if getattr(body, "include_topic_authorized_operations", False)
        else NOT_REQUESTED
    )
    cluster_ops = (
        CLUSTER_OPERATIONS
        if getattr(body, "include_cluster_authorized_operations", False)
        else NOT_REQUESTED
    )
    if requested is None or (version == 0 and not requested):
        topics = tuple(_topic(mod, broker, meta, topic_ops) for meta in broker.topics.topics())
    else:
        if version < 12 and any(
            t.name is None or getattr(t, "topic_id", ZERO_UUID) != ZERO_UUID for t in requested
        ):
            # Kafka: topic ids are not supported, and names not null, before v12.
            raise InvalidRequestError(f"Metadata v{version} names topics by name only")
        auto_create = getattr(body, "allow_auto_topic_creation", True)
        topics = tuple(
            _lookup(broker, mod, t.name, getattr(t, "topic_id", None), auto_create, topic_ops)
            for t in requested
        )
    return _body(broker, version, topics, cluster_ops)


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = tuple(
        _error_topic(mod, t.name, getattr(t, "topic_id", None), code)
        for t in (request.body.topics or ())
    )
    return build(
        mod.MetadataResponse,
        throttle_time=datetime.timedelta(0),
        brokers=(),
        controller_id=-1,
        topics=topics,
    )


API = ApiHandler(
    api_key=KEY,
    name="Metadata",
    min_version=0,
    max_version=12,
    handle=handle,
    error_response=error_response,
)
