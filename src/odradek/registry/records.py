"""The ``_schemas`` topic's records: Confluent's key and value format, JSON both.

Keys (one JSON object, field order as Confluent writes them)::

    {"keytype": "SCHEMA", "subject": S, "version": V, "magic": 1}
    {"keytype": "CONFIG", "subject": S or null, "magic": 0}     null subject: the global config
    {"keytype": "MODE", "subject": S or null, "magic": 0}
    {"keytype": "DELETE_SUBJECT", "subject": S, "magic": 0}
    {"keytype": "NOOP", "magic": 0}
    {"keytype": "NOOP", "magic": 0, "odradek": "id-counter"}      odradek's own, see below
    {"keytype": "CONTEXT", "tenant": "default", "context": C, "magic": 0}
    {"keytype": "ASSOC", "tenant": "default", "resourceName": N, "resourceNamespace": NS,
     "resourceType": T, "associationType": A, "subject": S, "magic": 0}
    {"keytype": "NOOP", "magic": 0, "odradek": "association", "resourceId": R}   read only

Values: a SCHEMA value is ``{"subject", "version", "id", "schemaType" (absent for AVRO),
"schema", "references": [{"name", "subject", "version"}], "deleted", "metadata", "ruleSet"}``
(the last two only when set); a soft delete rewrites it with ``deleted: true``. A CONFIG value is
``{"compatibilityLevel": LEVEL}`` (plus ``normalize`` when set), a MODE value ``{"mode": MODE}``,
a DELETE_SUBJECT value ``{"subject": S, "version": V}``: every version up to V is soft-deleted.
A null value (tombstone) is a hard delete of a SCHEMA key, or removes a subject's CONFIG or
MODE. Keys of a type this module does not know decode to ``None`` and are skipped, as Confluent
skips them, so a topic written by a newer registry still loads.

The id counter: ``{"maxId": N}`` under the NOOP key marked ``"odradek": "id-counter"`` (with
``"context": C`` for a context other than the default ``.``: ids are numbered per context, as
Confluent numbers them), written in the same transaction as a SCHEMA record that takes a new id. Ids are allocated above the
highest id any SCHEMA record carries, but a hard-deleted schema's records go once compaction
drops its tombstone; the counter, never deleted, keeps its id from being handed out again.
Confluent's key types have no such record (its ids come from the SCHEMA values alone), so it is
a NOOP key: Confluent's reader skips every NOOP key without looking at the value (and one it
cannot map logs an error and is skipped), Karapace skips NOOP keys too, and the extra field
makes it a key of its own, never replaced by the NOOPs Confluent writes.

Associations (a resource such as a Kafka topic linked to a subject per association type, the
``/associations`` API) are Confluent's ASSOC records, one per association, keyed by the
resource's name, namespace and type, the association type and the subject; the value
``{"guid", "tenant", "resourceName", "resourceNamespace", "resourceId", "resourceType",
"associationType", "subject", "lifecycle", "frozen"}``; a tombstone removes the association.
Before odradek wrote those it kept one record per resource under a NOOP key marked
``"odradek": "association"`` (value ``{"resourceName", "resourceNamespace", "resourceId",
"resourceType", "associations": [{"subject", "associationType", "guid", "lifecycle",
"frozen"}]}``); such records are still read. A CONTEXT record (value ``{"tenant",
"context"}``) is written with the first schema of each context other than the default, as
Confluent writes it (its reader lists contexts from these). Keys and values of another tenant
are skipped.

Pure values and functions; no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AssocKey",
    "AssocValue",
    "Association",
    "AssociationKey",
    "AssociationValue",
    "ContextKey",
    "ContextValue",
    "DEFAULT_TENANT",
    "ConfigKey",
    "ConfigValue",
    "DeleteSubjectKey",
    "DeleteSubjectValue",
    "IdCounterKey",
    "IdCounterValue",
    "Key",
    "ModeKey",
    "ModeValue",
    "NoopKey",
    "Reference",
    "SchemaKey",
    "SchemaValue",
    "Value",
    "RecordFormatError",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
    "schema_guid",
]


@dataclass(frozen=True, slots=True)
class Reference:
    """A schema's use of another subject's version, under ``name`` (an Avro full name, a
    ``.proto`` import path, a JSON ``$ref`` URL)."""

    name: str
    subject: str
    version: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "subject": self.subject, "version": self.version}


@dataclass(frozen=True, slots=True)
class SchemaKey:
    subject: str
    version: int


@dataclass(frozen=True, slots=True)
class ConfigKey:
    subject: str | None


@dataclass(frozen=True, slots=True)
class ModeKey:
    subject: str | None


@dataclass(frozen=True, slots=True)
class DeleteSubjectKey:
    subject: str


@dataclass(frozen=True, slots=True)
class NoopKey:
    pass


@dataclass(frozen=True, slots=True)
class IdCounterKey:
    """The counter of one context's ids (``.``, the default context, unless named)."""

    context: str = "."


