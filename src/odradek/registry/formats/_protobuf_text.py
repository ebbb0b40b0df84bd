"""``.proto`` text printed from a ``FileDescriptorProto``, in Confluent's canonical layout.

Confluent identifies a Protobuf schema by a re-printed form of its parse: comments and formatting
are gone, top-level and nested messages come before enums, a message lists its reserved ranges,
options, plain fields, oneofs, then nested types. Printing from descriptors, type names are always
the fully-qualified names protoc resolved (``.pkg.Msg``), so ``Msg`` and ``.pkg.Msg`` are the same
schema here. ``normalize`` adds Confluent's normalization: imports sorted and deduplicated, fields,
oneofs, enum constants, reserved ranges and options sorted, and no ``syntax`` line for proto2.

Options are printed from the fields the options messages know. Custom options are extensions
declared in the schema's own files, unknown to the generated ``descriptor_pb2`` classes; given a
``DescriptorPool`` holding those files, the options are re-read through it so they print too.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["render_file", "scalar_type_name"]

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR_NAMES = {
    _F.TYPE_DOUBLE: "double",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_INT64: "int64",
    _F.TYPE_UINT64: "uint64",
    _F.TYPE_INT32: "int32",
    _F.TYPE_FIXED64: "fixed64",
    _F.TYPE_FIXED32: "fixed32",
    _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "bytes",
    _F.TYPE_UINT32: "uint32",
    _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64",
    _F.TYPE_SINT32: "sint32",
    _F.TYPE_SINT64: "sint64",
}
_MAX_FIELD_NUMBER = 536_870_911
_INDENT = "  "
#: The pool custom options are read through, for the file being printed.
_OPTIONS_POOL: contextvars.ContextVar[descriptor_pool.DescriptorPool | None] = (
    contextvars.ContextVar("options_pool", default=None)
)


def scalar_type_name(field_type: int) -> str | None:
    """The ``.proto`` keyword of a scalar field type; None for messages, groups and enums."""
    return _SCALAR_NAMES.get(field_type)


def render_file(
    fd: descriptor_pb2.FileDescriptorProto,
    *,
    normalize: bool = False,
    options_pool: descriptor_pool.DescriptorPool | None = None,
) -> str:
    """``fd`` as ``.proto`` text; ``options_pool`` (holding ``fd`` and its imports) makes custom
    options print."""
    token = _OPTIONS_POOL.set(options_pool)
    try:
        return _render_file(fd, normalize)
    finally:
        _OPTIONS_POOL.reset(token)


def _render_file(fd: descriptor_pb2.FileDescriptorProto, normalize: bool) -> str:
    maps = _map_entries(fd)
    out: list[str] = []
    syntax = fd.syntax or "proto2"
    if syntax == "editions":
        out.append(f'edition = "{_edition_name(fd.edition)}";\n')
    elif not normalize or syntax == "proto3":
        out.append(f'syntax = "{syntax}";\n')
    if fd.package:
        out.append(f"package {fd.package};\n")
    public = {fd.dependency[i] for i in fd.public_dependency}
    imports = [d for d in fd.dependency if d not in public]
    publics = [d for d in fd.dependency if d in public]
    if normalize:
        imports, publics = sorted(set(imports)), sorted(set(publics))
    if imports or publics:
        out.append("\n")
        out.extend(f'import "{d}";\n' for d in imports)
        out.extend(f'import public "{d}";\n' for d in publics)
    options = _options(fd.options, normalize)
    if options:
        out.append("\n")
        out.extend(f"option {o};\n" for o in options)
    if fd.message_type or fd.enum_type:
        out.append("\n")
        for message in fd.message_type:
            out.append(_message(message, fd.syntax, maps, normalize))
        for enum in fd.enum_type:
            out.append(_enum(enum, normalize))
    if fd.extension:
        out.append("\n")
        out.extend(_extends(fd.extension, fd.syntax, maps, normalize))
    if fd.service:
        out.append("\n")
        for service in fd.service:
            out.append(_service(service, normalize))
    return "".join(out)


def _edition_name(edition: int) -> str:
    name = descriptor_pb2.Edition.Name(edition)
    return name.removeprefix("EDITION_")


def _map_entries(
    fd: descriptor_pb2.FileDescriptorProto,
) -> dict[str, descriptor_pb2.DescriptorProto]:
    """The synthetic map-entry messages of ``fd`` by full name (printed as ``map<K, V>``)."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for m in messages:
            full = f"{prefix}.{m.name}"
            if m.options.map_entry:
                found[full] = m
            walk(full, m.nested_type)

    walk(f".{fd.package}" if fd.package else "", fd.message_type)
    return found


def _indent(block: str) -> str:
    return "".join(_INDENT + line if line.strip() else line for line in block.splitlines(True))


def _message(
    m: descriptor_pb2.DescriptorProto,
    syntax: str,
    maps: dict[str, descriptor_pb2.DescriptorProto],
    normalize: bool,
) -> str:
    out = [f"message {m.name} {{"]
    reserved = _reserved(
        [(r.start, r.end - 1) for r in m.reserved_range], m.reserved_name, normalize
    )
    if reserved:
        out.append("\n")
        out.extend(_INDENT + r for r in reserved)
    options = _options(m.options, normalize, skip=("map_entry",))
    if options:
        out.append("\n")
        out.extend(f"{_INDENT}option {o};\n" for o in options)
    real_oneofs = _real_oneof_indexes(m)
    groups = {f.type_name.rsplit(".", 1)[-1] for f in m.field if f.type == _F.TYPE_GROUP}
    plain = [f for f in m.field if not (f.HasField("oneof_index") and f.oneof_index in real_oneofs)]
    if normalize:
        plain.sort(key=lambda f: f.number)
    if plain:
        out.append("\n")
        out.extend(_indent(_field(f, syntax, m, maps, normalize, in_oneof=False)) for f in plain)
    oneofs = []
    for index, decl in enumerate(m.oneof_decl):
        if index not in real_oneofs:
            continue
        members = [f for f in m.field if f.HasField("oneof_index") and f.oneof_index == index]
        if normalize:
            members.sort(key=lambda f: f.number)
        oneofs.append((decl, members))
    if normalize:
        oneofs = [o for o in oneofs if o[1]]
        oneofs.sort(key=lambda o: o[1][0].number)
    if oneofs:
        out.append("\n")
        for decl, members in oneofs:
            block = [f"oneof {decl.name} {{"]
            oneof_options = _options(decl.options, normalize)
            if oneof_options:
                block.append("\n")
                block.extend(f"{_INDENT}option {o};\n" for o in oneof_options)
            if members:
                block.append("\n")
                block.extend(
                    _indent(_field(f, syntax, m, maps, normalize, in_oneof=True)) for f in members
                )
            block.append("}\n")
            out.append(_indent("".join(block)))
    ranges = [(r.start, r.end - 1) for r in m.extension_range]
    if ranges:
        if normalize:
            ranges.sort()
        out.append("\n")
        out.append(
            f"{_INDENT}extensions {', '.join(_range(a, b, normalize) for a, b in ranges)};\n"
        )
    if m.extension:
        out.append("\n")
        out.extend(_indent(e) for e in _extends(m.extension, syntax, maps, normalize))
    nested = [n for n in m.nested_type if not n.options.map_entry and n.name not in groups]
    if nested or m.enum_type:
        out.append("\n")
        out.extend(_indent(_message(n, syntax, maps, normalize)) for n in nested)
        out.extend(_indent(_enum(e, normalize)) for e in m.enum_type)
    out.append("}\n")
    return "".join(out)


def _real_oneof_indexes(m: descriptor_pb2.DescriptorProto) -> set[int]:
    """The oneofs written in the text; proto3 ``optional`` fields each get a synthetic one."""
    synthetic = {f.oneof_index for f in m.field if f.proto3_optional and f.HasField("oneof_index")}
    return set(range(len(m.oneof_decl))) - synthetic


def _field(
    f: descriptor_pb2.FieldDescriptorProto,
    syntax: str,
    owner: descriptor_pb2.DescriptorProto,
    maps: dict[str, descriptor_pb2.DescriptorProto],
    normalize: bool,
    *,
    in_oneof: bool,
) -> str:
    entry = maps.get(f.type_name) if f.type == _F.TYPE_MESSAGE else None
    if entry is not None:
        key, value = entry.field[0], entry.field[1]
        type_text = f"map<{_type_name(key)}, {_type_name(value)}>"
        label = ""
    else:
        type_text = _type_name(f)
        label = _label(f, syntax, in_oneof)
    if f.type == _F.TYPE_GROUP:
        group = next(n for n in owner.nested_type if f.type_name.endswith("." + n.name))
        body = _message(group, syntax, maps, normalize).split("{", 1)[1]
        return f"{label}group {group.name} = {f.number} {{{body}"
    options = []
    if f.HasField("default_value"):
        options.append(f"default = {_default(f)}")
    if f.HasField("json_name") and f.json_name != _json_name(f.name):
        options.append(f"json_name = {_quote(f.json_name.encode())}")
    options.extend(_options(f.options, normalize))
    suffix = f" [{', '.join(options)}]" if options else ""
    return f"{label}{type_text} {f.name} = {f.number}{suffix};\n"


def _label(f: descriptor_pb2.FieldDescriptorProto, syntax: str, in_oneof: bool) -> str:
    if f.label == _F.LABEL_REPEATED:
        return "repeated "
    if f.label == _F.LABEL_REQUIRED:
        return "required "
    if in_oneof:
        return ""
    if syntax == "proto3":
        return "optional " if f.proto3_optional else ""
    if syntax == "editions":
        return ""
    return "optional "


def _type_name(f: descriptor_pb2.FieldDescriptorProto) -> str:
    return scalar_type_name(f.type) or f.type_name


def _json_name(name: str) -> str:
    # protoc's default: underscores dropped, the letter after each one upper-cased.
    out, upper = [], False
    for ch in name:
        if ch == "_":
            upper = True
        else:
            out.append(ch.upper() if upper else ch)
            upper = False
    return "".join(out)


def _default(f: descriptor_pb2.FieldDescriptorProto) -> str:
    if f.type == _F.TYPE_STRING:
        return _quote(f.default_value.encode())
    if f.type == _F.TYPE_BYTES:
        return f'"{f.default_value}"'  # protoc keeps bytes defaults C-escaped already
    return f.default_value


def _enum(e: descriptor_pb2.EnumDescriptorProto, normalize: bool) -> str:
    out = [f"enum {e.name} {{"]
    reserved = _reserved([(r.start, r.end) for r in e.reserved_range], e.reserved_name, normalize)
    if reserved:
        out.append("\n")
        out.extend(_INDENT + r for r in reserved)
    options = _options(e.options, normalize)
    if not reserved and (options or e.value):
        out.append("\n")
    out.extend(f"{_INDENT}option {o};\n" for o in options)
    values = list(e.value)
    if normalize:
        values.sort(key=lambda v: (v.number, v.name))
    for v in values:
        value_options = _options(v.options, normalize)
        suffix = f" [{', '.join(value_options)}]" if value_options else ""
        out.append(f"{_INDENT}{v.name} = {v.number}{suffix};\n")
    out.append("}\n")
    return "".join(out)


