"""The Protobuf schema format: parsing with protoc, canonical and normalized text, and
Confluent's Protobuf compatibility rules, each checked with the writer and reader both ways."""

from __future__ import annotations

import base64
import re

import pytest
from google.protobuf import descriptor_pb2, struct_pb2, timestamp_pb2

from odradek.registry.formats import InvalidSchemaError, get_format
from odradek.registry.formats.protobuf import FORMAT, ProtobufSchema

P3 = 'syntax = "proto3";\npackage test;\n'
P2 = 'syntax = "proto2";\npackage test;\n'


def parse(text: str, references: dict[str, str] | None = None) -> ProtobufSchema:
    return FORMAT.parse(text, references or {})


def incompatible(reader: ProtobufSchema, writer: ProtobufSchema) -> set[str]:
    """The difference types of ``incompatibilities`` (read back from its messages)."""
    messages = FORMAT.incompatibilities(reader, writer)
    types = {re.match(r'\{errorType:"([A-Z_]+)"', m).group(1) for m in messages}  # type: ignore[union-attr]
    assert len(types) <= len(messages)
    return types


def all_differences(reader: ProtobufSchema, writer: ProtobufSchema) -> set[tuple[str, str]]:
    return {(d.type, d.path) for d in FORMAT.differences(reader, writer)}


def msg(body: str, header: str = P3, extra: str = "") -> str:
    return f"{header}message A {{\n{body}\n}}\n{extra}"