@dataclass(frozen=True, slots=True)
class AssociationKey:
    """The resource-wide record odradek wrote before it wrote Confluent's ASSOC records: read
    (a topic written then still loads), never written."""

    resource_id: str


@dataclass(frozen=True, slots=True)
class AssocKey:
    """Confluent's ASSOC key: one association of a resource (its id is in the value)."""

    resource_name: str
    resource_namespace: str
    resource_type: str
    association_type: str
    subject: str


@dataclass(frozen=True, slots=True)
class ContextKey:
    """Confluent's CONTEXT key: a context other than the default exists."""

    context: str


Key = (
    SchemaKey | ConfigKey | ModeKey | DeleteSubjectKey | NoopKey | IdCounterKey | AssociationKey
    | AssocKey | ContextKey
)

#: The tenant Confluent's records carry on a registry without multi-tenancy.
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class SchemaValue:
    """One version of one subject."""

    subject: str
    version: int
    id: int
    schema_type: str
    schema: str
    references: tuple[Reference, ...] = ()
    deleted: bool = False
    metadata: Any = field(default=None, compare=False)
    rule_set: Any = field(default=None, compare=False)
    #: Confluent 8 writes the schema's fingerprint (base64 MD5), which its guid is made from.
    md5: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ConfigValue:
    compatibility_level: str | None
    normalize: bool | None = None


@dataclass(frozen=True, slots=True)
class ModeValue:
    mode: str


@dataclass(frozen=True, slots=True)
class DeleteSubjectValue:
    subject: str
    version: int


@dataclass(frozen=True, slots=True)
class IdCounterValue:
    """The highest schema id ever handed out."""

    max_id: int


@dataclass(frozen=True, slots=True)
class Association:
    """One subject linked to a resource under one association type (``key`` or ``value``)."""

    subject: str
    association_type: str
    guid: str
    lifecycle: str | None = None
    frozen: bool = False

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"subject": self.subject, "associationType": self.association_type,
                               "guid": self.guid}
        if self.lifecycle is not None:
            obj["lifecycle"] = self.lifecycle
        obj["frozen"] = self.frozen
        return obj


@dataclass(frozen=True, slots=True)
class AssociationValue:
    """A resource and every association it has."""

    resource_name: str
    resource_namespace: str
    resource_id: str
    resource_type: str
    associations: tuple[Association, ...]


@dataclass(frozen=True, slots=True)
class AssocValue:
    """Confluent's ASSOC value: one association, with its resource."""

    resource_name: str
    resource_namespace: str
    resource_id: str
    resource_type: str
    association: Association

    @property
    def key(self) -> AssocKey:
        return AssocKey(self.resource_name, self.resource_namespace, self.resource_type,
                        self.association.association_type, self.association.subject)


@dataclass(frozen=True, slots=True)
class ContextValue:
    context: str


Value = (
    SchemaValue | ConfigValue | ModeValue | DeleteSubjectValue | IdCounterValue | AssociationValue
    | AssocValue | ContextValue
)


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_key(key: Key) -> bytes:
    match key:
        case SchemaKey(subject, version):
            return _dumps({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})
        case ConfigKey(subject):
            return _dumps({"keytype": "CONFIG", "subject": subject, "magic": 0})
        case ModeKey(subject):
            return _dumps({"keytype": "MODE", "subject": subject, "magic": 0})
        case DeleteSubjectKey(subject):
            return _dumps({"keytype": "DELETE_SUBJECT", "subject": subject, "magic": 0})
        case NoopKey():
            return _dumps({"keytype": "NOOP", "magic": 0})
        case IdCounterKey(context):
            obj: dict[str, Any] = {"keytype": "NOOP", "magic": 0, "odradek": "id-counter"}
            if context != ".":
                obj["context"] = context
            return _dumps(obj)
        case AssociationKey(resource_id):
            return _dumps({"keytype": "NOOP", "magic": 0, "odradek": "association",
                           "resourceId": resource_id})
        case AssocKey(name, namespace, resource_type, association_type, subject):
            return _dumps({"keytype": "ASSOC", "tenant": DEFAULT_TENANT, "resourceName": name,
                           "resourceNamespace": namespace, "resourceType": resource_type,
                           "associationType": association_type, "subject": subject,
                           "magic": 0})
        case ContextKey(context):
            return _dumps({"keytype": "CONTEXT", "tenant": DEFAULT_TENANT, "context": context,
                           "magic": 0})
    raise TypeError(f"not a key: {key!r}")


