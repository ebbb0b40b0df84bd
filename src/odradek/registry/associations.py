"""The ``/associations`` API: a resource (a Kafka topic, say: its name, namespace (the cluster),
id and type) linked to one subject per association type, ``key`` or ``value``; the serializers
of confluent-kafka 2.16 look a topic's subject up here before falling back to a naming strategy.

Each association is one ``_schemas`` record in Confluent's ASSOC format
(:class:`~odradek.registry.records.AssocKey`), written under the store's write lock like every
other write and applied when it comes back from the log, so a restart rebuilds the
associations with the rest of the state.

Lifecycles follow Confluent's server (8.3): an association is ``STRONG`` (the subject belongs
to the resource: created with a schema, frozen, deleted with the association when the delete
asks for ``cascadeLifecycle``) or ``WEAK`` (the resource uses a subject that lives on its own);
a subject has either one STRONG association or any number of WEAK ones, a subject with an
association is not deleted, and a frozen association is deleted only with ``cascadeLifecycle``.
Odradek leaves out Confluent's rule that a frozen association's subject be named
``:.<namespace>:<resource>-<type>`` (the context per cluster that Confluent Cloud uses).

Owned by the registry's event loop, like the :class:`~odradek.registry.service.SchemaRegistry`
it works on.
"""

from __future__ import annotations

import uuid
from typing import Any

from odradek.registry import errors
from odradek.registry.records import (
    Association,
    AssociationValue,
    AssocValue,
    Key,
    SchemaValue,
    Value,
)
from odradek.registry.service import SchemaRegistry, SchemaRequest

__all__ = [
    "ASSOCIATION_TYPES",
    "LIFECYCLES",
    "WILDCARD_NAMESPACE",
    "association_json",
    "create_associations",
    "delete_associations",
    "find_associations",
    "find_by_resource_id",
    "find_by_subject",
]

ASSOCIATION_TYPES = ("key", "value")
LIFECYCLES = ("STRONG", "WEAK")
#: A namespace in a lookup that matches every namespace.
WILDCARD_NAMESPACE = "-"
_DEFAULT_RESOURCE_TYPE = "topic"


def association_json(resource: AssociationValue, a: Association) -> dict[str, Any]:
    """One association as the lookup answers it (Confluent's ``Association``)."""
    obj: dict[str, Any] = {
        "subject": a.subject,
        "guid": a.guid,
        "resourceName": resource.resource_name,
        "resourceNamespace": resource.resource_namespace,
        "resourceId": resource.resource_id,
        "resourceType": resource.resource_type,
        "associationType": a.association_type,
    }
    obj["lifecycle"] = a.lifecycle or "WEAK"
    obj["frozen"] = a.frozen
    return obj


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise errors.invalid_association(name, "cannot be null or empty")
    return value


def _types(values: list[str]) -> list[str] | None:
    """Association types from a query (repeated, or comma-separated); ``None`` for all."""
    found = [t.strip() for v in values for t in v.split(",") if t.strip()]
    for t in found:
        if t not in ASSOCIATION_TYPES:
            raise errors.invalid_association(
                "associationType", f"must be either 'key' or 'value', not {t!r}"
            )
    return found or None


def _lifecycle(a: Association) -> str:
    # Records written before lifecycles were kept have none: they were never STRONG.
    return a.lifecycle or "WEAK"


