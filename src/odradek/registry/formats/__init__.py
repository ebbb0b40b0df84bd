"""The schema formats the registry serves, one module each: parsing, identity and compatibility.

A format module (``avro``, ``json_schema``, ``protobuf``) exposes ``FORMAT``, an object that
implements :class:`SchemaFormat`. The registry core knows formats only through this interface and
looks them up by Confluent's ``schemaType`` names with :func:`get_format`, so a format is served
exactly when its module exists.

Compatibility is stated once, as a reader/writer question: :meth:`SchemaFormat.incompatibilities`
says why data written with one schema cannot be read with another. The registry's levels are
built from it (BACKWARD: the new schema reads data written with the old; FORWARD: the old reads
the new; FULL: both; *_TRANSITIVE: against every earlier version, not just the latest).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

__all__ = [
    "SCHEMA_TYPES",
    "InvalidSchemaError",
    "ParsedSchema",
    "SchemaFormat",
    "UnsupportedSchemaTypeError",
    "get_format",
]

#: Confluent's schemaType names and the module serving each (AVRO when a request names none).
_MODULES: Mapping[str, str] = {
    "AVRO": "odradek.registry.formats.avro",
    "JSON": "odradek.registry.formats.json_schema",
    "PROTOBUF": "odradek.registry.formats.protobuf",
}
SCHEMA_TYPES = tuple(_MODULES)


class InvalidSchemaError(Exception):
    """A schema text that does not parse, or names a reference it was not given (Confluent's
    42201 "Invalid schema"). The message says what is wrong, for the client to read."""


class UnsupportedSchemaTypeError(Exception):
    """A ``schemaType`` this registry does not serve (Confluent answers 42201 as well)."""


class ParsedSchema(Protocol):
    """One parsed schema; immutable once made."""

    @property
    def schema_type(self) -> str:
        """``AVRO``, ``JSON`` or ``PROTOBUF``."""
        ...

    def canonical(self) -> str:
        """A text equal for two schemas exactly when the registry treats them as the same
        schema (Confluent compares canonical strings to deduplicate registrations and to look
        schemas up by content); formatting and, where the format says so, ordering are
        ignored."""
        ...

    def normalized(self) -> str:
        """The text stored when a client registers or looks up with ``normalize=true``
        (Confluent's normalization for the format)."""
        ...


class SchemaFormat(Protocol):
    """Parsing and compatibility for one format; stateless, shared by all requests."""

    @property
    def schema_type(self) -> str: ...

    def parse(self, text: str, references: Mapping[str, str]) -> ParsedSchema:
        """Parse ``text``. ``references`` maps every reference name the schema may use (its
        references and theirs, transitively, resolved by the caller: an Avro full name, a
        ``.proto`` import path, a JSON ``$ref`` URL) to that schema's text. Raises
        :class:`InvalidSchemaError`."""
        ...

    def incompatibilities(self, reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
        """Why data written with ``writer`` cannot be read with ``reader``, one readable
        message per problem (returned by Confluent's ``verbose=true``); empty when it can.
        Both schemas are of this format."""
        ...


def get_format(schema_type: str) -> SchemaFormat:
    """The format serving ``schema_type``; :class:`UnsupportedSchemaTypeError` if none does."""
    module_name = _MODULES.get(schema_type)
    if module_name is None:
        raise UnsupportedSchemaTypeError(f"schema type {schema_type!r} is not one of {SCHEMA_TYPES}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise UnsupportedSchemaTypeError(f"schema type {schema_type} is not served") from e
    fmt: SchemaFormat = module.FORMAT
    return fmt