def encode_value(value: Value | None) -> bytes | None:
    match value:
        case None:
            return None
        case SchemaValue():
            obj: dict[str, Any] = {
                "subject": value.subject,
                "version": value.version,
                "id": value.id,
            }
            if value.schema_type != "AVRO":
                obj["schemaType"] = value.schema_type
            obj["schema"] = value.schema
            obj["references"] = [r.to_json() for r in value.references]
            obj["deleted"] = value.deleted
            if value.metadata is not None:
                obj["metadata"] = value.metadata
            if value.rule_set is not None:
                obj["ruleSet"] = value.rule_set
            if value.md5 is not None:
                obj["md5"] = value.md5
            return _dumps(obj)
        case ConfigValue(level, normalize):
            obj = {"compatibilityLevel": level}
            if normalize is not None:
                obj["normalize"] = normalize
            return _dumps(obj)
        case ModeValue(mode):
            return _dumps({"mode": mode})
        case DeleteSubjectValue(subject, version):
            return _dumps({"subject": subject, "version": version})
        case IdCounterValue(max_id):
            return _dumps({"maxId": max_id})
        case AssociationValue():
            return _dumps({
                "resourceName": value.resource_name,
                "resourceNamespace": value.resource_namespace,
                "resourceId": value.resource_id,
                "resourceType": value.resource_type,
                "associations": [a.to_json() for a in value.associations],
            })
        case AssocValue():
            a = value.association
            obj = {
                "guid": a.guid,
                "tenant": DEFAULT_TENANT,
                "resourceName": value.resource_name,
                "resourceNamespace": value.resource_namespace,
                "resourceId": value.resource_id,
                "resourceType": value.resource_type,
                "associationType": a.association_type,
                "subject": a.subject,
                "lifecycle": a.lifecycle or "WEAK",
                "frozen": a.frozen,
            }
            return _dumps(obj)
        case ContextValue(context):
            return _dumps({"tenant": DEFAULT_TENANT, "context": context})
    raise TypeError(f"not a value: {value!r}")


class RecordFormatError(ValueError):
    """A key or value that is not JSON of the expected shape."""


def decode_key(data: bytes | None) -> Key | None:
    """The key, or ``None`` for a key type this registry does not use."""
    if data is None:
        raise RecordFormatError("record without a key")
    try:
        obj = json.loads(data)
        keytype = obj["keytype"]
        match keytype:
            case "SCHEMA":
                return SchemaKey(obj["subject"], int(obj["version"]))
            case "CONFIG":
                return ConfigKey(obj.get("subject"))
            case "MODE":
                return ModeKey(obj.get("subject"))
            case "DELETE_SUBJECT":
                return DeleteSubjectKey(obj["subject"])
            case "NOOP":
                match obj.get("odradek"):
                    case "id-counter":
                        return IdCounterKey(str(obj.get("context", ".")))
                    case "association":
                        return AssociationKey(str(obj["resourceId"]))
                return NoopKey()
            case "ASSOC":
                if obj.get("tenant", DEFAULT_TENANT) != DEFAULT_TENANT:
                    return None  # another tenant's, as Confluent's multi-tenant registries write
                return AssocKey(str(obj["resourceName"]), str(obj["resourceNamespace"]),
                                str(obj["resourceType"]), str(obj["associationType"]),
                                str(obj["subject"]))
            case "CONTEXT":
                if obj.get("tenant", DEFAULT_TENANT) != DEFAULT_TENANT:
                    return None
                return ContextKey(str(obj["context"]))
            case _:
                return None
    except (ValueError, KeyError, TypeError) as e:
        raise RecordFormatError(f"bad key {data[:200]!r}: {e}") from None


