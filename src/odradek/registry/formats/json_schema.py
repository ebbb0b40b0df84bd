"""JSON Schema (drafts 4, 6, 7, 2019-09 and 2020-12): parsing, identity and Confluent's
compatibility rules.

Parsing checks the text against its draft's metaschema (the ``jsonschema`` library; the draft is
chosen by ``$schema``, draft 7 when absent or unknown, as Confluent's registry does) and resolves
every ``$ref`` through a ``referencing`` registry holding the schema's references by name. The
result is a small model of the schema, one node per subschema, shaped like the one Confluent's
registry compares (a ``type`` list is an ``anyOf`` of one node per type; keywords of several
kinds on one schema, such as ``type`` with ``enum``, make a synthetic ``allOf``).

Compatibility asks whether every document valid under the writer is accepted by the reader.
It walks both models side by side (the writer is Confluent's "original", the reader its
"update") and records one *difference* per change, typed with Confluent's names
(``OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL``, ``TYPE_NARROWED``, ...); the types in
:data:`COMPATIBLE_CHANGES` (Confluent's strict set) are allowed, every other one is reported as
``"<TYPE> at <json path>: <why>"``. ``$ref`` cycles are compared to a fixpoint, as Confluent
does. Departures from Confluent: a smaller ``exclusiveMaximum`` is compared with the old
``exclusiveMaximum`` (Confluent compares it with the new ``maximum``); draft 4's boolean
``exclusiveMaximum``/``exclusiveMinimum`` make the bound exclusive (Confluent ignores them).
Not compared, as in Confluent: ``propertyNames``, the ``contains`` schema, ``if``/``then``/
``else``, ``format``, and the annotations (``title``, ``description``, ``default``, ``$id``,
whose changes are all compatible). ``$recursiveRef``/``$dynamicRef`` are not followed.

Bounds, so that no schema can hold the registry: parsing refuses documents nested deeper than
:data:`MAX_NESTING` or holding more than :data:`MAX_VALUES` JSON values; a comparison remembers
each node pair's result (shared, not copied, wherever the pair recurs), reports at most
:data:`MAX_MESSAGES` messages, and gives up after :data:`MAX_PAIR_COMPARISONS` pair
comparisons (combined schemas are matched pairwise, so nested ``anyOf``/``allOf``/``oneOf``
cost the product of both schemas' sizes), reporting ``COMPARISON_TOO_COMPLEX``: an
incompatibility, so the registration is refused with 409.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import jsonschema
import jsonschema.exceptions
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema_specifications import REGISTRY as _METASCHEMAS

from odradek.registry.formats import InvalidSchemaError, ParsedSchema, SchemaFormat

if TYPE_CHECKING:
    # referencing exports no name for its resolver type.
    from referencing._core import Resolver

    _Resolver = Resolver[Any]

__all__ = [
    "COMPATIBLE_CHANGES",
    "FORMAT",
    "MAX_MESSAGES",
    "MAX_NESTING",
    "MAX_PAIR_COMPARISONS",
    "MAX_VALUES",
    "JsonSchema",
    "JsonSchemaFormat",
]

SCHEMA_TYPE = "JSON"


# --- drafts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Draft:
    name: str
    validator: Any  # a jsonschema validator class
    specification: referencing.Specification[Any]
    id_keyword: str
    #: 2019-09 and later: ``$ref`` is one keyword among others, not a replacement of its schema.
    ref_with_siblings: bool
    #: 2020-12: ``prefixItems`` holds the tuple, ``items`` the rest.
    prefix_items: bool
    #: draft 4: ``exclusiveMaximum``/``exclusiveMinimum`` are booleans modifying the bounds.
    boolean_exclusive: bool


_DRAFT4 = _Draft(
    "draft-04",
    jsonschema.Draft4Validator,
    referencing.jsonschema.DRAFT4,
    id_keyword="id",
    ref_with_siblings=False,
    prefix_items=False,
    boolean_exclusive=True,
)
_DRAFT6 = _Draft(
    "draft-06",
    jsonschema.Draft6Validator,
    referencing.jsonschema.DRAFT6,
    id_keyword="$id",
    ref_with_siblings=False,
    prefix_items=False,
    boolean_exclusive=False,
)
_DRAFT7 = _Draft(
    "draft-07",
    jsonschema.Draft7Validator,
    referencing.jsonschema.DRAFT7,
    id_keyword="$id",
    ref_with_siblings=False,
    prefix_items=False,
    boolean_exclusive=False,
)
_DRAFT2019 = _Draft(
    "2019-09",
    jsonschema.Draft201909Validator,
    referencing.jsonschema.DRAFT201909,
    id_keyword="$id",
    ref_with_siblings=True,
    prefix_items=False,
    boolean_exclusive=False,
)
_DRAFT2020 = _Draft(
    "2020-12",
    jsonschema.Draft202012Validator,
    referencing.jsonschema.DRAFT202012,
    id_keyword="$id",
    ref_with_siblings=True,
    prefix_items=True,
    boolean_exclusive=False,
)


def _draft_key(uri: str) -> str:
    # "http://json-schema.org/draft-07/schema#" and "https://json-schema.org/draft-07/schema"
    # name the same draft.
    return uri.split("://", 1)[-1].rstrip("#")


_DRAFTS: Mapping[str, _Draft] = {
    _draft_key(d.validator.META_SCHEMA.get("$id") or d.validator.META_SCHEMA["id"]): d
    for d in (_DRAFT4, _DRAFT6, _DRAFT7, _DRAFT2019, _DRAFT2020)
}
#: Confluent's registry reads a schema without a known ``$schema`` as draft 7.
_DEFAULT_DRAFT = _DRAFT7


def _draft_of(document: Any) -> _Draft:
    if isinstance(document, dict) and isinstance(document.get("$schema"), str):
        return _DRAFTS.get(_draft_key(document["$schema"]), _DEFAULT_DRAFT)
    return _DEFAULT_DRAFT


# --- the model ------------------------------------------------------------------------------
# Nodes compare by identity (eq=False): the comparison's cycle guard keys on node pairs, and a
# recursive schema is a graph of shared nodes.


@dataclass(frozen=True, eq=False)
class _Node:
    has_default: bool


@dataclass(frozen=True, eq=False)
class _Empty(_Node):
    """``true``, ``{}``, or a schema with no constraint: accepts everything."""


@dataclass(frozen=True, eq=False)
class _False(_Node):
    """``false``: accepts nothing."""


@dataclass(frozen=True, eq=False)
class _Null(_Node):
    pass


@dataclass(frozen=True, eq=False)
class _Boolean(_Node):
    pass


@dataclass(frozen=True, eq=False)
class _String(_Node):
    min_length: int | None
    max_length: int | None
    pattern: str | None


@dataclass(frozen=True, eq=False)
class _Number(_Node):
    integer: bool
    minimum: float | None
    maximum: float | None
    exclusive_minimum: float | None
    exclusive_maximum: float | None
    multiple_of: float | None


@dataclass(frozen=True, eq=False)
class _Object(_Node):
    properties: Mapping[str, _Node]
    required: frozenset[str]
    #: ``additionalProperties: false`` makes this False.
    additional_allowed: bool
    #: ``additionalProperties`` given as a schema (``{}`` included, as Confluent reads it).
    additional_schema: _Node | None
    pattern_properties: tuple[tuple[str, _Node], ...]
    property_dependencies: Mapping[str, frozenset[str]]
    schema_dependencies: Mapping[str, _Node]
    min_properties: int | None
    max_properties: int | None
    #: ``unevaluatedProperties`` (2019-09 and later).
    unevaluated: _Node | None


@dataclass(frozen=True, eq=False)
class _Array(_Node):
    #: ``items`` as one schema for every element.
    all_items: _Node | None
    #: ``items`` as a list (``prefixItems`` in 2020-12): one schema per position.
    item_schemas: tuple[_Node, ...] | None
    additional_allowed: bool
    additional_schema: _Node | None
    min_items: int | None
    max_items: int | None
    unique_items: bool
    min_contains: int | None
    max_contains: int | None
    #: ``unevaluatedItems`` (2019-09 and later).
    unevaluated: _Node | None


@dataclass(frozen=True, eq=False)
class _Enum(_Node):
    #: Each value's JSON text (sorted keys), so that 1 and true stay distinct.
    values: frozenset[str]


@dataclass(frozen=True, eq=False)
class _Const(_Node):
    value: str


@dataclass(frozen=True, eq=False)
class _Not(_Node):
    schema: _Node


@dataclass(frozen=True, eq=False)
class _Combined(_Node):
    criterion: str  # "allOf", "anyOf" or "oneOf"
    #: Duplicates (equal JSON) collapsed, as Confluent does.
    subschemas: tuple[_Node, ...]


class _Ref(_Node):
    """A ``$ref``. Its target is set once, after the node is registered with the loader, so a
    schema referring to itself makes a cycle rather than an endless model."""

    target: _Node | None

    def __init__(self) -> None:
        super().__init__(False)
        self.target = None


# --- parsing --------------------------------------------------------------------------------

_STRING_KEYWORDS = frozenset({"minLength", "maxLength", "pattern", "format"})
_NUMBER_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
_OBJECT_KEYWORDS = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "unevaluatedProperties",
    }
)
_ARRAY_KEYWORDS = frozenset(
    {
        "items",
        "prefixItems",
        "additionalItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "unevaluatedItems",
    }
)
_COMBINERS = ("allOf", "anyOf", "oneOf")


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Loader:
    """Builds the model of one schema; used once, by :meth:`JsonSchemaFormat.parse`."""

    def __init__(self, draft: _Draft) -> None:
        self._draft = draft
        # One node per resolved target (by identity of the target's JSON), so cycles close.
        self._refs: dict[int, _Ref] = {}
        self._pinned: list[Any] = []  # keeps the targets alive while their ids are keys

    def load_root(self, doc: Any, resolver: _Resolver) -> _Node:
        """The whole schema, registered first so that ``"$ref": "#"`` comes back to it."""
        root = _Ref()
        self._refs[id(doc)] = root
        self._pinned.append(doc)
        root.target = self.load(doc, resolver, "#")
        return root

    def load(self, doc: Any, resolver: _Resolver, where: str) -> _Node:
        if doc is True:
            return _Empty(False)
        if doc is False:
            return _False(False)
        if not isinstance(doc, dict):
            raise InvalidSchemaError(f"{where}: a schema must be an object or a boolean")
        draft = self._draft
        if isinstance(doc.get(draft.id_keyword), str) and not doc[draft.id_keyword].startswith("#"):
            resolver = resolver.in_subresource(draft.specification.create_resource(doc))
        has_default = "default" in doc
        parts: list[_Node] = []
        if isinstance(doc.get("$ref"), str):
            ref = self._ref(doc["$ref"], resolver, where)
            if not draft.ref_with_siblings:
                return ref  # drafts 4 to 7 ignore the keywords beside $ref
            parts.append(ref)
        if "enum" in doc:
            parts.append(_Enum(has_default, frozenset(_json_key(v) for v in doc["enum"])))
        if "const" in doc:
            parts.append(_Const(has_default, _json_key(doc["const"])))
        if "not" in doc:
            parts.append(_Not(has_default, self.load(doc["not"], resolver, f"{where}/not")))
        for criterion in _COMBINERS:
            if criterion in doc:
                subs: dict[str, _Node] = {}
                for i, sub in enumerate(doc[criterion]):
                    subs.setdefault(
                        _json_key(sub), self.load(sub, resolver, f"{where}/{criterion}/{i}")
                    )
                parts.append(_Combined(has_default, criterion, tuple(subs.values())))
        typed = self._typed(doc, resolver, where, has_default)
        if typed is not None:
            parts.append(typed)
        if not parts:
            return _Empty(has_default)
        if len(parts) == 1:
            return parts[0]
        return _Combined(has_default, "allOf", tuple(parts))

    def _ref(self, ref: str, resolver: _Resolver, where: str) -> _Ref:
        try:
            resolved = resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            # referencing raises Unresolvable while handling the NoSuchResource behind it.
            if isinstance(e.__context__, referencing.exceptions.NoSuchResource):
                raise InvalidSchemaError(
                    f"{where}: $ref {ref!r} names {e.__context__.ref!r}, which is neither this "
                    "schema nor one of its references"
                ) from e
            raise InvalidSchemaError(f"{where}: $ref {ref!r} cannot be resolved ({e})") from e
        key = id(resolved.contents)
        node = self._refs.get(key)
        if node is None:
            # A $ref may point anywhere in a document, not only at what the metaschema checked.
            _check(self._draft, resolved.contents, f"target of {where}/$ref")
            node = _Ref()
            self._refs[key] = node
            self._pinned.append(resolved.contents)
            node.target = self.load(resolved.contents, resolved.resolver, f"{where}/$ref")
        return node

    def _typed(
        self, doc: dict[str, Any], resolver: _Resolver, where: str, default: bool
    ) -> _Node | None:
        declared = doc.get("type")
        if isinstance(declared, str):
            types = [declared]
        elif isinstance(declared, list):
            types = list(dict.fromkeys(declared))
        else:
            # No type: the keywords present say which kinds of value are constrained.
            keys = doc.keys()
            types = [
                name
                for name, keywords in (
                    ("string", _STRING_KEYWORDS),
                    ("number", _NUMBER_KEYWORDS),
                    ("object", _OBJECT_KEYWORDS),
                    ("array", _ARRAY_KEYWORDS),
                )
                if keywords & keys
            ]
        nodes = [self._of_type(t, doc, resolver, where, default) for t in types]
        if not nodes:
            return None
        if len(nodes) == 1:
            return nodes[0]
        return _Combined(default, "anyOf", tuple(nodes))

    def _of_type(
        self,
        name: str,
        doc: dict[str, Any],
        resolver: _Resolver,
        where: str,
        default: bool,
    ) -> _Node:
        if name == "null":
            return _Null(default)
        if name == "boolean":
            return _Boolean(default)
        if name == "string":
            return _String(default, doc.get("minLength"), doc.get("maxLength"), doc.get("pattern"))
        if name in ("number", "integer"):
            return self._number(name == "integer", doc, default)
        if name == "object":
            return self._object(doc, resolver, where, default)
        return self._array(doc, resolver, where, default)

    def _number(self, integer: bool, doc: dict[str, Any], default: bool) -> _Number:
        minimum, maximum = doc.get("minimum"), doc.get("maximum")
        exclusive_minimum, exclusive_maximum = (
            doc.get("exclusiveMinimum"),
            doc.get("exclusiveMaximum"),
        )
        if self._draft.boolean_exclusive:
            exclusive_minimum = minimum if exclusive_minimum is True else None
            exclusive_maximum = maximum if exclusive_maximum is True else None
            if exclusive_minimum is not None:
                minimum = None
            if exclusive_maximum is not None:
                maximum = None
        return _Number(
            default,
            integer,
            minimum,
            maximum,
            exclusive_minimum,
            exclusive_maximum,
            doc.get("multipleOf"),
        )

    def _object(
        self, doc: dict[str, Any], resolver: _Resolver, where: str, default: bool
    ) -> _Object:
        properties = {
            name: self.load(sub, resolver, f"{where}/properties/{name}")
            for name, sub in doc.get("properties", {}).items()
        }
        additional = doc.get("additionalProperties", True)
        additional_schema = (
            None
            if isinstance(additional, bool)
            else self.load(additional, resolver, f"{where}/additionalProperties")
        )
        patterns = tuple(
            (pattern, self.load(sub, resolver, f"{where}/patternProperties/{pattern}"))
            for pattern, sub in doc.get("patternProperties", {}).items()
        )
        property_deps: dict[str, frozenset[str]] = {}
        schema_deps: dict[str, _Node] = {}
        dependencies = dict(doc.get("dependencies", {}))
        dependencies.update(doc.get("dependentRequired", {}))
        dependencies.update(doc.get("dependentSchemas", {}))
        for name, dep in dependencies.items():
            if isinstance(dep, list):
                property_deps[name] = frozenset(dep)
            else:
                schema_deps[name] = self.load(dep, resolver, f"{where}/dependencies/{name}")
        return _Object(
            default,
            properties,
            frozenset(doc.get("required", ())),
            additional is not False,
            additional_schema,
            patterns,
            property_deps,
            schema_deps,
            doc.get("minProperties"),
            doc.get("maxProperties"),
            self._unevaluated(doc, "unevaluatedProperties", resolver, where),
        )

    def _unevaluated(
        self, doc: dict[str, Any], keyword: str, resolver: _Resolver, where: str
    ) -> _Node | None:
        # Before 2019-09 the keyword means nothing (Confluent ignores it there too).
        if not self._draft.ref_with_siblings or keyword not in doc:
            return None
        return self.load(doc[keyword], resolver, f"{where}/{keyword}")

    def _array(self, doc: dict[str, Any], resolver: _Resolver, where: str, default: bool) -> _Array:
        items = doc.get("items")
        if self._draft.prefix_items:
            prefix = doc.get("prefixItems")
            if prefix is not None:
                tuple_items, rest, all_items = prefix, items, None
            elif isinstance(items, bool):
                # Read as Confluent reads it: a boolean items opens or closes the remainder.
                tuple_items, rest, all_items = None, items, None
            else:
                tuple_items, rest, all_items = None, None, items
        elif isinstance(items, list):
            tuple_items, rest, all_items = items, doc.get("additionalItems"), None
        else:
            tuple_items, rest, all_items = None, doc.get("additionalItems"), items
        return _Array(
            default,
            None if all_items is None else self.load(all_items, resolver, f"{where}/items"),
            None
            if tuple_items is None
            else tuple(
                self.load(sub, resolver, f"{where}/items/{i}") for i, sub in enumerate(tuple_items)
            ),
            rest is not False,
            None
            if rest is None or isinstance(rest, bool)
            else self.load(rest, resolver, f"{where}/additionalItems"),
            doc.get("minItems"),
            doc.get("maxItems"),
            doc.get("uniqueItems") is True,
            _number_or_none(doc.get("minContains")),
            _number_or_none(doc.get("maxContains")),
            self._unevaluated(doc, "unevaluatedItems", resolver, where),
        )


def _number_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _java_order(key: str) -> bytes:
    # Confluent's normalization sorts keys as Java strings compare: by UTF-16 code units.
    return key.encode("utf-16-be", "surrogatepass")


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value, key=_java_order)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, eq=False)
class JsonSchema:
    """One parsed JSON schema: its document, its draft, and the model compared for
    compatibility. Immutable; made by :meth:`JsonSchemaFormat.parse`."""

    document: Any
    draft: str
    _root: _Node

    @property
    def schema_type(self) -> str:
        return SCHEMA_TYPE

    def canonical(self) -> str:
        """The document as compact JSON, keys in their written order: Confluent's canonical
        string for JSON schemas, so two texts differing only in whitespace are one schema and
        two differing in key order are two (unless registered with ``normalize``)."""
        return _compact(self.document)

    def normalized(self) -> str:
        """Compact JSON with every object's keys sorted (Confluent's ``normalize`` for JSON
        schemas)."""
        return _compact(_sorted_keys(self.document))


class JsonSchemaFormat:
    """Parsing and compatibility for ``schemaType`` JSON; stateless."""

    @property
    def schema_type(self) -> str:
        return SCHEMA_TYPE

    def parse(self, text: str, references: Mapping[str, str]) -> JsonSchema:
        try:
            return self._parse(text, references)
        except RecursionError as e:
            raise InvalidSchemaError("schema is nested too deeply") from e

    def _parse(self, text: str, references: Mapping[str, str]) -> JsonSchema:
        document = _load_json(text, "schema")
        draft = _draft_of(document)
        _check(draft, document, "schema")
        root_id = document.get(draft.id_keyword) if isinstance(document, dict) else None
        base = root_id if isinstance(root_id, str) else ""
        resources: list[tuple[str, referencing.Resource[Any]]] = []
        for name, ref_text in references.items():
            contents = _load_json(ref_text, f"reference {name!r}")
            if not isinstance(contents, dict | bool):
                raise InvalidSchemaError(
                    f"reference {name!r} is not a schema: a schema is an object or a boolean"
                )
            _check(_draft_of(contents), contents, f"reference {name!r}")
            contents = _crawlable(contents)
            resource = _draft_of(contents).specification.create_resource(contents)
            resources.append((name, resource))
            # A relative name is also found from the root's $id, as Confluent registers it.
            if base and urljoin(base, name) != name:
                resources.append((urljoin(base, name), resource))
        # The model is built from the copy referencing crawls, so that a $ref to the root
        # ("#") and the root itself are the same node.
        model_document = _crawlable(document)
        resources.append((base, draft.specification.create_resource(model_document)))
        try:
            # Over the drafts' own metaschemas, so a $ref to one resolves without a download.
            registry: referencing.Registry[Any] = _METASCHEMAS.with_resources(resources)
            registry = registry.crawl()
        except referencing.exceptions.CannotDetermineSpecification as e:
            raise InvalidSchemaError(f"a reference is not a JSON schema: {e}") from e
        root = _Loader(draft).load_root(model_document, registry.resolver(base_uri=base))
        return JsonSchema(document, draft.name, root)

    def incompatibilities(self, reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
        if not isinstance(reader, JsonSchema) or not isinstance(writer, JsonSchema):
            raise TypeError("both schemas must be JSON schemas parsed by this format")
        if reader is writer:
            return []  # a schema reads what it writes
        messages: list[str] = []
        try:
            for kind, path in _differences(writer._root, reader._root):
                if len(messages) == MAX_MESSAGES:
                    break
                where = "#/" + "/".join(path)
                messages.append(f"{kind} at {where}: {_WHY.get(kind, 'incompatible change')}")
        except _TooComplex:
            return [
                f"{_TOO_COMPLEX} at #/: comparing the schemas needs more than "
                f"{MAX_PAIR_COMPARISONS} subschema comparisons (deeply nested anyOf/allOf/"
                "oneOf?), so the registry does not judge them compatible"
            ]
        return messages


def _crawlable(value: Any) -> Any:
    """A copy of a schema that ``referencing`` can crawl: drafts 4 to 7 let ``dependencies``
    mix schemas and property lists, and referencing 0.37 takes every value for a schema when
    the first one is, so the lists are put first (their order means nothing)."""
    if isinstance(value, list):
        return [_crawlable(v) for v in value]
    if not isinstance(value, dict):
        return value
    copy = {k: _crawlable(v) for k, v in value.items()}
    dependencies = copy.get("dependencies")
    if isinstance(dependencies, dict):
        copy["dependencies"] = dict(
            sorted(dependencies.items(), key=lambda item: isinstance(item[1], dict | bool))
        )
    return copy


def _check(draft: _Draft, document: Any, what: str) -> None:
    try:
        draft.validator.check_schema(document)
    except jsonschema.exceptions.SchemaError as e:
        where = "#/" + "/".join(str(p) for p in e.absolute_path)
        raise InvalidSchemaError(
            f"invalid JSON {what} ({draft.name}) at {where}: {e.message}"
        ) from e


#: Limits on one schema document (or reference), checked before anything else reads it, so
#: that an absurd schema is refused cheaply: containers nested deeper than this, or more JSON
#: values than this in all.
MAX_NESTING = 128
MAX_VALUES = 200_000


def _load_json(text: str, what: str) -> Any:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise InvalidSchemaError(f"{what} is not valid JSON: {e}") from e
    _check_size(document, what)
    return document


def _check_size(document: Any, what: str) -> None:
    values = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise InvalidSchemaError(f"{what} is too large: more than {MAX_VALUES} JSON values")
        if isinstance(value, dict | list):
            if depth > MAX_NESTING:
                raise InvalidSchemaError(
                    f"{what} is nested too deeply: more than {MAX_NESTING} levels"
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


# --- compatibility --------------------------------------------------------------------------

#: Confluent's difference types that do not break a reader (the rest do).
COMPATIBLE_CHANGES = frozenset(
    {
        "ID_CHANGED",
        "DESCRIPTION_CHANGED",
        "TITLE_CHANGED",
        "DEFAULT_CHANGED",
        "SCHEMA_REMOVED",
        "TYPE_EXTENDED",
        "MAX_LENGTH_INCREASED",
        "MAX_LENGTH_REMOVED",
        "MIN_LENGTH_DECREASED",
        "MIN_LENGTH_REMOVED",
        "PATTERN_REMOVED",
        "MAXIMUM_INCREASED",
        "MAXIMUM_REMOVED",
        "MINIMUM_DECREASED",
        "MINIMUM_REMOVED",
        "EXCLUSIVE_MAXIMUM_INCREASED",
        "EXCLUSIVE_MAXIMUM_REMOVED",
        "EXCLUSIVE_MINIMUM_DECREASED",
        "EXCLUSIVE_MINIMUM_REMOVED",
        "MULTIPLE_OF_REDUCED",
        "MULTIPLE_OF_REMOVED",
        "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED",
        "REQUIRED_ATTRIBUTE_REMOVED",
        "DEPENDENCY_ARRAY_NARROWED",
        "DEPENDENCY_ARRAY_REMOVED",
        "DEPENDENCY_SCHEMA_REMOVED",
        "MAX_PROPERTIES_INCREASED",
        "MAX_PROPERTIES_REMOVED",
        "MIN_PROPERTIES_DECREASED",
        "MIN_PROPERTIES_REMOVED",
        "ADDITIONAL_PROPERTIES_ADDED",
        "ADDITIONAL_PROPERTIES_EXTENDED",
        "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL",
        "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL",
        "PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL",
        "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "MAX_ITEMS_INCREASED",
        "MAX_ITEMS_REMOVED",
        "MIN_ITEMS_DECREASED",
        "MIN_ITEMS_REMOVED",
        "MAX_CONTAINS_INCREASED",
        "MAX_CONTAINS_REMOVED",
        "MIN_CONTAINS_DECREASED",
        "MIN_CONTAINS_REMOVED",
        "UNEVALUATED_PROPERTIES_ADDED",
        "UNEVALUATED_PROPERTIES_EXTENDED",
        "UNEVALUATED_ITEMS_ADDED",
        "UNEVALUATED_ITEMS_EXTENDED",
        "UNIQUE_ITEMS_REMOVED",
        "ADDITIONAL_ITEMS_ADDED",
        "ADDITIONAL_ITEMS_EXTENDED",
        "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL",
        "ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL",
        "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL",
        "ENUM_ARRAY_EXTENDED",
        "COMBINED_TYPE_EXTENDED",
        "PRODUCT_TYPE_NARROWED",
        "SUM_TYPE_EXTENDED",
        "NOT_TYPE_NARROWED",
    }
)

#: Why each incompatible difference breaks the reader, for the messages.
_WHY: Mapping[str, str] = {
    "SCHEMA_ADDED": "the reader constrains a value the writer left free",
    "TYPE_CHANGED": "the reader expects a different type",
    "TYPE_NARROWED": "the reader accepts only integers where the writer wrote any number",
    "MAX_LENGTH_ADDED": "the reader limits the length the writer left unlimited",
    "MAX_LENGTH_DECREASED": "the reader's maxLength is smaller",
    "MIN_LENGTH_ADDED": "the reader requires a minimum length the writer did not",
    "MIN_LENGTH_INCREASED": "the reader's minLength is larger",
    "PATTERN_ADDED": "the reader requires a pattern the writer did not",
    "PATTERN_CHANGED": "the reader requires a different pattern",
    "MAXIMUM_ADDED": "the reader sets a maximum the writer did not",
    "MAXIMUM_DECREASED": "the reader's maximum is smaller",
    "MINIMUM_ADDED": "the reader sets a minimum the writer did not",
    "MINIMUM_INCREASED": "the reader's minimum is larger",
    "EXCLUSIVE_MAXIMUM_ADDED": "the reader sets an exclusive maximum the writer did not",
    "EXCLUSIVE_MAXIMUM_DECREASED": "the reader's exclusiveMaximum is smaller",
    "EXCLUSIVE_MINIMUM_ADDED": "the reader sets an exclusive minimum the writer did not",
    "EXCLUSIVE_MINIMUM_INCREASED": "the reader's exclusiveMinimum is larger",
    "MULTIPLE_OF_ADDED": "the reader requires a multipleOf the writer did not",
    "MULTIPLE_OF_EXPANDED": "the reader's multipleOf is a multiple of the writer's",
    "MULTIPLE_OF_CHANGED": "the reader's multipleOf does not divide the writer's",
    "REQUIRED_ATTRIBUTE_ADDED": "the reader requires a property, without a default, that "
    "the writer may omit",
    "MAX_PROPERTIES_ADDED": "the reader sets maxProperties the writer did not",
    "MAX_PROPERTIES_DECREASED": "the reader's maxProperties is smaller",
    "MIN_PROPERTIES_ADDED": "the reader sets minProperties the writer did not",
    "MIN_PROPERTIES_INCREASED": "the reader's minProperties is larger",
    "ADDITIONAL_PROPERTIES_REMOVED": "the reader closes the content model the writer left open",
    "ADDITIONAL_PROPERTIES_NARROWED": "the reader constrains additional properties the "
    "writer left free",
    "DEPENDENCY_ARRAY_ADDED": "the reader adds a property dependency",
    "DEPENDENCY_ARRAY_EXTENDED": "the reader's property dependency requires more",
    "DEPENDENCY_ARRAY_CHANGED": "the reader's property dependency differs",
    "DEPENDENCY_SCHEMA_ADDED": "the reader adds a schema dependency",
    "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL": "the reader declares a property the "
    "writer's open content model may have carried with any value",
    "REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL": "the reader requires a property the "
    "writer's open content model may have omitted or carried with any value",
    "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL": "the reader declares a "
    "property the writer's open content model may have carried with any value",
    "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL": "the reader requires a new property, "
    "without a default, that the writer never wrote",
    "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL": "the reader's closed content model refuses "
    "a property the writer wrote",
    "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL": "the reader's new property "
    "refuses values the writer's additional or pattern properties allowed",
    "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL": "the reader's additional "
    "or pattern properties refuse values of a property the writer wrote",
    "MAX_ITEMS_ADDED": "the reader sets maxItems the writer did not",
    "MAX_ITEMS_DECREASED": "the reader's maxItems is smaller",
    "MIN_ITEMS_ADDED": "the reader sets minItems the writer did not",
    "MIN_ITEMS_INCREASED": "the reader's minItems is larger",
    "UNIQUE_ITEMS_ADDED": "the reader requires unique items",
    "MAX_CONTAINS_ADDED": "the reader sets maxContains the writer did not",
    "MAX_CONTAINS_DECREASED": "the reader's maxContains is smaller",
    "MIN_CONTAINS_ADDED": "the reader sets minContains the writer did not",
    "MIN_CONTAINS_INCREASED": "the reader's minContains is larger",
    "UNEVALUATED_PROPERTIES_REMOVED": "the reader refuses unevaluated properties the writer "
    "allowed",
    "UNEVALUATED_PROPERTIES_NARROWED": "the reader constrains unevaluated properties the "
    "writer left freer",
    "UNEVALUATED_ITEMS_REMOVED": "the reader refuses unevaluated items the writer allowed",
    "UNEVALUATED_ITEMS_NARROWED": "the reader constrains unevaluated items the writer left freer",
    "ADDITIONAL_ITEMS_REMOVED": "the reader refuses additional items the writer allowed",
    "ADDITIONAL_ITEMS_NARROWED": "the reader constrains additional items the writer left free",
    "ITEM_ADDED_TO_OPEN_CONTENT_MODEL": "the reader constrains a position the writer left free",
    "ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL": "the reader refuses a position the writer wrote",
    "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL": "the reader's new position "
    "refuses items the writer's additional items allowed",
    "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL": "the reader's additional items "
    "refuse a position the writer wrote",
    "ENUM_ARRAY_NARROWED": "the reader's enum lacks values the writer may write",
    "ENUM_ARRAY_CHANGED": "the reader's enum or const differs from the writer's",
    "COMBINED_TYPE_CHANGED": "the reader combines its subschemas with a stricter keyword",
    "PRODUCT_TYPE_EXTENDED": "the reader's allOf has more subschemas",
    "SUM_TYPE_NARROWED": "the reader's anyOf/oneOf has fewer subschemas",
    "COMBINED_TYPE_SUBSCHEMAS_CHANGED": "the writer's subschemas cannot all be matched to "
    "compatible subschemas of the reader",
    "NOT_TYPE_EXTENDED": "the reader's not refuses more",
}


_Difference = tuple[str, tuple[str, ...]]  # (type, JSON path as its segments)

#: The most node pairs one comparison may compare (over all its fixpoint passes). Matching
#: combined schemas compares every pair of their subschemas, so nested anyOf/allOf/oneOf cost
#: the product of the two schemas' sizes; past this budget the comparison stops and reports
#: :data:`_TOO_COMPLEX`, an incompatibility, so a registration is refused (409) rather than
#: holding the registry for minutes. Real schemas compare in a few thousand pairs.
MAX_PAIR_COMPARISONS = 100_000
#: The most messages one comparison reports: the same difference reached through many paths
#: of a schema whose definitions refer to one another would otherwise be listed once per path.
MAX_MESSAGES = 100
_TOO_COMPLEX = "COMPARISON_TOO_COMPLEX"
#: The most links and differences followed while listing the messages (about a second).
_MAX_WALK = 1_000_000


class _TooComplex(Exception):
    """The comparison used up :data:`MAX_PAIR_COMPARISONS`."""


@dataclass(eq=False)
class _Found:
    """The differences found comparing one pair of nodes, paths relative to that pair.

    A pair's result is shared, never copied, by every place it is met: ``entries`` holds
    differences and ``(path prefix, _Found)`` links to the results of pairs compared beneath,
    so a schema whose definitions refer to one another costs one result per pair rather than
    one difference per path (exponentially many). ``incompatible`` says whether any
    difference reachable from here is one :data:`COMPATIBLE_CHANGES` lacks."""

    entries: list[_Difference | tuple[tuple[str, ...], _Found]] = field(default_factory=list)
    incompatible: bool = False


@dataclass
class _Budget:
    """Pair comparisons left to one comparison; owned by its :func:`_differences` call."""

    left: int

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _TooComplex


@dataclass
class _Pairs:
    """What one pass of a comparison knows about node pairs, shared by all its contexts.

    Every pair's result is remembered, so schemas whose definitions refer to one another are
    compared once per pair of nodes, not once per path through them. A pair met again while
    it is being compared is a ``$ref`` cycle: it is taken as compatible there, unless an
    earlier pass found it incompatible (``known_incompatible``), and ``cycles_cut`` records
    that the pass relied on such an assumption."""

    known_incompatible: Mapping[tuple[int, int], _Found]
    budget: _Budget
    in_progress: set[tuple[int, int]] = field(default_factory=set)
    done: dict[tuple[int, int], _Found] = field(default_factory=dict)
    cycles_cut: bool = False

    def incompatible(self) -> dict[tuple[int, int], _Found]:
        return {key: found for key, found in self.done.items() if found.incompatible}


def _differences(writer: _Node, reader: _Node) -> Iterator[_Difference]:
    """Compare to a fixpoint: a cycle assumed compatible may turn out not to be, and results
    remembered under that assumption would hide it, so each pass feeds the pairs found
    incompatible to the next until the set stops changing (it only grows, bounded by the
    number of node pairs; schemas without cycles take one pass). Returns the incompatible
    differences (each (type, path) once); raises :class:`_TooComplex` past
    :data:`MAX_PAIR_COMPARISONS` (read at each call)."""
    known: Mapping[tuple[int, int], _Found] = {}
    spent = _Budget(MAX_PAIR_COMPARISONS)
    while True:
        pairs = _Pairs(known, spent)
        ctx = _Context([], _Found(), pairs)
        _compare(ctx, writer, reader)
        incompatible = pairs.incompatible()
        if not pairs.cycles_cut or incompatible.keys() == known.keys():
            return _incompatible_differences(ctx.found)
        known = incompatible


def _incompatible_differences(root: _Found) -> Iterator[_Difference]:
    """The incompatible differences under ``root`` with their whole paths, depth first in the
    order found, each once; links to compatible results are not followed."""
    seen: set[_Difference] = set()
    stack: list[tuple[tuple[str, ...], Iterator[Any]]] = [((), iter(root.entries))]
    # Paths through shared results may repeat differences already yielded; bound the walk.
    steps = _MAX_WALK
    while stack and steps:
        steps -= 1
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        first, second = entry
        if isinstance(second, _Found):
            if second.incompatible:
                stack.append((prefix + first, iter(second.entries)))
        elif first not in COMPATIBLE_CHANGES:
            difference = (first, prefix + second)
            if difference not in seen:
                seen.add(difference)
                yield difference


@dataclass
class _Context:
    """The state of one comparison: the JSON path being compared and the differences found.
    Owned by one :meth:`JsonSchemaFormat.incompatibilities` call."""

    path: list[str]
    found: _Found
    pairs: _Pairs

    def sub(self) -> _Context:
        return _Context(list(self.path), _Found(), self.pairs)

    def compatible(self) -> bool:
        return not self.found.incompatible

    def add(self, kind: str, attribute: str | None = None) -> None:
        parts = self.path if attribute is None else [*self.path, attribute]
        self.found.entries.append((kind, tuple(parts)))
        if kind not in COMPATIBLE_CHANGES:
            self.found.incompatible = True

    def absorb(self, found: _Found) -> None:
        """Take in the differences of a sub-context made by :meth:`sub` (same path)."""
        self.found.entries.extend(found.entries)
        self.found.incompatible |= found.incompatible

    def link(self, found: _Found) -> None:
        """Refer, at the current path, to a pair's remembered result."""
        if found.entries:
            self.found.entries.append((tuple(self.path), found))
            self.found.incompatible |= found.incompatible

    @contextmanager
    def at(self, *parts: str) -> Iterator[None]:
        self.path.extend(parts)
        try:
            yield
        finally:
            del self.path[len(self.path) - len(parts) :]


