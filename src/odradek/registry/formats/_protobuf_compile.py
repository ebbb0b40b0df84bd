"""Turning ``.proto`` schemas (text, or base64 of a serialized ``FileDescriptorProto``) into
descriptors with protoc from ``grpcio-tools``, run in-process.

protoc works on files, so every parse writes the schema and its references, under their reference
names (= import paths), into a private temporary directory; the well-known types
(``google/protobuf/*.proto``) come from the include directory grpc_tools ships, Confluent's other
built-in files from :mod:`._protobuf_builtins`. Two protoc entry
points are used: ``get_protos`` first, because it returns errors as values (``run_main`` prints
them on the process's stderr, which cannot be captured without redirecting file descriptor 2 for
the whole process); then ``run_main`` with ``--descriptor_set_out`` for the descriptors. Both take
about a millisecond for a small schema (the caller caches parses by content).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError
from grpc_tools import _protoc_compiler, protoc

from odradek.registry.formats import InvalidSchemaError
from odradek.registry.formats._protobuf_builtins import builtin_include_dir
from odradek.registry.formats._protobuf_text import render_file

__all__ = ["CompiledSchema", "compile_schema"]

_INCLUDE_DIR = str(resources.files("grpc_tools") / "_proto")
#: The file name the root schema gets when its text does not carry one (Confluent's default name).
_ROOT_NAME = "default.proto"
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


@dataclass(frozen=True, eq=False)
class CompiledSchema:
    """A schema and every file it imports, as protoc resolved them. Never mutated after
    :func:`compile_schema` returns it."""

    root: descriptor_pb2.FileDescriptorProto
    #: Every file by name, the root's (transitive) imports included.
    files: Mapping[str, descriptor_pb2.FileDescriptorProto]
    #: The source each reference was given as, by import path (to tell two references apart).
    reference_texts: Mapping[str, str]


def compile_schema(text: str, references: Mapping[str, str]) -> CompiledSchema:
    """Parse ``text`` with ``references`` (import path → schema text); raises
    :class:`InvalidSchemaError` with protoc's messages."""
    refs = dict(references)
    sources: dict[str, str] = {}
    for name, ref_text in refs.items():
        _check_import_path(name)
        if os.path.exists(os.path.join(_INCLUDE_DIR, name)):
            continue  # a well-known type: protoc's own copy is the one to use
        ref_descriptor = decode_descriptor(ref_text)
        sources[name] = ref_text if ref_descriptor is None else render_file(ref_descriptor)
    root_descriptor = decode_descriptor(text)
    if root_descriptor is None:
        root_source = text
        root_name = _ROOT_NAME
    else:
        root_source = render_file(root_descriptor)
        root_name = root_descriptor.name or _ROOT_NAME
    if root_name in refs or os.path.exists(os.path.join(_INCLUDE_DIR, root_name)):
        root_name = f"__root_{len(refs)}__.proto"
    _check_import_path(root_name)
    sources[root_name] = root_source
    files = _run_protoc(root_name, sources)
    if root_descriptor is not None:
        _copy_options(root_descriptor, files[root_name])
    return CompiledSchema(files[root_name], files, refs)


def _copy_options(
    source: descriptor_pb2.FileDescriptorProto, target: descriptor_pb2.FileDescriptorProto
) -> None:
    """Give ``target`` (protoc's parse of the text printed from ``source``) the options of
    ``source``: custom options, unknown to ``descriptor_pb2``, are kept in ``source`` as unknown
    fields but cannot be printed without a pool of the schema's files, which only exists once
    protoc has resolved them."""
    target.options.CopyFrom(source.options)
    _copy_messages(source.message_type, target.message_type)
    _copy_enums(source.enum_type, target.enum_type)
    by_name = {s.name: s for s in source.service}
    for service in target.service:
        if service.name in by_name:
            service.options.CopyFrom(by_name[service.name].options)
            methods = {m.name: m for m in by_name[service.name].method}
            for method in service.method:
                if method.name in methods:
                    method.options.CopyFrom(methods[method.name].options)