# --- compatibility rules -------------------------------------------------------------------
# (id, old, new, what old→new (new reads old: BACKWARD) finds, incompatible types old→new,
#  incompatible types new→old). A found difference is (type, path).
RULES = [
    (
        "field added",
        msg("int32 a = 1;"),
        msg("int32 a = 1;\nstring b = 2;"),
        {("FIELD_ADDED", "#/A/2")},
        set(),
        set(),
    ),
    (
        "field renamed",
        msg("int32 a = 1;"),
        msg("int32 renamed = 1;"),
        {("FIELD_NAME_CHANGED", "#/A/1")},
        set(),
        set(),
    ),
    (
        "package changed",
        msg("int32 a = 1;"),
        msg("int32 a = 1;", header='syntax = "proto3";\npackage other;\n'),
        {("PACKAGE_CHANGED", "#/")},
        {"PACKAGE_CHANGED"},
        {"PACKAGE_CHANGED"},
    ),
    (
        "message removed",
        msg("int32 a = 1;", extra="message B { int32 b = 1; }\n"),
        msg("int32 a = 1;"),
        {("MESSAGE_REMOVED", "#/B")},
        {"MESSAGE_REMOVED"},
        set(),
    ),
    (
        "messages reordered",
        msg("int32 a = 1;", extra="message B { int32 b = 1; }\n"),
        P3 + "message B { int32 b = 1; }\nmessage A { int32 a = 1; }\n",
        {("MESSAGE_MOVED", "#/A"), ("MESSAGE_MOVED", "#/B")},
        set(),
        set(),
    ),
    (
        "scalar to message",
        msg("int32 a = 1;", extra="message B { int32 b = 1; }\n"),
        msg("B a = 1;", extra="message B { int32 b = 1; }\n"),
        {("FIELD_KIND_CHANGED", "#/A/1")},
        {"FIELD_KIND_CHANGED"},
        {"FIELD_KIND_CHANGED"},
    ),
    (
        "bytes to message",
        msg("bytes a = 1;", extra="message B { int32 b = 1; }\n"),
        msg("B a = 1;", extra="message B { int32 b = 1; }\n"),
        {("FIELD_KIND_CHANGED", "#/A/1")},
        {"FIELD_KIND_CHANGED"},
        {"FIELD_KIND_CHANGED"},
    ),
    (
        "message to map",
        msg("B a = 1;", extra="message B { int32 b = 1; }\n"),
        msg("map<string, B> a = 1;", extra="message B { int32 b = 1; }\n"),
        {("FIELD_KIND_CHANGED", "#/A/1")},
        {"FIELD_KIND_CHANGED"},
        {"FIELD_KIND_CHANGED"},
    ),
    (
        "map value scalar group changed",
        msg("map<string, int32> a = 1;"),
        msg("map<string, string> a = 1;"),
        {("FIELD_SCALAR_KIND_CHANGED", "#/A/1")},
        {"FIELD_SCALAR_KIND_CHANGED"},
        {"FIELD_SCALAR_KIND_CHANGED"},
    ),
    (
        "map value type widened in its group",
        msg("map<string, int32> a = 1;"),
        msg("map<string, int64> a = 1;"),
        set(),
        set(),
        set(),
    ),
    (
        "message type renamed",
        msg("B a = 1;", extra="message B { int32 b = 1; }\n"),
        msg("C a = 1;", extra="message C { int32 b = 1; }\n"),
        {
            ("FIELD_NAMED_TYPE_CHANGED", "#/A/1"),
            ("MESSAGE_REMOVED", "#/B"),
            ("MESSAGE_ADDED", "#/C"),
        },
        {"FIELD_NAMED_TYPE_CHANGED", "MESSAGE_REMOVED"},
        {"FIELD_NAMED_TYPE_CHANGED", "MESSAGE_REMOVED"},
    ),
    (
        "nested message field changed",
        msg("N n = 1;\nmessage N { int32 x = 1; }"),
        msg("N n = 1;\nmessage N { double x = 1; }"),
        {("FIELD_SCALAR_KIND_CHANGED", "#/A/N/1")},
        {"FIELD_SCALAR_KIND_CHANGED"},
        {"FIELD_SCALAR_KIND_CHANGED"},
    ),
    (
        "nested message removed",
        msg("int32 a = 1;\nmessage N { int32 x = 1; }"),
        msg("int32 a = 1;"),
        {("MESSAGE_REMOVED", "#/A/N")},
        {"MESSAGE_REMOVED"},
        set(),
    ),
    (
        "required field added",
        msg("optional int32 a = 1;", header=P2),
        msg("optional int32 a = 1;\nrequired int32 b = 2;", header=P2),
        {("REQUIRED_FIELD_ADDED", "#/A/2")},
        {"REQUIRED_FIELD_ADDED"},
        {"REQUIRED_FIELD_REMOVED"},
    ),
    (
        "optional number made repeated",
        msg("optional int32 a = 1;", header=P2),
        msg("repeated int32 a = 1;", header=P2),
        {("FIELD_NUMERIC_LABEL_CHANGED", "#/A/1")},
        {"FIELD_NUMERIC_LABEL_CHANGED"},
        {"FIELD_NUMERIC_LABEL_CHANGED"},
    ),
    (
        "optional string made repeated",
        msg("optional string a = 1;", header=P2),
        msg("repeated string a = 1;", header=P2),
        {("FIELD_STRING_OR_BYTES_LABEL_CHANGED", "#/A/1")},
        set(),
        set(),
    ),
    (
        "proto3 singular made optional (no label written before)",
        msg("int32 a = 1;"),
        msg("optional int32 a = 1;"),
        set(),
        set(),
        set(),
    ),
    (
        "proto2 to proto3 with the same fields",
        msg("optional int32 a = 1;\noptional string b = 2;", header=P2),
        msg("int32 a = 1;\nstring b = 2;"),
        set(),
        set(),
        set(),
    ),
    (
        "field added to a oneof",
        msg("oneof k {\nint32 a = 1;\n}"),
        msg("oneof k {\nint32 a = 1;\nstring b = 2;\n}"),
        {("ONEOF_FIELD_ADDED", "#/A/k/2")},
        set(),
        {"ONEOF_FIELD_REMOVED"},
    ),
    (
        "one field moved into a new oneof",
        msg("int32 a = 1;"),
        msg("oneof k {\nint32 a = 1;\n}"),
        {("ONEOF_ADDED", "#/A/k")},
        set(),
        set(),
    ),
    (
        "two fields moved into a new oneof",
        msg("int32 a = 1;\nstring b = 2;"),
        msg("oneof k {\nint32 a = 1;\nstring b = 2;\n}"),
        {("ONEOF_ADDED", "#/A/k"), ("MULTIPLE_FIELDS_MOVED_TO_ONEOF", "#/A/k")},
        {"MULTIPLE_FIELDS_MOVED_TO_ONEOF"},
        set(),
    ),
    (
        "field moved into an existing oneof",
        msg("int32 a = 1;\noneof k {\nstring b = 2;\n}"),
        msg("oneof k {\nint32 a = 1;\nstring b = 2;\n}"),
        {("FIELD_MOVED_TO_EXISTING_ONEOF", "#/A/k")},
        {"FIELD_MOVED_TO_EXISTING_ONEOF"},
        set(),
    ),
    (
        "whole oneof removed",
        msg("int32 x = 3;\noneof k {\nint32 a = 1;\nstring b = 2;\n}"),
        msg("int32 x = 3;"),
        {("ONEOF_REMOVED", "#/A/k")},
        set(),
        set(),
    ),
    (
        "oneof member type changed",
        msg("oneof k {\nint32 a = 1;\n}"),
        msg("oneof k {\nstring a = 1;\n}"),
        {("FIELD_SCALAR_KIND_CHANGED", "#/A/k/1")},
        {"FIELD_SCALAR_KIND_CHANGED"},
        {"FIELD_SCALAR_KIND_CHANGED"},
    ),
    (
        "enum constant added",
        msg("E e = 1;\nenum E { Z = 0; }"),
        msg("E e = 1;\nenum E { Z = 0; ONE = 1; }"),
        {("ENUM_CONST_ADDED", "#/A/E/1")},
        set(),
        set(),
    ),
    (
        "enum constant renamed",
        msg("E e = 1;\nenum E { Z = 0; ONE = 1; }"),
        msg("E e = 1;\nenum E { Z = 0; UNO = 1; }"),
        {("ENUM_CONST_CHANGED", "#/A/E/1")},
        set(),
        set(),
    ),
    (
        "enum removed",
        msg("int32 a = 1;", extra="enum E { Z = 0; }\n"),
        msg("int32 a = 1;"),
        {("ENUM_REMOVED", "#/E")},
        set(),
        set(),
    ),
    (
        "enum to int32",
        msg("E e = 1;\nenum E { Z = 0; }"),
        msg("int32 e = 1;\nenum E { Z = 0; }"),
        set(),
        set(),
        set(),
    ),
    (
        "enum to sint32",
        msg("E e = 1;\nenum E { Z = 0; }"),
        msg("sint32 e = 1;\nenum E { Z = 0; }"),
        {("FIELD_SCALAR_KIND_CHANGED", "#/A/1")},
        {"FIELD_SCALAR_KIND_CHANGED"},
        {"FIELD_SCALAR_KIND_CHANGED"},
    ),
    (
        "recursive message",
        msg("A next = 1;\nint32 v = 2;"),
        msg("A next = 1;\nint64 v = 2;\nstring w = 3;"),
        {("FIELD_ADDED", "#/A/3")},
        set(),
        set(),
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "found", "backward", "forward"),
    [pytest.param(*case[1:], id=case[0]) for case in RULES],
)
def test_rules(
    old: str, new: str, found: set[tuple[str, str]], backward: set[str], forward: set[str]
) -> None:
    old_schema, new_schema = parse(old), parse(new)
    differences = all_differences(reader=new_schema, writer=old_schema)
    assert found <= differences
    # Nothing unexpected is incompatible: the incompatible set is exactly the table's.
    assert incompatible(reader=new_schema, writer=old_schema) == backward
    assert incompatible(reader=old_schema, writer=new_schema) == forward