#: What a ``$ref`` that only refers to itself reads as. One shared node, since the comparison
#: remembers pairs by node identity and a fresh node's id could be reused by the next.
_SELF_REFERENCE = _Empty(False)


def _deref(node: _Node) -> _Node:
    seen = 0
    while isinstance(node, _Ref):
        assert node.target is not None
        node = node.target
        seen += 1
        if seen > 1000:  # a $ref that only refers to itself accepts anything
            return _SELF_REFERENCE
    return node


def _compare(ctx: _Context, original: _Node | None, update: _Node | None) -> None:
    """Confluent's comparison of a writer (``original``) and a reader (``update``) subschema."""
    if original is None and update is None:
        return
    if original is None:
        ctx.add("SCHEMA_ADDED")
        return
    if update is None:
        ctx.add("SCHEMA_REMOVED")
        return
    original, update = _deref(original), _deref(update)
    pairs = ctx.pairs
    key = (id(original), id(update))
    found = pairs.done.get(key)
    if found is None:
        if key in pairs.in_progress:
            found = pairs.known_incompatible.get(key)
            if found is None:
                pairs.cycles_cut = True
                return
        else:
            pairs.budget.spend()
            pairs.in_progress.add(key)
            relative = _Context([], _Found(), pairs)
            try:
                _compare_nodes(relative, original, update)
            finally:
                pairs.in_progress.discard(key)
            found = pairs.done[key] = relative.found
    ctx.link(found)


