"""Avro format: parsing through fastavro, Confluent's identity texts, and compatibility by the
Avro specification's schema resolution rules (the cases Confluent's documentation shows)."""

from __future__ import annotations

import json

import pytest

from odradek.registry.formats import InvalidSchemaError, get_format
from odradek.registry.formats.avro import FORMAT, AvroSchema

NO_REFS: dict[str, str] = {}


def parse(schema: object, references: dict[str, str] | None = None) -> AvroSchema:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return FORMAT.parse(text, references or NO_REFS)


def record(name: str, *fields: dict[str, object], **extra: object) -> dict[str, object]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


# --- parsing -------------------------------------------------------------------------------------


def test_format_is_served_as_avro() -> None:
    assert get_format("AVRO") is FORMAT
    assert FORMAT.schema_type == "AVRO"
    assert parse('"string"').schema_type == "AVRO"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not JSON"),
        ('{"type": "foo"}', "unknown type"),
        ('"Nope"', "Nope"),
        ('{"type": "record", "name": "A", "fields": [{"name": "b", "type": "Missing"}]}', "Missing"),
        ('{"type": "record", "name": "A", "fields": [{"name": "b", "type": "int", "default": "x"}]}',
         "Default value"),
        ('{"type": "record", "name": "A", "fields": [{"name": "b", "type": "int", "default": 4294967296}]}',
         "out of range"),
        ('{"type": "fixed", "name": "F"}', "size"),
        ('{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "unique"),
        ('{"type": "enum", "name": "E", "symbols": ["1A"]}', "symbol"),
        ('["int", "int"]', "duplicate in union"),
        ('["int", ["string"]]', "union"),
        ('{"type": "record", "name": "1A", "fields": []}', "illegal name"),
        ('{"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "long"}]}',
         "duplicate field"),
        ('{"type": "record", "name": "A", "fields": [{"name": "a", "type": {"type": "enum", "name": "A", "symbols": ["X"]}}]}',
         "redefined"),
    ],
)
def test_invalid_schemas_are_refused_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSchemaError, match=fragment):
        parse(text)


def test_two_records_of_different_names_may_share_a_union() -> None:
    schema = parse(["null", record("a.A"), record("a.B")])
    assert schema.canonical() == (
        '["null",{"type":"record","name":"A","namespace":"a","fields":[]},'
        '{"type":"record","name":"B","namespace":"a","fields":[]}]'
    )


def test_references_resolve_by_full_name_in_any_order() -> None:
    address = {"type": "record", "name": "Address", "namespace": "com.acme",
               "fields": [{"name": "country", "type": "com.acme.Country"}]}
    country = {"type": "enum", "name": "Country", "namespace": "com.acme", "symbols": ["FR", "DE"]}
    refs = {"com.acme.Address": json.dumps(address), "com.acme.Country": json.dumps(country)}
    schema = parse(record("com.acme.Customer", {"name": "home", "type": "com.acme.Address"}), refs)
    # A referenced type is written by name only, as Confluent's canonical string does.
    assert schema.canonical() == (
        '{"type":"record","name":"Customer","namespace":"com.acme",'
        '"fields":[{"name":"home","type":"Address"}]}'
    )
    assert set(schema.named) == {"com.acme.Address", "com.acme.Country", "com.acme.Customer"}


def test_unknown_reference_and_bad_reference_are_invalid() -> None:
    with pytest.raises(InvalidSchemaError, match="com.acme.Address"):
        parse(record("C", {"name": "home", "type": "com.acme.Address"}))
    with pytest.raises(InvalidSchemaError, match="reference 'R'"):
        parse('"string"', {"R": "{"})


def test_a_schema_may_not_redefine_a_referenced_name() -> None:
    refs = {"E": json.dumps({"type": "enum", "name": "E", "symbols": ["A"]})}
    with pytest.raises(InvalidSchemaError, match="redefined"):
        parse({"type": "enum", "name": "E", "symbols": ["B"]}, refs)


# --- identity ------------------------------------------------------------------------------------


