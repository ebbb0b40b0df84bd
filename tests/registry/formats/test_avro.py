"""Avro format: parsing through fastavro, Confluent's identity texts, and compatibility by the
Avro specification's schema resolution rules (the cases Confluent's documentation shows)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
        ('{"type": "record", "name": "A", "fields": [{"name": "b", "type": "double", "default": true}]}',
         "not a double"),
        ('{"type": "fixed", "name": "F"}', "size"),
        ('{"type": "record", "name": "R"}', "no fields"),
        ('{"type": {"type": "int"}}', "malformed schema"),
        ('{"type": "record", "name": "R", "fields": {}}', "no fields"),
        ('{"type": "record", "name": "R", "fields": [], "aliases": "S"}', "aliases"),
        ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "aliases": [1]}]}',
         "aliases"),
        ('{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "unique"),
        ('{"type": "enum", "name": "E", "symbols": ["1A"]}', "symbol"),
        ('["int", "int"]', "duplicate in union"),
        ('["int", ["string"]]', "union"),
        ('{"type": "record", "name": "1A", "fields": []}', "illegal name"),
        ('{"type": "record", "name": "int", "fields": []}', "may not be named int"),
        ('{"type": "fixed", "name": "F", "size": -1}', "illegal fixed size"),
        ('{"type": "record", "name": "A", "fields": [{"name": "a", "type": "int", "order": "up"}]}',
         "illegal order"),
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


def test_a_bare_name_falls_back_to_the_null_namespace_as_in_java() -> None:
    refs = {"Common": json.dumps(record("Common", {"name": "id", "type": "long"}))}
    schema = parse(record("com.acme.Order", {"name": "c", "type": "Common"},
                          {"name": "d", "type": {"type": "enum", "name": "Top", "namespace": "",
                                                 "symbols": ["A"]}},
                          {"name": "e", "type": "Top"}), refs)
    assert schema.canonical() == (
        '{"type":"record","name":"Order","namespace":"com.acme","fields":['
        '{"name":"c","type":"Common"},'
        '{"name":"d","type":{"type":"enum","name":"Top","namespace":"","symbols":["A"]}},'
        '{"name":"e","type":"Top"}]}'
    )
    # The canonical text (which writes null-namespace names bare) parses again.
    assert parse(schema.canonical(), refs).canonical() == schema.canonical()
    other = parse(record("com.acme.Order", {"name": "c", "type": "Common"},
                         {"name": "d", "type": "long"}, {"name": "e", "type": "long"}), refs)
    assert FORMAT.incompatibilities(other, other) == []
    with pytest.raises(InvalidSchemaError, match="com.acme.Missing"):
        parse(record("com.acme.Order", {"name": "c", "type": "Missing"}), refs)


def test_resolved_text_writes_referenced_types_out_once() -> None:
    country = {"type": "enum", "name": "Country", "namespace": "geo", "symbols": ["FR"]}
    address = {"type": "record", "name": "Address", "namespace": "com.acme",
               "fields": [{"name": "country", "type": "geo.Country"}]}
    refs = {"geo.Country": json.dumps(country), "com.acme.Address": json.dumps(address)}
    schema = parse(record("com.acme.Customer", {"name": "home", "type": "com.acme.Address"},
                          {"name": "work", "type": ["null", "Address"], "default": None},
                          {"name": "born", "type": "geo.Country"}), refs)
    resolved = schema.resolved()
    assert resolved == (
        '{"type":"record","name":"Customer","namespace":"com.acme","fields":['
        '{"name":"home","type":{"type":"record","name":"Address","fields":['
        '{"name":"country","type":{"type":"enum","name":"Country","namespace":"geo","symbols":["FR"]}}]}},'
        '{"name":"work","type":["null","Address"],"default":null},'
        '{"name":"born","type":"geo.Country"}]}'
    )
    # It stands alone: no references needed, and it describes the same data.
    alone = parse(resolved)
    assert FORMAT.incompatibilities(alone, schema) == FORMAT.incompatibilities(schema, alone) == []
    assert schema.canonical() != resolved


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
        '{"name":"x.A","type":"record","fields":['
        '{"name":"b","type":{"name":"x.E","type":"enum","symbols":["S"]},"order":"ASCENDING"},'
        '{"name":"c","type":"x.E","order":"ASCENDING"}],"a":2,"z":1}'
    )
    # Normalizing is idempotent: the normalized text parses to itself.
    assert parse(short.normalized()).normalized() == short.normalized()


def test_normalized_layout_of_every_kind() -> None:
    refs = {"r.Ref": json.dumps({"type": "fixed", "name": "Ref", "namespace": "r", "size": 2})}
    schema = parse({
        "type": "error", "name": "E", "namespace": "n", "aliases": ["Z", "o.A"], "doc": "d",
        "fields": [
            {"name": "ratio", "type": "double", "default": 1, "doc": "r", "aliases": ["y", "x"],
             "order": "descending"},
            {"name": "amount", "type": {"type": "bytes", "scale": 2, "precision": 9,
                                        "logicalType": "decimal", "b": 1, "a": 2}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "string"},
                                      "k": "v"}},
            {"name": "suit", "type": {"type": "enum", "name": "Suit", "symbols": ["H", "S"],
                                      "default": "S", "doc": ""}},
            {"name": "ref", "type": ["null", "r.Ref"], "default": None},
        ],
    }, refs)
    assert schema.normalized() == (
        '{"name":"n.E","type":"record","fields":['
        '{"name":"ratio","type":"double","order":"DESCENDING","doc":"r","aliases":["x","y"],'
        '"default":1.0},'
        '{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2,'
        '"a":2,"b":1},"order":"ASCENDING"},'
        '{"name":"day","type":{"type":"int","logicalType":"date"},"order":"ASCENDING"},'
        '{"name":"tags","type":{"type":"map","values":{"type":"array","items":"string"},"k":"v"},'
        '"order":"ASCENDING"},'
        '{"name":"suit","type":{"name":"n.Suit","type":"enum","symbols":["H","S"],"default":"S"},'
        '"order":"ASCENDING"},'
        '{"name":"ref","type":["null","r.Ref"],"order":"ASCENDING","default":null}],'
        '"doc":"d","aliases":["n.Z","o.A"]}'
    )
    assert parse(schema.normalized(), refs).normalized() == schema.normalized()


def test_a_default_on_a_non_enum_type_is_a_custom_property() -> None:
    schema = parse({"type": "array", "items": "int", "default": [], "x": 1})
    assert schema.canonical() == '{"type":"array","items":"int","default":[],"x":1}'
    assert schema.normalized() == '{"type":"array","items":"int","default":[],"x":1}'


def test_canonical_text_parses_back_to_the_same_canonical_text() -> None:
    text = json.dumps(record("p.R", {"name": "self", "type": ["null", "p.R"], "default": None},
                             {"name": "v", "type": {"type": "array", "items": "string"}, "default": []}))
    once = parse(text).canonical()
    assert parse(once).canonical() == once


# --- compatibility -------------------------------------------------------------------------------


def problems(reader: object, writer: object, *, reader_refs: dict[str, str] | None = None,
             writer_refs: dict[str, str] | None = None) -> list[str]:
    # Schemas here are JSON values (a bare str is a type name), never texts.
    return FORMAT.incompatibilities(
        parse(json.dumps(reader), reader_refs), parse(json.dumps(writer), writer_refs)
    )


def error_types(messages: list[str]) -> list[str]:
    return [m.split("'")[1] for m in messages]


def paths(messages: list[str]) -> list[str]:
    return [m.split("path '")[1].split("'")[0] for m in messages]


def compatible_at(level: str, new: object, old: object) -> bool:
    """The registry's levels from reader/writer questions, as the formats package defines them."""
    backward = not problems(new, old)  # the new schema reads data written with the old
    forward = not problems(old, new)  # the old schema reads data written with the new
    return {"BACKWARD": backward, "FORWARD": forward, "FULL": backward and forward}[level]