def _compare_nodes(ctx: _Context, original: _Node, update: _Node) -> None:
    if not isinstance(original, _Combined) and isinstance(update, _Combined):
        if len(update.subschemas) == 1:
            sub = ctx.sub()
            _compare(sub, original, update.subschemas[0])
            if sub.compatible():
                ctx.absorb(sub.found)
                return
        elif update.criterion in ("anyOf", "oneOf"):
            # The writer's one schema is read by any compatible alternative.
            for alternative in update.subschemas:
                sub = ctx.sub()
                _compare(sub, original, alternative)
                if sub.compatible():
                    ctx.absorb(sub.found)
                    ctx.add("SUM_TYPE_EXTENDED")
                    return
    elif isinstance(original, _Combined) and not isinstance(update, _Combined):
        if len(original.subschemas) == 1:
            sub = ctx.sub()
            _compare(sub, original.subschemas[0], update)
            if sub.compatible():
                ctx.absorb(sub.found)
                return
        elif original.criterion == "allOf":
            # Every written document satisfied each part; one part the reader accepts is enough.
            for part in original.subschemas:
                sub = ctx.sub()
                _compare(sub, part, update)
                if sub.compatible():
                    ctx.absorb(sub.found)
                    ctx.add("PRODUCT_TYPE_NARROWED")
                    return
    if type(original) is not type(update):
        # Nothing written under false; everything read under true.
        if not isinstance(original, _False) and not isinstance(update, _Empty):
            ctx.add("TYPE_CHANGED")
        return
    if isinstance(original, _String):
        assert isinstance(update, _String)
        _compare_bound(ctx, "maxLength", original.max_length, update.max_length)
        _compare_bound(ctx, "minLength", original.min_length, update.min_length)
        if original.pattern != update.pattern:
            if original.pattern is None:
                ctx.add("PATTERN_ADDED", "pattern")
            elif update.pattern is None:
                ctx.add("PATTERN_REMOVED", "pattern")
            else:
                ctx.add("PATTERN_CHANGED", "pattern")
    elif isinstance(original, _Number):
        assert isinstance(update, _Number)
        _compare_number(ctx, original, update)
    elif isinstance(original, _Enum):
        assert isinstance(update, _Enum)
        if original.values != update.values:
            if update.values > original.values:
                ctx.add("ENUM_ARRAY_EXTENDED", "enum")
            elif update.values < original.values:
                ctx.add("ENUM_ARRAY_NARROWED", "enum")
            else:
                ctx.add("ENUM_ARRAY_CHANGED", "enum")
    elif isinstance(original, _Const):
        assert isinstance(update, _Const)
        if original.value != update.value:
            ctx.add("ENUM_ARRAY_CHANGED", "const")
    elif isinstance(original, _Combined):
        assert isinstance(update, _Combined)
        _compare_combined(ctx, original, update)
    elif isinstance(original, _Not):
        assert isinstance(update, _Not)
        # not A reads not B when B's documents are all A's: compare the negated schemas reversed.
        with ctx.at("not"):
            sub = ctx.sub()
            _compare(sub, update.schema, original.schema)
            ctx.add("NOT_TYPE_NARROWED" if sub.compatible() else "NOT_TYPE_EXTENDED")
    elif isinstance(original, _Object):
        assert isinstance(update, _Object)
        _compare_object(ctx, original, update)
    elif isinstance(original, _Array):
        assert isinstance(update, _Array)
        _compare_array(ctx, original, update)


