"""Metadata (key 3): brokers, controller, topics and partition leadership.

Everything comes from the broker's :class:`~odradek.cluster.model.MetadataView`: every live
broker (id, advertised host and port, rack), the controller, and per partition its leader,
leader epoch, replicas, ISR and offline replicas (replicas that are not live brokers). A
partition whose leader is not a live broker (``NO_LEADER``, or a leader whose registration has
gone) answers LEADER_NOT_AVAILABLE with leader -1, as Kafka does. A broker whose registration
went is still listed (never as a leader, always as an offline replica) for
:data:`DEPARTED_BROKER_GRACE_S`: librdkafka, told in one answer that a partition has a new leader
and that its old leader's broker is gone, moved the partition to the new leader and then, while
retiring the old broker, back to "no leader" (its leader re-query runs once a second), so a
producer whose leader was killed reached the new one a second late (1.6-1.9 s after the
survivors named it instead of up to 1 s). Unknown topics are created
here when ``auto.create.topics.enable`` is on and the request allows it (always, before v4).

Cost: a topic's entry (every partition) is encoded once per version and kept in
:data:`_ENCODED_TOPICS`, keyed by the topic's :class:`~odradek.cluster.model.TopicInfo` (a view
hands out a new one whenever the topic changes), the authorized operations asked for and the
live brokers, and a response splices the cached entries into the bytes of a body with an empty
topic array, kept too (:func:`_encoded_around_topics`, per version, listed brokers, cluster id
and controller): Metadata for all of 10,000 partitions is then a join of bytes, not 10,000
structs built and encoded, and for one topic 8 us instead of 22. The cache is process-wide, touched only from event loops, and emptied when it
holds more than 32 MiB. A missing entry (a new or changed topic, a broker joining or leaving)
is encoded without kio structs per partition (:func:`_encode_partitions`): 10,000 partitions in
a few ms instead of 100-160 ms, which is what every client's next Metadata pays after a
leadership change.
"""

from __future__ import annotations

import datetime
import functools
import struct
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._common import CLUSTER_OPERATIONS, TOPIC_OPERATIONS
from odradek.broker.topics import validate_topic_name
from odradek.cluster.model import NO_LEADER, MetadataView, PartitionState, TopicInfo
from odradek.errors import ErrorCode, InvalidRequestError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import EncodedBody, Request, encode_entity

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices
    from odradek.cluster.membership import RegisteredBroker

__all__ = ["API"]

KEY = 3
ZERO_UUID = uuid.UUID(int=0)
NOT_REQUESTED = -(2**31)

#: (version, operations, id of the TopicInfo, live broker ids)
_TopicKey = tuple[int, int, int, tuple[int, ...]]
#: What a cached entry costs beyond its bytes, per partition: the TopicInfo it holds alive
#: (roughly a PartitionState and its slot; a single node's view shares one state).
_INFO_BYTES_PER_PARTITION = 64


class _EncodedTopics:
    """(version, operations, TopicInfo, live brokers) -> the encoded topic entry. An entry
    holds its TopicInfo, so the id in its key cannot name another object while it is cached.
    Emptied when it holds more than :attr:`max_bytes` (entries of changed or deleted topics
    are never looked up again). Process-wide, used from event-loop threads only."""

    max_bytes = 32 * 1024 * 1024

    def __init__(self) -> None:
        self.entries: dict[_TopicKey, tuple[TopicInfo, bytes]] = {}
        self.size = 0

    def get(
        self, mod: Any, version: int, info: TopicInfo, operations: int, live: tuple[int, ...]
    ) -> bytes:
        key = (version, operations, id(info), live)
        entry = self.entries.get(key)
        if entry is not None and entry[0] is info:
            return entry[1]
        data = _encode_topic(mod, version, info, operations, frozenset(live))
        cost = len(data) + _INFO_BYTES_PER_PARTITION * len(info.partitions)
        if self.size + cost > self.max_bytes:
            self.entries.clear()
            self.size = 0
        self.entries[key] = (info, data)
        self.size += cost
        return data


_ENCODED_TOPICS = _EncodedTopics()


def _splice_topics(
    broker: BrokerServices, version: int, cluster_ops: int, topics: list[bytes]
) -> EncodedBody:
    """The response body with the encoded ``topics`` as its topic array."""
    view = broker.cluster
    listed = tuple(
        (b.info.node_id, b.info.host, b.info.port, b.info.rack) for b in _listed_brokers(view)
    )
    head, tail = _encoded_around_topics(
        version, cluster_ops, listed, view.cluster_id, view.controller_id
    )
    flexible = version >= 9
    count = _uvarint(len(topics) + 1) if flexible else struct.pack(">i", len(topics))
    return EncodedBody(b"".join((head, count, *topics, tail)), flexible)


#: (node id, host, port, rack) of each broker listed.
_Listed = tuple[tuple[int, str, int, str | None], ...]


@functools.lru_cache(maxsize=64)
def _encoded_around_topics(
    version: int, cluster_ops: int, listed: _Listed, cluster_id: str | None, controller_id: int
) -> tuple[bytes, bytes]:
    """The body's bytes before and after its topic array, kept per version, brokers, cluster
    and controller (every Metadata request of a client is otherwise the same). The array is the
    last field before a tail of known size: cluster_authorized_operations (v8-v10) and the
    tagged fields (v9+, none set)."""
    mod = response_module(KEY, version)
    data = encode_entity(_response(mod, listed, cluster_id, controller_id, (), cluster_ops))
    flexible = version >= 9
    tail = (4 if 8 <= version <= 10 else 0) + (1 if flexible else 0)
    empty = b"\x01" if flexible else b"\0\0\0\0"
    cut = len(data) - tail - len(empty)
    assert data[cut : cut + len(empty)] == empty, "metadata layout changed"
    return data[:cut], data[len(data) - tail :]


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _encode_topic(
    mod: Any, version: int, info: TopicInfo, operations: int, live: frozenset[int]
) -> bytes:
    """The bytes of :func:`_topic`'s entry, without building a struct per partition: kio
    encodes the entry with no partitions, and the partition array, written here field by field
    (:func:`_encode_partitions`), takes the place of the empty one. The array is followed by a
    tail of known size: topic_authorized_operations (v8+) and the tagged fields (v9+, none set).
    """
    head = encode_entity(build(
        mod.MetadataResponseTopic,
        error_code=ErrorCode.none,
        name=info.name,
        topic_id=info.topic_id,
        is_internal=info.internal,
        partitions=(),
        topic_authorized_operations=operations,
    ))
    flexible = version >= 9
    tail = (4 if version >= 8 else 0) + (1 if flexible else 0)
    empty = b"\x01" if flexible else b"\0\0\0\0"
    cut = len(head) - tail - len(empty)
    assert head[cut : cut + len(empty)] == empty, "metadata topic layout changed"
    n = len(info.partitions)
    count = _uvarint(n + 1) if flexible else struct.pack(">i", n)
    return b"".join((
        head[:cut], count, _encode_partitions(version, info.partitions, live), head[cut + len(empty):]
    ))


def _int32_array(values: tuple[int, ...], flexible: bool) -> bytes:
    n = len(values)
    if flexible:
        return _uvarint(n + 1) + struct.pack(f">{n}i", *values)
    return struct.pack(f">i{n}i", n, *values)


def _encode_partitions(
    version: int, states: tuple[PartitionState, ...], live: frozenset[int]
) -> bytes:
    """The partitions of a topic as :func:`_partition` builds them, encoded for ``version``:
    error_code, partition_index, leader_id, leader_epoch (v7+), replica_nodes, isr_nodes,
    offline_replicas (v5+), tagged fields (v9+). What follows the index depends on the leader,
    its epoch, the replicas and the ISR alone, which few partitions of a topic do not share with
    another (a cluster of a few brokers has few combinations), so each combination is encoded
    once."""
    flexible = version >= 9
    with_epoch = version >= 7
    with_offline = version >= 5
    pack_head = struct.Struct(">hi").pack
    pack_leader = struct.Struct(">ii" if with_epoch else ">i").pack
    tails: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], tuple[int, bytes]] = {}
    # replica_nodes, isr_nodes, offline_replicas and the tagged fields, by (replicas, isr).
    arrays: dict[tuple[tuple[int, ...], tuple[int, ...]], bytes] = {}
    out: list[bytes] = []
    for index, state in enumerate(states):
        key = (state.leader, state.leader_epoch, state.replicas, state.isr)
        known = tails.get(key)
        if known is None:
            led = state.leader != NO_LEADER and state.leader in live
            leader = state.leader if led else NO_LEADER
            head = (
                pack_leader(leader, state.leader_epoch) if with_epoch else pack_leader(leader)
            )
            rest = arrays.get(key[2:])
            if rest is None:
                fields = [_int32_array(state.replicas, flexible), _int32_array(state.isr, flexible)]
                if with_offline:
                    offline = tuple(r for r in state.replicas if r not in live)
                    fields.append(_int32_array(offline, flexible))
                if flexible:
                    fields.append(b"\0")
                rest = arrays[key[2:]] = b"".join(fields)
            code = ErrorCode.none if led else ErrorCode.leader_not_available
            known = tails[key] = (int(code), head + rest)
        out.append(pack_head(known[0], index))
        out.append(known[1])
    return b"".join(out)