PAYMENT = record("io.confluent.examples.clients.basicavro.Payment",
                 {"name": "id", "type": "string"}, {"name": "amount", "type": "double"})
PAYMENT_WITH_REGION = record("io.confluent.examples.clients.basicavro.Payment",
                             {"name": "id", "type": "string"}, {"name": "amount", "type": "double"},
                             {"name": "region", "type": "string"})
PAYMENT_WITH_OPTIONAL_REGION = record("io.confluent.examples.clients.basicavro.Payment",
                                      {"name": "id", "type": "string"}, {"name": "amount", "type": "double"},
                                      {"name": "region", "type": ["null", "string"], "default": None})
PAYMENT_WITHOUT_AMOUNT = record("io.confluent.examples.clients.basicavro.Payment",
                                {"name": "id", "type": "string"})
PAYMENT_WITH_DEFAULTED_AMOUNT = record("io.confluent.examples.clients.basicavro.Payment",
                                       {"name": "id", "type": "string"},
                                       {"name": "amount", "type": "double", "default": 0.0})
PAYMENT_WITHOUT_DEFAULTED_AMOUNT = PAYMENT_WITHOUT_AMOUNT


@pytest.mark.parametrize(
    ("change", "old", "new", "backward", "forward"),
    [
        # Confluent's summary: BACKWARD allows deleting fields and adding optional fields,
        # FORWARD allows adding fields and deleting optional fields, FULL only optional ones.
        ("add a field without default", PAYMENT, PAYMENT_WITH_REGION, False, True),
        ("add an optional field", PAYMENT, PAYMENT_WITH_OPTIONAL_REGION, True, True),
        ("delete a field without default", PAYMENT, PAYMENT_WITHOUT_AMOUNT, True, False),
        ("delete an optional field", PAYMENT_WITH_DEFAULTED_AMOUNT, PAYMENT_WITHOUT_DEFAULTED_AMOUNT,
         True, True),
        ("widen int to long", record("R", {"name": "n", "type": "int"}),
         record("R", {"name": "n", "type": "long"}), True, False),
        ("make a field nullable", record("R", {"name": "s", "type": "string"}),
         record("R", {"name": "s", "type": ["null", "string"]}), True, False),
        ("add an enum symbol", {"type": "enum", "name": "E", "symbols": ["A"]},
         {"type": "enum", "name": "E", "symbols": ["A", "B"]}, True, False),
        ("add an enum symbol, the enum has a default",
         {"type": "enum", "name": "E", "symbols": ["A"], "default": "A"},
         {"type": "enum", "name": "E", "symbols": ["A", "B"], "default": "A"}, True, True),
        ("rename a record", record("a.R"), record("a.S"), False, False),
        ("rename a record with an alias", record("a.R"), record("a.S", aliases=["R"]), True, False),
        ("change a field's type", record("R", {"name": "n", "type": "int"}),
         record("R", {"name": "n", "type": "string"}), False, False),
    ],
)
def test_confluent_levels(change: str, old: object, new: object, backward: bool, forward: bool) -> None:
    assert compatible_at("BACKWARD", new, old) is backward, change
    assert compatible_at("FORWARD", new, old) is forward, change
    assert compatible_at("FULL", new, old) is (backward and forward), change