_BOUND_NAMES = {
    "maxLength": "MAX_LENGTH",
    "minLength": "MIN_LENGTH",
    "maximum": "MAXIMUM",
    "minimum": "MINIMUM",
    "exclusiveMaximum": "EXCLUSIVE_MAXIMUM",
    "exclusiveMinimum": "EXCLUSIVE_MINIMUM",
    "maxProperties": "MAX_PROPERTIES",
    "minProperties": "MIN_PROPERTIES",
    "maxItems": "MAX_ITEMS",
    "minItems": "MIN_ITEMS",
    "maxContains": "MAX_CONTAINS",
    "minContains": "MIN_CONTAINS",
}


def _compare_bound(
    ctx: _Context, keyword: str, original: float | None, update: float | None
) -> None:
    """A bound added, removed, increased or decreased; :data:`COMPATIBLE_CHANGES` says which
    of these loosen it (an upper bound increased, a lower one decreased)."""
    prefix = _BOUND_NAMES[keyword]
    if original == update:
        return
    if original is None:
        ctx.add(f"{prefix}_ADDED", keyword)
    elif update is None:
        ctx.add(f"{prefix}_REMOVED", keyword)
    elif original < update:
        ctx.add(f"{prefix}_INCREASED", keyword)
    else:
        ctx.add(f"{prefix}_DECREASED", keyword)