# Confluent groups scalars by wire encoding; a change within a group is no difference at all.
SAME_GROUP = [
    ("int32", "uint32"),
    ("int32", "int64"),
    ("uint64", "bool"),
    ("int64", "uint64"),
    ("sint32", "sint64"),
    ("fixed32", "sfixed32"),
    ("fixed64", "sfixed64"),
    ("string", "bytes"),
]
OTHER_GROUP = [
    ("int32", "sint32"),
    ("int32", "fixed32"),
    ("fixed32", "fixed64"),
    ("sfixed32", "sfixed64"),
    ("float", "double"),
    ("int64", "double"),
    ("string", "int32"),
    ("bytes", "fixed64"),
]


@pytest.mark.parametrize(("a", "b"), SAME_GROUP)
def test_scalar_change_within_group_is_no_difference(a: str, b: str) -> None:
    x, y = parse(msg(f"{a} f = 1;")), parse(msg(f"{b} f = 1;"))
    assert FORMAT.differences(reader=y, writer=x) == []
    assert FORMAT.differences(reader=x, writer=y) == []


@pytest.mark.parametrize(("a", "b"), OTHER_GROUP)
def test_scalar_change_across_groups_is_incompatible(a: str, b: str) -> None:
    x, y = parse(msg(f"{a} f = 1;")), parse(msg(f"{b} f = 1;"))
    assert incompatible(reader=y, writer=x) == {"FIELD_SCALAR_KIND_CHANGED"}
    assert incompatible(reader=x, writer=y) == {"FIELD_SCALAR_KIND_CHANGED"}


