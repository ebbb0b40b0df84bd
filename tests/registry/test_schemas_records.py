"""``_schemas`` records in Confluent's format and the state they replay into (no broker)."""

from __future__ import annotations

import json

from odradek.registry.records import (
    Association,
    AssociationKey,
    AssociationValue,
    AssocValue,
    ConfigKey,
    ConfigValue,
    ContextKey,
    DeleteSubjectKey,
    DeleteSubjectValue,
    IdCounterKey,
    IdCounterValue,
    ModeKey,
    ModeValue,
    NoopKey,
    Reference,
    SchemaKey,
    SchemaValue,
    decode_key,
    decode_value,
    encode_key,
    encode_value,
)
from odradek.registry.state import RegistryState, context_of


def test_keys_and_values_as_confluent_writes_them() -> None:
    assert json.loads(encode_key(SchemaKey("s", 3))) == {
        "keytype": "SCHEMA", "subject": "s", "version": 3, "magic": 1}
    assert json.loads(encode_key(ConfigKey(None))) == {
        "keytype": "CONFIG", "subject": None, "magic": 0}
    value = SchemaValue("s", 3, 7, "PROTOBUF", "syntax = \"proto3\";",
                        (Reference("a.proto", "a", 1),), False, {"properties": {"x": "y"}})
    data = encode_value(value)
    assert data is not None
    assert json.loads(data) == {
        "subject": "s", "version": 3, "id": 7, "schemaType": "PROTOBUF",
        "schema": "syntax = \"proto3\";",
        "references": [{"name": "a.proto", "subject": "a", "version": 1}],
        "deleted": False, "metadata": {"properties": {"x": "y"}}}
    for key, val in [(SchemaKey("s", 3), value), (ConfigKey("s"), ConfigValue("FULL")),
                     (ModeKey(None), ModeValue("IMPORT")),
                     (DeleteSubjectKey("s"), DeleteSubjectValue("s", 3)), (NoopKey(), None),
                     (IdCounterKey(), IdCounterValue(9))]:
        decoded = decode_key(encode_key(key))
        assert decoded == key
        assert decode_value(key, encode_value(val)) == val
    # The id counter is a NOOP key (Confluent skips those) of its own (never replaced by theirs).
    assert json.loads(encode_key(IdCounterKey())) == {
        "keytype": "NOOP", "magic": 0, "odradek": "id-counter"}
    assert decode_key(b'{"keytype":"NOOP","magic":0}') == NoopKey()
    # A key type from a newer registry is skipped, not an error.
    assert decode_key(b'{"keytype":"CONTEXT","tenant":"t","context":".c","magic":0}') is None
    # Confluent's own SCHEMA values name no schemaType for Avro.
    avro = decode_value(SchemaKey("s", 1), b'{"subject":"s","version":1,"id":1,"schema":"\\"int\\""}')
    assert isinstance(avro, SchemaValue) and avro.schema_type == "AVRO" and not avro.deleted


def test_replay() -> None:
    state = RegistryState()
    v1 = SchemaValue("s", 1, 1, "AVRO", '"int"')
    v2 = SchemaValue("s", 2, 2, "AVRO", '"long"')
    state.apply(SchemaKey("s", 1), v1)
    state.apply(SchemaKey("s", 2), v2)
    state.apply(SchemaKey("t", 1), SchemaValue("t", 1, 1, "AVRO", '"int"'))
    assert [sv.version for sv in state.versions("s")] == [1, 2]
    assert {sv.subject for sv in state.users_of(1)} == {"s", "t"}
    state.apply(DeleteSubjectKey("s"), DeleteSubjectValue("s", 2))
    assert state.versions("s") == [] and len(state.versions("s", deleted=True)) == 2
    assert list(state.subject_names()) == ["t"]
    state.apply(SchemaKey("s", 2), None)
    state.apply(SchemaKey("s", 1), None)
    assert "s" not in state.subjects and state.by_id(2) is None
    assert state.max_id() == 2  # a hard-deleted id is not handed out again
    # ...nor once compaction has removed its records: the counter remembers it.
    fresh = RegistryState()
    fresh.apply(IdCounterKey(), IdCounterValue(7))
    fresh.apply(SchemaKey("t", 1), SchemaValue("t", 1, 1, "AVRO", '"int"'))
    assert fresh.max_id() == 7
    state.apply(ConfigKey("t"), ConfigValue("NONE"))
    state.apply(ConfigKey("t"), None)
    assert state.configs == {}


def test_context_of() -> None:
    assert context_of(":.team:orders-value") == ".team"
    assert context_of("orders-value") == "."
    assert context_of(":.:orders-value") == "."
    assert context_of(":.no-end") == "."


def test_association_records_round_trip_and_replay() -> None:
    key = AssociationKey("lkc-1")
    assert json.loads(encode_key(key)) == {
        "keytype": "NOOP", "magic": 0, "odradek": "association", "resourceId": "lkc-1"}
    value = AssociationValue("orders", "cluster", "lkc-1", "topic", (
        Association("k", "key", "g1"), Association("v", "value", "g2", "STRONG", True)))
    decoded_key = decode_key(encode_key(key))
    assert decoded_key == key
    decoded = decode_value(key, encode_value(value))
    assert decoded == value
    # Another NOOP stays a plain NOOP; a tombstone removes the resource.
    assert decode_key(b'{"keytype":"NOOP","magic":0}') == NoopKey()
    state = RegistryState()
    state.apply(key, decoded)
    assert state.associations["lkc-1"].associations[1].frozen
    state.apply(key, None)
    assert state.associations == {}


def test_confluent_assoc_and_context_records() -> None:
    """Confluent's ASSOC records (one per association, keyed without the resource id) build
    the same per-resource view; a tombstone removes one association; CONTEXT records name
    contexts; another tenant's records are skipped."""
    k = AssocValue("orders", "c", "lkc-1", "topic", Association("k", "key", "g1", "WEAK"))
    v = AssocValue("orders", "c", "lkc-1", "topic", Association("v", "value", "g2", "WEAK"))
    assert json.loads(encode_key(k.key)) == {
        "keytype": "ASSOC", "tenant": "default", "resourceName": "orders",
        "resourceNamespace": "c", "resourceType": "topic", "associationType": "key",
        "subject": "k", "magic": 0}
    state = RegistryState()
    for value in (v, k):  # either order: the view lists key before value
        key = decode_key(encode_key(value.key))
        assert key == value.key
        state.apply(key, decode_value(key, encode_value(value)))
    assert [a.subject for a in state.associations["lkc-1"].associations] == ["k", "v"]
    state.apply(k.key, None)
    assert [a.subject for a in state.associations["lkc-1"].associations] == ["v"]
    state.apply(v.key, None)
    assert state.associations == {}
    ctx = decode_key(b'{"keytype":"CONTEXT","tenant":"default","context":".team","magic":0}')
    assert ctx == ContextKey(".team")
    state.apply(ctx, decode_value(ctx, b'{"tenant":"default","context":".team"}'))
    assert state.contexts() == [".", ".team"]
    assert decode_key(b'{"keytype":"CONTEXT","tenant":"acme","context":".x","magic":0}') is None