def _exact(value: float) -> Fraction:
    # Through the decimal text, so 0.1 is one tenth, not its binary approximation.
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def _compare_number(ctx: _Context, original: _Number, update: _Number) -> None:
    _compare_bound(ctx, "maximum", original.maximum, update.maximum)
    _compare_bound(ctx, "minimum", original.minimum, update.minimum)
    _compare_bound(ctx, "exclusiveMaximum", original.exclusive_maximum, update.exclusive_maximum)
    _compare_bound(ctx, "exclusiveMinimum", original.exclusive_minimum, update.exclusive_minimum)
    old, new = original.multiple_of, update.multiple_of
    if old != new:
        if old is None:
            ctx.add("MULTIPLE_OF_ADDED", "multipleOf")
        elif new is None:
            ctx.add("MULTIPLE_OF_REMOVED", "multipleOf")
        elif math.isfinite(old) and math.isfinite(new):
            if (_exact(new) / _exact(old)).denominator == 1:
                ctx.add("MULTIPLE_OF_EXPANDED", "multipleOf")
            elif (_exact(old) / _exact(new)).denominator == 1:
                ctx.add("MULTIPLE_OF_REDUCED", "multipleOf")
            else:
                ctx.add("MULTIPLE_OF_CHANGED", "multipleOf")
        else:
            ctx.add("MULTIPLE_OF_CHANGED", "multipleOf")
    if original.integer != update.integer:
        ctx.add("TYPE_EXTENDED" if original.integer else "TYPE_NARROWED")


