"""``__consumer_offsets`` record codecs: Kafka's byte layouts, every old version, corruption."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.group.records import (
    ConsumerGroupCurrentMemberAssignmentKey,
    ConsumerGroupCurrentMemberAssignmentValue,
    ConsumerGroupMemberMetadataKey,
    ConsumerGroupMemberMetadataValue,
    ConsumerGroupMetadataKey,
    ConsumerGroupMetadataValue,
    ConsumerGroupPartitionMetadataKey,
    ConsumerGroupPartitionMetadataValue,
    ConsumerGroupTargetAssignmentMemberKey,
    ConsumerGroupTargetAssignmentMemberValue,
    ConsumerGroupTargetAssignmentMetadataKey,
    ConsumerGroupTargetAssignmentMetadataValue,
    GroupMetadataKey,
    GroupMetadataValue,
    MemberMetadata,
    OffsetCommitKey,
    OffsetCommitValue,
    RecordKey,
    RecordValue,
    TopicMetadata,
    TopicPartitions,
    decode,
    encode_key,
    encode_value,
    group_id_of,
    partition_for,
)
from odradek.errors import CorruptRecordError

# -- hand-built primitives (independent of the module under test) ----------------------------


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i16(v: int) -> bytes:
    return struct.pack(">h", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def s(v: str | None) -> bytes:
    if v is None:
        return i16(-1)
    return i16(len(v.encode())) + v.encode()


def cs(v: str | None) -> bytes:
    """Compact string; lengths here stay below 127 so the varint is one byte."""
    if v is None:
        return b"\x00"
    return bytes([len(v.encode()) + 1]) + v.encode()


def b(v: bytes) -> bytes:
    return i32(len(v)) + v


def cb(v: bytes) -> bytes:
    return bytes([len(v) + 1]) + v


NO_TAGS = b"\x00"
TOPIC_A = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")


# -- strategies ------------------------------------------------------------------------------

short_text = st.text(max_size=20)
int8s = st.integers(-(2**7), 2**7 - 1)
int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
uuids = st.uuids()
topic_partitions = st.builds(TopicPartitions, uuids, st.lists(int32s, max_size=5).map(tuple))
tp_tuples = st.lists(topic_partitions, max_size=4).map(tuple)

keys: st.SearchStrategy[RecordKey] = st.one_of(
    st.builds(OffsetCommitKey, short_text, short_text, int32s),
    st.builds(GroupMetadataKey, short_text),
    st.builds(ConsumerGroupMetadataKey, short_text),
    st.builds(ConsumerGroupPartitionMetadataKey, short_text),
    st.builds(ConsumerGroupMemberMetadataKey, short_text, short_text),
    st.builds(ConsumerGroupTargetAssignmentMetadataKey, short_text),
    st.builds(ConsumerGroupTargetAssignmentMemberKey, short_text, short_text),
    st.builds(ConsumerGroupCurrentMemberAssignmentKey, short_text, short_text),
)

members = st.builds(
    MemberMetadata,
    short_text,
    st.none() | short_text,
    short_text,
    short_text,
    int32s,
    int32s,
    st.binary(max_size=30),
    st.binary(max_size=30),
)

# Offset commits that survive a round trip: with an expire timestamp Kafka writes v1, which
# has no leader epoch.
offset_commit_values = st.one_of(
    st.builds(OffsetCommitValue, int64s, int32s, short_text, int64s, st.just(-1)),
    st.builds(
        OffsetCommitValue,
        int64s,
        st.just(-1),
        short_text,
        int64s,
        int64s.filter(lambda v: v != -1),
    ),
)

values_by_key: dict[type, st.SearchStrategy[RecordValue]] = {
    OffsetCommitKey: offset_commit_values,
    GroupMetadataKey: st.builds(
        GroupMetadataValue,
        short_text,
        int32s,
        st.none() | short_text,
        st.none() | short_text,
        int64s,
        st.lists(members, max_size=4).map(tuple),
    ),
    ConsumerGroupMetadataKey: st.builds(ConsumerGroupMetadataValue, int32s),
    ConsumerGroupPartitionMetadataKey: st.builds(
        ConsumerGroupPartitionMetadataValue,
        st.lists(st.builds(TopicMetadata, uuids, short_text, int32s), max_size=4).map(tuple),
    ),
    ConsumerGroupMemberMetadataKey: st.builds(
        ConsumerGroupMemberMetadataValue,
        st.none() | short_text,
        st.none() | short_text,
        short_text,
        short_text,
        st.lists(short_text, max_size=5).map(tuple),
        st.none() | short_text,
        int32s,
        st.none() | short_text,
    ),
    ConsumerGroupTargetAssignmentMetadataKey: st.builds(
        ConsumerGroupTargetAssignmentMetadataValue, int32s
    ),
    ConsumerGroupTargetAssignmentMemberKey: st.builds(
        ConsumerGroupTargetAssignmentMemberValue, tp_tuples
    ),
    ConsumerGroupCurrentMemberAssignmentKey: st.builds(
        ConsumerGroupCurrentMemberAssignmentValue, int32s, int32s, int8s, tp_tuples, tp_tuples
    ),
}


@st.composite
def records(draw: st.DrawFn) -> tuple[RecordKey, RecordValue]:
    key = draw(keys)
    return key, draw(values_by_key[type(key)])


def encoded(key: RecordKey, value: RecordValue) -> tuple[bytes, bytes]:
    value_bytes = encode_value(value)
    assert value_bytes is not None
    return encode_key(key), value_bytes


# -- round trips -----------------------------------------------------------------------------


@given(records())
def test_every_record_type_round_trips(record: tuple[RecordKey, RecordValue]) -> None:
    key, value = record
    assert decode(*encoded(key, value)) == (key, value)


@given(keys)
def test_tombstone_round_trips(key: RecordKey) -> None:
    assert encode_value(None) is None
    assert decode(encode_key(key), None) == (key, None)


def test_expire_timestamp_selects_v1_and_drops_the_leader_epoch() -> None:
    value = OffsetCommitValue(
        10, leader_epoch=4, metadata="m", commit_timestamp=1, expire_timestamp=2
    )
    raw = encode_value(value)
    assert raw is not None and raw[:2] == i16(1)
    key = OffsetCommitKey("g", "t", 0)
    assert decode(encode_key(key), raw) == (
        key,
        OffsetCommitValue(10, -1, "m", 1, 2),
    )


@given(keys)
def test_group_id_of_is_the_key_group(key: RecordKey) -> None:
    decoded = decode(encode_key(key), None)
    assert decoded is not None
    assert group_id_of(decoded[0]) == group_id_of(key) == key.group_id


# -- golden bytes ----------------------------------------------------------------------------


def test_offset_commit_key_golden() -> None:
    key = OffsetCommitKey("grp", "orders", 7)
    expected = i16(1) + s("grp") + s("orders") + i32(7)
    assert encode_key(key) == expected
    assert expected == bytes.fromhex("0001000367727000066f726465727300000007")


def test_offset_commit_value_v3_golden() -> None:
    value = OffsetCommitValue(
        42, leader_epoch=5, metadata="meta", commit_timestamp=1_700_000_000_000
    )
    assert encode_value(value) == i16(3) + i64(42) + i32(5) + s("meta") + i64(1_700_000_000_000)


def test_offset_commit_value_v1_golden() -> None:
    value = OffsetCommitValue(42, metadata="", commit_timestamp=100, expire_timestamp=200)
    assert encode_value(value) == i16(1) + i64(42) + s("") + i64(100) + i64(200)


def test_group_metadata_key_golden() -> None:
    assert encode_key(GroupMetadataKey("grp")) == bytes.fromhex("00020003677270")


def test_group_metadata_value_v3_golden() -> None:
    value = GroupMetadataValue(
        protocol_type="consumer",
        generation=3,
        protocol="range",
        leader="m1",
        current_state_timestamp=1234,
        members=(
            MemberMetadata("m1", None, "client", "/10.0.0.1", 60000, 45000, b"\x01\x02", b""),
            MemberMetadata("m2", "static-2", "c2", "/h", 30000, 10000, b"", b"\xff"),
        ),
    )
    expected = (
        i16(3)
        + s("consumer")
        + i32(3)
        + s("range")
        + s("m1")
        + i64(1234)
        + i32(2)
        + s("m1") + s(None) + s("client") + s("/10.0.0.1") + i32(60000) + i32(45000)
        + b(b"\x01\x02") + b(b"")
        + s("m2") + s("static-2") + s("c2") + s("/h") + i32(30000) + i32(10000)
        + b(b"") + b(b"\xff")
    )  # fmt: skip
    assert encode_value(value) == expected


def test_empty_group_metadata_value_golden() -> None:
    value = GroupMetadataValue("consumer", 0, None, None, -1, ())
    header = i16(3) + s("consumer") + i32(0) + s(None) + s(None)
    assert encode_value(value) == header + i64(-1) + i32(0)


def test_kip848_keys_golden() -> None:
    assert encode_key(ConsumerGroupMetadataKey("g")) == i16(3) + s("g")
    assert encode_key(ConsumerGroupPartitionMetadataKey("g")) == i16(4) + s("g")
    assert encode_key(ConsumerGroupMemberMetadataKey("g", "m")) == i16(5) + s("g") + s("m")
    assert encode_key(ConsumerGroupTargetAssignmentMetadataKey("g")) == i16(6) + s("g")
    assert encode_key(ConsumerGroupTargetAssignmentMemberKey("g", "m")) == i16(7) + s("g") + s("m")
    assert encode_key(ConsumerGroupCurrentMemberAssignmentKey("g", "m")) == i16(8) + s("g") + s("m")


def test_current_member_assignment_value_golden() -> None:
    value = ConsumerGroupCurrentMemberAssignmentValue(
        member_epoch=5,
        previous_member_epoch=4,
        state=1,
        assigned_partitions=(TopicPartitions(TOPIC_A, (0, 2)),),
        partitions_pending_revocation=(),
    )
    expected = (
        i16(0) + i32(5) + i32(4) + i8(1)
        + b"\x02" + TOPIC_A.bytes + b"\x03" + i32(0) + i32(2) + NO_TAGS
        + b"\x01"
        + NO_TAGS
    )  # fmt: skip
    assert encode_value(value) == expected


def test_member_metadata_value_golden() -> None:
    value = ConsumerGroupMemberMetadataValue(
        instance_id=None,
        rack_id="r1",
        client_id="c",
        client_host="/h",
        subscribed_topic_names=("a", "b"),
        subscribed_topic_regex=None,
        rebalance_timeout_ms=300000,
        server_assignor="uniform",
    )
    expected = (
        i16(0) + cs(None) + cs("r1") + cs("c") + cs("/h") + b"\x03" + cs("a") + cs("b")
        + cs(None) + i32(300000) + cs("uniform") + NO_TAGS
    )  # fmt: skip
    assert encode_value(value) == expected


def test_partition_metadata_value_golden() -> None:
    value = ConsumerGroupPartitionMetadataValue((TopicMetadata(TOPIC_A, "orders", 3),))
    expected = (
        i16(0) + b"\x02" + TOPIC_A.bytes + cs("orders") + i32(3) + b"\x01" + NO_TAGS + NO_TAGS
    )
    assert encode_value(value) == expected


def test_small_kip848_values_golden() -> None:
    assert encode_value(ConsumerGroupMetadataValue(9)) == i16(0) + i32(9) + NO_TAGS
    assert encode_value(ConsumerGroupTargetAssignmentMetadataValue(9)) == i16(0) + i32(9) + NO_TAGS
    assert (
        encode_value(ConsumerGroupTargetAssignmentMemberValue((TopicPartitions(TOPIC_A, (1,)),)))
        == i16(0) + b"\x02" + TOPIC_A.bytes + b"\x02" + i32(1) + NO_TAGS + NO_TAGS
    )


# -- older and flexible versions -------------------------------------------------------------

OC_KEY = OffsetCommitKey("g", "t", 1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (i16(0) + i64(7) + s("m") + i64(100), OffsetCommitValue(7, -1, "m", 100, -1)),
        (i16(1) + i64(7) + s("m") + i64(100) + i64(900), OffsetCommitValue(7, -1, "m", 100, 900)),
        (i16(2) + i64(7) + s("m") + i64(100), OffsetCommitValue(7, -1, "m", 100, -1)),
        (i16(3) + i64(7) + i32(3) + s("m") + i64(100), OffsetCommitValue(7, 3, "m", 100, -1)),
        (
            i16(4) + i64(7) + i32(3) + cs("m") + i64(100) + NO_TAGS,
            OffsetCommitValue(7, 3, "m", 100, -1),
        ),
        (  # unknown tagged fields (tags 0 and 9, 2 and 1 bytes) are skipped
            i16(4) + i64(7) + i32(3) + cs("m") + i64(100) + b"\x02\x00\x02ab\x09\x01z",
            OffsetCommitValue(7, 3, "m", 100, -1),
        ),
    ],
    ids=["v0", "v1", "v2", "v3", "v4", "v4-tagged"],
)
def test_offset_commit_value_versions(raw: bytes, expected: OffsetCommitValue) -> None:
    assert decode(encode_key(OC_KEY), raw) == (OC_KEY, expected)


def test_legacy_offset_commit_key_type_0() -> None:
    raw_key = i16(0) + s("g") + s("t") + i32(1)
    assert decode(raw_key, None) == (OC_KEY, None)


def _member_bytes(version: int, member_id: str, instance: str | None) -> bytes:
    string, nstring, bytes_ = (cs, cs, cb) if version >= 4 else (s, s, b)
    out = string(member_id)
    if version >= 3:
        out += nstring(instance)
    out += string("cid") + string("/host")
    if version >= 1:
        out += i32(60000)
    out += i32(10000) + bytes_(b"sub") + bytes_(b"asg")
    if version >= 4:
        out += NO_TAGS
    return out


def _group_value_bytes(version: int) -> bytes:
    string, nstring = (cs, cs) if version >= 4 else (s, s)
    out = i16(version) + string("consumer") + i32(5) + nstring("range") + nstring(None)
    if version >= 2:
        out += i64(777)
    array_len = b"\x03" if version >= 4 else i32(2)
    out += array_len + _member_bytes(version, "m1", "inst") + _member_bytes(version, "m2", None)
    if version >= 4:
        out += NO_TAGS
    return out


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_group_metadata_value_versions(version: int) -> None:
    decoded = decode(encode_key(GroupMetadataKey("g")), _group_value_bytes(version))
    assert decoded is not None
    value = decoded[1]
    assert isinstance(value, GroupMetadataValue)
    assert (value.protocol_type, value.generation, value.protocol, value.leader) == (
        "consumer",
        5,
        "range",
        None,
    )
    assert value.current_state_timestamp == (777 if version >= 2 else -1)
    m1, m2 = value.members
    assert m1 == MemberMetadata(
        "m1",
        "inst" if version >= 3 else None,
        "cid",
        "/host",
        # v0 had no rebalance timeout: the session timeout stands in for it, as in Kafka
        60000 if version >= 1 else 10000,
        10000,
        b"sub",
        b"asg",
    )
    assert m2.member_id == "m2" and m2.group_instance_id is None


def test_kip848_values_skip_tagged_fields() -> None:
    # ConsumerGroupMetadataValue with MetadataHash (tag 0, int64) and CreationTimeMs (tag 1)
    raw = i16(0) + i32(3) + b"\x02" + b"\x00\x08" + i64(99) + b"\x01\x08" + i64(5)
    assert decode(encode_key(ConsumerGroupMetadataKey("g")), raw) == (
        ConsumerGroupMetadataKey("g"),
        ConsumerGroupMetadataValue(3),
    )
    # TopicPartitions with AssignmentEpochs (tag 0) and ClassicMemberMetadata-like tag on top
    raw = (
        i16(0) + b"\x02" + TOPIC_A.bytes + b"\x02" + i32(4)
        + b"\x01\x00\x06\x02" + i32(1) + b"\x00"
        + b"\x01\x00\x01\x00"
    )  # fmt: skip
    key = ConsumerGroupTargetAssignmentMemberKey("g", "m")
    assert decode(encode_key(key), raw) == (
        key,
        ConsumerGroupTargetAssignmentMemberValue((TopicPartitions(TOPIC_A, (4,)),)),
    )


def test_partition_metadata_racks_are_read_and_dropped() -> None:
    raw = (
        i16(0) + b"\x02" + TOPIC_A.bytes + cs("orders") + i32(2)
        + b"\x02" + i32(0) + b"\x03" + cs("r1") + cs("r2") + NO_TAGS
        + NO_TAGS + NO_TAGS
    )  # fmt: skip
    key = ConsumerGroupPartitionMetadataKey("g")
    assert decode(encode_key(key), raw) == (
        key,
        ConsumerGroupPartitionMetadataValue((TopicMetadata(TOPIC_A, "orders", 2),)),
    )


@pytest.mark.parametrize("record_type", [9, 10, 11, 100, 32767, -1])
def test_unknown_record_types_are_skipped(record_type: int) -> None:
    assert decode(i16(record_type) + s("g"), b"\x00\x00whatever") is None


# -- corruption ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"", None),
        (b"\x00", None),
        (i16(2) + i16(5) + b"ab", None),  # string longer than the key
        (i16(2) + s(None), None),  # null group id
        (i16(2) + s("g") + b"x", None),  # trailing key byte
        (i16(2) + i16(-2), None),  # negative string length
        (i16(2) + i16(2) + b"\xff\xfe", None),  # invalid UTF-8
        (i16(1) + s("g") + s("t") + i32(0), b""),  # empty value
        (i16(1) + s("g") + s("t") + i32(0), i16(5) + i64(1) + s("") + i64(1)),  # version 5
        (i16(1) + s("g") + s("t") + i32(0), i16(-1)),  # negative version
        (i16(1) + s("g") + s("t") + i32(0), i16(3) + i64(1) + i32(0) + s("") + i64(1) + b"\x00"),
        (i16(2) + s("g"), i16(3) + s("c") + i32(0) + s(None) + s(None) + i64(0) + i32(-1)),
        (i16(2) + s("g"), i16(3) + s("c") + i32(0) + s(None) + s(None) + i64(0) + i32(10**9)),
        (i16(2) + s("g"), i16(3) + s(None) + i32(0) + s(None) + s(None) + i64(0) + i32(0)),
        (i16(3) + s("g"), i16(1) + i32(1) + NO_TAGS),  # KIP-848 value version 1
        (i16(3) + s("g"), i16(0) + i32(1) + b"\x80\x80\x80\x80\x80\x01"),  # 6-byte varint
        (i16(3) + s("g"), i16(0) + i32(1) + b"\xff\xff\xff\xff\x7f"),  # varint over 32 bits
        (i16(3) + s("g"), i16(0) + i32(1) + b"\x01\x00\x05ab"),  # truncated tagged field
        (i16(5) + s("g") + s("m"), i16(0) + cs(None) * 2 + cs(None) + cs("h") + b"\x01"),
        (i16(7) + s("g") + s("m"), i16(0) + b"\x00" + NO_TAGS),  # null array
    ],
)
def test_malformed_records_raise_corrupt_record_error(key: bytes, value: bytes | None) -> None:
    with pytest.raises(CorruptRecordError):
        decode(key, value)


@given(records(), st.data())
def test_every_truncation_raises(
    record: tuple[RecordKey, RecordValue], data: st.DataObject
) -> None:
    raw_key, raw_value = encoded(*record)
    cut_key = data.draw(st.integers(0, len(raw_key) - 1))
    with pytest.raises(CorruptRecordError):
        decode(raw_key[:cut_key], None)
    cut_value = data.draw(st.integers(0, len(raw_value) - 1))
    with pytest.raises(CorruptRecordError):
        decode(raw_key, raw_value[:cut_value])


def _decode_or_corrupt(key: bytes, value: bytes | None) -> None:
    try:
        result = decode(key, value)
    except CorruptRecordError:
        return
    if result is not None:
        decoded_key, decoded_value = result
        # whatever decodes must encode back to the same key type
        assert encode_key(decoded_key)[2:] == key[2:]
        assert (decoded_value is None) == (value is None)


@given(st.binary(max_size=64), st.none() | st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_corrupt(key: bytes, value: bytes | None) -> None:
    _decode_or_corrupt(key, value)


@given(keys, st.integers(0, 4), st.binary(max_size=200))
def test_arbitrary_values_of_known_types_decode_or_raise_corrupt(
    key: RecordKey, version: int, body: bytes
) -> None:
    _decode_or_corrupt(encode_key(key), i16(version) + body)


@given(records(), st.data())
def test_flipped_bytes_decode_or_raise_corrupt(
    record: tuple[RecordKey, RecordValue], data: st.DataObject
) -> None:
    raw_key, raw_value = encoded(*record)
    at = data.draw(st.integers(0, len(raw_value) - 1))
    flipped = raw_value[:at] + bytes([raw_value[at] ^ data.draw(st.integers(1, 255))])
    _decode_or_corrupt(raw_key, flipped + raw_value[at + 1 :])


# -- partition_for ---------------------------------------------------------------------------


def java_hash(text: str) -> int:
    """String.hashCode by its definition: sum of c[i]*31^(n-1-i) over UTF-16 units, int32."""
    units: list[int] = []
    for ch in text:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            units += [0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)]
        else:
            units.append(cp)
    n = len(units)
    total = sum(u * pow(31, n - 1 - i, 2**32) for i, u in enumerate(units)) % 2**32
    return total - 2**32 if total >= 2**31 else total


def java_abs_mod(h: int, partitions: int) -> int:
    return (0 if h == -(2**31) else abs(h)) % partitions


@pytest.mark.parametrize(
    ("group_id", "hash_code"),
    [
        ("", 0),
        ("a", 97),
        ("hello", 99162322),
        ("Aa", 2112),
        ("BB", 2112),  # the classic collision
        ("hello world", 1794106052),
        ("polygenelubricants", -(2**31)),  # Integer.MIN_VALUE: Utils.abs gives 0
        ("\U0001f600", 0xD83D * 31 + 0xDE00),  # non-BMP: two UTF-16 code units
    ],
)
def test_java_hash_reference_values(group_id: str, hash_code: int) -> None:
    assert java_hash(group_id) == hash_code


@pytest.mark.parametrize(
    ("group_id", "partitions", "expected"),
    [
        ("", 50, 0),
        ("a", 50, 97 % 50),
        ("hello", 50, 99162322 % 50),
        ("hello", 7, 99162322 % 7),
        ("polygenelubricants", 50, 0),
        ("polygenelubricants", 7, 0),  # abs(MIN_VALUE) would be 2**31, and 2**31 % 7 == 2
        ("\U0001f600", 50, (0xD83D * 31 + 0xDE00) % 50),
        ("zzzzzzzz", 50, java_abs_mod(java_hash("zzzzzzzz"), 50)),
    ],
)
def test_partition_for_known_values(group_id: str, partitions: int, expected: int) -> None:
    assert partition_for(group_id, partitions) == expected


def test_negative_hash_uses_absolute_value() -> None:
    h = java_hash("zzzzzzzz")
    assert h < 0  # the case this test is for
    assert partition_for("zzzzzzzz", 1000) == (-h) % 1000


@given(st.text(), st.integers(1, 1000))
def test_partition_for_matches_the_definition(group_id: str, partitions: int) -> None:
    p = partition_for(group_id, partitions)
    assert 0 <= p < partitions
    assert p == java_abs_mod(java_hash(group_id), partitions)


def test_partition_for_rejects_non_positive_counts() -> None:
    with pytest.raises(ValueError):
        partition_for("g", 0)
