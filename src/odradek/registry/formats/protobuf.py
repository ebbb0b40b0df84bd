"""Protobuf schemas (Confluent's ``PROTOBUF`` schema type).

A schema is the text of one ``.proto`` file, or — as confluent-kafka-python's serializer sends
it — the base64 of a serialized ``FileDescriptorProto``; its references are the files it
imports, named by import path. protoc (from ``grpcio-tools``) parses it into descriptors, so any
syntax error, unknown import or unknown type is protoc's own error message.

Identity: :meth:`ProtobufSchema.canonical` re-prints the parsed file in Confluent's canonical
layout (comments and formatting dropped, type names fully qualified); ``normalized()`` also sorts
what Confluent's ``normalize=true`` sorts. Compatibility follows Confluent's rules
(:mod:`._protobuf_diff`): the schema's own file is compared with the other version's, messages by
name, fields by number, and message types used from references in turn.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pool

from odradek.registry.formats import InvalidSchemaError, ParsedSchema
from odradek.registry.formats._protobuf_compile import CompiledSchema, compile_schema
from odradek.registry.formats._protobuf_diff import Difference, SchemaTypes, differences
from odradek.registry.formats._protobuf_text import render_file

__all__ = ["FORMAT", "ProtobufFormat", "ProtobufSchema"]

SCHEMA_TYPE = "PROTOBUF"
_DESCRIPTOR_PROTO = "google/protobuf/descriptor.proto"


@dataclass(frozen=True, eq=False)
class ProtobufSchema:
    """One parsed ``.proto`` schema; immutable, shared through the parse cache."""

    compiled: CompiledSchema
    types: SchemaTypes
    _canonical: str
    _normalized: str

    @property
    def schema_type(self) -> str:
        return SCHEMA_TYPE

    def canonical(self) -> str:
        return self._canonical

    def normalized(self) -> str:
        return self._normalized

    def serialized(self) -> str:
        """The schema as base64 of its ``FileDescriptorProto`` (Confluent's
        ``format=serialized``, which confluent-kafka-python's deserializer asks for)."""
        return base64.b64encode(self.compiled.root.SerializeToString()).decode("ascii")

    @property
    def package(self) -> str:
        return self.compiled.root.package

    def message_names(self) -> list[str]:
        """The top-level messages' full names in declaration order (the first is the one
        Confluent treats as the schema's type when a record names no message index)."""
        prefix = f"{self.package}." if self.package else ""
        return [prefix + m.name for m in self.compiled.root.message_type]


class ProtobufFormat:
    """Parsing and compatibility for Protobuf; stateless apart from the parse cache."""

    @property
    def schema_type(self) -> str:
        return SCHEMA_TYPE

    def parse(self, text: str, references: Mapping[str, str]) -> ProtobufSchema:
        return _parse(text, tuple(sorted(references.items())))

    def differences(self, reader: ParsedSchema, writer: ParsedSchema) -> list[Difference]:
        """Every difference (compatible ones included) from ``writer`` to ``reader``."""
        return differences(_protobuf(writer).types, _protobuf(reader).types)

    def incompatibilities(self, reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
        return [d.message() for d in self.differences(reader, writer) if not d.compatible]


#: Parsed schemas kept, by content: a registry parses the same few schemas over and over.
_CACHE_SIZE = 512


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse(text: str, references: tuple[tuple[str, str], ...]) -> ProtobufSchema:
    compiled = compile_schema(text, dict(references))
    pool = _options_pool(compiled)
    return ProtobufSchema(
        compiled,
        SchemaTypes.build(compiled.root, compiled.files, compiled.reference_texts),
        render_file(compiled.root, options_pool=pool),
        render_file(compiled.root, normalize=True, options_pool=pool),
    )


def _options_pool(compiled: CompiledSchema) -> descriptor_pool.DescriptorPool | None:
    """A pool of the schema's files, for printing custom options; only a schema importing
    ``descriptor.proto`` can declare any."""
    if _DESCRIPTOR_PROTO not in compiled.files:
        return None
    pool = descriptor_pool.DescriptorPool()
    for fd in compiled.files.values():  # protoc lists imports before their importers
        pool.Add(fd)
    return pool


def _protobuf(schema: ParsedSchema) -> ProtobufSchema:
    if not isinstance(schema, ProtobufSchema):
        raise InvalidSchemaError(f"not a Protobuf schema: {schema.schema_type}")
    return schema


FORMAT = ProtobufFormat()