def _compare_combined(ctx: _Context, original: _Combined, update: _Combined) -> None:
    if original.criterion != update.criterion:
        single_original = len(original.subschemas) == 1
        single_update = len(update.subschemas) == 1
        # Read as anyOf, anything combined still validates; a single subschema reads the same
        # under every keyword; allOf's documents satisfy each of its subschemas.
        if (
            update.criterion == "anyOf"
            or (single_original and (single_update or update.criterion == "oneOf"))
            or (single_update and original.criterion == "allOf")
        ):
            ctx.add("COMBINED_TYPE_EXTENDED")
        else:
            ctx.add("COMBINED_TYPE_CHANGED")
            return
    old_size, new_size = len(original.subschemas), len(update.subschemas)
    if old_size < new_size:
        ctx.add("PRODUCT_TYPE_EXTENDED" if update.criterion == "allOf" else "SUM_TYPE_EXTENDED")
    elif old_size > new_size:
        ctx.add("PRODUCT_TYPE_NARROWED" if original.criterion == "allOf" else "SUM_TYPE_NARROWED")
    edges: dict[tuple[int, int], _Found] = {}
    for i, old in enumerate(original.subschemas):
        with ctx.at(f"{original.criterion}/{i}"):
            for j, new in enumerate(update.subschemas):
                sub = ctx.sub()
                _compare(sub, old, new)
                if sub.compatible():
                    edges[(i, j)] = sub.found
    matching = _maximum_matching(old_size, edges.keys())
    for edge in matching:
        ctx.absorb(edges[edge])
    if len(matching) < min(old_size, new_size):
        ctx.add("COMBINED_TYPE_SUBSCHEMAS_CHANGED")