def test_confluent_tutorial_region_without_default_is_refused_with_the_field_named() -> None:
    messages = problems(PAYMENT_WITH_REGION, PAYMENT)
    assert messages == [
        "{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'The field 'region' at path "
        "'/fields/2' in the reader's schema has no default value and is missing in the writer's "
        "schema', additionalInfo:'region'}"
    ]


INT, LONG, FLOAT, DOUBLE, STRING, BYTES = "int", "long", "float", "double", "string", "bytes"


@pytest.mark.parametrize(
    ("reader", "writer", "expected"),
    [
        # The same primitive, and the specification's promotions (reader wider than writer).
        (INT, INT, []),
        (LONG, INT, []),
        (FLOAT, INT, []),
        (DOUBLE, INT, []),
        (FLOAT, LONG, []),
        (DOUBLE, LONG, []),
        (DOUBLE, FLOAT, []),
        (STRING, BYTES, []),
        (BYTES, STRING, []),
        # No narrowing, and nothing else converts.
        (INT, LONG, ["TYPE_MISMATCH"]),
        (LONG, FLOAT, ["TYPE_MISMATCH"]),
        (FLOAT, DOUBLE, ["TYPE_MISMATCH"]),
        (INT, STRING, ["TYPE_MISMATCH"]),
        ("boolean", "null", ["TYPE_MISMATCH"]),
        ({"type": "int", "logicalType": "date"}, INT, []),  # logical types are ignored
        # Reader union: some branch must read the writer's type.
        (["null", STRING], STRING, []),
        (["null", LONG], INT, []),
        (["null", STRING], INT, ["MISSING_UNION_BRANCH"]),
        # Writer union: every branch must be readable.
        (STRING, ["null", STRING], ["TYPE_MISMATCH"]),
        (LONG, [INT, LONG], []),
        (["null", STRING, INT], ["null", STRING], []),
        (["null", STRING], ["null", STRING, INT], ["MISSING_UNION_BRANCH"]),
        (["null", STRING], ["null", INT, "boolean"], ["MISSING_UNION_BRANCH", "MISSING_UNION_BRANCH"]),
        # Arrays and maps by items and values.
        ({"type": "array", "items": LONG}, {"type": "array", "items": INT}, []),
        ({"type": "array", "items": INT}, {"type": "array", "items": LONG}, ["TYPE_MISMATCH"]),
        ({"type": "map", "values": STRING}, {"type": "map", "values": INT}, ["TYPE_MISMATCH"]),
        ({"type": "map", "values": INT}, {"type": "array", "items": INT}, ["TYPE_MISMATCH"]),
        # Enums: writer symbols unknown to the reader, unless the reader has a default.
        ({"type": "enum", "name": "E", "symbols": ["A", "B", "C"]},
         {"type": "enum", "name": "E", "symbols": ["A", "B"]}, []),
        ({"type": "enum", "name": "E", "symbols": ["A"]},
         {"type": "enum", "name": "E", "symbols": ["A", "B"]}, ["MISSING_ENUM_SYMBOLS"]),
        ({"type": "enum", "name": "E", "symbols": ["A", "U"], "default": "U"},
         {"type": "enum", "name": "E", "symbols": ["A", "B"]}, []),
        ({"type": "enum", "name": "E", "symbols": ["A"]},
         {"type": "enum", "name": "F", "symbols": ["A"]}, ["NAME_MISMATCH"]),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, STRING, ["TYPE_MISMATCH"]),
        # Fixed: the same name and size.
        ({"type": "fixed", "name": "F", "size": 16}, {"type": "fixed", "name": "F", "size": 16}, []),
        ({"type": "fixed", "name": "F", "size": 16}, {"type": "fixed", "name": "F", "size": 8},
         ["FIXED_SIZE_MISMATCH"]),
        ({"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "G", "size": 4},
         ["NAME_MISMATCH"]),
        ({"type": "fixed", "name": "F", "size": 4, "aliases": ["G"]},
         {"type": "fixed", "name": "G", "size": 4}, []),
        # Records: by unqualified name or reader alias; fields by name or reader field alias.
        (record("a.R"), record("b.R"), []),
        (record("a.R", aliases=["b.S"]), record("b.S"), []),
        (record("a.R", aliases=["S"]), record("b.S"), ["NAME_MISMATCH"]),
        (record("R", {"name": "new", "type": INT, "aliases": ["old"]}),
         record("R", {"name": "old", "type": INT}), []),
        (record("R", {"name": "new", "type": INT}), record("R", {"name": "old", "type": INT}),
         ["READER_FIELD_MISSING_DEFAULT_VALUE"]),
        (record("R", {"name": "new", "type": INT, "default": 1}),
         record("R", {"name": "old", "type": INT}), []),
        (record("R"), record("R", {"name": "dropped", "type": INT}), []),
        (record("R", {"name": "x", "type": INT}), record("R", {"name": "x", "type": LONG}),
         ["TYPE_MISMATCH"]),
        # A union default of null is a default: a missing nullable field is filled in.
        (record("R", {"name": "n", "type": ["null", INT], "default": None}), record("R"), []),
    ],
)
def test_resolution_rules(reader: object, writer: object, expected: list[str]) -> None:
    assert error_types(problems(reader, writer)) == expected


def test_paths_point_at_the_offending_part() -> None:
    inner_old = record("I", {"name": "v", "type": LONG})
    inner_new = record("I", {"name": "v", "type": INT})
    reader = record("R", {"name": "a", "type": INT}, {"name": "i", "type": inner_new})
    writer = record("R", {"name": "a", "type": INT}, {"name": "i", "type": inner_old})
    assert paths(problems(reader, writer)) == ["/fields/1/type/fields/0/type"]
    assert paths(problems({"type": "array", "items": INT}, {"type": "array", "items": LONG})) == ["/items"]
    assert paths(problems({"type": "map", "values": INT}, {"type": "map", "values": STRING})) == ["/values"]
    assert paths(problems(["null", STRING], ["null", STRING, INT])) == ["/2"]
    assert paths(problems({"type": "fixed", "name": "F", "size": 1},
                          {"type": "fixed", "name": "F", "size": 2})) == ["/size"]
    assert paths(problems({"type": "enum", "name": "E", "symbols": ["A"]},
                          {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]})) == ["/symbols"]
    assert paths(problems(record("a.R"), record("a.S"))) == ["/name"]


def test_messages_say_what_differs() -> None:
    [enum] = problems({"type": "enum", "name": "E", "symbols": ["A"]},
                      {"type": "enum", "name": "E", "symbols": ["A", "C", "B"]})
    assert enum.endswith("additionalInfo:'[B, C]'}")
    [fixed] = problems({"type": "fixed", "name": "F", "size": 8}, {"type": "fixed", "name": "F", "size": 16})
    assert fixed.endswith("additionalInfo:'expected: 16, found: 8'}")
    [mismatch] = problems(INT, STRING)
    assert mismatch.endswith("additionalInfo:'reader type: INT not compatible with writer type: STRING'}")
    [name] = problems(record("a.R"), record("b.S"))
    assert name.endswith("additionalInfo:'expected: b.S'}")
    [union] = problems(["null", STRING], INT)
    assert union.endswith("additionalInfo:'reader union lacking writer type: INT'}")


def test_every_problem_is_reported() -> None:
    reader = record("R", {"name": "a", "type": INT}, {"name": "b", "type": STRING},
                    {"name": "c", "type": "boolean"})
    writer = record("S", {"name": "a", "type": STRING}, {"name": "b", "type": INT})
    assert sorted(error_types(problems(reader, writer))) == [
        "NAME_MISMATCH", "READER_FIELD_MISSING_DEFAULT_VALUE", "TYPE_MISMATCH", "TYPE_MISMATCH",
    ]


LINKED_LIST = record("Node", {"name": "value", "type": INT}, {"name": "next", "type": ["null", "Node"]})


def test_recursive_types_end_and_are_checked() -> None:
    assert problems(LINKED_LIST, LINKED_LIST) == []
    widened = record("Node", {"name": "value", "type": LONG}, {"name": "next", "type": ["null", "Node"]})
    assert problems(widened, LINKED_LIST) == []
    with_label = record("Node", {"name": "value", "type": INT}, {"name": "next", "type": ["null", "Node"]},
                        {"name": "label", "type": STRING})
    assert error_types(problems(with_label, LINKED_LIST)) == ["READER_FIELD_MISSING_DEFAULT_VALUE"]
    # Mutual recursion through two named types.
    tree = record("Tree", {"name": "children", "type": {"type": "array", "items": {
        "type": "record", "name": "Branch", "fields": [{"name": "t", "type": "Tree"}]}}})
    assert problems(tree, tree) == []


def test_a_shared_named_type_is_checked_at_each_use() -> None:
    point_old = {"type": "record", "name": "P", "fields": [{"name": "x", "type": LONG}]}
    point_new = {"type": "record", "name": "P", "fields": [{"name": "x", "type": INT}]}
    reader = record("R", {"name": "a", "type": point_new}, {"name": "b", "type": "P"})
    writer = record("R", {"name": "a", "type": point_old}, {"name": "b", "type": "P"})
    assert error_types(problems(reader, writer)) != []
    assert error_types(problems(writer, reader)) == []


@pytest.mark.timeout(20)
def test_a_named_type_reached_by_exponentially_many_paths_is_checked_once() -> None:
    # Each record names the next twice: 2**40 paths reach the last one, whose problem was once
    # checked and listed along every path (a denial of service in a 4 KB schema).
    def chain(leaf: str, depth: int = 40) -> dict[str, object]:
        schema: dict[str, object] = record(f"R{depth}", {"name": "x", "type": leaf})
        for i in reversed(range(depth)):
            schema = record(f"R{i}", {"name": "a", "type": schema}, {"name": "b", "type": f"R{i + 1}"})
        return schema

    found = problems(chain("int"), chain("string"))
    assert error_types(found) == ["TYPE_MISMATCH"]
    assert problems(chain("long"), chain("int")) == []


def test_references_are_resolved_for_compatibility() -> None:
    address_v1 = json.dumps({"type": "record", "name": "Address", "namespace": "com.acme",
                             "fields": [{"name": "city", "type": "string"}]})
    address_v2 = json.dumps({"type": "record", "name": "Address", "namespace": "com.acme",
                             "fields": [{"name": "city", "type": "string"},
                                        {"name": "zip", "type": "string"}]})
    address_v3 = json.dumps({"type": "record", "name": "Address", "namespace": "com.acme",
                             "fields": [{"name": "city", "type": "string"},
                                        {"name": "zip", "type": "string", "default": ""}]})
    customer = record("com.acme.Customer", {"name": "home", "type": "com.acme.Address"})
    v1 = {"com.acme.Address": address_v1}
    assert paths(problems(customer, customer, reader_refs={"com.acme.Address": address_v2},
                          writer_refs=v1)) == ["/fields/0/type/fields/1"]
    assert problems(customer, customer, reader_refs={"com.acme.Address": address_v3}, writer_refs=v1) == []


def test_defaults_are_validated_unless_asked_not_to() -> None:
    text = json.dumps(record("R", {"name": "s", "type": "string", "default": None}))
    with pytest.raises(InvalidSchemaError):
        FORMAT.parse(text, NO_REFS)
    from odradek.registry.formats.avro import AvroFormat

    lenient = AvroFormat(validate_defaults=False).parse(text, NO_REFS)
    assert '"default":null' in lenient.canonical()


# --- properties ----------------------------------------------------------------------------------

_PRIMS = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes", "string"])
_SPACES = st.sampled_from([None, "", "a", "a.b"])


def _numbered(schema: object) -> object:
    """Gives every named type a distinct name, in document order, so drawn schemas are valid."""
    count = 0

    def walk(node: object) -> object:
        nonlocal count
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items()}
        if "name" in node and "type" in node and node["type"] in ("record", "enum", "fixed"):
            count += 1
            out["name"] = f"{node['name']}{count}"
        if "fields" in node:
            out["fields"] = [{**f, "type": walk(f["type"])} for f in node["fields"]]
        return out

    return walk(schema)


_SCHEMAS = st.recursive(
    _PRIMS
    | st.builds(lambda p: {"type": p, "logicalType": "x"}, _PRIMS)
    | st.builds(lambda syms: {"type": "enum", "name": "E", "symbols": syms},
                st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, unique=True))
    | st.builds(lambda n: {"type": "fixed", "name": "F", "size": n}, st.integers(0, 3)),
    lambda inner: (
        st.builds(lambda types, ns: {"type": "record", "name": "R",
                                     **({} if ns is None else {"namespace": ns}),
                                     "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(types)]},
                  st.lists(inner, max_size=4), _SPACES)
        | st.builds(lambda i: {"type": "array", "items": i}, inner)
        | st.builds(lambda v: {"type": "map", "values": v}, inner)
        | st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=12,
).map(_numbered)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_SCHEMAS, _SCHEMAS)
def test_texts_round_trip_and_checks_end(a: object, b: object) -> None:
    try:
        x, y = parse(json.dumps(a)), parse(json.dumps(b))
    except InvalidSchemaError:
        return  # e.g. a drawn union with two branches of one type
    canonical, normalized = x.canonical(), x.normalized()
    assert parse(canonical).canonical() == canonical
    assert parse(normalized).normalized() == normalized
    # Both texts describe the same data as the schema they came from.
    assert FORMAT.incompatibilities(parse(normalized), x) == []
    assert FORMAT.incompatibilities(x, parse(normalized)) == []
    assert FORMAT.incompatibilities(x, x) == []
    # Any pair is decided, with one message per problem.
    assert all(m.startswith("{errorType:'") for m in FORMAT.incompatibilities(x, y))


def test_normalized_keeps_a_null_namespace_inside_a_namespaced_record() -> None:
    schema = parse(record("a.Outer", {"name": "i", "type": {"type": "record", "name": "Inner",
                                                            "namespace": "", "fields": []}}))
    assert schema.normalized() == (
        '{"name":"a.Outer","type":"record","fields":[{"name":"i","type":'
        '{"name":"Inner","type":"record","namespace":"","fields":[]},"order":"ASCENDING"}]}'
    )
    assert set(parse(schema.normalized()).named) == {"a.Outer", "Inner"}