def _partition(mod: Any, index: int, state: PartitionState, live: frozenset[int]) -> Any:
    """The kio form of one entry :func:`_encode_partitions` writes."""
    led = state.leader != NO_LEADER and state.leader in live
    return build(
        mod.MetadataResponsePartition,
        error_code=ErrorCode.none if led else ErrorCode.leader_not_available,
        partition_index=index,
        leader_id=state.leader if led else NO_LEADER,
        leader_epoch=state.leader_epoch,
        replica_nodes=state.replicas,
        isr_nodes=state.isr,
        offline_replicas=tuple(r for r in state.replicas if r not in live),
    )


def _topic(mod: Any, info: TopicInfo, operations: int, live: frozenset[int]) -> Any:
    """The kio form of what :func:`_encode_topic` writes (the tests compare the two)."""
    return build(
        mod.MetadataResponseTopic,
        error_code=ErrorCode.none,
        name=info.name,
        topic_id=info.topic_id,
        is_internal=info.internal,
        partitions=tuple(_partition(mod, p, s, live) for p, s in enumerate(info.partitions)),
        topic_authorized_operations=operations,
    )


#: How long a broker whose registration went is still listed (see the module docs).
DEPARTED_BROKER_GRACE_S = 3.0


def live_broker_ids(view: MetadataView) -> tuple[int, ...]:
    return tuple(b.info.node_id for b in view.live_brokers())


def _listed_brokers(view: MetadataView) -> list[RegisteredBroker]:
    """The live brokers and those that left within :data:`DEPARTED_BROKER_GRACE_S`, by id."""
    live = list(view.live_brokers())
    departed = getattr(view, "recently_departed", None)
    if departed is None:  # a view without the image's history (tests' static views)
        return live
    gone = departed(DEPARTED_BROKER_GRACE_S)
    if not gone:
        return live
    return sorted([*live, *gone], key=lambda b: b.info.node_id)


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
            topic_id: uuid.UUID | None, failed: Mapping[str, Exception], operations: int,
            live: tuple[int, ...]) -> Any:
    """The encoded entry of a topic that exists, else an error entry to encode (``failed``:
    the topics whose auto-creation failed, and why)."""
    view = broker.cluster
    if not name:
        if topic_id is None or topic_id == ZERO_UUID:
            return _error_topic(mod, name, topic_id, ErrorCode.invalid_request)
        info = view.topic_by_id(topic_id)
        if info is None:
            return _error_topic(mod, None, topic_id, ErrorCode.unknown_topic_id)
        return _ENCODED_TOPICS.get(mod, version, info, operations, live)
    try:
        validate_topic_name(name)
        if name in failed:
            raise failed[name]
        info = view.topic(name)
    except Exception as e:
        return _error_topic(mod, name, None, error_code_for(e, context=f"metadata of {name}"))
    if info is None:
        return _error_topic(mod, name, None, ErrorCode.unknown_topic_or_partition)
    return _ENCODED_TOPICS.get(mod, version, info, operations, live)


def _body(broker: BrokerServices, version: int, topics: tuple[Any, ...], cluster_ops: int) -> Any:
    """The whole response as kio structs (what the spliced answer must equal; for the tests)."""
    view = broker.cluster
    listed = tuple(
        (b.info.node_id, b.info.host, b.info.port, b.info.rack) for b in _listed_brokers(view)
    )
    mod = response_module(KEY, version)
    return _response(mod, listed, view.cluster_id, view.controller_id, topics, cluster_ops)


def _response(mod: Any, listed: _Listed, cluster_id: str | None, controller_id: int,
              topics: tuple[Any, ...], cluster_ops: int) -> Any:
    return build(
        mod.MetadataResponse,
        throttle_time=datetime.timedelta(0),
        brokers=tuple(
            build(mod.MetadataResponseBroker, node_id=node_id, host=host, port=port, rack=rack)
            for node_id, host, port, rack in listed
        ),
        cluster_id=cluster_id,
        controller_id=controller_id,
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
    live = live_broker_ids(broker.cluster)
    if requested is None or (version == 0 and not requested):
        get = _ENCODED_TOPICS.get
        encoded = [get(mod, version, info, topic_ops, live) for info in broker.cluster.topics()]
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
    return _splice_topics(broker, version, cluster_ops, encoded)


def _to_create(broker: BrokerServices, body: Any, requested: Any) -> list[str]:
    """The requested topics to create first (auto-creation is on, allowed by the request, and
    the name is valid and unknown), in request order, once each."""
    if not (broker.config.auto_create_topics_enable
            and getattr(body, "allow_auto_topic_creation", True)):
        return []
    missing: dict[str, None] = {}
    for t in requested:
        name = t.name
        if not name or name in missing or broker.cluster.topic(name) is not None:
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
    live = live_broker_ids(broker.cluster)
    encoded = []
    for t in request.body.topics:
        entry = _lookup(
            broker, mod, version, t.name, getattr(t, "topic_id", None), failed, topic_ops, live,
        )
        encoded.append(entry if isinstance(entry, bytes) else encode_entity(entry))
    return _splice_topics(broker, version, cluster_ops, encoded)


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
