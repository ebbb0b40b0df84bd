"""Records of ``__consumer_offsets``: typed keys and values, and their bytes in Kafka's format.

Byte format (Apache Kafka's ``group-coordinator`` message specs, so Kafka can read what we
write and we can read what Kafka wrote):

- key: int16 *record type* (Kafka's "key version") then the key struct, never flexible —
  int16-length strings, int32 partition. Types: 0 and 1 offset commit (0 is legacy, we
  write 1), 2 classic group metadata, 3 consumer group metadata, 4 consumer group partition
  metadata, 5 member metadata, 6 target assignment metadata, 7 target assignment member,
  8 current member assignment. Other types are skipped by :func:`decode` (returns ``None``),
  as Kafka skips record types it does not know.
- value: int16 value version then the value struct at that version; ``None`` is a tombstone.
  Offset commits: v0-v4 are read; v3 is written, or v1 when an expire timestamp is set (the
  only version that has one; it has no leader epoch). Classic group metadata: v0-v4 read, v3
  written. KIP-848 values: v0, flexible (compact strings and arrays, tagged fields). Tagged
  fields are skipped on read (unknown ones, and known ones we do not model such as
  ``ClassicMemberMetadata`` or ``MetadataHash``) and none are written.

Decoding is strict: malformed or truncated bytes, trailing bytes, a null where the spec
forbids one, invalid UTF-8 or an unknown value version all raise
:class:`~odradek.errors.CorruptRecordError` and nothing else.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from odradek.coordinator._codec import Reader, Writer

__all__ = [
    "encode_key",
    "encode_value",
    "decode",
    "group_id_of",
    "partition_for",
    "RecordKey",
    "RecordValue",
    "OffsetCommitKey",
    "OffsetCommitValue",
    "GroupMetadataKey",
    "MemberMetadata",
    "GroupMetadataValue",
    "TopicPartitions",
    "TopicMetadata",
    "ConsumerGroupMetadataKey",
    "ConsumerGroupMetadataValue",
    "ConsumerGroupPartitionMetadataKey",
    "ConsumerGroupPartitionMetadataValue",
    "ConsumerGroupMemberMetadataKey",
    "ConsumerGroupMemberMetadataValue",
    "ConsumerGroupTargetAssignmentMetadataKey",
    "ConsumerGroupTargetAssignmentMetadataValue",
    "ConsumerGroupTargetAssignmentMemberKey",
    "ConsumerGroupTargetAssignmentMemberValue",
    "ConsumerGroupCurrentMemberAssignmentKey",
    "ConsumerGroupCurrentMemberAssignmentValue",
]


# -- offsets and classic groups ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group_id: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OffsetCommitValue:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class MemberMetadata:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int
    members: tuple[MemberMetadata, ...]


# -- consumer groups (KIP-848) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicPartitions:
    topic_id: uuid.UUID
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    topic_id: uuid.UUID
    topic_name: str
    num_partitions: int


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadataKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadataValue:
    epoch: int


@dataclass(frozen=True, slots=True)
class ConsumerGroupPartitionMetadataKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupPartitionMetadataValue:
    topics: tuple[TopicMetadata, ...]


@dataclass(frozen=True, slots=True)
class ConsumerGroupMemberMetadataKey:
    group_id: str
    member_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupMemberMetadataValue:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMetadataKey:
    group_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMetadataValue:
    assignment_epoch: int


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMemberKey:
    group_id: str
    member_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMemberValue:
    topic_partitions: tuple[TopicPartitions, ...]


@dataclass(frozen=True, slots=True)
class ConsumerGroupCurrentMemberAssignmentKey:
    group_id: str
    member_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupCurrentMemberAssignmentValue:
    member_epoch: int
    previous_member_epoch: int
    state: int
    assigned_partitions: tuple[TopicPartitions, ...]
    partitions_pending_revocation: tuple[TopicPartitions, ...]


RecordKey = (
    OffsetCommitKey
    | GroupMetadataKey
    | ConsumerGroupMetadataKey
    | ConsumerGroupPartitionMetadataKey
    | ConsumerGroupMemberMetadataKey
    | ConsumerGroupTargetAssignmentMetadataKey
    | ConsumerGroupTargetAssignmentMemberKey
    | ConsumerGroupCurrentMemberAssignmentKey
)
RecordValue = (
    OffsetCommitValue
    | GroupMetadataValue
    | ConsumerGroupMetadataValue
    | ConsumerGroupPartitionMetadataValue
    | ConsumerGroupMemberMetadataValue
    | ConsumerGroupTargetAssignmentMetadataValue
    | ConsumerGroupTargetAssignmentMemberValue
    | ConsumerGroupCurrentMemberAssignmentValue
)


# -- record types and versions ---------------------------------------------------------------

_LEGACY_OFFSET_COMMIT = 0
_OFFSET_COMMIT = 1
_GROUP_METADATA = 2
_CONSUMER_GROUP_METADATA = 3
_CONSUMER_GROUP_PARTITION_METADATA = 4
_CONSUMER_GROUP_MEMBER_METADATA = 5
_CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA = 6
_CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER = 7
_CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT = 8

# Kafka writes offset commit value v3 (v1 when there is an expire timestamp) and group
# metadata v3; their flexible v4 is read but, like Kafka, not written.
_OFFSET_COMMIT_VALUE_VERSION = 3
_OFFSET_COMMIT_VALUE_EXPIRE_VERSION = 1
_GROUP_METADATA_VALUE_VERSION = 3


# -- encoding and decoding (primitives in odradek.coordinator._codec) ----------------------


# -- keys ------------------------------------------------------------------------------------


def encode_key(key: RecordKey) -> bytes:
    """The key bytes of ``key``: its record type, then its struct."""
    w = Writer()
    match key:
        case OffsetCommitKey(group_id, topic, partition):
            w.int16(_OFFSET_COMMIT)
            w.string(group_id)
            w.string(topic)
            w.int32(partition)
        case GroupMetadataKey(group_id):
            w.int16(_GROUP_METADATA)
            w.string(group_id)
        case ConsumerGroupMetadataKey(group_id):
            w.int16(_CONSUMER_GROUP_METADATA)
            w.string(group_id)
        case ConsumerGroupPartitionMetadataKey(group_id):
            w.int16(_CONSUMER_GROUP_PARTITION_METADATA)
            w.string(group_id)
        case ConsumerGroupMemberMetadataKey(group_id, member_id):
            w.int16(_CONSUMER_GROUP_MEMBER_METADATA)
            w.string(group_id)
            w.string(member_id)
        case ConsumerGroupTargetAssignmentMetadataKey(group_id):
            w.int16(_CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA)
            w.string(group_id)
        case ConsumerGroupTargetAssignmentMemberKey(group_id, member_id):
            w.int16(_CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER)
            w.string(group_id)
            w.string(member_id)
        case ConsumerGroupCurrentMemberAssignmentKey(group_id, member_id):
            w.int16(_CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT)
            w.string(group_id)
            w.string(member_id)
        case _:
            raise TypeError(f"not a record key: {key!r}")
    return bytes(w.buf)


def _decode_key(r: Reader, record_type: int) -> RecordKey | None:
    match record_type:
        case 0 | 1:
            return OffsetCommitKey(r.string(), r.string(), r.int32())
        case 2:
            return GroupMetadataKey(r.string())
        case 3:
            return ConsumerGroupMetadataKey(r.string())
        case 4:
            return ConsumerGroupPartitionMetadataKey(r.string())
        case 5:
            return ConsumerGroupMemberMetadataKey(r.string(), r.string())
        case 6:
            return ConsumerGroupTargetAssignmentMetadataKey(r.string())
        case 7:
            return ConsumerGroupTargetAssignmentMemberKey(r.string(), r.string())
        case 8:
            return ConsumerGroupCurrentMemberAssignmentKey(r.string(), r.string())
        case _:
            return None


def group_id_of(key: RecordKey) -> str:
    """The group a record belongs to (every record type has one)."""
    return key.group_id


# -- values ----------------------------------------------------------------------------------


def _write_topic_partitions(w: Writer, items: tuple[TopicPartitions, ...]) -> None:
    w.compact_array_len(len(items))
    for tp in items:
        w.uuid(tp.topic_id)
        w.compact_array_len(len(tp.partitions))
        for p in tp.partitions:
            w.int32(p)
        w.no_tagged_fields()


def _read_topic_partitions(r: Reader) -> TopicPartitions:
    topic_id = r.uuid()
    partitions = r.compact_array(r.int32)
    r.skip_tagged_fields()
    return TopicPartitions(topic_id, partitions)


def encode_value(value: RecordValue | None) -> bytes | None:
    """The value bytes of ``value`` at the version Kafka writes; ``None`` (a tombstone) stays
    ``None``. An offset commit with an expire timestamp is written at v1, which has no leader
    epoch: the leader epoch is dropped, as Kafka drops it."""
    if value is None:
        return None
    w = Writer()
    match value:
        case OffsetCommitValue():
            if value.expire_timestamp != -1:
                w.int16(_OFFSET_COMMIT_VALUE_EXPIRE_VERSION)
                w.int64(value.offset)
                w.string(value.metadata)
                w.int64(value.commit_timestamp)
                w.int64(value.expire_timestamp)
            else:
                w.int16(_OFFSET_COMMIT_VALUE_VERSION)
                w.int64(value.offset)
                w.int32(value.leader_epoch)
                w.string(value.metadata)
                w.int64(value.commit_timestamp)
        case GroupMetadataValue():
            w.int16(_GROUP_METADATA_VALUE_VERSION)
            w.string(value.protocol_type)
            w.int32(value.generation)
            w.string(value.protocol)
            w.string(value.leader)
            w.int64(value.current_state_timestamp)
            w.array_len(len(value.members))
            for m in value.members:
                w.string(m.member_id)
                w.string(m.group_instance_id)
                w.string(m.client_id)
                w.string(m.client_host)
                w.int32(m.rebalance_timeout_ms)
                w.int32(m.session_timeout_ms)
                w.bytes_(m.subscription)
                w.bytes_(m.assignment)
        case ConsumerGroupMetadataValue(epoch):
            w.int16(0)
            w.int32(epoch)
            w.no_tagged_fields()
        case ConsumerGroupPartitionMetadataValue(topics):
            w.int16(0)
            w.compact_array_len(len(topics))
            for t in topics:
                w.uuid(t.topic_id)
                w.compact_string(t.topic_name)
                w.int32(t.num_partitions)
                w.compact_array_len(0)  # partition racks: not kept (unused since Kafka 4.0)
                w.no_tagged_fields()
            w.no_tagged_fields()
        case ConsumerGroupMemberMetadataValue():
            w.int16(0)
            w.compact_string(value.instance_id)
            w.compact_string(value.rack_id)
            w.compact_string(value.client_id)
            w.compact_string(value.client_host)
            w.compact_array_len(len(value.subscribed_topic_names))
            for name in value.subscribed_topic_names:
                w.compact_string(name)
            w.compact_string(value.subscribed_topic_regex)
            w.int32(value.rebalance_timeout_ms)
            w.compact_string(value.server_assignor)
            w.no_tagged_fields()
        case ConsumerGroupTargetAssignmentMetadataValue(assignment_epoch):
            w.int16(0)
            w.int32(assignment_epoch)
            w.no_tagged_fields()
        case ConsumerGroupTargetAssignmentMemberValue(topic_partitions):
            w.int16(0)
            _write_topic_partitions(w, topic_partitions)
            w.no_tagged_fields()
        case ConsumerGroupCurrentMemberAssignmentValue():
            w.int16(0)
            w.int32(value.member_epoch)
            w.int32(value.previous_member_epoch)
            w.int8(value.state)
            _write_topic_partitions(w, value.assigned_partitions)
            _write_topic_partitions(w, value.partitions_pending_revocation)
            w.no_tagged_fields()
        case _:
            raise TypeError(f"not a record value: {value!r}")
    return bytes(w.buf)


def _decode_offset_commit_value(r: Reader, version: int) -> OffsetCommitValue:
    if not 0 <= version <= 4:
        raise r.corrupt(f"unknown offset commit value version {version}")
    flexible = version >= 4
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else -1
    metadata = r.compact_string() if flexible else r.string()
    commit_timestamp = r.int64()
    expire_timestamp = r.int64() if version == 1 else -1
    if flexible:
        r.skip_tagged_fields()
    return OffsetCommitValue(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)


def _decode_group_metadata_value(r: Reader, version: int) -> GroupMetadataValue:
    if not 0 <= version <= 4:
        raise r.corrupt(f"unknown group metadata value version {version}")
    flexible = version >= 4
    string = r.compact_string if flexible else r.string
    nullable_string = r.nullable_compact_string if flexible else r.nullable_string
    bytes_ = r.compact_bytes if flexible else r.bytes_

    def member() -> MemberMetadata:
        member_id = string()
        group_instance_id = nullable_string() if version >= 3 else None
        client_id = string()
        client_host = string()
        rebalance_timeout_ms = r.int32() if version >= 1 else None
        session_timeout_ms = r.int32()
        subscription = bytes_()
        assignment = bytes_()
        if flexible:
            r.skip_tagged_fields()
        return MemberMetadata(
            member_id,
            group_instance_id,
            client_id,
            client_host,
            # v0 had one timeout for both, as Kafka reads it
            session_timeout_ms if rebalance_timeout_ms is None else rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        )

    protocol_type = string()
    generation = r.int32()
    protocol = nullable_string()
    leader = nullable_string()
    current_state_timestamp = r.int64() if version >= 2 else -1
    members = r.compact_array(member) if flexible else r.array(member)
    if flexible:
        r.skip_tagged_fields()
    return GroupMetadataValue(
        protocol_type, generation, protocol, leader, current_state_timestamp, members
    )


def _decode_partition_metadata_value(r: Reader) -> ConsumerGroupPartitionMetadataValue:
    def racks() -> None:
        r.int32()  # partition
        r.compact_array(r.compact_string)
        r.skip_tagged_fields()

    def topic() -> TopicMetadata:
        topic_id = r.uuid()
        name = r.compact_string()
        num_partitions = r.int32()
        r.compact_array(racks)
        r.skip_tagged_fields()
        return TopicMetadata(topic_id, name, num_partitions)

    return ConsumerGroupPartitionMetadataValue(r.compact_array(topic))


def _decode_member_metadata_value(r: Reader) -> ConsumerGroupMemberMetadataValue:
    return ConsumerGroupMemberMetadataValue(
        instance_id=r.nullable_compact_string(),
        rack_id=r.nullable_compact_string(),
        client_id=r.compact_string(),
        client_host=r.compact_string(),
        subscribed_topic_names=r.compact_array(r.compact_string),
        subscribed_topic_regex=r.nullable_compact_string(),
        rebalance_timeout_ms=r.int32(),
        server_assignor=r.nullable_compact_string(),
    )


def _decode_current_assignment_value(r: Reader) -> ConsumerGroupCurrentMemberAssignmentValue:
    return ConsumerGroupCurrentMemberAssignmentValue(
        member_epoch=r.int32(),
        previous_member_epoch=r.int32(),
        state=r.int8(),
        assigned_partitions=r.compact_array(lambda: _read_topic_partitions(r)),
        partitions_pending_revocation=r.compact_array(lambda: _read_topic_partitions(r)),
    )


def _decode_value(r: Reader, record_type: int) -> RecordValue:
    version = r.int16()
    if record_type in (_LEGACY_OFFSET_COMMIT, _OFFSET_COMMIT):
        return _decode_offset_commit_value(r, version)
    if record_type == _GROUP_METADATA:
        return _decode_group_metadata_value(r, version)
    # KIP-848 records have only ever had value version 0.
    if version != 0:
        raise r.corrupt(f"unknown value version {version} for record type {record_type}")
    value: RecordValue
    match record_type:
        case 3:
            value = ConsumerGroupMetadataValue(r.int32())
        case 4:
            value = _decode_partition_metadata_value(r)
        case 5:
            value = _decode_member_metadata_value(r)
        case 6:
            value = ConsumerGroupTargetAssignmentMetadataValue(r.int32())
        case 7:
            value = ConsumerGroupTargetAssignmentMemberValue(
                r.compact_array(lambda: _read_topic_partitions(r))
            )
        case _:
            value = _decode_current_assignment_value(r)
    r.skip_tagged_fields()
    return value


def decode(key: bytes, value: bytes | None) -> tuple[RecordKey, RecordValue | None] | None:
    """The typed record of ``key``/``value`` bytes (``value`` ``None`` is a tombstone).

    Returns ``None`` for a record type this module does not know, which the caller skips.
    Raises :class:`CorruptRecordError`, and nothing else, on malformed bytes.
    """
    kr = Reader(bytes(key), "record key")
    record_type = kr.int16()
    decoded_key = _decode_key(kr, record_type)
    if decoded_key is None:
        return None
    kr.done()
    if value is None:
        return decoded_key, None
    vr = Reader(bytes(value), f"value of record type {record_type}")
    decoded_value = _decode_value(vr, record_type)
    vr.done()
    return decoded_key, decoded_value


# -- partitioning ----------------------------------------------------------------------------


def _java_string_hash(s: str) -> int:
    """Java's ``String.hashCode``: over UTF-16 code units, in int32 arithmetic."""
    data = s.encode("utf-16-be", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group_id``, as Kafka computes it:
    ``Utils.abs(groupId.hashCode()) % partitions``, where ``Utils.abs`` maps
    ``Integer.MIN_VALUE`` to 0."""
    if partitions <= 0:
        raise ValueError(f"partitions must be positive, not {partitions}")
    h = _java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions
