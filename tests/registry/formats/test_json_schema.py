"""JSON Schema format: parsing by draft, references, identity texts, and Confluent's
compatibility rules, each rule checked in both directions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odradek.registry.formats import InvalidSchemaError, get_format, json_schema
from odradek.registry.formats.json_schema import FORMAT, JsonSchema

D4 = "http://json-schema.org/draft-04/schema#"
D6 = "http://json-schema.org/draft-06/schema#"
D7 = "http://json-schema.org/draft-07/schema#"
D2019 = "https://json-schema.org/draft/2019-09/schema"
D2020 = "https://json-schema.org/draft/2020-12/schema"


def parse(schema: Any, references: Mapping[str, Any] | None = None) -> JsonSchema:
    refs = {name: json.dumps(text) for name, text in (references or {}).items()}
    return FORMAT.parse(json.dumps(schema), refs)


def differences(reader: JsonSchema, writer: JsonSchema) -> set[tuple[str, str]]:
    """The reported incompatibilities as (difference type, JSON path)."""
    found = set()
    for message in FORMAT.incompatibilities(reader, writer):
        kind, _, rest = message.partition(" at ")
        path, _, why = rest.partition(": ")
        assert why, message  # every message explains itself
        found.add((kind, path))
    return found


def obj(properties: dict[str, Any], **keywords: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **keywords}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}


# --- the format's place -----------------------------------------------------------------------


def test_served_as_json() -> None:
    assert get_format("JSON") is FORMAT
    assert FORMAT.schema_type == "JSON"
    assert parse(STRING).schema_type == "JSON"


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "draft"),
    [
        ({"type": "string"}, "draft-07"),  # no $schema: draft 7, as Confluent's registry
        ({"$schema": "http://example.com/my-own-dialect", "type": "string"}, "draft-07"),
        ({"$schema": D4, "type": "string"}, "draft-04"),
        ({"$schema": D6, "type": "string"}, "draft-06"),
        ({"$schema": D7, "type": "string"}, "draft-07"),
        ({"$schema": D7.rstrip("#"), "type": "string"}, "draft-07"),
        ({"$schema": D2019, "type": "string"}, "2019-09"),
        ({"$schema": D2020, "type": "string"}, "2020-12"),
        (True, "draft-07"),
    ],
)
def test_draft_chosen_by_dollar_schema(schema: Any, draft: str) -> None:
    assert parse(schema).draft == draft


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{", "not valid JSON"),
        ('{"type": "string",}', "not valid JSON"),
        ('{"type": "text"}', "#/type"),
        ('{"properties": {"a": {"minLength": -1}}}', "#/properties/a/minLength"),
        ('{"required": "a"}', "#/required"),
        ('"string"', "invalid JSON schema"),
        ('{"$ref": "other.json"}', "neither this schema nor one of its references"),
        ('{"$ref": "#/definitions/missing"}', "cannot be resolved"),
        ('{"properties": {"a": {"$ref": "#/definitions/missing"}}}', "#/properties/a"),
    ],
)
def test_invalid_schemas_are_refused_with_a_reason(text: str, complaint: str) -> None:
    with pytest.raises(InvalidSchemaError, match=complaint):
        FORMAT.parse(text, {})


def test_each_draft_checks_against_its_own_metaschema() -> None:
    # A numeric exclusiveMaximum is draft 6 onwards; draft 4 takes a boolean there.
    numeric = {"type": "number", "maximum": 5, "exclusiveMaximum": 5}
    parse({"$schema": D7, **numeric})
    with pytest.raises(InvalidSchemaError, match="draft-04"):
        parse({"$schema": D4, **numeric})
    parse({"$schema": D4, "type": "number", "maximum": 5, "exclusiveMaximum": True})


def test_a_reference_must_be_a_json_schema() -> None:
    with pytest.raises(InvalidSchemaError, match="reference 'other.json'"):
        FORMAT.parse('{"$ref": "other.json"}', {"other.json": "{not json"})
    with pytest.raises(InvalidSchemaError, match="reference 'other.json' is not a schema"):
        FORMAT.parse('{"$ref": "other.json"}', {"other.json": "[1, 2]"})


def test_refs_resolve_to_the_named_references_and_within_them() -> None:
    references = {
        "address.json": {
            "definitions": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "type": "object",
            "properties": {"zip": {"$ref": "#/definitions/zip"}},
        },
    }
    writer = parse(obj({"home": {"$ref": "address.json"}}), references)
    # The same reader, but the reference's zip now a number: the change is found through it.
    changed = json.loads(json.dumps(references))
    changed["address.json"]["definitions"]["zip"] = {"type": "integer"}
    reader = parse(obj({"home": {"$ref": "address.json"}}), changed)
    assert differences(reader, writer) == {("TYPE_CHANGED", "#/properties/home/properties/zip")}
    assert differences(writer, writer) == set()


def test_relative_refs_resolve_against_the_root_id() -> None:
    schema = {
        "$id": "https://example.com/schemas/order.json",
        **obj({"item": {"$ref": "item.json"}}),
    }
    parsed = parse(schema, {"item.json": STRING})
    # The full URL names the same reference.
    absolute = parse(
        obj({"item": {"$ref": "https://example.com/schemas/item.json"}}),
        {"https://example.com/schemas/item.json": STRING},
    )
    assert differences(parsed, absolute) == set()
    assert differences(parse(obj({"item": INTEGER})), parsed) == {
        ("TYPE_CHANGED", "#/properties/item")
    }


def test_dependencies_mixing_schemas_and_property_lists() -> None:
    # A schema dependency first, then a property list: legal in drafts 4 to 7.
    parsed = parse(obj({"a": STRING}, dependencies={"a": {"required": ["b"]}, "b": ["c"]}))
    assert differences(parsed, parsed) == set()


def test_a_ref_to_a_draft_metaschema_needs_no_reference() -> None:
    parse({"$ref": D7})


def test_deep_nesting_is_an_invalid_schema_not_a_crash() -> None:
    with pytest.raises(InvalidSchemaError):
        FORMAT.parse("[" * 100_000 + "]" * 100_000, {})


# --- identity -------------------------------------------------------------------------------


def test_canonical_ignores_whitespace_but_keeps_key_order() -> None:
    a = FORMAT.parse('{ "type" : "object",\n  "properties": {"b": {}, "a": {}} }', {})
    b = FORMAT.parse('{"type":"object","properties":{"b":{},"a":{}}}', {})
    c = FORMAT.parse('{"properties":{"a":{},"b":{}},"type":"object"}', {})
    assert a.canonical() == b.canonical() == '{"type":"object","properties":{"b":{},"a":{}}}'
    # Confluent compares the written order: reordered keys are another schema ...
    assert c.canonical() != a.canonical()
    # ... unless normalized, which sorts every object's keys (arrays keep their order).
    assert a.normalized() == c.normalized() == '{"properties":{"a":{},"b":{}},"type":"object"}'


def test_normalized_sorts_nested_keys_and_keeps_arrays_and_text() -> None:
    parsed = FORMAT.parse('{"enum": ["z", "a"], "title": "Größe", "$id": "x"}', {})
    assert parsed.normalized() == '{"$id":"x","enum":["z","a"],"title":"Größe"}'
    assert parsed.canonical() == '{"enum":["z","a"],"title":"Größe","$id":"x"}'


# --- compatibility --------------------------------------------------------------------------
# Each case: the old and the new schema, then what BACKWARD finds (the new schema reading what
# the old wrote) and what FORWARD finds (the old reading the new), as (type, path) pairs.

Found = set[tuple[str, str]]
CASES: list[tuple[str, Any, Any, Found, Found]] = [
    # Content models
    (
        "property added to an open content model",
        obj({"a": STRING}),
        obj({"a": STRING, "b": INTEGER}),
        {("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", "#/properties/b")},
        set(),  # removed from the reader's open model: still accepted
    ),
    (
        "required property added to an open content model",
        obj({"a": STRING}),
        obj({"a": STRING, "b": INTEGER}, required=["b"]),
        {("REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", "#/properties/b")},
        set(),
    ),
    (
        "property with an empty schema added to an open content model",
        obj({"a": STRING}),
        obj({"a": STRING, "b": {}}),
        set(),
        set(),
    ),
    (
        "optional property added to a closed content model",
        obj({"a": STRING}, additionalProperties=False),
        obj({"a": STRING, "b": INTEGER}, additionalProperties=False),
        set(),
        {("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "#/properties/b")},
    ),
    (
        "required property added to a closed content model",
        obj({"a": STRING}, additionalProperties=False),
        obj({"a": STRING, "b": INTEGER}, required=["b"], additionalProperties=False),
        {("REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", "#/properties/b")},
        {("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "#/properties/b")},
    ),
    (
        "required property with a default added to a closed content model",
        obj({"a": STRING}, additionalProperties=False),
        obj(
            {"a": STRING, "b": {"type": "integer", "default": 0}},
            required=["b"],
            additionalProperties=False,
        ),
        set(),
        {("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "#/properties/b")},
    ),
    (
        "property declared false removed from a closed content model",
        obj({"a": STRING, "b": False}, additionalProperties=False),
        obj({"a": STRING}, additionalProperties=False),
        set(),
        set(),
    ),
    (
        "property added, covered by the old additionalProperties schema",
        obj({"a": STRING}, additionalProperties=STRING),
        obj({"a": STRING, "b": STRING}, additionalProperties=STRING),
        set(),
        set(),
    ),
    (
        "property added, narrower than the old additionalProperties schema",
        obj({"a": STRING}, additionalProperties=STRING),
        obj({"a": STRING, "b": {"type": "string", "maxLength": 3}}, additionalProperties=STRING),
        {("MAX_LENGTH_ADDED", "#/properties/b/maxLength")}
        | {("PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", "#/properties/b")},
        set(),
    ),
    (
        "property added, of another type than the old additionalProperties",
        obj({"a": STRING}, additionalProperties=STRING),
        obj({"a": STRING, "b": INTEGER}, additionalProperties=STRING),
        {
            ("TYPE_CHANGED", "#/properties/b"),
            ("PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", "#/properties/b"),
        },
        {
            ("TYPE_CHANGED", "#/properties/b"),
            ("PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", "#/properties/b"),
        },
    ),
    (
        "property added, matching a pattern property of its type",
        obj({}, patternProperties={"^s_": STRING}),
        obj({"s_name": STRING}, patternProperties={"^s_": STRING}),
        set(),
        set(),
    ),
    (
        "property added, matching a pattern property of another type",
        obj({}, patternProperties={"^s_": STRING}),
        obj({"s_count": INTEGER}, patternProperties={"^s_": STRING}),
        {
            ("TYPE_CHANGED", "#/properties/s_count"),
            ("PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", "#/properties/s_count"),
        },
        {
            ("TYPE_CHANGED", "#/properties/s_count"),
            (
                "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
                "#/properties/s_count",
            ),
        },
    ),
    (
        "content model closed",
        obj({"a": STRING}),
        obj({"a": STRING}, additionalProperties=False),
        {("ADDITIONAL_PROPERTIES_REMOVED", "#/additionalProperties")},
        set(),
    ),
    (
        "content model partially closed",
        obj({"a": STRING}),
        obj({"a": STRING}, additionalProperties=STRING),
        {("ADDITIONAL_PROPERTIES_NARROWED", "#/additionalProperties")},
        set(),
    ),
    (
        "additionalProperties schema narrowed",
        obj({}, additionalProperties={"type": "number"}),
        obj({}, additionalProperties=INTEGER),
        {("TYPE_NARROWED", "#/additionalProperties")},
        set(),
    ),
    (
        "closed by unevaluatedProperties (2020-12), property added",
        {"$schema": D2020, **obj({"a": STRING}, unevaluatedProperties=False)},
        {"$schema": D2020, **obj({"a": STRING, "b": INTEGER}, unevaluatedProperties=False)},
        set(),
        {("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", "#/properties/b")},
    ),
    # Required
    (
        "existing property made required",
        obj({"a": STRING}),
        obj({"a": STRING}, required=["a"]),
        {("REQUIRED_ATTRIBUTE_ADDED", "#/required/a")},
        set(),
    ),
    (
        "existing property with a default made required",
        obj({"a": {"type": "string", "default": ""}}),
        obj({"a": {"type": "string", "default": ""}}, required=["a"]),
        set(),
        set(),
    ),
    (
        "minProperties added and maxProperties decreased",
        obj({}, maxProperties=5),
        obj({}, minProperties=1, maxProperties=3),
        {
            ("MIN_PROPERTIES_ADDED", "#/minProperties"),
            ("MAX_PROPERTIES_DECREASED", "#/maxProperties"),
        },
        set(),
    ),
    # Dependencies
    (
        "property dependency added",
        obj({"a": STRING, "b": STRING}),
        obj({"a": STRING, "b": STRING}, dependencies={"a": ["b"]}),
        {("DEPENDENCY_ARRAY_ADDED", "#/dependencies/a")},
        set(),
    ),
    (
        "property dependency extended (dependentRequired, 2019-09)",
        {"$schema": D2019, **obj({"a": STRING}, dependentRequired={"a": ["b"]})},
        {"$schema": D2019, **obj({"a": STRING}, dependentRequired={"a": ["b", "c"]})},
        {("DEPENDENCY_ARRAY_EXTENDED", "#/dependencies/a")},
        set(),
    ),
    (
        "property dependency changed",
        obj({}, dependencies={"a": ["b"]}),
        obj({}, dependencies={"a": ["c"]}),
        {("DEPENDENCY_ARRAY_CHANGED", "#/dependencies/a")},
        {("DEPENDENCY_ARRAY_CHANGED", "#/dependencies/a")},
    ),
    (
        "schema dependency added",
        obj({"a": STRING}),
        obj({"a": STRING}, dependencies={"a": {"required": ["b"]}}),
        {("DEPENDENCY_SCHEMA_ADDED", "#/dependencies/a")},
        set(),
    ),
    # Types
    (
        "integer widened to number",
        INTEGER,
        {"type": "number"},
        set(),
        {("TYPE_NARROWED", "#/")},
    ),
    (
        "string changed to integer",
        STRING,
        INTEGER,
        {("TYPE_CHANGED", "#/")},
        {("TYPE_CHANGED", "#/")},
    ),
    (
        "null allowed beside string",
        STRING,
        {"type": ["string", "null"]},
        set(),
        {("TYPE_CHANGED", "#/")},
    ),
    (
        "anything read by the empty schema",
        obj({"a": STRING}, required=["a"]),
        {},
        set(),
        {("TYPE_CHANGED", "#/")},
    ),
    (
        "nothing written under false",
        False,
        STRING,
        set(),
        {("TYPE_CHANGED", "#/")},
    ),
    # Strings
    (
        "maxLength added",
        STRING,
        {"type": "string", "maxLength": 10},
        {("MAX_LENGTH_ADDED", "#/maxLength")},
        set(),
    ),
    (
        "maxLength decreased",
        {"type": "string", "maxLength": 10},
        {"type": "string", "maxLength": 5},
        {("MAX_LENGTH_DECREASED", "#/maxLength")},
        set(),
    ),
    (
        "minLength added",
        STRING,
        {"type": "string", "minLength": 1},
        {("MIN_LENGTH_ADDED", "#/minLength")},
        set(),
    ),
    (
        "minLength increased",
        {"type": "string", "minLength": 1},
        {"type": "string", "minLength": 2},
        {("MIN_LENGTH_INCREASED", "#/minLength")},
        set(),
    ),
    (
        "pattern added",
        STRING,
        {"type": "string", "pattern": "^[a-z]+$"},
        {("PATTERN_ADDED", "#/pattern")},
        set(),
    ),
    (
        "pattern changed",
        {"type": "string", "pattern": "^[a-z]+$"},
        {"type": "string", "pattern": "^[a-z]*$"},
        {("PATTERN_CHANGED", "#/pattern")},
        {("PATTERN_CHANGED", "#/pattern")},
    ),
    # Numbers
    (
        "maximum added",
        INTEGER,
        {"type": "integer", "maximum": 10},
        {("MAXIMUM_ADDED", "#/maximum")},
        set(),
    ),
    (
        "maximum decreased",
        {"type": "integer", "maximum": 10},
        {"type": "integer", "maximum": 9},
        {("MAXIMUM_DECREASED", "#/maximum")},
        set(),
    ),
    (
        "minimum added",
        INTEGER,
        {"type": "integer", "minimum": 0},
        {("MINIMUM_ADDED", "#/minimum")},
        set(),
    ),
    (
        "minimum increased",
        {"type": "integer", "minimum": 0},
        {"type": "integer", "minimum": 1},
        {("MINIMUM_INCREASED", "#/minimum")},
        set(),
    ),
    (
        "exclusiveMaximum decreased",
        {"type": "number", "exclusiveMaximum": 10},
        {"type": "number", "exclusiveMaximum": 2.5},
        {("EXCLUSIVE_MAXIMUM_DECREASED", "#/exclusiveMaximum")},
        set(),
    ),
    (
        "exclusiveMinimum added",
        {"type": "number"},
        {"type": "number", "exclusiveMinimum": 0},
        {("EXCLUSIVE_MINIMUM_ADDED", "#/exclusiveMinimum")},
        set(),
    ),
    (
        "exclusiveMinimum increased",
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "number", "exclusiveMinimum": 0.5},
        {("EXCLUSIVE_MINIMUM_INCREASED", "#/exclusiveMinimum")},
        set(),
    ),
    (
        "multipleOf added",
        INTEGER,
        {"type": "integer", "multipleOf": 2},
        {("MULTIPLE_OF_ADDED", "#/multipleOf")},
        set(),
    ),
    (
        "multipleOf made a multiple of the old one",
        {"type": "number", "multipleOf": 0.1},
        {"type": "number", "multipleOf": 0.3},  # exactly 3 tenths, though not in binary
        {("MULTIPLE_OF_EXPANDED", "#/multipleOf")},
        set(),
    ),
    (
        "multipleOf changed to a non-divisor",
        {"type": "integer", "multipleOf": 2},
        {"type": "integer", "multipleOf": 3},
        {("MULTIPLE_OF_CHANGED", "#/multipleOf")},
        {("MULTIPLE_OF_CHANGED", "#/multipleOf")},
    ),
    # Enums and const
    (
        "enum value added",
        {"enum": ["red", "green"]},
        {"enum": ["red", "green", "blue"]},
        set(),
        {("ENUM_ARRAY_NARROWED", "#/enum")},
    ),
    (
        "enum value replaced",
        {"enum": ["red", "green"]},
        {"enum": ["red", "blue"]},
        {("ENUM_ARRAY_CHANGED", "#/enum")},
        {("ENUM_ARRAY_CHANGED", "#/enum")},
    ),
    (
        "enum values told apart by type (1 is not true)",
        {"enum": [1]},
        {"enum": [True]},
        {("ENUM_ARRAY_CHANGED", "#/enum")},
        {("ENUM_ARRAY_CHANGED", "#/enum")},
    ),
    (
        "const changed",
        obj({"kind": {"const": "a"}}),
        obj({"kind": {"const": "b"}}),
        {("ENUM_ARRAY_CHANGED", "#/properties/kind/const")},
        {("ENUM_ARRAY_CHANGED", "#/properties/kind/const")},
    ),
    # Combined schemas
    (
        "oneOf alternative added",
        {"oneOf": [STRING, INTEGER]},
        {"oneOf": [STRING, INTEGER, {"type": "boolean"}]},
        set(),
        {("SUM_TYPE_NARROWED", "#/")},
    ),
    (
        "oneOf alternative replaced",
        {"oneOf": [STRING, INTEGER]},
        {"oneOf": [STRING, {"type": "boolean"}]},
        {("COMBINED_TYPE_SUBSCHEMAS_CHANGED", "#/")},
        {("COMBINED_TYPE_SUBSCHEMAS_CHANGED", "#/")},
    ),
    (
        "oneOf alternative changed inside",
        {"oneOf": [STRING, INTEGER]},
        {"oneOf": [{"type": "string", "maxLength": 4}, INTEGER]},
        {("COMBINED_TYPE_SUBSCHEMAS_CHANGED", "#/")},
        set(),
    ),
    (
        "anyOf read as oneOf",
        {"anyOf": [STRING, INTEGER]},
        {"oneOf": [STRING, INTEGER]},
        {("COMBINED_TYPE_CHANGED", "#/")},
        set(),
    ),
    (
        "allOf part added",
        {"allOf": [obj({"a": STRING}), obj({"b": STRING})]},
        {"allOf": [obj({"a": STRING}), obj({"b": STRING}), obj({}, required=["a"])]},
        {("PRODUCT_TYPE_EXTENDED", "#/")},
        set(),
    ),
    (
        "a schema made one of the alternatives",
        obj({"a": STRING}),
        {"anyOf": [obj({"a": STRING}), {"type": "null"}]},
        set(),
        {("TYPE_CHANGED", "#/")},
    ),
    (
        "not widened",
        {"not": STRING},
        {"not": {"type": ["string", "integer"]}},
        {("NOT_TYPE_EXTENDED", "#/not")},
        set(),
    ),
    # Arrays
    (
        "array items widened",
        {"type": "array", "items": INTEGER},
        {"type": "array", "items": {"type": "number"}},
        set(),
        {("TYPE_NARROWED", "#/items")},
    ),
    (
        "maxItems added, minItems increased, uniqueItems added",
        {"type": "array", "minItems": 1},
        {"type": "array", "minItems": 2, "maxItems": 9, "uniqueItems": True},
        {
            ("MIN_ITEMS_INCREASED", "#/minItems"),
            ("MAX_ITEMS_ADDED", "#/maxItems"),
            ("UNIQUE_ITEMS_ADDED", "#/uniqueItems"),
        },
        set(),
    ),
    (
        "tuple item added to an open tuple",
        {"type": "array", "items": [STRING]},
        {"type": "array", "items": [STRING, INTEGER]},
        {("ITEM_ADDED_TO_OPEN_CONTENT_MODEL", "#/items/1")},
        set(),
    ),
    (
        "tuple item added to a closed tuple",
        {"type": "array", "items": [STRING], "additionalItems": False},
        {"type": "array", "items": [STRING, INTEGER], "additionalItems": False},
        set(),
        {("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL", "#/items/1")},
    ),
    (
        "prefixItems added to a closed tuple (2020-12)",
        {"$schema": D2020, "type": "array", "prefixItems": [STRING], "items": False},
        {"$schema": D2020, "type": "array", "prefixItems": [STRING, INTEGER], "items": False},
        set(),
        {("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL", "#/items/1")},
    ),
    (
        "tuple item added, covered by additionalItems",
        {"type": "array", "items": [STRING], "additionalItems": INTEGER},
        {"type": "array", "items": [STRING, INTEGER], "additionalItems": INTEGER},
        set(),
        set(),
    ),
    (
        "boolean items turned false (2020-12)",
        {"$schema": D2020, "type": "array", "items": True},
        {"$schema": D2020, "type": "array", "items": False},
        {("ADDITIONAL_ITEMS_REMOVED", "#/additionalItems")},
        set(),
    ),
    (
        "additional items refused",
        {"type": "array", "items": [STRING]},
        {"type": "array", "items": [STRING], "additionalItems": False},
        {("ADDITIONAL_ITEMS_REMOVED", "#/additionalItems")},
        set(),
    ),
    # References
    (
        "property moved into a definition",
        obj({"a": STRING}),
        {"definitions": {"s": STRING}, **obj({"a": {"$ref": "#/definitions/s"}})},
        set(),
        set(),
    ),
    (
        "definition narrowed behind a $ref",
        {"definitions": {"n": {"type": "number"}}, **obj({"a": {"$ref": "#/definitions/n"}})},
        {"definitions": {"n": INTEGER}, **obj({"a": {"$ref": "#/definitions/n"}})},
        {("TYPE_NARROWED", "#/properties/a")},
        set(),
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "backward", "forward"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_compatibility_both_ways(old: Any, new: Any, backward: Found, forward: Found) -> None:
    old_schema, new_schema = parse(old), parse(new)
    assert differences(reader=new_schema, writer=old_schema) == backward
    assert differences(reader=old_schema, writer=new_schema) == forward
    # A schema always reads what it wrote.
    assert differences(old_schema, old_schema) == set()
    assert differences(new_schema, new_schema) == set()


def test_draft4_boolean_exclusive_bound_is_an_exclusive_bound() -> None:
    old = parse({"$schema": D4, "type": "number", "maximum": 10})
    new = parse({"$schema": D4, "type": "number", "maximum": 10, "exclusiveMaximum": True})
    assert differences(reader=new, writer=old) == {
        ("EXCLUSIVE_MAXIMUM_ADDED", "#/exclusiveMaximum")
    }


def test_message_names_type_path_and_reason() -> None:
    messages = FORMAT.incompatibilities(parse(obj({"a": STRING, "b": INTEGER})), parse(obj({})))
    why = "the reader declares a property the writer's open content model may have carried with any value"
    assert messages == [
        f"OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL at #/properties/a: {why}",
        f"OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL at #/properties/b: {why}",
    ]


# --- recursion ------------------------------------------------------------------------------


def linked_list(value_type: str) -> dict[str, Any]:
    return {
        "definitions": {
            "node": obj(
                {"value": {"type": value_type}, "next": {"$ref": "#/definitions/node"}},
                additionalProperties=False,
            )
        },
        "$ref": "#/definitions/node",
    }


def test_recursive_schema_compares_and_finds_changes_inside_the_cycle() -> None:
    integers, numbers = parse(linked_list("integer")), parse(linked_list("number"))
    assert differences(integers, integers) == set()
    assert differences(reader=numbers, writer=integers) == set()
    # Found at the top and, once more, where the cycle comes round (the fixpoint's second pass).
    assert differences(reader=integers, writer=numbers) == {
        ("TYPE_NARROWED", "#/properties/value"),
        ("TYPE_NARROWED", "#/properties/next/properties/value"),
    }


def test_a_schema_referring_to_itself_through_its_root() -> None:
    tree = obj({"children": {"type": "array", "items": {"$ref": "#"}}, "name": STRING})
    named = parse(tree)
    strict = parse({**tree, "required": ["name"]})
    assert differences(named, named) == set()
    assert differences(reader=strict, writer=named) == {
        ("REQUIRED_ATTRIBUTE_ADDED", "#/required/name"),
        ("REQUIRED_ATTRIBUTE_ADDED", "#/properties/children/items/required/name"),
    }


def test_mutually_recursive_alternatives_finish() -> None:
    # Twelve definitions, each anyOf the next two: without remembering compared pairs, the
    # comparison would walk every path through the graph.
    size = 12
    definitions = {
        f"d{i}": {
            "anyOf": [
                {"$ref": f"#/definitions/d{(i + 1) % size}"},
                {"$ref": f"#/definitions/d{(i + 2) % size}"},
                obj({f"p{i}": STRING}),
            ]
        }
        for i in range(size)
    }
    schema = parse({"definitions": definitions, "$ref": "#/definitions/d0"})
    assert differences(schema, schema) == set()


# --- bounds ---------------------------------------------------------------------------------


def diamond_chain(size: int, leaf: dict[str, Any]) -> dict[str, Any]:
    """Each definition refers to the next twice: 2**size paths reach the leaf."""
    definitions: dict[str, Any] = {
        f"d{i}": obj(
            {"a": {"$ref": f"#/definitions/d{i + 1}"}, "b": {"$ref": f"#/definitions/d{i + 1}"}}
        )
        for i in range(size)
    }
    definitions[f"d{size}"] = leaf
    return {"definitions": definitions, "$ref": "#/definitions/d0"}


@pytest.mark.timeout(20)
def test_a_change_reached_by_exponentially_many_paths_is_found_in_few_comparisons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Differences were once copied into every path that reached them: 2**40 of them here.
    # Each pair of nodes is compared once, so a small budget suffices.
    monkeypatch.setattr(json_schema, "MAX_PAIR_COMPARISONS", 200)
    writer = parse(diamond_chain(40, STRING))
    reader = parse(diamond_chain(40, {**STRING, "maxLength": 3}))
    found = differences(reader, writer)
    assert ("MAX_LENGTH_ADDED", "#/" + "/".join(["properties/a"] * 40) + "/maxLength") in found
    assert all(kind == "MAX_LENGTH_ADDED" for kind, _ in found)
    assert len(FORMAT.incompatibilities(reader, writer)) == json_schema.MAX_MESSAGES
    assert differences(writer, reader) == set()


@pytest.mark.timeout(20)
def test_a_ref_to_itself_compared_with_a_cycle_reaches_its_fixpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A $ref that only refers to itself once read as a new node at each visit; pairs keyed by
    # its id changed from pass to pass, so the fixpoint never came (minutes of CPU, found by
    # the hypothesis test below). A few comparisons suffice.
    monkeypatch.setattr(json_schema, "MAX_PAIR_COMPARISONS", 100)
    anything = parse({"$ref": "#"})
    recursive = parse({"anyOf": [{"minItems": 1}, {"$ref": "#"}]})
    assert differences(reader=recursive, writer=anything) == set()
    assert differences(reader=anything, writer=recursive) == set()
    assert differences(reader=recursive, writer=parse({"$ref": "#"})) == set()


def nested_combinations(depth: int, seed: int = 0) -> Any:
    """anyOf/allOf/oneOf nested ``depth`` deep, three branches each."""
    if depth == 0:
        return {"type": "string", "minLength": seed}
    criterion = ("anyOf", "allOf", "oneOf")[depth % 3]
    return {criterion: [nested_combinations(depth - 1, seed * 3 + k) for k in range(3)]}


@pytest.mark.timeout(20)
def test_combined_schemas_are_matched_within_the_comparison_budget() -> None:
    # Matching combined schemas compares every pair of their subschemas: 9**depth pairs here.
    small = nested_combinations(4)
    assert differences(parse(small), parse(small)) == set()
    # Past the budget the comparison stops and refuses, rather than running for minutes.
    huge = nested_combinations(7)
    assert differences(parse(huge), parse(huge)) == {("COMPARISON_TOO_COMPLEX", "#/")}
    schema = parse(huge)
    assert FORMAT.incompatibilities(schema, schema) == []


@pytest.mark.parametrize(
    ("document", "match"),
    [
        (json.loads('{"not":' * 200 + "{}" + "}" * 200), "nested too deeply"),
        ({"enum": list(range(json_schema.MAX_VALUES))}, "too large"),
    ],
)
def test_absurd_documents_are_refused_before_they_are_read(document: Any, match: str) -> None:
    with pytest.raises(InvalidSchemaError, match=match):
        parse(document)
    with pytest.raises(InvalidSchemaError, match=f"reference 'r.json' is {match}"):
        parse({"$ref": "r.json"}, {"r.json": document})


def test_deep_but_reasonable_schemas_are_read() -> None:
    schema: Any = STRING
    for _ in range(40):
        schema = obj({"a": schema})
    assert differences(parse(schema), parse(schema)) == set()


def test_a_ref_into_data_is_checked_as_a_schema() -> None:
    with pytest.raises(InvalidSchemaError, match="target of #/properties/a/\\$ref"):
        parse({"enum": [{"properties": 5}], "properties": {"a": {"$ref": "#/enum/0"}}})


def test_a_reference_is_checked_against_its_metaschema() -> None:
    with pytest.raises(InvalidSchemaError, match="reference 'other.json'.*#/properties"):
        parse({"$ref": "other.json"}, {"other.json": {"properties": 5}})


# --- any schema ---------------------------------------------------------------------------

KEYWORD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["string", "integer", "number", "object", "array", "null"])
    | st.lists(st.sampled_from(["string", "integer", "null", "boolean"]), min_size=1, unique=True),
    "minLength": st.integers(0, 5),
    "maxLength": st.integers(0, 5),
    "pattern": st.sampled_from(["^a", "b$", "[0-9]+"]),
    "minimum": st.integers(-5, 5),
    "exclusiveMaximum": st.integers(-5, 5),
    "multipleOf": st.sampled_from([1, 2, 0.5, 3]),
    "enum": st.lists(st.one_of(st.integers(0, 3), st.booleans(), st.text(max_size=2)), min_size=1),
    "const": st.integers(0, 2),
    "required": st.lists(st.sampled_from(["a", "b", "c"]), unique=True),
    "additionalProperties": st.booleans(),
    "uniqueItems": st.booleans(),
    "minItems": st.integers(0, 3),
    # Back to the root or to a definition: cycles, and targets that may be missing.
    "$ref": st.sampled_from(["#", "#/definitions/d"]),
}


def schemas() -> st.SearchStrategy[Any]:
    leaves = st.fixed_dictionaries({}, optional=KEYWORD_VALUES) | st.booleans()
    return st.recursive(
        leaves,
        lambda inner: st.fixed_dictionaries(
            {},
            optional={
                **KEYWORD_VALUES,
                "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
                "items": inner | st.lists(inner, max_size=2),
                "additionalItems": inner,
                "anyOf": st.lists(inner, min_size=1, max_size=3),
                "oneOf": st.lists(inner, min_size=1, max_size=3),
                "allOf": st.lists(inner, min_size=1, max_size=3),
                "not": inner,
                "definitions": st.fixed_dictionaries({"d": inner}),
                "dependencies": st.dictionaries(
                    st.sampled_from(["a", "b"]), inner | st.just(["c"]), max_size=2
                ),
            },
        ),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None)
@given(old=schemas(), new=schemas())
def test_any_schema_reads_itself_and_comparisons_only_report(old: Any, new: Any) -> None:
    """Whatever the schemas, parsing ends in a schema or InvalidSchemaError, a schema reads
    what it wrote, and every comparison yields well-formed messages."""
    try:
        a, b = parse(old), parse(new)
    except InvalidSchemaError:
        return
    # Parsed again: the same object would be recognised without a comparison.
    assert FORMAT.incompatibilities(a, parse(old)) == []
    assert FORMAT.incompatibilities(b, parse(new)) == []
    for reader, writer in ((a, b), (b, a)):
        for kind, path in differences(reader, writer):
            assert kind.isupper() and path.startswith("#/")
            # Schemas this small are far within the comparison budget.
            assert kind != "COMPARISON_TOO_COMPLEX"