class _Requested:
    """One entry of a create request's ``associations``, checked, with Confluent's defaults:
    with a schema the association is STRONG, without one WEAK, and it is frozen exactly when it
    is STRONG."""

    def __init__(self, entry: object) -> None:
        if not isinstance(entry, dict):
            raise errors.invalid_association("associations", f"must hold objects, not {entry!r}")
        subject = entry.get("subject")
        if subject is not None and (not isinstance(subject, str) or not subject):
            raise errors.invalid_association("subject", f"must be a non-empty string: {subject!r}")
        self.association_type = entry.get("associationType") or "value"
        if self.association_type not in ASSOCIATION_TYPES:
            raise errors.invalid_association(
                "associationType",
                f"must be either 'key' or 'value', not {self.association_type!r}",
            )
        lifecycle = entry.get("lifecycle")
        if lifecycle is not None and lifecycle not in LIFECYCLES:
            raise errors.invalid_association(
                "lifecycle", f"must be one of {', '.join(LIFECYCLES)}, not {lifecycle!r}"
            )
        frozen = entry.get("frozen")
        if frozen is not None and not isinstance(frozen, bool):
            raise errors.invalid_association("frozen", f"must be true or false, not {frozen!r}")
        normalize = entry.get("normalize")
        if normalize is not None and not isinstance(normalize, bool):
            raise errors.invalid_association("normalize", f"must be true or false: {normalize!r}")
        self.normalize: bool | None = normalize
        schema = entry.get("schema")
        self.schema = None if schema is None else SchemaRequest.from_json(schema)
        if self.schema is not None:
            if lifecycle == "WEAK":
                raise errors.invalid_association("lifecycle", "cannot be WEAK when schema is provided")
            if frozen is False:
                raise errors.invalid_association("frozen", "cannot be false when a schema is provided")
            lifecycle = "STRONG"
        elif lifecycle is None:
            lifecycle = "WEAK"
        if frozen is not None and frozen != (lifecycle == "STRONG"):
            raise errors.invalid_association(
                "frozen", f"association with lifecycle of {lifecycle} cannot be frozen={frozen}"
            )
        self.lifecycle: str = lifecycle
        self.frozen = lifecycle == "STRONG"
        if subject is None and lifecycle == "WEAK":
            raise errors.invalid_association("subject", "must be provided for WEAK associations")
        #: Empty when not given: the subject of the association the resource has of this type,
        #: else (STRONG) the default ``:.<namespace>:<resource>-<type>``.
        self.subject: str = subject or ""

    def same_as(self, a: Association) -> bool:
        return (a.subject, _lifecycle(a), a.frozen) == (self.subject, self.lifecycle, self.frozen)