def test_identical_schemas_have_no_differences() -> None:
    schema = parse(msg("int32 a = 1;\nmap<string, A> m = 2;\noneof k { string s = 3; }"))
    assert FORMAT.differences(reader=schema, writer=schema) == []


def test_message_text_names_type_and_path() -> None:
    old = parse(msg("int32 a = 1;"))
    new = parse(msg("string a = 1;"))
    [message] = FORMAT.incompatibilities(reader=new, writer=old)
    assert message.startswith('{errorType:"FIELD_SCALAR_KIND_CHANGED"')
    assert "#/A/1" in message


# --- references ----------------------------------------------------------------------------

B_V1 = 'syntax = "proto3";\npackage dep;\nmessage B { string y = 1; }\n'
B_V2_COMPATIBLE = 'syntax = "proto3";\npackage dep;\nmessage B { string y = 1; int32 z = 2; }\n'
B_V2_BROKEN = 'syntax = "proto3";\npackage dep;\nmessage B { double y = 1; }\n'
USES_B = P3 + 'import "dep/b.proto";\nmessage A { dep.B b = 1; }\n'


def test_reference_resolves_imported_types() -> None:
    schema = parse(USES_B, {"dep/b.proto": B_V1})
    assert ".dep.B b = 1;" in schema.canonical()
    assert 'import "dep/b.proto";' in schema.canonical()


def test_reference_missing_is_invalid() -> None:
    with pytest.raises(InvalidSchemaError, match="dep/b.proto"):
        parse(USES_B)


def test_incompatible_change_in_a_reference_is_found_through_the_field() -> None:
    old = parse(USES_B, {"dep/b.proto": B_V1})
    new = parse(USES_B, {"dep/b.proto": B_V2_BROKEN})
    found = all_differences(reader=new, writer=old)
    assert ("FIELD_SCALAR_KIND_CHANGED", "#/B/1") in found
    assert ("FIELD_NAMED_TYPE_CHANGED", "#/A/1") in found
    assert incompatible(reader=new, writer=old) == {
        "FIELD_SCALAR_KIND_CHANGED",
        "FIELD_NAMED_TYPE_CHANGED",
    }


def test_compatible_change_in_a_reference_is_compatible() -> None:
    old = parse(USES_B, {"dep/b.proto": B_V1})
    new = parse(USES_B, {"dep/b.proto": B_V2_COMPATIBLE})
    assert ("FIELD_ADDED", "#/B/2") in all_differences(reader=new, writer=old)
    assert FORMAT.incompatibilities(reader=new, writer=old) == []
    assert FORMAT.incompatibilities(reader=old, writer=new) == []


def test_same_reference_is_not_compared_again() -> None:
    old = parse(USES_B, {"dep/b.proto": B_V1})
    new = parse(USES_B + "message C { int32 c = 1; }\n", {"dep/b.proto": B_V1})
    assert all_differences(reader=new, writer=old) == {("MESSAGE_ADDED", "#/C")}


@pytest.mark.timeout(20)
def test_a_referenced_type_reached_by_exponentially_many_paths_is_compared_once() -> None:
    # Each referenced message names the next twice: 2**40 paths reach the last one, which was
    # once compared, and its differences listed, along every path.
    def dep(leaf: str, depth: int = 40) -> str:
        messages = [f"message B{i} {{ B{i + 1} a = 1; B{i + 1} b = 2; }}" for i in range(depth)]
        messages.append(f"message B{depth} {{ {leaf} y = 1; }}")
        return 'syntax = "proto3";\npackage dep;\n' + "\n".join(messages) + "\n"

    uses = P3 + 'import "dep/b.proto";\nmessage A { dep.B0 b = 1; }\n'
    old = parse(uses, {"dep/b.proto": dep("string")})
    new = parse(uses, {"dep/b.proto": dep("double")})
    found = all_differences(reader=new, writer=old)
    assert ("FIELD_SCALAR_KIND_CHANGED", "#/B40/1") in found
    assert ("FIELD_NAMED_TYPE_CHANGED", "#/A/1") in found
    assert len(found) < 200