def _copy_messages(
    source: Iterable[descriptor_pb2.DescriptorProto],
    target: Iterable[descriptor_pb2.DescriptorProto],
) -> None:
    by_name = {m.name: m for m in source}
    for message in target:
        original = by_name.get(message.name)
        if original is None:
            continue
        message.options.CopyFrom(original.options)
        fields = {f.number: f for f in original.field}
        for field in message.field:
            if field.number in fields:
                field.options.CopyFrom(fields[field.number].options)
        oneofs = {o.name: o for o in original.oneof_decl}
        for oneof in message.oneof_decl:
            if oneof.name in oneofs:
                oneof.options.CopyFrom(oneofs[oneof.name].options)
        _copy_messages(original.nested_type, message.nested_type)
        _copy_enums(original.enum_type, message.enum_type)


def _copy_enums(
    source: Iterable[descriptor_pb2.EnumDescriptorProto],
    target: Iterable[descriptor_pb2.EnumDescriptorProto],
) -> None:
    by_name = {e.name: e for e in source}
    for enum in target:
        original = by_name.get(enum.name)
        if original is None:
            continue
        enum.options.CopyFrom(original.options)
        values = {v.name: v for v in original.value}
        for value in enum.value:
            if value.name in values:
                value.options.CopyFrom(values[value.name].options)


def decode_descriptor(text: str) -> descriptor_pb2.FileDescriptorProto | None:
    """The ``FileDescriptorProto`` that ``text`` is the base64 of, or None when ``text`` is not
    one (then it is ``.proto`` text). Confluent accepts both, trying text first; a ``.proto``
    file always holds characters outside base64's alphabet (spaces between keywords, ``;``)."""
    if not _BASE64.fullmatch(text):
        return None
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
        descriptor = descriptor_pb2.FileDescriptorProto.FromString(raw)
    except (binascii.Error, ValueError, DecodeError):
        return None
    if not descriptor.message_type and not descriptor.enum_type and not descriptor.service:
        return None
    return descriptor


def _check_import_path(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise InvalidSchemaError(f"reference name {name!r} is not a relative .proto import path")


def _run_protoc(
    root_name: str, sources: Mapping[str, str]
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    with tempfile.TemporaryDirectory(prefix="odradek-proto-") as tmp:
        for name, source in sources.items():
            path = os.path.join(tmp, *name.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(source)
        builtins = builtin_include_dir()
        include = [tmp] + ([builtins] if builtins else []) + [_INCLUDE_DIR]
        try:
            _protoc_compiler.get_protos(root_name.encode(), [d.encode() for d in include])
        except _protoc_compiler.ProtocErrors as e:
            raise InvalidSchemaError(_error_text(e)) from None
        out = os.path.join(tmp, "__descriptor_set__.pb")
        rc = protoc.main(
            [
                "protoc",
                *(f"-I{d}" for d in include),
                "--include_imports",
                f"--descriptor_set_out={out}",
                os.path.join(tmp, *root_name.split("/")),
            ]
        )
        if rc != 0:
            raise InvalidSchemaError(f"protoc failed (exit status {rc})")
        with open(out, "rb") as f:
            descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return {fd.name: fd for fd in descriptor_set.file}


def _error_text(errors: _protoc_compiler.ProtocErrors) -> str:
    lines = []
    for error in errors.errors():
        filename = _text(error.filename)
        message = _text(error.message)
        if error.line < 0:  # a whole-file error (not found)
            lines.append(f"{filename}: {message}")
        else:
            lines.append(f"{filename}:{error.line + 1}:{error.column + 1}: {message}")
    return "; ".join(lines) or "protoc rejected the schema"


def _text(value: object) -> str:
    # grpc_tools reports these as bytes, or as the repr of bytes in some versions.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = str(value)
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        return text[2:-1]
    return text