async def create_associations(
    registry: SchemaRegistry, body: object, *, dry_run: bool = False
) -> dict[str, Any]:
    """``POST /associations``: link the resource to each subject named. A STRONG entry comes
    with its schema, registered under its subject (which then holds that schema alone); a WEAK
    one needs the subject to have a live version. Asking again for an association the resource
    has is answered with it; anything else for a type the resource has is refused (409/40903).
    ``dry_run`` checks everything (schemas' compatibility included), writes nothing and
    answers with no associations, as Confluent does."""
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a JSON object")
    name = _text(body, "resourceName")
    namespace = _text(body, "resourceNamespace")
    resource_id = _text(body, "resourceId")
    resource_type = _text(body, "resourceType", _DEFAULT_RESOURCE_TYPE)
    if resource_type != _DEFAULT_RESOURCE_TYPE:
        raise errors.invalid_association("resourceType", f"must be '{_DEFAULT_RESOURCE_TYPE}'")
    entries = body.get("associations")
    if not isinstance(entries, list) or not entries:
        raise errors.invalid_association("associations", "cannot be null or empty")
    wanted = [_Requested(e) for e in entries]
    kinds = [w.association_type for w in wanted]
    if len(set(kinds)) != len(kinds):
        raise errors.invalid_association("associationType", "may only appear once per request")
    async with registry.store.writing():
        state = registry.state
        current: AssociationValue | None = state.associations.get(resource_id)
        if current is not None and (
            (current.resource_name, current.resource_namespace, current.resource_type)
            != (name, namespace, resource_type)
        ):
            raise errors.invalid_association(
                "resourceId",
                f"{resource_id} is {current.resource_type} {current.resource_name} in "
                f"{current.resource_namespace}, not {resource_type} {name} in {namespace}",
            )
        have = {a.association_type: a for a in current.associations} if current else {}
        new: list[_Requested] = []
        for w in wanted:
            existing = have.get(w.association_type)
            default_subject = f":.{namespace}:{name}-{w.association_type}"
            if not w.subject:
                w.subject = existing.subject if existing is not None else default_subject
            if w.lifecycle == "WEAK" and w.subject == default_subject:
                raise errors.invalid_association(
                    "subject", f"WEAK associations cannot use subject '{default_subject}'"
                )
            registry._check_writable(w.subject)
            if existing is None:
                if w.frozen and registry.mode(w.subject) != "IMPORT":
                    if w.schema is None:
                        raise errors.invalid_association(
                            "schema", "schema must be provided when creating a frozen association"
                        )
                    if state.versions(w.subject) and not _holds_only(registry, w):
                        raise errors.invalid_association(
                            "frozen", "cannot create a frozen association when schemas already "
                            "exist in the subject",
                        )
                new.append(w)
            elif not w.same_as(existing) or (
                w.schema is not None and not _holds(registry, w)
            ):
                raise errors.association_exists(w.association_type, name)
        # A resource is either owned by its topic or shares subjects, for every type at once.
        lifecycles = {_lifecycle(a) for a in have.values()} | {w.lifecycle for w in wanted}
        if len(lifecycles) > 1:
            raise errors.invalid_association(
                "lifecycle", "all associations for a resource must have the same lifecycle"
            )
        for w in new:
            if w.schema is None and not state.versions(w.subject):
                raise errors.no_active_subject_version(w.subject)
            others = state.associations_of(w.subject)
            if w.lifecycle == "STRONG":
                if others:
                    raise errors.association_for_subject_exists(w.subject)
                if any(state.referenced_by(w.subject, sv.version)
                       for sv in state.versions(w.subject)):
                    raise errors.reference_exists(
                        f"Subject '{w.subject}' is referenced by other schemas"
                    )
            elif any(_lifecycle(a) == "STRONG" for _, a in others):
                raise errors.strong_association_exists(w.subject)
        if dry_run:
            for w in wanted:
                if w.schema is not None and registry.mode(w.subject) != "IMPORT":
                    problems = await registry.test_compatibility(
                        w.subject, None, w.schema, normalize=w.normalize
                    )
                    if problems:
                        raise errors.incompatible_schema(problems)
            return {"resourceName": name, "resourceNamespace": namespace,
                    "resourceId": resource_id, "resourceType": resource_type, "associations": []}
        schemas: dict[str, SchemaValue] = {}
        for w in wanted:
            if w.schema is not None and registry.mode(w.subject) != "IMPORT":
                schemas[w.association_type] = await registry.register_locked(
                    w.subject, w.schema, normalize=w.normalize
                )
        added = {
            w.association_type: Association(
                w.subject, w.association_type, str(uuid.uuid4()), w.lifecycle, w.frozen
            )
            for w in new
        }
        merged = {**have, **added}
        records: list[tuple[Key, Value | None]] = []
        for a in added.values():
            value = AssocValue(name, namespace, resource_id, resource_type, a)
            records.append((value.key, value))
        await registry.store.append(records)
    answer = []
    for w in wanted:
        a = merged[w.association_type]
        entry = {k: v for k, v in a.to_json().items() if k != "guid"}
        entry["lifecycle"] = _lifecycle(a)
        sv = schemas.get(w.association_type)
        if sv is not None:
            entry["schema"] = {"subject": sv.subject, "version": sv.version, "id": sv.id,
                               "schema": sv.schema}
        answer.append(entry)
    return {
        "resourceName": name,
        "resourceNamespace": namespace,
        "resourceId": resource_id,
        "resourceType": resource_type,
        "associations": answer,
    }


def _holds(registry: SchemaRegistry, w: _Requested) -> bool:
    """Whether a live version of the subject holds the request's schema."""
    if w.schema is None:
        return False
    req, parsed = registry._prepare(w.subject, w.schema, w.normalize)
    return registry._find_in_subject(w.subject, req, parsed) is not None


def _holds_only(registry: SchemaRegistry, w: _Requested) -> bool:
    """Whether the subject's latest version is its first and holds the request's schema: a
    frozen association may be made on such a subject (a retry of one that registered it)."""
    live = registry.state.versions(w.subject)
    return bool(live) and live[-1].version == 1 and _holds(registry, w)


def _matching(
    a: Association, types: list[str] | None, lifecycle: str | None
) -> bool:
    return (types is None or a.association_type in types) and (
        lifecycle is None or _lifecycle(a) == lifecycle
    )


def _lifecycle_filter(lifecycle: str | None) -> str | None:
    if lifecycle is not None and lifecycle not in LIFECYCLES:
        raise errors.invalid_association("lifecycle", f"must be one of {', '.join(LIFECYCLES)}")
    return lifecycle