def _reserved(ranges: list[tuple[int, int]], names: Iterable[str], normalize: bool) -> list[str]:
    """``reserved`` statements; ranges are inclusive. Normalized: one value per statement,
    ranges by start, then names."""
    name_list = list(names)
    if normalize:
        return [f"reserved {_range(a, b, True)};\n" for a, b in sorted(ranges)] + [
            f'reserved "{n}";\n' for n in name_list
        ]
    out = []
    if ranges:
        out.append(f"reserved {', '.join(_range(a, b, False) for a, b in ranges)};\n")
    if name_list:
        out.append(f"reserved {', '.join(f'{chr(34)}{n}{chr(34)}' for n in name_list)};\n")
    return out


def _range(start: int, end: int, normalize: bool) -> str:
    if start == end:
        return str(start)
    return f"{start} to {'max' if end >= _MAX_FIELD_NUMBER else end}"


def _extends(
    fields: Iterable[descriptor_pb2.FieldDescriptorProto],
    syntax: str,
    maps: dict[str, descriptor_pb2.DescriptorProto],
    normalize: bool,
) -> list[str]:
    by_extendee: dict[str, list[descriptor_pb2.FieldDescriptorProto]] = {}
    for f in fields:
        by_extendee.setdefault(f.extendee, []).append(f)
    blocks = []
    empty = descriptor_pb2.DescriptorProto()
    for extendee, members in by_extendee.items():
        if normalize:
            members.sort(key=lambda f: f.number)
        lines = "".join(
            _indent(_field(f, syntax, empty, maps, normalize, in_oneof=False)) for f in members
        )
        blocks.append(f"extend {extendee} {{\n{lines}}}\n")
    return blocks


def _service(s: descriptor_pb2.ServiceDescriptorProto, normalize: bool) -> str:
    out = [f"service {s.name} {{"]
    options = _options(s.options, normalize)
    if options:
        out.append("\n")
        out.extend(f"{_INDENT}option {o};\n" for o in options)
    if s.method:
        out.append("\n")
    for rpc in s.method:
        request = ("stream " if rpc.client_streaming else "") + rpc.input_type
        response = ("stream " if rpc.server_streaming else "") + rpc.output_type
        rpc_options = _options(rpc.options, normalize)
        body = (
            " {\n"
            + "".join(f"{_INDENT}{_INDENT}option {o};\n" for o in rpc_options)
            + _INDENT
            + "}"
            if rpc_options
            else ""
        )
        out.append(f"{_INDENT}rpc {rpc.name} ({request}) returns ({response}){body};\n")
    out.append("}\n")
    return "".join(out)


def _options(options: Message, normalize: bool, skip: tuple[str, ...] = ()) -> list[str]:
    """``name = value`` for every option set on an options message, in field-number order
    (declaration order is lost in descriptors), by name when normalizing."""
    out: list[str] = []
    pool = _OPTIONS_POOL.get()
    if pool is not None and options.ByteSize():
        try:
            options_type = pool.FindMessageTypeByName(options.DESCRIPTOR.full_name)
        except KeyError:
            pass
        else:
            reread = message_factory.GetMessageClass(options_type)()
            reread.ParseFromString(options.SerializeToString())
            options = reread
    for field, value in options.ListFields():
        if field.name in skip:
            continue
        name = f"({field.full_name})" if field.is_extension else field.name
        values = value if _is_repeated(field) else [value]
        out.extend(f"{name} = {_option_value(field, v)}" for v in values)
    return sorted(out) if normalize else out


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 6 added ``is_repeated`` and later releases dropped ``label``.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _option_value(field: FieldDescriptor, value: object) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return str(field.enum_type.values_by_number[int(value)].name)  # type: ignore[call-overload]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if field.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        return _quote(value.encode())
    if field.type == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, bytes)
        return _quote(value)
    if isinstance(value, Message):
        return "{ " + text_format.MessageToString(value, as_one_line=True) + " }"
    return repr(value)


def _quote(raw: bytes) -> str:
    out = []
    for b in raw:
        ch = chr(b)
        if ch in "\"\\'":
            out.append("\\" + ch)
        elif 0x20 <= b < 0x7F:
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'