def test_canonical_ignores_whitespace_and_reserved_property_order() -> None:
    a = parse('{"type": "record", "name": "User", "namespace": "n",\n "fields": [{"name": "id", "type": "long"}]}')
    b = parse('{"fields":[{"type":"long","name":"id"}],"namespace":"n","name":"User","type":"record"}')
    assert a.canonical() == b.canonical()
    assert a.canonical() == (
        '{"type":"record","name":"User","namespace":"n","fields":[{"name":"id","type":"long"}]}'
    )


def test_canonical_keeps_what_parsing_canonical_form_drops() -> None:
    base = record("User", {"name": "id", "type": "long"})
    with_default = record("User", {"name": "id", "type": "long", "default": 0})
    with_doc = record("User", {"name": "id", "type": "long"}, doc="a user")
    with_alias = record("User", {"name": "id", "type": "long", "aliases": ["key"]})
    with_prop = record("User", {"name": "id", "type": {"type": "long", "logicalType": "timestamp-millis"}})
    texts = {parse(s).canonical() for s in (base, with_default, with_doc, with_alias, with_prop)}
    assert len(texts) == 5


def test_canonical_writes_java_avro_layout() -> None:
    schema = parse({
        "namespace": "x.y", "name": "A", "type": "record", "aliases": ["Old"], "doc": "d",
        "custom": 1,
        "fields": [
            {"order": "descending", "type": {"type": "int"}, "name": "f", "doc": "fd", "x": True},
            {"name": "g", "type": "int", "order": "ascending"},
            {"name": "r", "type": ["null", "A"], "default": None},
            {"name": "n", "type": {"type": "record", "name": "B", "namespace": "",
                                   "fields": [{"name": "q", "type": {"type": "fixed", "name": "o.F", "size": 3}}]}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["P", "Q"], "default": "P"}},
            {"name": "m", "type": {"type": "map", "values": "o.F"}},
        ],
    })
    assert schema.canonical() == (
        '{"type":"record","name":"A","namespace":"x.y","doc":"d","fields":['
        '{"name":"f","type":"int","doc":"fd","order":"descending","x":true},'
        '{"name":"g","type":"int"},'
        '{"name":"r","type":["null","A"],"default":null},'
        '{"name":"n","type":{"type":"record","name":"B","namespace":"","fields":['
        '{"name":"q","type":{"type":"fixed","name":"F","namespace":"o","size":3}}]}},'
        '{"name":"e","type":{"type":"enum","name":"E","symbols":["P","Q"],"default":"P"}},'
        '{"name":"m","type":{"type":"map","values":"o.F"}}],'
        '"custom":1,"aliases":["Old"]}'
    )


def test_normalized_uses_full_names_and_sorted_properties() -> None:
    short = parse({"type": "record", "name": "A", "namespace": "x", "z": 1, "a": 2,
                   "fields": [{"name": "b", "type": {"type": "enum", "name": "E", "symbols": ["S"]}},
                              {"name": "c", "type": "E"}]})
    full = parse({"type": "record", "name": "x.A", "a": 2, "z": 1,
                  "fields": [{"name": "b", "type": {"type": "enum", "name": "x.E", "symbols": ["S"]}},
                             {"name": "c", "type": "x.E"}]})
    assert short.canonical() != full.canonical()
    assert short.normalized() == full.normalized() == (
        '{"type":"record","name":"x.A","fields":['
        '{"name":"b","type":{"type":"enum","name":"x.E","symbols":["S"]}},'
        '{"name":"c","type":"x.E"}],"a":2,"z":1}'
    )
    # Normalizing is idempotent: the normalized text parses to itself.
    assert parse(short.normalized()).normalized() == short.normalized()


def test_canonical_text_parses_back_to_the_same_canonical_text() -> None:
    text = json.dumps(record("p.R", {"name": "self", "type": ["null", "p.R"], "default": None},
                             {"name": "v", "type": {"type": "array", "items": "string"}, "default": []}))
    once = parse(text).canonical()
    assert parse(once).canonical() == once