def test_type_moved_from_own_file_to_a_reference_is_compared() -> None:
    old = parse(P3 + "message A { B b = 1; }\nmessage B { string y = 1; }\n")
    ref = 'syntax = "proto3";\npackage test;\nmessage B { int32 y = 1; }\n'
    new = parse(P3 + 'import "b.proto";\nmessage A { B b = 1; }\n', {"b.proto": ref})
    found = all_differences(reader=new, writer=old)
    assert ("FIELD_SCALAR_KIND_CHANGED", "#/B/1") in found
    assert ("MESSAGE_REMOVED", "#/B") in found


def test_transitive_references() -> None:
    c = 'syntax = "proto3";\npackage dep;\nmessage C { int32 v = 1; }\n'
    b = 'syntax = "proto3";\npackage dep;\nimport "dep/c.proto";\nmessage B { C c = 1; }\n'
    schema = parse(USES_B, {"dep/b.proto": b, "dep/c.proto": c})
    assert schema.message_names() == ["test.A"]


def test_well_known_types_need_no_reference() -> None:
    schema = parse(
        P3 + 'import "google/protobuf/timestamp.proto";\n'
        "message A { google.protobuf.Timestamp t = 1; }\n"
    )
    assert ".google.protobuf.Timestamp t = 1;" in schema.canonical()


# --- invalid input -------------------------------------------------------------------------

INVALID = [
    ("syntax error", P3 + "message A { int32 a = 1 }", 'Expected ";"'),
    ("unknown type", P3 + "message A { Nope a = 1; }", '"Nope" is not defined'),
    ("unknown import", P3 + 'import "missing.proto";\nmessage A {}', "missing.proto"),
    (
        "duplicate field number",
        P3 + "message A { int32 a = 1; int32 b = 1; }",
        "has already been used",
    ),
    ("proto3 required", P3 + "message A { required int32 a = 1; }", "Required fields"),
    ("not proto at all", '{"type": "record", "name": "x"}', ""),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(*c[1:], id=c[0]) for c in INVALID])
def test_invalid_schema(text: str, expected: str) -> None:
    with pytest.raises(InvalidSchemaError) as info:
        parse(text)
    assert expected in str(info.value)
    assert str(info.value)  # protoc's message, never empty


@pytest.mark.parametrize("name", ["../b.proto", "/abs/b.proto", "a/./b.proto", ""])
def test_reference_names_must_be_relative_import_paths(name: str) -> None:
    with pytest.raises(InvalidSchemaError, match="import path"):
        parse(USES_B, {name: B_V1})


# --- identity: canonical and normalized ----------------------------------------------------


def test_canonical_ignores_comments_and_formatting() -> None:
    plain = parse(msg("int32 a = 1;\nstring b = 2;"))
    noisy = parse(
        "// leading comment\n" + P3 + "/* block */ message   A{int32 a=1; // trailing\n"
        "  string   b =\n 2;}\n"
    )
    assert plain.canonical() == noisy.canonical()


def test_canonical_tells_different_schemas_apart() -> None:
    assert parse(msg("int32 a = 1;")).canonical() != parse(msg("int32 a = 2;")).canonical()
    assert parse(msg("int32 a = 1;")).canonical() != parse(msg("int64 a = 1;")).canonical()


ROUND_TRIP = [
    (
        "proto3",
        msg(
            'reserved 5, 8 to 10;\nreserved "old";\noption deprecated = true;\n'
            'int32 a = 1 [deprecated = true, json_name = "x"];\nmap<string, A> m = 2;\n'
            "optional string o = 3;\noneof k { string s = 4; bytes b = 6; }\n"
            "enum E { option allow_alias = true; Z = 0; ZERO = 0; }\nmessage N { E e = 1; }",
            extra="enum Top { T = 0; }\nservice S { rpc Get (A) returns (stream A); }\n",
        ),
    ),
    (
        "proto2 groups, defaults, extensions",
        msg(
            "optional group Res = 1 { optional int32 x = 2; }\n"
            'optional string d = 5 [default = "a\\"b"];\n'
            'optional bytes y = 6 [default = "\\001z"];\n'
            "optional E e = 7 [default = TWO];\nenum E { ONE = 1; TWO = 2; }\n"
            "optional double f = 8 [default = -inf];\nextensions 100 to max;\n"
            "oneof k { group O = 9 { optional int32 z = 10; } }",
            header=P2,
            extra="extend A { optional int32 ext = 100; }\n",
        ),
    ),
    (
        "editions",
        'edition = "2023";\npackage e;\noption features.field_presence = IMPLICIT;\n'
        "message A { int32 a = 1; string b = 2 [features.field_presence = EXPLICIT]; }\n",
    ),
]


