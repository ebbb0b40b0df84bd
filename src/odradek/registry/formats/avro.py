"""Avro schemas for the registry: parsing (fastavro), identity and compatibility.

Parsing is fastavro's ``parse_schema``; it resolves every name to its full name and keeps a
named type's definition at its first use, a bare name after. This module then checks what
fastavro lets through but the Avro specification forbids (names, duplicate union branches,
nested unions, duplicate field names), writes the two texts the registry stores, and walks two
parsed schemas by the specification's resolution rules for compatibility.

Identity (:meth:`AvroSchema.canonical`) is Confluent's: the schema written as compact JSON the
way Apache Avro's Java ``Schema.toString`` writes it (reserved properties in a fixed order,
names relative to the enclosing namespace, defaults, docs, aliases and custom properties kept,
referenced types by name only). Parsing Canonical Form is *not* used: it drops defaults, and two
schemas that differ in a default are different registrations. :meth:`AvroSchema.normalized` is
Confluent's ``normalize=true`` text: full names, a fixed property order, sorted aliases and
custom properties.

Defaults: Confluent validates field defaults against their types for a schema being registered,
not for schemas it already holds; :class:`AvroFormat` takes ``validate_defaults`` for that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fastavro.schema import UnknownType, parse_schema

from odradek.registry.formats import InvalidSchemaError, ParsedSchema

__all__ = ["FORMAT", "AvroFormat", "AvroSchema"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
_KINDS = _PRIMITIVES | _NAMED_KINDS | {"array", "map"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1

# Properties the writers handle themselves; everything else on a schema or field is a custom
# property (logicalType, precision, connect.* ...), written after the reserved ones. "default" is
# reserved on an enum only, as in Java Avro.
_RESERVED_TYPE_KEYS = frozenset(
    {"type", "name", "namespace", "doc", "fields", "symbols", "size", "items", "values", "aliases"}
)
_RESERVED_ENUM_KEYS = _RESERVED_TYPE_KEYS | {"default"}
_RESERVED_FIELD_KEYS = frozenset({"name", "type", "doc", "default", "order", "aliases"})
_LOGICAL_KEYS = frozenset({"logicalType", "precision", "scale"})


def _split(full_name: str) -> tuple[str, str]:
    """(namespace, short name) of a full name; the null namespace is ``""``."""
    space, _, short = full_name.rpartition(".")
    return space, short


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class AvroSchema:
    """One parsed Avro schema. ``parsed`` is fastavro's form of the schema's own text;
    ``named`` holds every named type it can use (its own and its references'), by full name.
    Immutable once made; both mappings are never mutated after :meth:`AvroFormat.parse`."""

    text: str
    parsed: Any = field(repr=False)
    named: Mapping[str, Any] = field(repr=False)

    @property
    def schema_type(self) -> str:
        return "AVRO"

    def canonical(self) -> str:
        return self._canonical

    def normalized(self) -> str:
        return self._normalized

    def resolved(self) -> str:
        """The canonical text with every referenced type written out at its first use, for
        Confluent's ``format=resolved`` (not part of the format interface)."""
        return _Writer(inline=self.named).write(self.parsed)

    # Computed once: the registry compares canonical texts on every register and lookup.
    @cached_property
    def _canonical(self) -> str:
        return _Writer().write(self.parsed)

    @cached_property
    def _normalized(self) -> str:
        return _Normalizer(self.named).write(self.parsed)


class _Writer:
    """Writes a parsed schema as Confluent's canonical string: compact JSON in Java Avro's
    ``Schema.toString`` layout (reserved properties in a fixed order, then custom properties in
    the order written, then aliases; names relative to the enclosing namespace).

    With ``inline`` (every named type by full name) a referenced type is written out where it
    is first used instead of by name: Confluent's ``format=resolved``."""

    def __init__(self, inline: Mapping[str, Any] | None = None) -> None:
        self._inline = inline
        self._written: set[str] = set()

    def write(self, node: Any) -> str:
        return _dumps(self._node(node, ""))

    @staticmethod
    def _ref(full_name: str, space: str) -> str:
        name_space, short = _split(full_name)
        # Java writes a name short when it is in the enclosing namespace or in the null one.
        return short if name_space in ("", space) else full_name

    @staticmethod
    def _props(node: Mapping[str, Any], reserved: frozenset[str]) -> dict[str, Any]:
        return {k: v for k, v in node.items() if k not in reserved}

    def _node(self, node: Any, space: str) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            target = self._inline.get(node) if self._inline is not None else None
            if target is not None and target["name"] not in self._written:
                return self._node(target, space)
            return self._ref(node, space)
        if isinstance(node, list):
            return [self._node(branch, space) for branch in node]
        kind = node["type"]
        if kind not in _KINDS and len(node) == 1:
            return self._node(kind, space)  # a name reference written as {"type": "a.B"}
        if kind in _PRIMITIVES or kind not in _KINDS:
            out: dict[str, Any] = {"type": self._node(kind, space)}
            out.update(self._props(node, _RESERVED_TYPE_KEYS))
            return out["type"] if len(out) == 1 else out
        if kind == "array":
            out = {"type": "array", "items": self._node(node["items"], space)}
        elif kind == "map":
            out = {"type": "map", "values": self._node(node["values"], space)}
        else:
            return self._named(node, kind, space)
        out.update(self._props(node, _RESERVED_TYPE_KEYS))
        return out

    def _named(self, node: Mapping[str, Any], kind: str, space: str) -> dict[str, Any]:
        self._written.add(node["name"])
        own_space, short = _split(node["name"])
        out: dict[str, Any] = {"type": kind, "name": short}
        if own_space != space:
            out["namespace"] = own_space
        if "doc" in node:
            out["doc"] = node["doc"]
        if kind in ("record", "error"):
            out["fields"] = [self._field(f, own_space) for f in node["fields"]]
        elif kind == "enum":
            out["symbols"] = node["symbols"]
            if "default" in node:
                out["default"] = node["default"]
        else:
            out["size"] = node["size"]
        out.update(self._props(node, _RESERVED_ENUM_KEYS if kind == "enum" else _RESERVED_TYPE_KEYS))
        if node.get("aliases"):
            out["aliases"] = [self._ref(_alias(a, own_space), own_space) for a in node["aliases"]]
        return out

    def _field(self, node: Mapping[str, Any], space: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": node["name"], "type": self._node(node["type"], space)}
        if "doc" in node:
            out["doc"] = node["doc"]
        if "default" in node:
            out["default"] = node["default"]
        order = str(node.get("order", "ascending")).lower()
        if order != "ascending":
            out["order"] = order
        if node.get("aliases"):
            out["aliases"] = list(node["aliases"])
        out.update(self._props(node, _RESERVED_FIELD_KEYS))
        return out


def _alias(alias: str, own_space: str) -> str:
    """An alias's full name: a short alias is in the namespace of the type it names."""
    return alias if "." in alias or not own_space else f"{own_space}.{alias}"


class _Normalizer:
    """Writes a parsed schema in Confluent's normalized layout (``normalize=true``): every name
    fully qualified and no ``namespace``; ``name`` before ``type``; a logical type right after
    the type; doc, sorted aliases and an enum's default, then custom properties sorted by key;
    every field's sort order spelled out (``ASCENDING``, as Java names it); a default written
    as its field's type reads it (an integer default of a float field as a float)."""

    def __init__(self, named: Mapping[str, Any]) -> None:
        self._named_types = named

    def write(self, node: Any) -> str:
        return _dumps(self._node(node, ""))

    @staticmethod
    def _sorted_props(node: Mapping[str, Any], reserved: frozenset[str]) -> dict[str, Any]:
        return {k: node[k] for k in sorted(node) if k not in reserved}

    def _node(self, node: Any, space: str) -> Any:
        if isinstance(node, str):
            return node  # a primitive, or a full name defined earlier or by a reference
        if isinstance(node, list):
            return [self._node(branch, space) for branch in node]
        kind = node["type"]
        if kind not in _KINDS:
            return kind  # a name reference written as {"type": "a.B"}
        if kind in _PRIMITIVES:
            out = {"type": kind, **self._logical(node)}
            out.update(self._sorted_props(node, _RESERVED_TYPE_KEYS | _LOGICAL_KEYS))
            return kind if len(out) == 1 else out
        if kind in ("array", "map"):
            part = "items" if kind == "array" else "values"
            out = {"type": kind, part: self._node(node[part], space)}
            out.update(self._sorted_props(node, _RESERVED_TYPE_KEYS))
            return out
        out = {"name": node["name"], "type": "record" if kind == "error" else kind}
        own_space = _split(node["name"])[0]
        if space and not own_space:
            # A full name in the null namespace reads as the enclosing namespace's without this
            # (Confluent's normalization omits it, and so changes the schema; we do not).
            out["namespace"] = ""
        if kind == "enum":
            out["symbols"] = node["symbols"]
        elif kind == "fixed":
            out["size"] = node["size"]
            out.update(self._logical(node))
        else:
            out["fields"] = [self._field(f, own_space) for f in node["fields"]]
        if node.get("doc"):
            out["doc"] = node["doc"]
        if node.get("aliases"):
            out["aliases"] = sorted({_alias(a, own_space) for a in node["aliases"]})
        if kind == "enum" and "default" in node:
            out["default"] = node["default"]
        reserved = {"enum": _RESERVED_ENUM_KEYS, "fixed": _RESERVED_TYPE_KEYS | _LOGICAL_KEYS}.get(
            kind, _RESERVED_TYPE_KEYS
        )
        out.update(self._sorted_props(node, reserved))
        return out

    @staticmethod
    def _logical(node: Mapping[str, Any]) -> dict[str, Any]:
        if "logicalType" not in node:
            return {}
        out: dict[str, Any] = {"logicalType": node["logicalType"]}
        if node["logicalType"] == "decimal":
            if "precision" in node:
                out["precision"] = node["precision"]
            if node.get("scale", 0) != 0:
                out["scale"] = node["scale"]
        return out

    def _field(self, node: Mapping[str, Any], space: str) -> dict[str, Any]:
        out: dict[str, Any] = {"name": node["name"], "type": self._node(node["type"], space)}
        out["order"] = str(node.get("order", "ascending")).upper()
        if node.get("doc") is not None:
            out["doc"] = node["doc"]
        if node.get("aliases"):
            out["aliases"] = sorted(set(node["aliases"]))
        if "default" in node:
            out["default"] = self._default(node["type"], node["default"])
        out.update(self._sorted_props(node, _RESERVED_FIELD_KEYS))
        return out

    def _default(self, type_: Any, value: Any) -> Any:
        # A union's default is of its first branch.
        first = type_[0] if isinstance(type_, list) and type_ else type_
        kind = _Resolver.resolve(first, self._named_types)
        if kind in ("float", "double") and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


def _parse_one(text: str, named: dict[str, Any], what: str, validate_defaults: bool) -> Any:
    """fastavro-parse one schema text, adding its named types to ``named`` only on success.
    ``what`` names the text in error messages (``""`` for the schema itself)."""
    what = f" {what}" if what else ""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise InvalidSchemaError(f"Invalid schema{what}: not JSON: {e}") from e
    _check_raw_records(raw)
    fallbacks: dict[str, Any] = {}
    while True:
        trial = {**named, **fallbacks}
        try:
            parsed = parse_schema(
                json.loads(text), trial, _write_hint=False,
                _ignore_default_error=not validate_defaults,
            )
            break
        except UnknownType as e:
            # Java Avro looks a bare name up in the enclosing namespace, then in the null one;
            # fastavro only in the first. Give it the null-namespace type under the name it
            # looked for, and try again.
            name = e.name if isinstance(e.name, str) else None
            short = _split(name)[1] if name else None
            if name is None or name in fallbacks or short == name or short not in trial:
                raise InvalidSchemaError(
                    f"Invalid schema{what}: unknown type or undefined name {e.name}"
                ) from e
            fallbacks[name] = trial[short]
        except Exception as e:  # fastavro raises KeyError/TypeError/... on malformed structure
            if isinstance(e, KeyError):
                message = f"missing property {e}"
            elif isinstance(e, (TypeError, AttributeError, ValueError)):
                # e.g. {"type": {...}}: a type that is neither a name nor a schema object
                message = f"malformed schema ({e})"
            else:
                message = str(e)
            raise InvalidSchemaError(f"Invalid schema{what}: {message}") from e
    _check(parsed, frozenset(named), validate_defaults)
    named.clear()
    named.update(trial)
    return parsed


def _check(node: Any, known: frozenset[str], defaults: bool) -> None:
    """What the specification forbids and fastavro accepts; ``node`` is fastavro's form, so
    each named type is defined once and this walk ends on recursive types. ``known`` holds the
    names the references define, which the schema may use but not define again."""
    if isinstance(node, str):
        return
    if isinstance(node, list):
        seen: set[str] = set()
        for branch in node:
            if isinstance(branch, list):
                raise InvalidSchemaError("Invalid schema: a union may not immediately contain a union")
            key = _union_key(branch)
            if key in seen:
                raise InvalidSchemaError(f"Invalid schema: duplicate in union: {key}")
            seen.add(key)
            _check(branch, known, defaults)
        return
    if not isinstance(node, dict):
        raise InvalidSchemaError(f"Invalid schema: not a schema: {node!r}")
    kind = node.get("type")
    if kind in _NAMED_KINDS:
        _check_aliases(node)
        for part in node["name"].split("."):
            if not _NAME.match(part):
                raise InvalidSchemaError(f"Invalid schema: illegal name {node['name']!r}")
        if node["name"] in _PRIMITIVES:
            raise InvalidSchemaError(f"Invalid schema: a {kind} may not be named {node['name']}")
        if node["name"] in known:
            raise InvalidSchemaError(f"Invalid schema: redefined named type {node['name']}")
    if kind in ("record", "error"):
        names: set[str] = set()
        for f in node["fields"]:
            if not isinstance(f.get("name"), str) or not _NAME.match(f["name"]):
                raise InvalidSchemaError(f"Invalid schema: illegal field name {f.get('name')!r}")
            if f["name"] in names:
                raise InvalidSchemaError(f"Invalid schema: duplicate field {f['name']!r}")
            names.add(f["name"])
            _check_aliases(f)
            # Java reads the order case-blind (its normalized form writes ASCENDING).
            if str(f.get("order", "ascending")).lower() not in ("ascending", "descending", "ignore"):
                raise InvalidSchemaError(f"Invalid schema: illegal order {f['order']!r}")
            if defaults:
                _check_default(f)
            _check(f["type"], known, defaults)
    elif kind == "enum":
        for symbol in node["symbols"]:
            if not isinstance(symbol, str) or not _NAME.match(symbol):
                raise InvalidSchemaError(f"Invalid schema: illegal enum symbol {symbol!r}")
    elif kind == "fixed":
        if not isinstance(node["size"], int) or isinstance(node["size"], bool) or node["size"] < 0:
            raise InvalidSchemaError(f"Invalid schema: illegal fixed size {node['size']!r}")
    elif kind == "array":
        _check(node["items"], known, defaults)
    elif kind == "map":
        _check(node["values"], known, defaults)


def _check_aliases(node: Mapping[str, Any]) -> None:
    aliases = node.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InvalidSchemaError(f"Invalid schema: aliases of {node['name']} not a list of names")


def _check_raw_records(raw: Any) -> None:
    """A record needs its ``fields`` array; fastavro takes a missing one as empty, so look at
    the JSON itself (any object with a record's type and name is taken for a record)."""
    stack = [raw]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") in ("record", "error") and isinstance(node.get("name"), str):
                if not isinstance(node.get("fields"), list):
                    raise InvalidSchemaError(f"Invalid schema: record {node['name']} has no fields")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_default(f: Mapping[str, Any]) -> None:
    """fastavro checks a default's JSON type, but takes true and false for numbers (a bool is
    an int in Python) and leaves the range of int and long open."""
    if "default" not in f:
        return
    kind = f["type"] if isinstance(f["type"], str) else None
    if isinstance(f["type"], dict) and f["type"].get("type") in _PRIMITIVES:
        kind = f["type"]["type"]
    value = f["default"]
    if kind in ("int", "long", "float", "double") and isinstance(value, bool):
        raise InvalidSchemaError(f"Invalid default for field {f['name']}: {value} is not a {kind}")
    bounds = {"int": (_INT_MIN, _INT_MAX), "long": (_LONG_MIN, _LONG_MAX)}.get(kind or "")
    if bounds and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
        raise InvalidSchemaError(
            f"Invalid default for field {f['name']}: {value} is out of range for {kind}"
        )


def _union_key(branch: Any) -> str:
    """What a union may hold once: a type, or a named type's full name."""
    if isinstance(branch, str):
        return branch
    kind = branch.get("type")
    # A primitive or array or map by its type; a name reference {"type": "a.B"} by its name.
    return str(branch["name"] if kind in _NAMED_KINDS else kind)


class AvroFormat:
    """Avro for the registry; stateless, shared by all requests.

    ``validate_defaults`` refuses a field whose default does not match its type. Confluent's
    registry checks defaults of a schema being registered, not of schemas it has already
    stored (older versions stored them unchecked): :data:`FORMAT` validates, for new schemas;
    reading schemas back from ``_schemas`` wants ``AvroFormat(validate_defaults=False)``.
    """

    def __init__(self, *, validate_defaults: bool = True) -> None:
        self._validate_defaults = validate_defaults

    @property
    def schema_type(self) -> str:
        return "AVRO"

    def parse(self, text: str, references: Mapping[str, str]) -> AvroSchema:
        named: dict[str, Any] = {}
        pending = dict(references)
        # References may use one another; the caller's order need not be dependency order, so
        # parse whatever parses until nothing more does.
        while pending:
            errors: dict[str, InvalidSchemaError] = {}
            for name, ref_text in pending.items():
                try:
                    _parse_one(ref_text, named, f"reference {name!r}", self._validate_defaults)
                except InvalidSchemaError as e:
                    errors[name] = e
            if len(errors) == len(pending):
                raise next(iter(errors.values()))
            pending = {name: pending[name] for name in errors}
        parsed = _parse_one(text, named, "", self._validate_defaults)
        return AvroSchema(text=text, parsed=parsed, named=named)

    def incompatibilities(self, reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
        if not isinstance(reader, AvroSchema) or not isinstance(writer, AvroSchema):
            raise TypeError("both schemas must be Avro schemas")
        problems = _Resolver(reader.named, writer.named).check(reader.parsed, writer.parsed)
        return list(dict.fromkeys(problems))


_PROMOTIONS = frozenset(
    {
        ("long", "int"),
        ("float", "int"),
        ("float", "long"),
        ("double", "int"),
        ("double", "long"),
        ("double", "float"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)  # (reader, writer) pairs the specification lets a reader promote


def _message(error_type: str, description: str, info: str) -> str:
    # The layout of Confluent's verbose compatibility messages.
    return f"{{errorType:'{error_type}', description:'{description}', additionalInfo:'{info}'}}"


def _where(path: tuple[str | int, ...]) -> str:
    return "/" + "/".join(str(p) for p in path)


class _Resolver:
    """One reader/writer check by the specification's schema resolution rules; made per call
    of :meth:`AvroFormat.incompatibilities` and dropped after it.

    Recursive types are checked coinductively: a pair of records already being compared further
    up is taken as compatible (whatever is wrong with it is reported where the comparison began),
    so the walk ends. Logical types are ignored, as the resolution rules ignore them.
    """

    def __init__(self, reader_named: Mapping[str, Any], writer_named: Mapping[str, Any]) -> None:
        self._rn = reader_named
        self._wn = writer_named
        self._in_progress: set[tuple[int, int]] = set()
        # Every record pair's problems, so that named types used more than once (each record
        # naming the next twice: 2**depth paths) are compared once per pair, not once per path.
        self._done: dict[tuple[int, int], list[str]] = {}

    def check(self, reader: Any, writer: Any) -> list[str]:
        return self._compare(reader, writer, ())

    @staticmethod
    def resolve(node: Any, named: Mapping[str, Any]) -> Any:
        """A primitive's name, a union's list, or a complex type's definition."""
        while True:
            if isinstance(node, str):
                if node in _PRIMITIVES:
                    return node
                node = named[node]
            elif isinstance(node, dict) and node["type"] not in _KINDS:
                node = named[node["type"]]  # a name reference written as {"type": "a.B"}
            elif isinstance(node, dict) and node["type"] in _PRIMITIVES:
                return node["type"]
            else:
                return node

    @staticmethod
    def _kind(node: Any) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, list):
            return "union"
        kind: str = node["type"]
        return "record" if kind == "error" else kind

    def _compare(self, reader: Any, writer: Any, path: tuple[str | int, ...]) -> list[str]:
        r = self.resolve(reader, self._rn)
        w = self.resolve(writer, self._wn)
        rk, wk = self._kind(r), self._kind(w)
        if wk == "union":
            # Every branch the writer may have written must be readable.
            problems: list[str] = []
            for i, branch in enumerate(w):
                problems += self._compare(r, branch, (*path, i))
            return problems
        if rk == "union":
            # The writer's type must be readable as some branch of the reader's union.
            if any(not self._compare(branch, w, path) for branch in r):
                return []
            return [
                _message(
                    "MISSING_UNION_BRANCH",
                    f"The reader's schema is missing a type inside a union field at path "
                    f"'{_where(path)}' in the writer's schema",
                    f"reader union lacking writer type: {wk.upper()}",
                )
            ]
        if rk != wk:
            if (rk, wk) in _PROMOTIONS:
                return []
            return [self._type_mismatch(rk, wk, path)]
        if rk == "array":
            return self._compare(r["items"], w["items"], (*path, "items"))
        if rk == "map":
            return self._compare(r["values"], w["values"], (*path, "values"))
        if rk == "fixed":
            return self._names(r, w, path) + self._sizes(r, w, path)
        if rk == "enum":
            return self._names(r, w, path) + self._symbols(r, w, path)
        if rk == "record":
            return self._record(r, w, path)
        return []  # the same primitive

    def _type_mismatch(self, rk: str, wk: str, path: tuple[str | int, ...]) -> str:
        return _message(
            "TYPE_MISMATCH",
            f"The type (path '{_where(path)}') of a field in the reader's schema does not "
            f"match with the writer's schema",
            f"reader type: {rk.upper()} not compatible with writer type: {wk.upper()}",
        )

    @staticmethod
    def _names(r: Mapping[str, Any], w: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
        # The specification matches named types by unqualified name, or by a reader's alias.
        reader_space, reader_short = _split(r["name"])
        if reader_short == _split(w["name"])[1]:
            return []
        aliases = {_alias(a, reader_space) for a in r.get("aliases", ())}
        if w["name"] in aliases:
            return []
        return [
            _message(
                "NAME_MISMATCH",
                f"The name of the schema has changed (path '{_where((*path, 'name'))}')",
                f"expected: {w['name']}",
            )
        ]

    @staticmethod
    def _sizes(r: Mapping[str, Any], w: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
        if r["size"] == w["size"]:
            return []
        return [
            _message(
                "FIXED_SIZE_MISMATCH",
                f"The size of FIXED type field at path '{_where((*path, 'size'))}' in the "
                f"reader's schema does not match with the writer's schema",
                f"expected: {w['size']}, found: {r['size']}",
            )
        ]

    @staticmethod
    def _symbols(r: Mapping[str, Any], w: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
        missing = sorted(set(w["symbols"]) - set(r["symbols"]))  # sorted, as Java reports them
        # A reader's enum default stands in for the symbols it does not know.
        if not missing or "default" in r:
            return []
        return [
            _message(
                "MISSING_ENUM_SYMBOLS",
                f"The reader's schema is missing enum symbols '{', '.join(missing)}' at path "
                f"'{_where((*path, 'symbols'))}' in the writer's schema",
                f"[{', '.join(missing)}]",
            )
        ]

    def _record(self, r: Mapping[str, Any], w: Mapping[str, Any], path: tuple[str | int, ...]) -> list[str]:
        key = (id(r), id(w))
        if key in self._in_progress:
            return []
        done = self._done.get(key)
        if done is not None:
            # Reported where the pair was first met; a non-empty answer keeps the verdict
            # (a union branch must not look compatible), and the check drops the repeats.
            return done
        self._in_progress.add(key)
        try:
            problems = self._names(r, w, path)
            writer_fields = {f["name"]: f for f in w["fields"]}
            for i, field_ in enumerate(r["fields"]):
                match = writer_fields.get(field_["name"])
                for alias in field_.get("aliases", ()):
                    match = match or writer_fields.get(alias)
                if match is not None:
                    problems += self._compare(field_["type"], match["type"], (*path, "fields", i, "type"))
                elif "default" not in field_:
                    problems.append(
                        _message(
                            "READER_FIELD_MISSING_DEFAULT_VALUE",
                            f"The field '{field_['name']}' at path '{_where((*path, 'fields', i))}' "
                            f"in the reader's schema has no default value and is missing in the "
                            f"writer's schema",
                            field_["name"],
                        )
                    )
                # A writer's field the reader does not name is skipped when reading.
        finally:
            self._in_progress.discard(key)
        problems = self._done[key] = list(dict.fromkeys(problems))  # repeats of shared pairs
        return problems


FORMAT = AvroFormat()
