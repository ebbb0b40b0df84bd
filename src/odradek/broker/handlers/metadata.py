"""Metadata (key 3): brokers, controller, topics and partition leadership.

This broker is every partition's leader and its own controller, so admin clients can send
CreateTopics and friends to the controller id it names. Unknown topics are created here when
``auto.create.topics.enable`` is on and the request allows it (always, before v4).

Cost: a topic's entry (every partition) is encoded once per version and kept in
:data:`_ENCODED_TOPICS`, keyed by everything it says, and a response splices the cached entries
into a body encoded with an empty topic array: Metadata for all of 10,000 partitions is then a
join of bytes, not 10,000 structs built and encoded. The cache is process-wide (its keys name
the broker, the topic id and the partition count), touched only from event loops, and emptied
when it holds more than 32 MiB.
"""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Mapping
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
from odradek.protocol.messages import EncodedBody, Request, encode_entity

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 3
ZERO_UUID = uuid.UUID(int=0)
NOT_REQUESTED = -(2**31)

_TopicKey = tuple[int, int, str, uuid.UUID, int, int]


class _EncodedTopics:
    """(version, node, name, topic id, partitions, operations) -> the encoded topic entry;
    emptied when it holds more than :attr:`max_bytes` (entries of deleted or grown topics
    are never looked up again). Process-wide, used from event-loop threads only."""

    max_bytes = 32 * 1024 * 1024

    def __init__(self) -> None:
        self.entries: dict[_TopicKey, bytes] = {}
        self.size = 0

    def get(
        self, mod: Any, version: int, broker: BrokerServices, meta: TopicMetadata,
        operations: int,
    ) -> bytes:
        key = (version, broker.node_id, meta.name, meta.topic_id, meta.partitions, operations)
        data = self.entries.get(key)
        if data is None:
            data = encode_entity(_topic(mod, broker, meta, operations))
            if self.size + len(data) > self.max_bytes:
                self.entries.clear()
                self.size = 0
            self.entries[key] = data
            self.size += len(data)
        return data


_ENCODED_TOPICS = _EncodedTopics()


def _splice_topics(body: Any, version: int, topics: list[bytes]) -> EncodedBody:
    """``body`` (encoded with no topics) with ``topics`` as its topic array. The array is the
    last field before a tail of known size: cluster_authorized_operations (v8-v10) and the
    tagged fields (v9+, none set)."""
    data = encode_entity(body)
    flexible = version >= 9
    tail = (4 if 8 <= version <= 10 else 0) + (1 if flexible else 0)
    empty = b"\x01" if flexible else b"\0\0\0\0"
    cut = len(data) - tail - len(empty)
    assert data[cut : cut + len(empty)] == empty, "metadata layout changed"
    count = _uvarint(len(topics) + 1) if flexible else struct.pack(">i", len(topics))
    return EncodedBody(b"".join((data[:cut], count, *topics, data[len(data) - tail :])), flexible)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


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


def _lookup(broker: BrokerServices, mod: Any, version: int, name: str | None,
            topic_id: uuid.UUID | None, failed: Mapping[str, Exception], operations: int) -> Any:
    """The encoded entry of a topic that exists, else an error entry to encode (``failed``:
    the topics whose auto-creation failed, and why)."""
    if not name:
        if topic_id is None or topic_id == ZERO_UUID:
            return _error_topic(mod, name, topic_id, ErrorCode.invalid_request)
        meta = broker.topics.topic_by_id(topic_id)
        if meta is None:
            return _error_topic(mod, None, topic_id, ErrorCode.unknown_topic_id)
        return _ENCODED_TOPICS.get(mod, version, broker, meta, operations)
    try:
        validate_topic_name(name)
        if name in failed:
            raise failed[name]
        meta = broker.topics.topic(name)
    except Exception as e:
        return _error_topic(mod, name, None, error_code_for(e, context=f"metadata of {name}"))
    if meta is None:
        return _error_topic(mod, name, None, ErrorCode.unknown_topic_or_partition)
    return _ENCODED_TOPICS.get(mod, version, broker, meta, operations)


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
        found = broker.topics.topics()
        encoded = [_ENCODED_TOPICS.get(mod, version, broker, meta, topic_ops) for meta in found]
    else:
        if version < 12 and any(
            t.name is None or getattr(t, "topic_id", ZERO_UUID) != ZERO_UUID for t in requested
        ):
            # Kafka: topic ids are not supported, and names not null, before v12.
            raise InvalidRequestError(f"Metadata v{version} names topics by name only")
        missing = _to_create(broker, body, requested)
        if missing:
            return _after_creating(broker, request, missing, topic_ops, cluster_ops)
        return _answer(broker, request, {}, topic_ops, cluster_ops)
    return _splice_topics(_body(broker, version, (), cluster_ops), version, encoded)


def _to_create(broker: BrokerServices, body: Any, requested: Any) -> list[str]:
    """The requested topics to create first (auto-creation is on, allowed by the request, and
    the name is valid and unknown), in request order, once each."""
    if not (broker.config.auto_create_topics_enable
            and getattr(body, "allow_auto_topic_creation", True)):
        return []
    missing: dict[str, None] = {}
    for t in requested:
        name = t.name
        if not name or name in missing or broker.topics.topic(name) is not None:
            continue
        try:
            validate_topic_name(name)
        except Exception:
            continue  # answered as invalid by the lookup
        missing[name] = None
    return list(missing)


async def _after_creating(broker: BrokerServices, request: Request, names: list[str],
                          topic_ops: int, cluster_ops: int) -> Any:
    failed: dict[str, Exception] = {}
    for name in names:
        try:
            await broker.maybe_auto_create(name)
        except Exception as e:
            failed[name] = e
    return _answer(broker, request, failed, topic_ops, cluster_ops)


def _answer(broker: BrokerServices, request: Request, failed: Mapping[str, Exception],
            topic_ops: int, cluster_ops: int) -> Any:
    """The response to a request naming topics, once those to auto-create were created."""
    version = request.api_version
    mod = response_module(KEY, version)
    encoded = []
    for t in request.body.topics:
        entry = _lookup(
            broker, mod, version, t.name, getattr(t, "topic_id", None), failed, topic_ops,
        )
        encoded.append(entry if isinstance(entry, bytes) else encode_entity(entry))
    return _splice_topics(_body(broker, version, (), cluster_ops), version, encoded)


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