@pytest.mark.parametrize("text", [pytest.param(c[1], id=c[0]) for c in ROUND_TRIP])
def test_canonical_is_a_schema_that_parses_to_itself(text: str) -> None:
    schema = parse(text)
    again = parse(schema.canonical())
    assert again.canonical() == schema.canonical()
    assert again.normalized() == schema.normalized()
    assert FORMAT.differences(reader=again, writer=schema) == []


def test_canonical_layout() -> None:
    text = P3 + 'option java_package = "x";\nenum E { Z = 0; }\nmessage A { int32 a = 1; }\n'
    assert parse(text).canonical() == (
        'syntax = "proto3";\npackage test;\n\noption java_package = "x";\n\n'
        "message A {\n  int32 a = 1;\n}\nenum E {\n  Z = 0;\n}\n"
    )


def test_normalized_sorts_fields_imports_and_constants() -> None:
    refs = {"z.proto": 'syntax = "proto3";\nmessage Z {}\n', "y.proto": 'syntax = "proto3";\n'}
    a = parse(
        P3 + 'import "z.proto";\nimport "y.proto";\n'
        "message A { string b = 2; int32 a = 1; enum E { Z = 0; TWO = 2; ONE = 1; } .Z z = 3; }\n",
        refs,
    )
    b = parse(
        P3 + 'import "y.proto";\nimport "z.proto";\n'
        "message A { int32 a = 1; string b = 2; enum E { Z = 0; ONE = 1; TWO = 2; } .Z z = 3; }\n",
        refs,
    )
    assert a.canonical() != b.canonical()
    assert a.normalized() == b.normalized()
    assert a.normalized().index('import "y.proto"') < a.normalized().index('import "z.proto"')


def test_normalized_drops_proto2_syntax_line_only() -> None:
    assert "syntax" not in parse(msg("optional int32 a = 1;", header=P2)).normalized()
    assert 'syntax = "proto3";' in parse(msg("int32 a = 1;")).normalized()


def test_normalized_keeps_message_order() -> None:
    # Message indexes in records refer to declaration order, so normalization must keep it.
    schema = parse(P3 + "message B { int32 b = 1; }\nmessage A { int32 a = 1; }\n")
    assert schema.normalized().index("message B") < schema.normalized().index("message A")
    assert schema.message_names() == ["test.B", "test.A"]


# --- base64 FileDescriptorProto, as confluent-kafka-python's serializer sends -------------


def b64(fd: descriptor_pb2.FileDescriptorProto) -> str:
    return base64.b64encode(fd.SerializeToString()).decode()


def test_serialized_descriptor_is_the_same_schema_as_its_text() -> None:
    text_schema = parse(USES_B, {"dep/b.proto": B_V1})
    from_descriptor = parse(text_schema.serialized(), {"dep/b.proto": B_V1})
    assert from_descriptor.canonical() == text_schema.canonical()
    decoded = descriptor_pb2.FileDescriptorProto.FromString(
        base64.b64decode(text_schema.serialized())
    )
    assert [m.name for m in decoded.message_type] == ["A"]


def test_serialized_references() -> None:
    b = parse(B_V1)
    schema = parse(USES_B, {"dep/b.proto": b.serialized()})
    assert ".dep.B b = 1;" in schema.canonical()


@pytest.mark.parametrize("module", [timestamp_pb2, struct_pb2, descriptor_pb2])
def test_generated_descriptors_parse(module: object) -> None:
    # What the Python serializer registers for a generated message: the file's serialized_pb.
    file = module.DESCRIPTOR  # type: ignore[attr-defined]
    refs = {d.name: base64.b64encode(d.serialized_pb).decode() for d in file.dependencies}
    schema = parse(base64.b64encode(file.serialized_pb).decode(), refs)
    assert schema.package == "google.protobuf"
    assert FORMAT.incompatibilities(schema, schema) == []
    assert parse(schema.canonical(), refs).canonical() == schema.canonical()