def decode_value(key: Key, data: bytes | None) -> Value | None:
    """The value of ``key``'s record; ``None`` for a tombstone (and for NOOP)."""
    if data is None or isinstance(key, NoopKey):
        return None
    try:
        obj = json.loads(data)
        match key:
            case SchemaKey():
                return SchemaValue(
                    subject=obj["subject"],
                    version=int(obj["version"]),
                    id=int(obj["id"]),
                    schema_type=obj.get("schemaType") or "AVRO",
                    schema=obj["schema"],
                    references=tuple(
                        Reference(r["name"], r["subject"], int(r["version"]))
                        for r in obj.get("references") or ()
                    ),
                    deleted=bool(obj.get("deleted", False)),
                    metadata=obj.get("metadata"),
                    rule_set=obj.get("ruleSet"),
                    md5=obj.get("md5") if isinstance(obj.get("md5"), str) else None,
                )
            case ConfigKey():
                return ConfigValue(obj.get("compatibilityLevel"), obj.get("normalize"))
            case ModeKey():
                return ModeValue(obj["mode"])
            case DeleteSubjectKey():
                return DeleteSubjectValue(obj["subject"], int(obj["version"]))
            case IdCounterKey():
                return IdCounterValue(int(obj["maxId"]))
            case AssociationKey():
                return AssociationValue(
                    resource_name=str(obj["resourceName"]),
                    resource_namespace=str(obj["resourceNamespace"]),
                    resource_id=str(obj["resourceId"]),
                    resource_type=str(obj["resourceType"]),
                    associations=tuple(
                        Association(str(a["subject"]), str(a["associationType"]),
                                    str(a["guid"]), a.get("lifecycle"), bool(a.get("frozen")))
                        for a in obj["associations"]
                    ),
                )
            case AssocKey():
                return AssocValue(
                    resource_name=str(obj["resourceName"]),
                    resource_namespace=str(obj["resourceNamespace"]),
                    resource_id=str(obj["resourceId"]),
                    resource_type=str(obj["resourceType"]),
                    association=Association(
                        str(obj["subject"]), str(obj["associationType"]), str(obj["guid"]),
                        str(obj.get("lifecycle") or "WEAK"), bool(obj.get("frozen", False)),
                    ),
                )
            case ContextKey(context):
                return ContextValue(str(obj.get("context", context)))
    except (ValueError, KeyError, TypeError) as e:
        raise RecordFormatError(f"bad value for {key}: {data[:200]!r}: {e}") from None
    return None


def schema_guid(sv: SchemaValue) -> str:
    """The schema's guid as Confluent computes it: the UUID whose 16 bytes are the MD5 of the
    schema text (UTF-8), each reference's name, subject and version (4 bytes, big-endian), then,
    each after a 1 byte when present, the metadata's tags, properties and sensitive names and the
    rule set's rules and ``enableAt``, maps and sets in sorted order. The stored ``md5`` wins."""
    if sv.md5 is not None:
        try:
            digest = base64.b64decode(sv.md5, validate=True)
            if len(digest) == 16:
                return str(uuid.UUID(bytes=digest))
        except ValueError:
            pass
    md = hashlib.md5(sv.schema.encode(), usedforsecurity=False)

    def text(value: Any) -> None:
        if value is not None:
            md.update(str(value).encode())

    for ref in sv.references:
        text(ref.name)
        text(ref.subject)
        md.update(ref.version.to_bytes(4, "big", signed=True))
    if isinstance(sv.metadata, dict):
        md.update(b"\x01")
        for key, values in sorted((sv.metadata.get("tags") or {}).items()):
            text(key)
            for v in sorted(values or ()):
                text(v)
        for key, value in sorted((sv.metadata.get("properties") or {}).items()):
            text(key)
            text(value)
        for name in sorted(sv.metadata.get("sensitive") or ()):
            text(name)
    if isinstance(sv.rule_set, dict):
        md.update(b"\x01")
        for kind in ("migrationRules", "domainRules", "encodingRules"):
            for rule in sv.rule_set.get(kind) or ():
                for name in ("name", "doc", "kind", "mode", "type"):
                    text(rule.get(name))
                for tag in sorted(rule.get("tags") or ()):
                    text(tag)
                for key, value in sorted((rule.get("params") or {}).items()):
                    text(key)
                    text(value)
                for name in ("expr", "onSuccess", "onFailure"):
                    text(rule.get(name))
                if rule.get("disabled"):
                    md.update(b"\x01")
        text(sv.rule_set.get("enableAt"))
    return str(uuid.UUID(bytes=md.digest()))
