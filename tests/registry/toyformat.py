"""A stand-in for the Avro format while ``odradek.registry.formats.avro`` is being written on
another branch: Avro record schemas of primitive fields, just enough to exercise the registry
core (identity, defaults, type changes). The tests use the real module when it is present."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from odradek.registry.formats import InvalidSchemaError, ParsedSchema, SchemaFormat

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class ToySchema:
    doc: Any
    schema_type: str = "AVRO"

    def canonical(self) -> str:
        return json.dumps(self.doc, sort_keys=True, separators=(",", ":"))

    def normalized(self) -> str:
        return self.canonical()

    def fields(self) -> dict[str, dict[str, Any]]:
        if isinstance(self.doc, dict) and self.doc.get("type") == "record":
            return {f["name"]: f for f in self.doc["fields"]}
        return {}


class ToyAvro:
    schema_type = "AVRO"

    def parse(self, text: str, references: Mapping[str, str]) -> ParsedSchema:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidSchemaError(str(e)) from None
        if isinstance(doc, str):
            if doc not in _PRIMITIVES and doc not in references:
                raise InvalidSchemaError(f"unknown type {doc}")
        elif isinstance(doc, dict) and doc.get("type") == "record":
            if "name" not in doc or not isinstance(doc.get("fields"), list):
                raise InvalidSchemaError("a record needs a name and fields")
            for f in doc["fields"]:
                t = f.get("type")
                if t not in _PRIMITIVES and t not in references:
                    raise InvalidSchemaError(f"unknown type {t}")
        elif not (isinstance(doc, dict) and doc.get("type") in _PRIMITIVES):
            raise InvalidSchemaError("not a schema this stand-in knows")
        return ToySchema(doc)

    def incompatibilities(self, reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
        assert isinstance(reader, ToySchema) and isinstance(writer, ToySchema)
        r, w = reader.fields(), writer.fields()
        out = []
        for name, f in r.items():
            if name not in w and "default" not in f:
                out.append(f"READER_FIELD_MISSING_DEFAULT_VALUE: {name}")
            elif name in w and w[name]["type"] != f["type"]:
                out.append(f"TYPE_MISMATCH: {name}")
        if not r and reader.canonical() != writer.canonical():
            out.append("TYPE_MISMATCH")
        return out


FORMAT: SchemaFormat = ToyAvro()