def test_base64_that_is_no_descriptor_is_invalid() -> None:
    text = base64.b64encode(b"\x00\x01garbage").decode()
    assert text[0].isalnum()  # not "//", which protoc would read as a comment
    with pytest.raises(InvalidSchemaError):
        parse(text)


# --- lookup and caching --------------------------------------------------------------------


def test_format_is_served_by_schema_type() -> None:
    assert get_format("PROTOBUF") is FORMAT
    assert parse(msg("int32 a = 1;")).schema_type == "PROTOBUF"


def test_parses_are_cached_by_content() -> None:
    text = msg("int32 cached = 1;")
    assert parse(text) is parse(text)
    assert parse(text) is not parse(text + "\n")


OPTIONS_PROTO = """syntax = "proto3";
package opts;
import "google/protobuf/descriptor.proto";
message Rule { int32 min = 1; string name = 2; }
enum Level { LOW = 0; HIGH = 1; }
extend google.protobuf.FieldOptions { Rule rule = 50001; string tag = 50002; }
extend google.protobuf.MessageOptions { bool sealed = 50003; }
extend google.protobuf.FileOptions { Level level = 50004; }
"""


def test_custom_options_are_kept_in_canonical_text() -> None:
    text = P3 + (
        'import "opts.proto";\noption (opts.level) = HIGH;\n'
        "message A {\noption (opts.sealed) = true;\n"
        'int32 a = 1 [(opts.tag) = "x", (opts.rule) = { min: 3 name: "n" }];\n}\n'
    )
    schema = parse(text, {"opts.proto": OPTIONS_PROTO})
    canonical = schema.canonical()
    assert "option (opts.level) = HIGH;" in canonical
    assert "option (opts.sealed) = true;" in canonical
    assert '(opts.tag) = "x"' in canonical
    assert '(opts.rule) = { min: 3 name: "n" }' in canonical
    assert parse(canonical, {"opts.proto": OPTIONS_PROTO}).canonical() == canonical
    without = parse(text.replace('(opts.tag) = "x", ', ""), {"opts.proto": OPTIONS_PROTO})
    assert without.canonical() != canonical


def test_confluent_builtin_files_need_no_reference() -> None:
    # confluent-kafka's serializers never send confluent/* (nor google/*) as references.
    schema = parse(
        P3 + 'import "confluent/meta.proto";\nimport "confluent/type/decimal.proto";\n'
        'message A { confluent.type.Decimal d = 1 [(confluent.field_meta) = { doc: "x" }]; }\n'
    )
    assert ".confluent.type.Decimal d = 1" in schema.canonical()
    assert '(confluent.field_meta) = { doc: "x" }' in schema.canonical()


def test_a_reference_can_shadow_a_builtin_file() -> None:
    own = 'syntax = "proto3";\npackage confluent;\nmessage OnlyInTheReference { int32 x = 1; }\n'
    schema = parse(
        P3 + 'import "confluent/meta.proto";\nmessage A { confluent.OnlyInTheReference m = 1; }\n',
        {"confluent/meta.proto": own},
    )
    assert ".confluent.OnlyInTheReference m = 1;" in schema.canonical()


def test_serialized_descriptor_keeps_custom_options() -> None:
    # Data contracts put tags in confluent.field_meta; the Python serializer sends them inside
    # the base64 descriptor, where descriptor_pb2 sees them only as unknown fields.
    text = P3 + (
        'import "confluent/meta.proto";\n'
        'message A {\nstring d = 1 [(confluent.field_meta) = { tags: "PII" }];\n}\n'
    )
    schema = parse(text)
    from_descriptor = parse(schema.serialized())
    assert '(confluent.field_meta) = { tags: "PII" }' in from_descriptor.canonical()
    assert from_descriptor.canonical() == schema.canonical()


def test_proto2_groups_are_not_compared() -> None:
    # Confluent's parser keeps groups apart from fields and nested messages, and its rules
    # compare neither; a group's generated nested type must not count as a removed message.
    old = parse(msg("optional int32 a = 1;\noptional group G = 2 { optional int32 x = 3; }", P2))
    new = parse(msg("optional int32 a = 1;", P2))
    assert FORMAT.differences(reader=new, writer=old) == []
    changed = parse(
        msg("optional int32 a = 1;\noptional group G = 2 { optional string x = 3; }", P2)
    )
    assert FORMAT.differences(reader=changed, writer=old) == []
