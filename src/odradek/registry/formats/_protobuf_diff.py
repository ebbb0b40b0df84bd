"""Confluent's Protobuf compatibility rules, over descriptors.

Confluent compares two ``.proto`` files as a list of typed differences between the writer's
schema (the data's) and the reader's; some difference types are compatible, the rest are not:

- top level: the package changed (incompatible); messages are matched by name within their
  scope, a removed message is incompatible, an added or reordered one is not; enums and their
  constants may be added, removed or renamed.
- fields are matched by number: added or removed is compatible unless ``required``; a renamed
  field is compatible; the kind (scalar — enums included —, message, map) must not change;
  scalars must stay within one wire-compatible group (int32/int64/uint32/uint64/bool/enum;
  sint32/sint64; fixed32/sfixed32; fixed64/sfixed64; string/bytes; float; double); an explicit
  label of a number changing (e.g. ``optional`` to ``repeated``) is incompatible, of a
  string/bytes is not; a message-typed field must keep the type's name (package aside), and a
  type that comes from a reference is compared in turn.
- oneofs: adding or removing a whole oneof, adding a member, or moving a member out to the top
  level is compatible; removing a member of a oneof that still exists, or making fields that
  were independent mutually exclusive (several top-level fields, or fields from different
  origins, put into one oneof) is not.

``syntax`` changes are not a difference type of Confluent's (a proto2 → proto3 change is judged
field by field), and neither are options, extensions or proto2 groups.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

__all__ = ["COMPATIBLE", "Difference", "differences"]

_F = descriptor_pb2.FieldDescriptorProto

#: Difference types that do not break reading.
COMPATIBLE = frozenset(
    {
        "MESSAGE_ADDED",
        "MESSAGE_MOVED",
        "ENUM_ADDED",
        "ENUM_REMOVED",
        "ENUM_CONST_ADDED",
        "ENUM_CONST_CHANGED",
        "ENUM_CONST_REMOVED",
        "FIELD_ADDED",
        "FIELD_REMOVED",
        "FIELD_NAME_CHANGED",
        "FIELD_STRING_OR_BYTES_LABEL_CHANGED",
        "ONEOF_ADDED",
        "ONEOF_REMOVED",
        "ONEOF_FIELD_ADDED",
        "ONEOF_FIELD_MOVED_TO_TOP_LEVEL",
    }
)

_DESCRIPTIONS = {
    "PACKAGE_CHANGED": "the package of the reader differs from the writer's",
    "MESSAGE_REMOVED": "a message of the writer is missing in the reader",
    "FIELD_KIND_CHANGED": "the field changed kind (scalar, message or map) between writer and reader",
    "FIELD_SCALAR_KIND_CHANGED": "the field's scalar type is not wire-compatible with the writer's",
    "FIELD_NAMED_TYPE_CHANGED": "the field's message type differs from the writer's",
    "FIELD_NUMERIC_LABEL_CHANGED": "the label of the numeric field differs from the writer's",
    "REQUIRED_FIELD_ADDED": "the reader requires a field the writer does not have",
    "REQUIRED_FIELD_REMOVED": "the reader lacks a field the writer requires",
    "ONEOF_FIELD_REMOVED": "a member of the writer's oneof is missing in the reader",
    "MULTIPLE_FIELDS_MOVED_TO_ONEOF": "several independent fields of the writer are in one oneof "
    "of the reader",
    "FIELD_MOVED_TO_EXISTING_ONEOF": "a field of the writer was moved into a oneof that holds "
    "other existing fields in the reader",
}

_GROUPS = {
    _F.TYPE_INT32: "GENERAL_NUMBER",
    _F.TYPE_INT64: "GENERAL_NUMBER",
    _F.TYPE_UINT32: "GENERAL_NUMBER",
    _F.TYPE_UINT64: "GENERAL_NUMBER",
    _F.TYPE_BOOL: "GENERAL_NUMBER",
    _F.TYPE_ENUM: "GENERAL_NUMBER",
    _F.TYPE_SINT32: "SIGNED_NUMBER",
    _F.TYPE_SINT64: "SIGNED_NUMBER",
    _F.TYPE_STRING: "STRING_OR_BYTES",
    _F.TYPE_BYTES: "STRING_OR_BYTES",
    _F.TYPE_FIXED32: "FIXED32",
    _F.TYPE_SFIXED32: "FIXED32",
    _F.TYPE_FIXED64: "FIXED64",
    _F.TYPE_SFIXED64: "FIXED64",
    _F.TYPE_FLOAT: "FLOAT",
    _F.TYPE_DOUBLE: "DOUBLE",
}


@dataclass(frozen=True)
class Difference:
    """One difference between a writer's schema and a reader's, at ``path`` (``#/Msg/3``)."""

    type: str
    path: str

    @property
    def compatible(self) -> bool:
        return self.type in COMPATIBLE

    def message(self) -> str:
        description = _DESCRIPTIONS.get(self.type, self.type.lower().replace("_", " "))
        return f'{{errorType:"{self.type}", description:"at \'{self.path}\': {description}"}}'


@dataclass(frozen=True)
class _Type:
    """A message or enum of a schema (its own file or an imported one)."""

    proto: descriptor_pb2.DescriptorProto | descriptor_pb2.EnumDescriptorProto
    package: str
    #: The file defining it; None for the schema's own file.
    origin: str | None
    #: The text it was given as (references only), to tell two versions of a reference apart.
    origin_text: str | None


@dataclass(frozen=True)
class SchemaTypes:
    """Every named type a schema can use, by full name without the leading dot."""

    root: descriptor_pb2.FileDescriptorProto
    types: Mapping[str, _Type]

    @classmethod
    def build(
        cls,
        root: descriptor_pb2.FileDescriptorProto,
        files: Mapping[str, descriptor_pb2.FileDescriptorProto],
        reference_texts: Mapping[str, str],
    ) -> SchemaTypes:
        types: dict[str, _Type] = {}
        for fd in files.values():
            origin = None if fd is root else fd.name
            text = None if origin is None else reference_texts.get(fd.name)
            prefix = fd.package
            stack: list[tuple[str, descriptor_pb2.DescriptorProto]] = [
                (_join(prefix, m.name), m) for m in fd.message_type
            ]
            for e in fd.enum_type:
                types[_join(prefix, e.name)] = _Type(e, fd.package, origin, text)
            while stack:
                name, m = stack.pop()
                types[name] = _Type(m, fd.package, origin, text)
                stack.extend((f"{name}.{n.name}", n) for n in m.nested_type)
                for e in m.enum_type:
                    types[f"{name}.{e.name}"] = _Type(e, fd.package, origin, text)
        return cls(root, types)

    def get(self, type_name: str) -> _Type | None:
        return self.types.get(type_name.removeprefix("."))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_map(t: _Type | None) -> bool:
    return (
        isinstance(t, _Type)
        and isinstance(t.proto, descriptor_pb2.DescriptorProto)
        and bool(t.proto.options.map_entry)
    )


@dataclass
class _Diff:
    """The differences found so far; owned by one :func:`differences` call."""

    writer: SchemaTypes
    reader: SchemaTypes
    found: list[Difference] = field(default_factory=list)
    #: Messages being compared, by the writer's full name, so recursive types terminate.
    active: set[str] = field(default_factory=set)
    #: Referenced message pairs (writer's name, reader's name) already compared, and whether
    #: they broke: a type used more than once (each naming the next twice: 2**depth paths) is
    #: compared, and its differences listed, once.
    compared: dict[tuple[str, str], bool] = field(default_factory=dict)

    def add(self, kind: str, path: list[str]) -> None:
        self.found.append(Difference(kind, "#/" + "/".join(path)))


def differences(writer: SchemaTypes, reader: SchemaTypes) -> list[Difference]:
    """Every difference from ``writer`` (the data's schema) to ``reader``, compatible or not."""
    diff = _Diff(writer, reader)
    if writer.root.package != reader.root.package:
        diff.add("PACKAGE_CHANGED", [])
    _types(
        diff,
        [],
        (writer.root.package, writer.root.package),
        (reader.root.package, reader.root.package),
        writer.root.message_type,
        reader.root.message_type,
        writer.root.enum_type,
        reader.root.enum_type,
    )
    return diff.found


def _types(
    diff: _Diff,
    path: list[str],
    writer_scope: tuple[str, str],
    reader_scope: tuple[str, str],
    writer_messages: Iterator[descriptor_pb2.DescriptorProto]
    | list[descriptor_pb2.DescriptorProto],
    reader_messages: Iterator[descriptor_pb2.DescriptorProto]
    | list[descriptor_pb2.DescriptorProto],
    writer_enums: Iterator[descriptor_pb2.EnumDescriptorProto]
    | list[descriptor_pb2.EnumDescriptorProto],
    reader_enums: Iterator[descriptor_pb2.EnumDescriptorProto]
    | list[descriptor_pb2.EnumDescriptorProto],
) -> None:
    """Compare the messages and enums declared in one scope (a file, or a message).
    A scope is (full-name prefix, package)."""
    w_msgs = {m.name: (i, m) for i, m in enumerate(m for m in writer_messages)}
    r_msgs = {m.name: (i, m) for i, m in enumerate(m for m in reader_messages)}
    for name in sorted(w_msgs.keys() | r_msgs.keys()):
        here = [*path, name]
        w, r = w_msgs.get(name), r_msgs.get(name)
        if r is None:
            assert w is not None
            if not w[1].options.map_entry:
                diff.add("MESSAGE_REMOVED", here)
        elif w is None:
            if not r[1].options.map_entry:
                diff.add("MESSAGE_ADDED", here)
        else:
            _message(
                diff,
                here,
                (_join(writer_scope[0], name), writer_scope[1]),
                (_join(reader_scope[0], name), reader_scope[1]),
                w[1],
                r[1],
            )
            if w[0] != r[0]:
                diff.add("MESSAGE_MOVED", here)
    w_enums = {e.name: e for e in writer_enums}
    r_enums = {e.name: e for e in reader_enums}
    for name in sorted(w_enums.keys() | r_enums.keys()):
        here = [*path, name]
        we, re_ = w_enums.get(name), r_enums.get(name)
        if re_ is None:
            diff.add("ENUM_REMOVED", here)
        elif we is None:
            diff.add("ENUM_ADDED", here)
        else:
            w_values = {v.number: v.name for v in we.value}
            r_values = {v.number: v.name for v in re_.value}
            for number in sorted(w_values.keys() | r_values.keys()):
                if number not in r_values:
                    diff.add("ENUM_CONST_REMOVED", [*here, str(number)])
                elif number not in w_values:
                    diff.add("ENUM_CONST_ADDED", [*here, str(number)])
                elif w_values[number] != r_values[number]:
                    diff.add("ENUM_CONST_CHANGED", [*here, str(number)])


def _oneof_of(m: descriptor_pb2.DescriptorProto) -> dict[int, str]:
    """Field number → name of its (written, not synthetic) oneof."""
    out = {}
    for f in m.field:
        if f.HasField("oneof_index") and not f.proto3_optional and f.type != _F.TYPE_GROUP:
            out[f.number] = m.oneof_decl[f.oneof_index].name
    return out


def _message(
    diff: _Diff,
    path: list[str],
    writer_scope: tuple[str, str],
    reader_scope: tuple[str, str],
    w: descriptor_pb2.DescriptorProto,
    r: descriptor_pb2.DescriptorProto,
) -> None:
    if writer_scope[0] in diff.active:
        return
    diff.active.add(writer_scope[0])
    try:
        _fields(diff, path, w, r)
        _types(
            diff,
            path,
            writer_scope,
            reader_scope,
            _nested(w),
            _nested(r),
            w.enum_type,
            r.enum_type,
        )
    finally:
        diff.active.discard(writer_scope[0])


def _nested(m: descriptor_pb2.DescriptorProto) -> list[descriptor_pb2.DescriptorProto]:
    """Nested message types as written: a proto2 group's type is part of the group, not one."""
    groups = {f.type_name.rsplit(".", 1)[-1] for f in m.field if f.type == _F.TYPE_GROUP}
    return [n for n in m.nested_type if n.name not in groups]


def _fields(
    diff: _Diff,
    path: list[str],
    w: descriptor_pb2.DescriptorProto,
    r: descriptor_pb2.DescriptorProto,
) -> None:
    # Confluent's rules do not look at proto2 groups (its parser keeps them apart from fields).
    w_by_number = {f.number: f for f in w.field if f.type != _F.TYPE_GROUP}
    r_by_number = {f.number: f for f in r.field if f.type != _F.TYPE_GROUP}
    w_oneof, r_oneof = _oneof_of(w), _oneof_of(r)
    w_oneofs, r_oneofs = set(w_oneof.values()), set(r_oneof.values())
    w_members: dict[str, list[int]] = {}
    for number, name in w_oneof.items():
        w_members.setdefault(name, []).append(number)
    # A oneof gone with every member is a deletion of fields (compatible); its members are
    # removals only when some of them live on elsewhere.
    deleted = {
        name
        for name, numbers in w_members.items()
        if name not in r_oneofs and not any(n in r_by_number for n in numbers)
    }
    r_members: dict[str, list[int]] = {}
    for number, name in r_oneof.items():
        r_members.setdefault(name, []).append(number)
    for name in sorted(r_members):
        origins = set()
        moved_from_top = 0
        for number in r_members[name]:
            if number in w_oneof:
                origins.add("oneof:" + w_oneof[number])
            elif number in w_by_number:
                origins.add(f"field:{number}")
                moved_from_top += 1
        if len(origins) > 1:
            kind = (
                "MULTIPLE_FIELDS_MOVED_TO_ONEOF"
                if moved_from_top > 1
                else "FIELD_MOVED_TO_EXISTING_ONEOF"
            )
            diff.add(kind, [*path, name])
    for name in sorted(w_oneofs | r_oneofs):
        if name not in r_oneofs:
            diff.add("ONEOF_REMOVED", [*path, name])
        elif name not in w_oneofs:
            diff.add("ONEOF_ADDED", [*path, name])
    for number in sorted(w_by_number.keys() | r_by_number.keys()):
        wf, rf = w_by_number.get(number), r_by_number.get(number)
        here = [*path, str(number)]
        if rf is None:
            assert wf is not None
            if number in w_oneof:
                if w_oneof[number] not in deleted:
                    diff.add("ONEOF_FIELD_REMOVED", [*path, w_oneof[number], str(number)])
            else:
                diff.add(
                    "REQUIRED_FIELD_REMOVED" if wf.label == _F.LABEL_REQUIRED else "FIELD_REMOVED",
                    here,
                )
        elif wf is None:
            if number in r_oneof:
                diff.add("ONEOF_FIELD_ADDED", [*path, r_oneof[number], str(number)])
            else:
                diff.add(
                    "REQUIRED_FIELD_ADDED" if rf.label == _F.LABEL_REQUIRED else "FIELD_ADDED", here
                )
        else:
            if number in w_oneof and number not in r_oneof:
                diff.add("ONEOF_FIELD_MOVED_TO_TOP_LEVEL", here)
            if number in r_oneof:
                here = [*path, r_oneof[number], str(number)]
            if wf.name != rf.name:
                diff.add("FIELD_NAME_CHANGED", here)
            _field_types(
                diff,
                here,
                (wf, _label(wf, w, diff.writer.root.syntax)),
                (rf, _label(rf, r, diff.reader.root.syntax)),
            )


def _label(
    f: descriptor_pb2.FieldDescriptorProto, owner: descriptor_pb2.DescriptorProto, syntax: str
) -> str | None:
    """The label as written in the text: None when none is (proto3 singular, oneof members)."""
    if f.label == _F.LABEL_REPEATED:
        return "repeated"
    if f.label == _F.LABEL_REQUIRED:
        return "required"
    if f.HasField("oneof_index") and not f.proto3_optional:
        return None
    if syntax == "proto3":
        return "optional" if f.proto3_optional else None
    if syntax == "editions":
        return None
    return "optional"


def _kind(f: descriptor_pb2.FieldDescriptorProto, types: SchemaTypes) -> str:
    if f.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
        return "MAP" if _is_map(types.get(f.type_name)) else "MESSAGE"
    return "SCALAR"


def _field_types(
    diff: _Diff,
    path: list[str],
    writer: tuple[descriptor_pb2.FieldDescriptorProto, str | None],
    reader: tuple[descriptor_pb2.FieldDescriptorProto, str | None],
) -> None:
    wf, w_label = writer
    rf, r_label = reader
    w_kind, r_kind = _kind(wf, diff.writer), _kind(rf, diff.reader)
    if w_kind != r_kind:
        diff.add("FIELD_KIND_CHANGED", path)
    elif w_kind == "SCALAR":
        group = _GROUPS[wf.type]
        if group != _GROUPS[rf.type]:
            diff.add("FIELD_SCALAR_KIND_CHANGED", path)
        elif w_label is not None and r_label is not None and w_label != r_label:
            diff.add(
                "FIELD_STRING_OR_BYTES_LABEL_CHANGED"
                if group == "STRING_OR_BYTES"
                else "FIELD_NUMERIC_LABEL_CHANGED",
                path,
            )
    elif w_kind == "MAP":
        w_entry, r_entry = diff.writer.get(wf.type_name), diff.reader.get(rf.type_name)
        assert w_entry is not None and r_entry is not None
        assert isinstance(w_entry.proto, descriptor_pb2.DescriptorProto)
        assert isinstance(r_entry.proto, descriptor_pb2.DescriptorProto)
        for wk, rk in zip(w_entry.proto.field, r_entry.proto.field, strict=True):
            _field_types(diff, path, (wk, None), (rk, None))
    else:
        _named_types(diff, path, wf.type_name, rf.type_name)


def _named_types(diff: _Diff, path: list[str], w_name: str, r_name: str) -> None:
    w_type, r_type = diff.writer.get(w_name), diff.reader.get(r_name)
    if w_type is None or r_type is None:
        if w_name != r_name:
            diff.add("FIELD_NAMED_TYPE_CHANGED", path)
        return
    w_local = _local(w_name, w_type.package)
    r_local = _local(r_name, r_type.package)
    if w_local != r_local:
        diff.add("FIELD_NAMED_TYPE_CHANGED", path)
        return
    # Types of the schema's own file are compared where they are declared; a type from a
    # reference is compared here, unless both sides use the very same reference.
    if w_type.origin is None and r_type.origin is None:
        return
    if w_type.origin == r_type.origin and w_type.origin_text == r_type.origin_text:
        return
    assert isinstance(w_type.proto, descriptor_pb2.DescriptorProto)
    assert isinstance(r_type.proto, descriptor_pb2.DescriptorProto)
    key = (w_name, r_name)
    broken = diff.compared.get(key)
    if broken is None:
        sub = _Diff(diff.writer, diff.reader, active=diff.active, compared=diff.compared)
        _message(
            sub,
            w_local.split("."),
            (w_name.removeprefix("."), w_type.package),
            (r_name.removeprefix("."), r_type.package),
            w_type.proto,
            r_type.proto,
        )
        diff.found.extend(sub.found)
        broken = any(not d.compatible for d in sub.found)
        diff.compared[key] = broken
    if broken:
        diff.add("FIELD_NAMED_TYPE_CHANGED", path)


def _local(type_name: str, package: str) -> str:
    name = type_name.removeprefix(".")
    return name.removeprefix(package + ".") if package else name
