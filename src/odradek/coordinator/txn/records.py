"""Records of ``__transaction_state``: typed key and value, and their bytes in Kafka's format.

Byte format (Apache Kafka's ``TransactionLogKey`` / ``TransactionLogValue`` message specs, so
Kafka's tools read what we write and we read what Kafka wrote):

- key: int16 key version (0; Kafka 4 calls it the record type, with the same value), then
  ``TransactionalId`` as an int16-length string. Other key versions are skipped by
  :func:`decode` (it returns ``None``), as Kafka skips them while loading.
- value: int16 value version, then the struct at that version; a null value is a tombstone
  (the id expired).

  - v0: ``ProducerId`` int64, ``ProducerEpoch`` int16, ``TransactionTimeoutMs`` int32,
    ``TransactionStatus`` int8 (the :class:`~odradek.coordinator.txn.state.TransactionState`
    id), ``TransactionPartitions`` nullable array of {``Topic`` string, ``PartitionIds``
    int32 array}, ``TransactionLastUpdateTimestampMs`` int64,
    ``TransactionStartTimestampMs`` int64. Kafka writes a null partition array in state
    Empty and ignores the array in that state when reading.
  - v1: the same fields, flexible (compact strings and arrays, a tagged-field section after
    each struct). Kafka 4 adds tagged fields 0 ``PreviousProducerId`` int64, 1
    ``NextProducerId`` int64 and 2 ``ClientTransactionVersion`` int16 (transaction version
    2); they are read, unknown tags are skipped.

  Both versions are read. Like Kafka 3.9 (whose transaction version 0 keeps the log
  non-flexible) :func:`encode_value` writes v0 unless asked for v1.

Decoding is strict: truncated or trailing bytes, a null where the spec forbids one, invalid
UTF-8, an unknown value version or an unknown state id raise
:class:`~odradek.errors.CorruptRecordError` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from odradek.coordinator._codec import Reader, Writer
from odradek.coordinator.group.records import partition_for as _partition_for
from odradek.coordinator.txn.state import TransactionState

__all__ = [
    "KEY_VERSION",
    "VALUE_VERSION",
    "TxnKey",
    "TxnPartitions",
    "TxnValue",
    "encode_key",
    "encode_value",
    "decode",
    "partition_for",
]

KEY_VERSION = 0
#: The value version written by default (Kafka 3.9's, transaction version 0).
VALUE_VERSION = 0
_MAX_VALUE_VERSION = 1

_TAG_PREVIOUS_PRODUCER_ID = 0
_TAG_NEXT_PRODUCER_ID = 1
_TAG_CLIENT_TRANSACTION_VERSION = 2


@dataclass(frozen=True, slots=True)
class TxnKey:
    transactional_id: str


@dataclass(frozen=True, slots=True)
class TxnPartitions:
    topic: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TxnValue:
    """One ``TransactionLogValue``. ``partitions`` is empty for a null array; the last three
    fields exist only in v1 and keep their defaults in v0."""

    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    state: TransactionState
    partitions: tuple[TxnPartitions, ...]
    last_update_timestamp_ms: int
    start_timestamp_ms: int
    previous_producer_id: int = -1
    next_producer_id: int = -1
    client_transaction_version: int = 0


def partition_for(transactional_id: str, partitions: int) -> int:
    """The ``__transaction_state`` partition of ``transactional_id``, as Kafka computes it:
    ``Utils.abs(transactionalId.hashCode()) % partitions`` (the same rule as for groups)."""
    return _partition_for(transactional_id, partitions)


_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")


# -- writing ---------------------------------------------------------------------------------


def encode_key(key: TxnKey) -> bytes:
    w = Writer()
    w.int16(KEY_VERSION)
    w.flex_string(key.transactional_id, flexible=False)
    return bytes(w.buf)


def encode_value(value: TxnValue | None, version: int = VALUE_VERSION) -> bytes | None:
    """The value bytes of ``value`` at ``version`` (0 or 1); ``None`` (a tombstone) stays
    ``None``. Raises ValueError for a value the format cannot hold: partitions in state Empty
    (Kafka refuses those too) or, in v0, v1-only fields away from their defaults."""
    if value is None:
        return None
    if not 0 <= version <= _MAX_VALUE_VERSION:
        raise ValueError(f"unknown transaction log value version {version}")
    empty = value.state is TransactionState.EMPTY
    if empty and value.partitions:
        raise ValueError("a transaction in state Empty has no partitions")
    flexible = version >= 1
    tagged: list[tuple[int, bytes]] = []
    if value.previous_producer_id != -1:
        tagged.append((_TAG_PREVIOUS_PRODUCER_ID, _I64.pack(value.previous_producer_id)))
    if value.next_producer_id != -1:
        tagged.append((_TAG_NEXT_PRODUCER_ID, _I64.pack(value.next_producer_id)))
    if value.client_transaction_version != 0:
        tagged.append(
            (_TAG_CLIENT_TRANSACTION_VERSION, _I16.pack(value.client_transaction_version))
        )
    if tagged and not flexible:
        raise ValueError("value version 0 cannot hold the v1 tagged fields")
    w = Writer()
    w.int16(version)
    w.int64(value.producer_id)
    w.int16(value.producer_epoch)
    w.int32(value.transaction_timeout_ms)
    w.int8(value.state)
    if empty:
        w.flex_array_len(None, flexible)
    else:
        w.flex_array_len(len(value.partitions), flexible)
        for tp in value.partitions:
            w.flex_string(tp.topic, flexible)
            w.flex_array_len(len(tp.partitions), flexible)
            for p in tp.partitions:
                w.int32(p)
            if flexible:
                w.uvarint(0)
    w.int64(value.last_update_timestamp_ms)
    w.int64(value.start_timestamp_ms)
    if flexible:
        w.uvarint(len(tagged))
        for tag, data in tagged:
            w.uvarint(tag)
            w.uvarint(len(data))
            w.buf += data
    return bytes(w.buf)


# -- reading ---------------------------------------------------------------------------------


def _tagged_int(r: Reader, data: bytes | None, fmt: struct.Struct, default: int) -> int:
    if data is None:
        return default
    if len(data) != fmt.size:
        raise r.corrupt(f"tagged field of {len(data)} bytes where {fmt.size} are expected")
    return int(fmt.unpack(data)[0])


def _decode_value(r: Reader) -> TxnValue:
    version = r.int16()
    if not 0 <= version <= _MAX_VALUE_VERSION:
        raise r.corrupt(f"unknown transaction log value version {version}")
    flexible = version >= 1

    def partitions() -> TxnPartitions:
        topic = r.flex_string(flexible)
        ids = r.flex_array(r.int32, flexible, nullable=False)
        if flexible:
            r.tagged_fields()
        return TxnPartitions(topic, ids)

    producer_id = r.int64()
    producer_epoch = r.int16()
    timeout_ms = r.int32()
    status = r.int8()
    try:
        state = TransactionState(status)
    except ValueError:
        raise r.corrupt(f"unknown transaction state id {status}") from None
    parts = r.flex_array(partitions, flexible, nullable=True)
    last_update = r.int64()
    start = r.int64()
    tags = r.tagged_fields() if flexible else {}
    if state is TransactionState.EMPTY:
        parts = ()  # Kafka ignores the partitions of an Empty transaction
    return TxnValue(
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        parts,
        last_update,
        start,
        previous_producer_id=_tagged_int(r, tags.get(_TAG_PREVIOUS_PRODUCER_ID), _I64, -1),
        next_producer_id=_tagged_int(r, tags.get(_TAG_NEXT_PRODUCER_ID), _I64, -1),
        client_transaction_version=_tagged_int(
            r, tags.get(_TAG_CLIENT_TRANSACTION_VERSION), _I16, 0
        ),
    )


def decode(key: bytes, value: bytes | None) -> tuple[TxnKey, TxnValue | None] | None:
    """The typed record of ``key``/``value`` bytes (``value`` ``None`` is a tombstone).

    Returns ``None`` for a key version this module does not know, which the caller skips.
    Raises :class:`CorruptRecordError`, and nothing else, on malformed bytes.
    """
    kr = Reader(bytes(key), "transaction log key")
    version = kr.int16()
    if version != KEY_VERSION:
        return None
    txn_key = TxnKey(kr.flex_string(flexible=False))
    kr.done()
    if value is None:
        return txn_key, None
    vr = Reader(bytes(value), f"transaction log value of {txn_key.transactional_id!r}")
    txn_value = _decode_value(vr)
    vr.done()
    return txn_key, txn_value
