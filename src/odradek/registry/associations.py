"""The ``/associations`` API: a resource (a Kafka topic, say: its name, namespace (the cluster),
id and type) linked to one subject per association type, ``key`` or ``value``; the serializers
of confluent-kafka 2.16 look a topic's subject up here before falling back to a naming strategy.

Each resource is one ``_schemas`` record (:class:`~odradek.registry.records.AssociationKey`),
written under the store's write lock like every other write and applied when it comes back
from the log, so a restart rebuilds the associations with the rest of the state.

Owned by the registry's event loop, like the :class:`~odradek.registry.service.SchemaRegistry`
it works on.
"""

from __future__ import annotations

import uuid
from typing import Any

from odradek.registry import errors
from odradek.registry.records import Association, AssociationKey, AssociationValue
from odradek.registry.service import SchemaRegistry, SchemaRequest

__all__ = [
    "ASSOCIATION_TYPES",
    "LIFECYCLES",
    "WILDCARD_NAMESPACE",
    "association_json",
    "create_associations",
    "delete_associations",
    "find_associations",
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
    if a.lifecycle is not None:
        obj["lifecycle"] = a.lifecycle
    obj["frozen"] = a.frozen
    return obj


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise errors.invalid_association(f"{name} must be a non-empty string, not {value!r}")
    return value


def _types(values: list[str]) -> list[str] | None:
    """Association types from a query (repeated, or comma-separated); ``None`` for all."""
    found = [t.strip() for v in values for t in v.split(",") if t.strip()]
    for t in found:
        if t not in ASSOCIATION_TYPES:
            raise errors.invalid_association(
                f"associationType must be one of {', '.join(ASSOCIATION_TYPES)}, not {t!r}"
            )
    return found or None


class _Requested:
    """One entry of a create request's ``associations``, checked."""

    def __init__(self, entry: object) -> None:
        if not isinstance(entry, dict):
            raise errors.invalid_association(f"an association must be an object, not {entry!r}")
        self.subject = _text(entry, "subject")
        self.association_type = _text(entry, "associationType", "value")
        if self.association_type not in ASSOCIATION_TYPES:
            raise errors.invalid_association(
                f"associationType must be one of {', '.join(ASSOCIATION_TYPES)}, "
                f"not {self.association_type!r}"
            )
        lifecycle = entry.get("lifecycle")
        if lifecycle is not None and lifecycle not in LIFECYCLES:
            raise errors.invalid_association(
                f"lifecycle must be one of {', '.join(LIFECYCLES)}, not {lifecycle!r}"
            )
        self.lifecycle: str | None = lifecycle
        frozen = entry.get("frozen")
        if frozen is not None and not isinstance(frozen, bool):
            raise errors.invalid_association(f"frozen must be true or false, not {frozen!r}")
        self.frozen = bool(frozen)
        normalize = entry.get("normalize")
        if normalize is not None and not isinstance(normalize, bool):
            raise errors.invalid_association(f"normalize must be true or false, not {normalize!r}")
        self.normalize: bool | None = normalize
        schema = entry.get("schema")
        self.schema = None if schema is None else SchemaRequest.from_json(schema)


async def create_associations(registry: SchemaRegistry, body: object) -> dict[str, Any]:
    """``POST /associations``: link the resource to each subject named. An entry with a
    ``schema`` registers it under its subject first; one without needs the subject to exist.
    Asking again for an association the resource has is answered with it; one that would point
    an existing association type at another subject is refused (409)."""
    if not isinstance(body, dict):
        raise errors.bad_request("the body must be a JSON object")
    name = _text(body, "resourceName")
    namespace = _text(body, "resourceNamespace")
    resource_id = _text(body, "resourceId")
    resource_type = _text(body, "resourceType", _DEFAULT_RESOURCE_TYPE)
    entries = body.get("associations")
    if not isinstance(entries, list) or not entries:
        raise errors.invalid_association("associations must be a non-empty list")
    wanted = [_Requested(e) for e in entries]
    kinds = [w.association_type for w in wanted]
    if len(set(kinds)) != len(kinds):
        raise errors.invalid_association("a resource has one association of each type")
    for w in wanted:
        if w.schema is not None:
            await registry.register(w.subject, w.schema, normalize=w.normalize)
    async with registry.store.writing():
        state = registry.state
        current: AssociationValue | None = state.associations.get(resource_id)
        if current is not None and (
            (current.resource_name, current.resource_namespace, current.resource_type)
            != (name, namespace, resource_type)
        ):
            raise errors.invalid_association(
                f"resource {resource_id} is {current.resource_type} {current.resource_name} "
                f"in {current.resource_namespace}, not {resource_type} {name} in {namespace}"
            )
        have = {a.association_type: a for a in current.associations} if current else {}
        answer: list[Association] = []
        for w in wanted:
            registry._check_writable(w.subject)
            if not state.versions(w.subject):
                raise errors.subject_not_found(w.subject)
            existing = have.get(w.association_type)
            if existing is not None:
                if existing.subject != w.subject:
                    raise errors.association_exists(
                        f"resource {resource_id} already has a {w.association_type} "
                        f"association, with subject {existing.subject}"
                    )
                answer.append(existing)
                continue
            added = Association(w.subject, w.association_type, str(uuid.uuid4()),
                                w.lifecycle, w.frozen)
            have[w.association_type] = added
            answer.append(added)
        value = AssociationValue(
            name, namespace, resource_id, resource_type,
            tuple(have[t] for t in ASSOCIATION_TYPES if t in have),
        )
        if value != current:
            await registry.store.append([(AssociationKey(resource_id), value)])
    return {
        "resourceName": name,
        "resourceNamespace": namespace,
        "resourceId": resource_id,
        "resourceType": resource_type,
        "associations": [
            {k: v for k, v in a.to_json().items() if k != "guid"} for a in answer
        ],
    }


async def find_associations(
    registry: SchemaRegistry, namespace: str, name: str, *, resource_type: str | None,
    association_types: list[str],
) -> list[dict[str, Any]]:
    """``GET /associations/resources/{namespace}/{name}``: the associations of every resource
    of that name (in that namespace; ``-`` for any), of the type and association types asked
    for. No resource of that name: 404."""
    types = _types(association_types)
    await registry.store.read_to_end()
    resources = [
        r for r in registry.state.associations.values()
        if r.resource_name == name
        and (namespace == WILDCARD_NAMESPACE or r.resource_namespace == namespace)
    ]
    if not resources:
        raise errors.association_not_found(
            f"No associations found for resource {name} in namespace {namespace}"
        )
    return [
        association_json(r, a)
        for r in sorted(resources, key=lambda r: (r.resource_namespace, r.resource_id))
        if resource_type is None or r.resource_type == resource_type
        for a in r.associations
        if types is None or a.association_type in types
    ]


async def delete_associations(
    registry: SchemaRegistry, resource_id: str, *, resource_type: str | None,
    association_types: list[str],
) -> None:
    """``DELETE /associations/resources/{resource_id}``: remove the resource's associations
    of the association types asked for (all without). Nothing to remove: 404. The subjects
    stay (odradek keeps no lifecycle policy beyond storing it; ``cascadeLifecycle`` is taken
    and not acted on)."""
    types = _types(association_types)
    async with registry.store.writing():
        current = registry.state.associations.get(resource_id)
        if current is None or (resource_type is not None and current.resource_type != resource_type):
            raise errors.association_not_found(f"No associations found for resource {resource_id}")
        for a in current.associations:
            registry._check_writable(a.subject)
        kept = tuple(
            a for a in current.associations
            if types is not None and a.association_type not in types
        )
        if len(kept) == len(current.associations):
            raise errors.association_not_found(
                f"Resource {resource_id} has no {' or '.join(types or ())} association"
            )
        value = None if not kept else AssociationValue(
            current.resource_name, current.resource_namespace, current.resource_id,
            current.resource_type, kept,
        )
        await registry.store.append([(AssociationKey(resource_id), value)])