def _maximum_matching(left: int, edges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """A maximum matching of a bipartite graph (augmenting paths; the graphs are small)."""
    neighbours: dict[int, list[int]] = {i: [] for i in range(left)}
    for i, j in edges:
        neighbours[i].append(j)
    owner: dict[int, int] = {}

    def augment(i: int, visited: set[int]) -> bool:
        for j in neighbours[i]:
            if j in visited:
                continue
            visited.add(j)
            if j not in owner or augment(owner[j], visited):
                owner[j] = i
                return True
        return False

    for i in range(left):
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())


def _open_remainder(allowed: bool, schema: _Node | None, unevaluated: _Node | None) -> bool:
    """Open content: additional properties/items neither forbidden nor constrained, and
    ``unevaluated*`` absent or ``true``."""
    if not allowed or schema is not None:
        return False
    return unevaluated is None or isinstance(_deref(unevaluated), _Empty)


def _partial_remainder(
    allowed: bool, schema: _Node | None, unevaluated: _Node | None
) -> _Node | None:
    """The schema undeclared properties/items must satisfy in a partially open content model:
    ``additional*`` as a schema, or, when that is absent, ``unevaluated*`` as a schema."""
    if schema is not None:
        return schema
    if allowed and unevaluated is not None:
        if not isinstance(_deref(unevaluated), _Empty | _False):
            return unevaluated
    return None


def _is_open(schema: _Object) -> bool:
    return not schema.pattern_properties and _open_remainder(
        schema.additional_allowed, schema.additional_schema, schema.unevaluated
    )


def _partial_schema(schema: _Object, name: str) -> _Node | None:
    """The schema a property not declared in ``schema`` is checked against, if any."""
    for pattern, sub in schema.pattern_properties:
        try:
            if re.search(pattern, name):
                return sub
        except re.error:
            continue  # an ECMA-262 pattern Python cannot read matches nothing here
    return _partial_remainder(
        schema.additional_allowed, schema.additional_schema, schema.unevaluated
    )


def _compare_unevaluated(
    ctx: _Context, keyword: str, prefix: str, original: _Node | None, update: _Node | None
) -> None:
    """``unevaluatedProperties``/``unevaluatedItems``: ``false`` closes, a schema narrows."""
    if original is None and update is None:
        return
    old = None if original is None else _deref(original)
    new = None if update is None else _deref(update)
    with ctx.at(keyword):
        if old is None:
            ctx.add(f"{prefix}_REMOVED" if isinstance(new, _False) else f"{prefix}_NARROWED")
        elif new is None:
            ctx.add(f"{prefix}_ADDED" if isinstance(old, _False) else f"{prefix}_EXTENDED")
        elif isinstance(old, _False) and not isinstance(new, _False):
            ctx.add(f"{prefix}_ADDED")
        elif not isinstance(old, _False) and isinstance(new, _False):
            ctx.add(f"{prefix}_REMOVED")
        elif isinstance(old, _Empty) and not isinstance(new, _Empty):
            ctx.add(f"{prefix}_NARROWED")
        elif not isinstance(old, _Empty) and isinstance(new, _Empty):
            ctx.add(f"{prefix}_EXTENDED")
        else:
            _compare(ctx, old, new)


