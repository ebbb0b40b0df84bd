"""What each request does to the registry, in Confluent's terms; no HTTP here.

:class:`SchemaRegistry` answers reads from :class:`~odradek.registry.store.KafkaStore`'s state
after reading the log to its end, and turns each write into ``_schemas`` records, appended under
the store's write lock and applied only when they come back from the log. Failures are
:class:`~odradek.registry.errors.RegistryError` with Confluent's codes.

Owned by the registry's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from odradek.registry import errors
from odradek.registry.compatibility import DEFAULT_LEVEL, check, check_against, normalize_level
from odradek.registry.formats import (
    SCHEMA_TYPES,
    InvalidSchemaError,
    ParsedSchema,
    SchemaFormat,
    UnsupportedSchemaTypeError,
    get_format,
)
from odradek.registry.records import (
    ConfigKey,
    ConfigValue,
    ContextKey,
    ContextValue,
    DeleteSubjectKey,
    DeleteSubjectValue,
    IdCounterKey,
    IdCounterValue,
    Key,
    ModeKey,
    ModeValue,
    Reference,
    SchemaKey,
    SchemaValue,
    Value,
)
from odradek.registry.state import RegistryState, context_of
from odradek.registry.store import KafkaStore

__all__ = ["MODES", "SchemaRegistry", "SchemaRequest", "parse_version"]

MODES = ("READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT")
_MAX_VERSION = 2**31 - 1
_PARSE_CACHE_SIZE = 4096
_log = logging.getLogger("odradek.registry.service")


def parse_version(text: str | int) -> int | None:
    """A version path segment: a number in [1, 2^31-1], or ``None`` for the latest (``latest``
    or -1); 42202 otherwise."""
    if text == "latest":
        return None
    try:
        number = int(text)
    except (TypeError, ValueError):
        raise errors.invalid_version(text) from None
    if number == -1:
        return None
    if not 1 <= number <= _MAX_VERSION:
        raise errors.invalid_version(text)
    return number


@dataclass(frozen=True, slots=True)
class SchemaRequest:
    """The body of a register, lookup or compatibility request."""

    schema: str
    schema_type: str = "AVRO"
    references: tuple[Reference, ...] = ()
    metadata: Any = None
    rule_set: Any = None
    id: int | None = None
    version: int | None = None

    @classmethod
    def from_json(cls, body: object) -> SchemaRequest:
        if not isinstance(body, dict):
            raise errors.bad_request("the body must be a JSON object")
        schema = body.get("schema")
        if not isinstance(schema, str):
            raise errors.invalid_schema("Invalid schema: the body has no \"schema\" string")
        schema_type = body.get("schemaType") or "AVRO"
        if not isinstance(schema_type, str):
            raise errors.invalid_schema(f"Invalid schema type {schema_type!r}")
        refs = []
        for r in body.get("references") or ():
            try:
                refs.append(Reference(str(r["name"]), str(r["subject"]), int(r["version"])))
            except (KeyError, TypeError, ValueError):
                raise errors.invalid_schema(f"Invalid schema reference {r!r}") from None
        ident = body.get("id")
        version = body.get("version")
        for name, v in (("id", ident), ("version", version)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < -1):
                raise errors.invalid_schema(f"Invalid {name} {v!r}")
        return cls(
            schema, schema_type.upper(), tuple(refs), body.get("metadata"), body.get("ruleSet"),
            ident if ident not in (None, -1, 0) else None,
            version if version not in (None, -1, 0) else None,
        )


class SchemaRegistry:
    """The registry's operations over one store. ``formats`` looks a format up by schemaType
    (:func:`~odradek.registry.formats.get_format` unless a test gives another)."""

    def __init__(
        self, store: KafkaStore, *, formats: Callable[[str], SchemaFormat] = get_format
    ) -> None:
        self.store = store
        self._formats = formats
        self._parsed: dict[tuple[str, str, tuple[Reference, ...]], ParsedSchema] = {}
        #: Ids by (schemaType, references, canonical text, metadata and rules), for giving a schema registered
        #: again under another subject the id it has; filled lazily from the state.
        self._ids_by_content: dict[tuple[str, str, tuple[Reference, ...], str, str], int] = {}
        self._indexed = 0  # how much of the state's id_order the index has taken in

    @property
    def state(self) -> RegistryState:
        return self.store.state

    # -- formats and references ----------------------------------------------------------------

    def schema_types(self) -> list[str]:
        served = []
        for t in SCHEMA_TYPES:
            try:
                self._formats(t)
            except UnsupportedSchemaTypeError:
                continue
            served.append(t)
        return served

    def _format(self, schema_type: str) -> SchemaFormat:
        try:
            return self._formats(schema_type)
        except UnsupportedSchemaTypeError as e:
            raise errors.invalid_schema(f"Invalid schema: {e}") from None

    def _resolve(self, references: tuple[Reference, ...]) -> dict[str, str]:
        """Every name the schema may use, its references' references included."""
        resolved: dict[str, str] = {}
        pending = list(references)
        seen: set[tuple[str, int]] = set()
        while pending:
            ref = pending.pop()
            if (ref.subject, ref.version) in seen:
                resolved.setdefault(ref.name, self._version_text(ref))
                continue
            seen.add((ref.subject, ref.version))
            target = self.state.subjects.get(ref.subject, {}).get(ref.version)
            if target is None:
                raise errors.invalid_schema(
                    f"Invalid schema: reference {ref.name!r} names {ref.subject} version "
                    f"{ref.version}, which does not exist"
                )
            resolved[ref.name] = target.schema
            pending.extend(target.references)
        return resolved

    def _version_text(self, ref: Reference) -> str:
        target = self.state.subjects.get(ref.subject, {}).get(ref.version)
        return target.schema if target is not None else ""

    def parse(
        self, schema_type: str, text: str, references: tuple[Reference, ...]
    ) -> ParsedSchema:
        key = (schema_type, text, references)
        parsed = self._parsed.get(key)
        if parsed is None:
            fmt = self._format(schema_type)
            try:
                parsed = fmt.parse(text, self._resolve(references))
            except InvalidSchemaError as e:
                raise errors.invalid_schema(f"Invalid schema {text[:200]}: {e}") from None
            if len(self._parsed) >= _PARSE_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[key] = parsed
        return parsed

    def _parse_stored(self, sv: SchemaValue) -> ParsedSchema:
        return self.parse(sv.schema_type, sv.schema, sv.references)

    # -- settings ------------------------------------------------------------------------------

    def compatibility_level(self, subject: str | None) -> str:
        for key in (subject, None):
            config = self.state.configs.get(key)
            if config is not None and config.compatibility_level:
                return str(config.compatibility_level)
        return DEFAULT_LEVEL

    def _normalize_default(self, subject: str) -> bool:
        for key in (subject, None):
            config = self.state.configs.get(key)
            if config is not None and config.normalize is not None:
                return bool(config.normalize)
        return False

    def mode(self, subject: str | None) -> str:
        for key in (subject, None):
            mode = self.state.modes.get(key)
            if mode is not None:
                return str(mode)
        return "READWRITE"

    def _check_writable(self, subject: str | None) -> str:
        mode = self.mode(subject)
        if mode in ("READONLY", "READONLY_OVERRIDE"):
            where = f"Subject {subject}" if subject else "The registry"
            raise errors.operation_not_permitted(f"{where} is in read-only mode")
        return mode

    # -- subjects and versions -----------------------------------------------------------------

    def _live_or_raise(self, subject: str, *, deleted: bool = False) -> list[SchemaValue]:
        if subject not in self.state.subjects:
            raise errors.subject_not_found(subject)
        versions: list[SchemaValue] = self.state.versions(subject, deleted=deleted)
        if not versions:
            raise errors.subject_not_found(subject)
        return versions

    def get_version(self, subject: str, version: str, *, deleted: bool = False) -> SchemaValue:
        number = parse_version(version)
        if number is None:
            return self._live_or_raise(subject, deleted=deleted)[-1]
        if subject not in self.state.subjects:
            raise errors.subject_not_found(subject)
        sv: SchemaValue | None = self.state.subjects[subject].get(number)
        if sv is None or (sv.deleted and not deleted):
            if not self.state.versions(subject, deleted=deleted) and not deleted:
                raise errors.subject_not_found(subject)
            raise errors.version_not_found(subject, version)
        return sv

    def list_subjects(
        self, *, deleted: bool = False, deleted_only: bool = False, prefix: str = ""
    ) -> list[str]:
        names = self.state.subject_names(deleted=deleted or deleted_only)
        if deleted_only:
            live = set(self.state.subject_names())
            names = (n for n in names if n not in live)
        return [n for n in names if n.startswith(prefix)]

    def list_versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        versions = self._live_or_raise(subject, deleted=deleted or deleted_only)
        return [sv.version for sv in versions if not deleted_only or sv.deleted]

    # -- register and look up ------------------------------------------------------------------

    def _find_in_subject(
        self, subject: str, req: SchemaRequest, parsed: ParsedSchema, *, deleted: bool = False
    ) -> SchemaValue | None:
        canonical = parsed.canonical()
        for sv in reversed(self.state.versions(subject, deleted=deleted)):
            if sv.schema_type != req.schema_type or sv.references != req.references:
                continue
            # Metadata and rules the request gives are part of what it registers (another
            # version if they differ); a request without them matches any.
            if req.metadata is not None and req.metadata != sv.metadata:
                continue
            if req.rule_set is not None and req.rule_set != sv.rule_set:
                continue
            try:
                if self._parse_stored(sv).canonical() == canonical:
                    return sv
            except errors.RegistryError:
                continue
        return None

    def _prepare(
        self, subject: str, req: SchemaRequest, normalize: bool | None
    ) -> tuple[SchemaRequest, ParsedSchema]:
        """The request as it would be stored (normalized when asked) and its parse."""
        parsed = self.parse(req.schema_type, req.schema, req.references)
        if normalize if normalize is not None else self._normalize_default(subject):
            text = parsed.normalized()
            if text != req.schema:
                req = SchemaRequest(
                    text, req.schema_type, req.references, req.metadata, req.rule_set,
                    req.id, req.version,
                )
                parsed = self.parse(req.schema_type, text, req.references)
        return req, parsed

    async def lookup(
        self, subject: str, req: SchemaRequest, *, normalize: bool | None, deleted: bool
    ) -> SchemaValue:
        await self.store.read_to_end()
        if subject not in self.state.subjects or not self.state.versions(subject, deleted=deleted):
            raise errors.subject_not_found(subject)
        req, parsed = self._prepare(subject, req, normalize)
        found = self._find_in_subject(subject, req, parsed, deleted=deleted)
        if found is None:
            raise errors.schema_not_found()
        return found

    async def register(
        self, subject: str, req: SchemaRequest, *, normalize: bool | None
    ) -> SchemaValue:
        """The version holding ``req`` under ``subject``: an existing one, or a new one."""
        async with self.store.writing():
            return await self.register_locked(subject, req, normalize=normalize)

    async def register_locked(
        self, subject: str, req: SchemaRequest, *, normalize: bool | None
    ) -> SchemaValue:
        """:meth:`register` for a caller that holds ``store.writing()`` already."""
        mode = self._check_writable(subject)
        for ref in req.references:
            if any(a.lifecycle == "STRONG" for _, a in self.state.associations_of(ref.subject)):
                # Confluent: a subject its topic owns cannot be a reference target.
                raise errors.operation_not_permitted(
                    f"Subject '{ref.subject}' has a strong association and cannot be referenced"
                )
        req, parsed = self._prepare(subject, req, normalize)
        if mode == "IMPORT":
            return await self._register_import(subject, req, parsed)
        if req.id is not None:
            raise errors.operation_not_permitted(
                f"Subject {subject} is not in import mode: ids are chosen by the registry"
            )
        existing = self._find_in_subject(subject, req, parsed)
        if existing is not None:
            return existing
        live = self.state.versions(subject)
        level = self.compatibility_level(subject)
        fmt = self._format(req.schema_type)
        earlier = [
            (f"version {sv.version}", self._parse_stored(sv)) for sv in live
        ]
        problems = check(level, fmt, parsed, earlier)
        if problems:
            raise errors.incompatible_schema(problems)
        all_versions = self.state.subjects.get(subject, {})
        version = max(all_versions, default=0) + 1
        schema_id = self._id_for(subject, req, parsed)
        value = SchemaValue(
            subject, version, schema_id, req.schema_type, req.schema, req.references,
            False, req.metadata, req.rule_set,
        )
        await self.store.append(self._with_counter(SchemaKey(subject, version), value))
        return value

    def _with_counter(self, key: SchemaKey, value: SchemaValue) -> list[tuple[Key, Value | None]]:
        """The SCHEMA record, the id counter when the record takes an id above every one
        handed out so far (in one transaction: the counter is never behind the records), and
        Confluent's CONTEXT record with the first schema of a context other than the default."""
        records: list[tuple[Key, Value | None]] = [(key, value)]
        context = context_of(value.subject)
        if value.id > self.state.max_id(context):
            records.append((IdCounterKey(context), IdCounterValue(value.id)))
        if context != "." and context not in self.state.recorded_contexts:
            # Confluent's reader lists (and resolves ids through) the contexts these name.
            records.append((ContextKey(context), ContextValue(context)))
        return records

    def _index_ids(self, limit: int | None = None) -> bool:
        """Take up to ``limit`` more ids into the content index (all without); True when it has
        caught up with the state. Each stored id is parsed once; ids whose schema no longer
        parses (a format that changed its mind) are left out and never matched."""
        order = self.state.id_order
        end = len(order) if limit is None else min(len(order), self._indexed + limit)
        for context, schema_id in order[self._indexed:end]:
            sv = self.state.by_id(schema_id, context)
            if sv is None:
                continue
            try:
                canonical = self._parse_stored(sv).canonical()
            except errors.RegistryError:
                continue
            key = (context, sv.schema_type, sv.references, canonical,
                   _extras(sv.metadata, sv.rule_set))
            current = self._ids_by_content.get(key)
            if current is None or not self.state.holds(current, context):
                self._ids_by_content[key] = schema_id
        self._indexed = end
        return end == len(order)

    async def warm(self, chunk: int = 256) -> None:
        """Build the content index in the background after a start, a chunk at a time between
        requests, so the first register does not parse every stored schema itself."""
        try:
            while not self._index_ids(chunk):
                await asyncio.sleep(0)
        except Exception:  # the register that needs the index meets it at the error boundary
            _log.exception("indexing the stored schemas failed")

    def _id_for(self, subject: str, req: SchemaRequest, parsed: ParsedSchema) -> int:
        """The id of the same schema under any subject of the subject's context, else the
        context's next (never reused)."""
        self._index_ids()
        context = context_of(subject)
        found = self._ids_by_content.get((
            context, req.schema_type, req.references, parsed.canonical(),
            _extras(req.metadata, req.rule_set),
        ))
        if found is not None and self.state.holds(found, context):
            return found
        return int(self.state.max_id(context)) + 1

    async def _register_import(
        self, subject: str, req: SchemaRequest, parsed: ParsedSchema
    ) -> SchemaValue:
        if req.id is None:
            raise errors.operation_not_permitted(
                f"Subject {subject} is in import mode: the request must give an id"
            )
        holder = self.state.by_id(req.id, context_of(subject))
        if holder is not None:
            same = holder.schema_type == req.schema_type and holder.references == req.references
            if not same or self._parse_stored(holder).canonical() != parsed.canonical():
                raise errors.RegistryError(
                    422, 42207, f"Overwrite new schema with id {req.id} is not permitted."
                )
        versions = self.state.subjects.get(subject, {})
        version = req.version if req.version is not None else max(versions, default=0) + 1
        if version in versions:
            current = versions[version]
            if current.id == req.id:
                return current
            raise errors.RegistryError(
                422, 42207, f"Overwrite of version {version} of subject {subject} is not permitted."
            )
        value = SchemaValue(
            subject, version, req.id, req.schema_type, req.schema, req.references, False,
            req.metadata, req.rule_set,
        )
        await self.store.append(self._with_counter(SchemaKey(subject, version), value))
        return value

    # -- compatibility -------------------------------------------------------------------------

    async def test_compatibility(
        self, subject: str, version: str | None, req: SchemaRequest, *, normalize: bool | None
    ) -> list[str]:
        """Why ``req`` breaks the subject's level against ``version`` (or, when ``version`` is
        ``None``, against the versions the level names)."""
        await self.store.read_to_end()
        req, parsed = self._prepare(subject, req, normalize)
        level = self.compatibility_level(subject)
        fmt = self._format(req.schema_type)
        if version is None:
            earlier = [(f"version {sv.version}", self._parse_stored(sv))
                       for sv in self.state.versions(subject)]
            return check(level, fmt, parsed, earlier)
        number = parse_version(version)
        if number is None and not self.state.versions(subject):
            # Nothing to be incompatible with, as Confluent answers for a new subject.
            if subject in self.state.subjects:
                return []
            raise errors.subject_not_found(subject)
        old = self.get_version(subject, version)
        return check_against(
            level, fmt, parsed, self._parse_stored(old), f"version {old.version}"
        )

    # -- deletes -------------------------------------------------------------------------------

    async def delete_version(self, subject: str, version: str, *, permanent: bool) -> int:
        async with self.store.writing():
            self._check_writable(subject)
            number = parse_version(version)
            if subject not in self.state.subjects:
                raise errors.subject_not_found(subject)
            if number is None:
                live = self.state.versions(subject)
                if not live:
                    raise errors.subject_not_found(subject)
                sv = live[-1]
            else:
                found = self.state.subjects[subject].get(number)
                if found is None:
                    raise errors.version_not_found(subject, version)
                sv = found
            if self.state.referenced_by(subject, sv.version):
                raise errors.reference_exists(
                    f"One or more references exist to the schema {{subject={subject},"
                    f"version={sv.version}}}."
                )
            if not permanent and self.state.associations_of(subject) and not any(
                other.version != sv.version for other in self.state.versions(subject)
            ):
                # Confluent: an associated subject keeps at least one live version.
                raise errors.no_active_subject_version(subject)
            key = SchemaKey(subject, sv.version)
            if permanent:
                if not sv.deleted:
                    raise errors.version_not_soft_deleted(subject, sv.version)
                await self.store.append([(key, None)])
            else:
                if sv.deleted:
                    raise errors.version_soft_deleted(subject, sv.version)
                value = SchemaValue(
                    sv.subject, sv.version, sv.id, sv.schema_type, sv.schema, sv.references,
                    True, sv.metadata, sv.rule_set, sv.md5,
                )
                await self.store.append([(key, value)])
            return int(sv.version)

    async def delete_subject(self, subject: str, *, permanent: bool) -> list[int]:
        async with self.store.writing():
            self._check_writable(subject)
            all_versions = self.state.versions(subject, deleted=True)
            if not all_versions:
                raise errors.subject_not_found(subject)
            if self.state.associations_of(subject):
                # Confluent: delete the association first (or with cascadeLifecycle).
                raise errors.association_for_subject_exists(subject)
            live = [sv for sv in all_versions if not sv.deleted]
            for sv in live if not permanent else all_versions:
                if self.state.referenced_by(subject, sv.version):
                    raise errors.reference_exists(
                        f"One or more references exist to the schema {{subject={subject},"
                        f"version={sv.version}}}."
                    )
            records: list[tuple[Key, Value | None]]
            if permanent:
                if live:
                    raise errors.subject_not_soft_deleted(subject)
                records = [(SchemaKey(subject, sv.version), None) for sv in all_versions]
                # The subject's settings go with it.
                if subject in self.state.configs:
                    records.append((ConfigKey(subject), None))
                if subject in self.state.modes:
                    records.append((ModeKey(subject), None))
                await self.store.append(records)
                return [sv.version for sv in all_versions]
            if not live:
                raise errors.subject_soft_deleted(subject)
            records = [(DeleteSubjectKey(subject),
                        DeleteSubjectValue(subject, all_versions[-1].version))]
            await self.store.append(records)
            return [sv.version for sv in live]

    def subject_removal(self, subject: str) -> list[tuple[Key, Value | None]]:
        """The records that soft-delete and then hard-delete every version of ``subject`` with
        its settings (an association's STRONG lifecycle ending); the caller holds
        ``store.writing()`` and appends them. A version other schemas reference: 42206."""
        all_versions = self.state.versions(subject, deleted=True)
        for sv in all_versions:
            if self.state.referenced_by(subject, sv.version):
                raise errors.reference_exists(
                    f"One or more references exist to the schema {{subject={subject},"
                    f"version={sv.version}}}."
                )
        if not all_versions:
            return []
        records: list[tuple[Key, Value | None]] = [
            (DeleteSubjectKey(subject), DeleteSubjectValue(subject, all_versions[-1].version))
        ]
        records += [(SchemaKey(subject, sv.version), None) for sv in all_versions]
        if subject in self.state.configs:
            records.append((ConfigKey(subject), None))
        if subject in self.state.modes:
            records.append((ModeKey(subject), None))
        return records

    async def delete_context(self, context: str) -> None:
        """Forget a context that holds no subject, deleted ones included (42211 otherwise):
        its CONTEXT record is tombstoned, as Confluent does."""
        name = context.strip(":")
        name = name if name.startswith(".") else f".{name}"
        async with self.store.writing():
            if any(context_of(s) == name for s in self.state.subjects):
                raise errors.context_not_empty(name)
            if name in self.state.recorded_contexts:
                await self.store.append([(ContextKey(name), None)])

    # -- config and mode -----------------------------------------------------------------------

    def get_config(self, subject: str | None, *, default_to_global: bool) -> dict[str, Any]:
        config = self.state.configs.get(subject)
        if subject is not None and (config is None or not config.compatibility_level):
            if not default_to_global:
                raise errors.subject_compatibility_not_configured(subject)
            return {"compatibilityLevel": self.compatibility_level(None)}
        if config is None or not config.compatibility_level:
            return {"compatibilityLevel": DEFAULT_LEVEL}
        body: dict[str, Any] = {"compatibilityLevel": config.compatibility_level}
        if config.normalize is not None:
            body["normalize"] = config.normalize
        return body

    async def put_config(self, subject: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
        raw = body.get("compatibility", body.get("compatibilityLevel"))
        level = normalize_level(raw)
        if level is None:
            raise errors.invalid_compatibility_level(raw)
        normalize = body.get("normalize")
        if normalize is not None and not isinstance(normalize, bool):
            raise errors.bad_request(f"normalize must be true or false, not {normalize!r}")
        async with self.store.writing():
            self._check_writable(subject)
            await self.store.append([(ConfigKey(subject), ConfigValue(level, normalize))])
        answer: dict[str, Any] = {"compatibility": level}
        if normalize is not None:
            answer["normalize"] = normalize
        return answer

    async def delete_config(self, subject: str | None) -> dict[str, Any]:
        async with self.store.writing():
            self._check_writable(subject)
            previous = self.compatibility_level(subject)
            if subject is not None and subject not in self.state.configs:
                if subject not in self.state.subjects:
                    raise errors.subject_not_found(subject)
            await self.store.append([(ConfigKey(subject), None)])
        return {"compatibilityLevel": previous}

    def get_mode(self, subject: str | None, *, default_to_global: bool) -> dict[str, str]:
        if subject is not None and subject not in self.state.modes:
            if not default_to_global:
                raise errors.subject_mode_not_configured(subject)
        return {"mode": self.mode(subject)}

    async def put_mode(self, subject: str | None, body: Mapping[str, Any], *, force: bool) -> dict[str, str]:
        raw = body.get("mode")
        mode = raw.upper() if isinstance(raw, str) else None
        if mode not in MODES:
            raise errors.invalid_mode(raw)
        async with self.store.writing():
            if mode == "IMPORT" and not force:
                # Imported ids could collide with ids already handed out.
                if subject is None and any(True for _ in self.state.subject_names(deleted=True)):
                    raise errors.operation_not_permitted(
                        "Cannot import since found existing subjects"
                    )
                if subject is not None and self.state.versions(subject, deleted=True):
                    raise errors.operation_not_permitted(
                        f"Cannot import since found existing subject {subject}"
                    )
            await self.store.append([(ModeKey(subject), ModeValue(mode))])
        return {"mode": mode}

    async def delete_mode(self, subject: str | None) -> dict[str, str]:
        async with self.store.writing():
            previous = self.mode(subject)
            if subject is not None and subject not in self.state.modes:
                if subject not in self.state.subjects:
                    raise errors.subject_not_found(subject)
            await self.store.append([(ModeKey(subject), None)])
        return {"mode": previous}


def _extras(metadata: Any, rule_set: Any) -> str:
    """Metadata and rules as one comparable text: schemas differing in them get different ids."""
    return json.dumps([metadata, rule_set], sort_keys=True)