async def find_by_resource_id(
    registry: SchemaRegistry, resource_id: str, *, resource_type: str | None,
    association_types: list[str], lifecycle: str | None = None,
) -> list[dict[str, Any]]:
    """``GET /associations/resources/{resource_id}``: that resource's associations (a list,
    empty when it has none)."""
    types, lifecycle = _types(association_types), _lifecycle_filter(lifecycle)
    await registry.store.read_to_end()
    r = registry.state.associations.get(resource_id)
    if r is None or r.resource_type != (resource_type or _DEFAULT_RESOURCE_TYPE):
        return []
    return [association_json(r, a) for a in r.associations if _matching(a, types, lifecycle)]


async def find_by_subject(
    registry: SchemaRegistry, subject: str, *, resource_type: str | None,
    association_types: list[str], lifecycle: str | None = None,
) -> list[dict[str, Any]]:
    """``GET /associations/subjects/{subject}``: every association naming the subject."""
    types, lifecycle = _types(association_types), _lifecycle_filter(lifecycle)
    await registry.store.read_to_end()
    wanted_type = resource_type or _DEFAULT_RESOURCE_TYPE
    found = sorted(
        ((r, a) for r, a in registry.state.associations_of(subject)
         if r.resource_type == wanted_type and _matching(a, types, lifecycle)),
        key=lambda ra: (ra[0].resource_name, ra[0].resource_namespace, ra[1].association_type),
    )
    return [association_json(r, a) for r, a in found]


async def find_associations(
    registry: SchemaRegistry, namespace: str, name: str, *, resource_type: str | None,
    association_types: list[str], lifecycle: str | None = None,
) -> list[dict[str, Any]]:
    """``GET /associations/resources/{namespace}/{name}``: the associations of every resource
    of that name (in that namespace; ``-`` for any), of the type, association types and
    lifecycle asked for; none is an empty list, as Confluent answers."""
    types = _types(association_types)
    if lifecycle is not None and lifecycle not in LIFECYCLES:
        raise errors.invalid_association("lifecycle", f"must be one of {', '.join(LIFECYCLES)}")
    await registry.store.read_to_end()
    wanted_type = resource_type or _DEFAULT_RESOURCE_TYPE
    resources = [
        r for r in registry.state.associations.values()
        if r.resource_name == name and r.resource_type == wanted_type
        and (namespace == WILDCARD_NAMESPACE or r.resource_namespace == namespace)
    ]
    return [
        association_json(r, a)
        for r in sorted(resources, key=lambda r: (r.resource_namespace, r.resource_id))
        for a in r.associations
        if (types is None or a.association_type in types)
        and (lifecycle is None or _lifecycle(a) == lifecycle)
    ]


async def delete_associations(
    registry: SchemaRegistry, resource_id: str, *, resource_type: str | None,
    association_types: list[str], cascade_lifecycle: bool = False, dry_run: bool = False,
) -> None:
    """``DELETE /associations/resources/{resource_id}``: remove the resource's associations
    of the association types asked for (all without); none there: 404/40410. A frozen one is
    removed only with ``cascade_lifecycle`` (else 409/40908), and then a STRONG association
    takes its subject with it: every version soft- and hard-deleted, with the subject's
    settings (not in IMPORT mode, where the subject's records come from elsewhere). All of it
    is one transaction."""
    types = _types(association_types)
    async with registry.store.writing():
        current = registry.state.associations.get(resource_id)
        wanted_type = resource_type or _DEFAULT_RESOURCE_TYPE
        if current is None or current.resource_type != wanted_type:
            raise errors.association_not_found(resource_id)
        going = [a for a in current.associations if types is None or a.association_type in types]
        if not going:
            raise errors.association_not_found(resource_id)
        for a in going:
            registry._check_writable(a.subject)
            if a.frozen and not cascade_lifecycle:
                raise errors.association_frozen(a.association_type, a.subject)
        records: list[tuple[Key, Value | None]] = [
            (AssocValue(current.resource_name, current.resource_namespace, resource_id,
                        current.resource_type, a).key, None)
            for a in going
        ]
        if cascade_lifecycle:
            for a in going:
                if _lifecycle(a) == "STRONG" and registry.mode(a.subject) != "IMPORT":
                    records += registry.subject_removal(a.subject)
        if not dry_run:
            await registry.store.append(records)