def _compare_object(ctx: _Context, original: _Object, update: _Object) -> None:
    with ctx.at("required"):
        for name in original.properties:
            if name not in update.properties:
                continue
            was, now = name in original.required, name in update.required
            if was and not now:
                ctx.add("REQUIRED_ATTRIBUTE_REMOVED", name)
            elif now and not was:
                with_default = _deref(update.properties[name]).has_default
                ctx.add(
                    "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED"
                    if with_default
                    else "REQUIRED_ATTRIBUTE_ADDED",
                    name,
                )
    with ctx.at("properties"):
        for name in dict.fromkeys([*original.properties, *update.properties]):
            with ctx.at(name):
                _compare_property(ctx, name, original, update)
    with ctx.at("dependencies"):
        for name in dict.fromkeys([*original.property_dependencies, *update.property_dependencies]):
            old_deps = original.property_dependencies.get(name)
            new_deps = update.property_dependencies.get(name)
            if new_deps is None:
                ctx.add("DEPENDENCY_ARRAY_REMOVED", name)
            elif old_deps is None:
                ctx.add("DEPENDENCY_ARRAY_ADDED", name)
            elif old_deps != new_deps:
                if new_deps > old_deps:
                    ctx.add("DEPENDENCY_ARRAY_EXTENDED", name)
                elif new_deps < old_deps:
                    ctx.add("DEPENDENCY_ARRAY_NARROWED", name)
                else:
                    ctx.add("DEPENDENCY_ARRAY_CHANGED", name)
        for name in dict.fromkeys([*original.schema_dependencies, *update.schema_dependencies]):
            old_schema = original.schema_dependencies.get(name)
            new_schema = update.schema_dependencies.get(name)
            if new_schema is None:
                ctx.add("DEPENDENCY_SCHEMA_REMOVED", name)
            elif old_schema is None:
                ctx.add("DEPENDENCY_SCHEMA_ADDED", name)
            else:
                with ctx.at(name):
                    _compare(ctx, old_schema, new_schema)
    with ctx.at("additionalProperties"):
        if original.additional_allowed != update.additional_allowed:
            ctx.add(
                "ADDITIONAL_PROPERTIES_ADDED"
                if update.additional_allowed
                else "ADDITIONAL_PROPERTIES_REMOVED"
            )
        elif original.additional_schema is None and update.additional_schema is not None:
            ctx.add("ADDITIONAL_PROPERTIES_NARROWED")
        elif original.additional_schema is not None and update.additional_schema is None:
            ctx.add("ADDITIONAL_PROPERTIES_EXTENDED")
        else:
            _compare(ctx, original.additional_schema, update.additional_schema)
    _compare_unevaluated(
        ctx,
        "unevaluatedProperties",
        "UNEVALUATED_PROPERTIES",
        original.unevaluated,
        update.unevaluated,
    )
    _compare_bound(ctx, "maxProperties", original.max_properties, update.max_properties)
    _compare_bound(ctx, "minProperties", original.min_properties, update.min_properties)


def _compare_property(ctx: _Context, name: str, original: _Object, update: _Object) -> None:
    old = original.properties.get(name)
    new = update.properties.get(name)
    if new is None:
        assert old is not None
        # Removal is judged by the reader's content model only.
        if _is_open(update):
            ctx.add("PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL")
            return
        partial = _partial_schema(update, name)
        if partial is not None:
            _covered(ctx, old, partial, "PROPERTY_REMOVED")
        elif isinstance(_deref(old), _False):
            ctx.add("PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL")
        else:
            ctx.add("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL")
    elif old is None:
        # Addition is judged by the writer's content model only.
        if _is_open(original):
            if isinstance(_deref(new), _Empty):
                ctx.add("PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL")
            elif name not in update.required:
                ctx.add("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL")
            elif _deref(new).has_default:
                ctx.add("REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL")
            else:
                ctx.add("REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL")
            return
        partial = _partial_schema(original, name)
        if partial is not None:
            _covered(ctx, partial, new, "PROPERTY_ADDED")
        if name in update.required:
            ctx.add(
                "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL"
                if _deref(new).has_default
                else "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL"
            )
        else:
            ctx.add("OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL")
    else:
        _compare(ctx, old, new)


def _covered(ctx: _Context, old: _Node, new: _Node, change: str) -> None:
    """A property or item moved between a declared schema and the additional/pattern schema of
    a partially open content model: compatible when the declared and covering schemas are."""
    sub = ctx.sub()
    _compare(sub, old, new)
    ctx.absorb(sub.found)
    verdict = "IS_COVERED" if sub.compatible() else "NOT_COVERED"
    ctx.add(f"{change}_{verdict}_BY_PARTIALLY_OPEN_CONTENT_MODEL")


def _array_is_open(schema: _Array) -> bool:
    return _open_remainder(schema.additional_allowed, schema.additional_schema, schema.unevaluated)


def _array_partial(schema: _Array) -> _Node | None:
    return _partial_remainder(
        schema.additional_allowed, schema.additional_schema, schema.unevaluated
    )


def _compare_array(ctx: _Context, original: _Array, update: _Array) -> None:
    with ctx.at("items"):
        _compare(ctx, original.all_items, update.all_items)
    old_items, new_items = original.item_schemas or (), update.item_schemas or ()
    for i in range(max(len(old_items), len(new_items))):
        with ctx.at(f"items/{i}"):
            if i < len(old_items) and i < len(new_items):
                _compare(ctx, old_items[i], new_items[i])
            elif i < len(old_items):
                if _array_is_open(update):
                    ctx.add("ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL")
                elif (partial := _array_partial(update)) is not None:
                    _covered(ctx, old_items[i], partial, "ITEM_REMOVED")
                elif isinstance(_deref(old_items[i]), _False):
                    ctx.add("ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL")
                else:
                    ctx.add("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL")
            elif _array_is_open(original):
                ctx.add(
                    "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL"
                    if isinstance(_deref(new_items[i]), _Empty)
                    else "ITEM_ADDED_TO_OPEN_CONTENT_MODEL"
                )
            elif (partial := _array_partial(original)) is not None:
                _covered(ctx, partial, new_items[i], "ITEM_ADDED")
            else:
                ctx.add("ITEM_ADDED_TO_CLOSED_CONTENT_MODEL")
    with ctx.at("additionalItems"):
        if original.additional_allowed != update.additional_allowed:
            ctx.add(
                "ADDITIONAL_ITEMS_REMOVED"
                if original.additional_allowed
                else "ADDITIONAL_ITEMS_ADDED"
            )
        elif original.additional_schema is None and update.additional_schema is not None:
            ctx.add("ADDITIONAL_ITEMS_NARROWED")
        elif original.additional_schema is not None and update.additional_schema is None:
            ctx.add("ADDITIONAL_ITEMS_EXTENDED")
        else:
            _compare(ctx, original.additional_schema, update.additional_schema)
    _compare_unevaluated(
        ctx, "unevaluatedItems", "UNEVALUATED_ITEMS", original.unevaluated, update.unevaluated
    )
    _compare_bound(ctx, "maxItems", original.max_items, update.max_items)
    _compare_bound(ctx, "minItems", original.min_items, update.min_items)
    _compare_bound(ctx, "maxContains", original.max_contains, update.max_contains)
    _compare_bound(ctx, "minContains", original.min_contains, update.min_contains)
    if original.unique_items != update.unique_items:
        ctx.add(
            "UNIQUE_ITEMS_REMOVED" if original.unique_items else "UNIQUE_ITEMS_ADDED", "uniqueItems"
        )


FORMAT: SchemaFormat = JsonSchemaFormat()
