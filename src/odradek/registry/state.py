"""The registry's state as the ``_schemas`` topic describes it; :meth:`RegistryState.apply` is
its only mutator.

Every instance builds this by replaying the topic from the start, and keeps it current by
applying each record as its reader sees it, its own writes included (they change nothing until
they come back from the log). So loading after a restart and serving live are the same code.

Owned by the registry's event loop; not thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator

from odradek.registry.records import (
    Association,
    AssociationKey,
    AssociationValue,
    AssocKey,
    AssocValue,
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
    NoopKey,
    SchemaKey,
    SchemaValue,
    Value,
    schema_guid,
)

__all__ = ["RegistryState", "context_of"]


def context_of(subject: str) -> str:
    """The context of a subject in Confluent's qualified syntax, ``:.ctx:name`` (``.`` for a
    subject without one)."""
    if subject.startswith(":."):
        end = subject.find(":", 2)
        if end > 0:
            return subject[1:end]
    return "."


#: Associations of a resource in the order they are listed.
_TYPE_ORDER = {"key": 0, "value": 1}


class RegistryState:
    """Subjects and their versions, schemas by id, configs and modes."""

    def __init__(self) -> None:
        self.subjects: dict[str, dict[int, SchemaValue]] = {}
        #: Every (subject, version) currently holding each id of each context: ids are
        #: numbered per context (as Confluent numbers them), so one number may name a schema in
        #: each context.
        self.id_users: dict[tuple[str, int], set[tuple[str, int]]] = {}
        #: (context, id) in the order they gained their first holder (again after losing every
        #: holder); append-only, so an index over ids can catch up from where it stopped.
        self.id_order: list[tuple[str, int]] = []
        #: Per context, the highest id any record has carried, the id counter's included (it
        #: outlives the records of hard-deleted schemas); ids are allocated above it.
        self.max_ids: dict[str, int] = {}
        #: The (context, id) holding each schema guid (Confluent's fingerprint of a schema).
        self.ids_by_guid: dict[tuple[str, str], int] = {}
        self.configs: dict[str | None, ConfigValue] = {}
        self.modes: dict[str | None, str] = {}
        #: Resources (e.g. topics) by id, with their associations to subjects.
        self.associations: dict[str, AssociationValue] = {}
        #: Contexts a CONTEXT record names (Confluent writes one per context it has seen).
        self.recorded_contexts: set[str] = set()

    # -- replay --------------------------------------------------------------------------------

    def apply(self, key: Key, value: Value | None) -> None:
        match key:
            case SchemaKey(subject, version):
                self._apply_schema(subject, version, value)
            case ConfigKey(subject):
                if isinstance(value, ConfigValue):
                    self.configs[subject] = value
                else:
                    self.configs.pop(subject, None)
            case ModeKey(subject):
                if isinstance(value, ModeValue):
                    self.modes[subject] = value.mode
                else:
                    self.modes.pop(subject, None)
            case DeleteSubjectKey(subject):
                if isinstance(value, DeleteSubjectValue):
                    versions = self.subjects.get(subject, {})
                    for v, sv in list(versions.items()):
                        if v <= value.version and not sv.deleted:
                            versions[v] = _with_deleted(sv)
            case IdCounterKey(context):
                if isinstance(value, IdCounterValue):
                    self._raise_max_id(context, value.max_id)
            case AssociationKey(resource_id):
                if isinstance(value, AssociationValue):
                    self.associations[resource_id] = value
                else:
                    self.associations.pop(resource_id, None)
            case AssocKey():
                if isinstance(value, AssocValue):
                    self._put_association(value)
                else:
                    self._drop_association(key)
            case ContextKey(context):
                if isinstance(value, ContextValue):
                    self.recorded_contexts.add(context)
                else:
                    self.recorded_contexts.discard(context)
            case NoopKey():
                pass

    def _apply_schema(self, subject: str, version: int, value: Value | None) -> None:
        context = context_of(subject)
        versions = self.subjects.setdefault(subject, {})
        old = versions.pop(version, None)
        if old is not None:
            users = self.id_users.get((context, old.id))
            if users is not None:
                users.discard((subject, version))
                if not users:
                    del self.id_users[(context, old.id)]
        if isinstance(value, SchemaValue):
            versions[version] = value
            key = (context, value.id)
            if key not in self.id_users:
                self.id_order.append(key)
            self.id_users.setdefault(key, set()).add((subject, version))
            self._raise_max_id(context, value.id)
            guid = (context, schema_guid(value))
            if (context, self.ids_by_guid.get(guid)) not in self.id_users:
                self.ids_by_guid[guid] = value.id
        elif not versions:
            del self.subjects[subject]

    def _put_association(self, value: AssocValue) -> None:
        a = value.association
        current = self.associations.get(value.resource_id)
        kept = () if current is None else tuple(
            b for b in current.associations if b.association_type != a.association_type
        )
        ordered = sorted((*kept, a), key=lambda b: _TYPE_ORDER.get(b.association_type, 99))
        self.associations[value.resource_id] = AssociationValue(
            value.resource_name, value.resource_namespace, value.resource_id,
            value.resource_type, tuple(ordered),
        )

    def _drop_association(self, key: AssocKey) -> None:
        # The key names the resource by name, namespace and type, not by id.
        for resource_id, r in list(self.associations.items()):
            if (r.resource_name, r.resource_namespace, r.resource_type) != (
                key.resource_name, key.resource_namespace, key.resource_type
            ):
                continue
            kept = tuple(
                a for a in r.associations
                if (a.association_type, a.subject) != (key.association_type, key.subject)
            )
            if not kept:
                del self.associations[resource_id]
            elif len(kept) != len(r.associations):
                self.associations[resource_id] = AssociationValue(
                    r.resource_name, r.resource_namespace, r.resource_id, r.resource_type, kept
                )

    def _raise_max_id(self, context: str, schema_id: int) -> None:
        if schema_id > self.max_ids.get(context, 0):
            self.max_ids[context] = schema_id

    # -- queries -------------------------------------------------------------------------------

    def versions(self, subject: str, *, deleted: bool = False) -> list[SchemaValue]:
        """The subject's versions in order; soft-deleted ones only when ``deleted``."""
        versions = self.subjects.get(subject, {})
        return [versions[v] for v in sorted(versions) if deleted or not versions[v].deleted]

    def subject_names(self, *, deleted: bool = False) -> Iterator[str]:
        for subject, versions in sorted(self.subjects.items()):
            if deleted or any(not sv.deleted for sv in versions.values()):
                yield subject

    def contexts(self) -> list[str]:
        """The default context ``.`` and every context a subject names (``:.ctx:subject``)."""
        found = {context_of(subject) for subject in self.subjects} | self.recorded_contexts
        return sorted(found | {"."})

    def max_id(self, context: str = ".") -> int:
        """The highest id the context has handed out; its next is one above."""
        return self.max_ids.get(context, 0)

    def holds(self, schema_id: int, context: str = ".") -> bool:
        return (context, schema_id) in self.id_users

    def by_id(self, schema_id: int, context: str = ".") -> SchemaValue | None:
        """One version holding the context's id (they all carry the same schema), live ones
        first."""
        users = self.id_users.get((context, schema_id))
        if not users:
            return None
        found = [self.subjects[s][v] for s, v in sorted(users)]
        live = [sv for sv in found if not sv.deleted]
        return (live or found)[0]

    def by_guid(self, guid: str) -> SchemaValue | None:
        """The schema with that guid: in the default context first, else in any context
        (Confluent's order)."""
        for context in ["."] + [c for c in self.contexts() if c != "."]:
            schema_id = self.ids_by_guid.get((context, guid))
            if schema_id is not None:
                found = self.by_id(schema_id, context)
                if found is not None:
                    return found
        return None

    def ids_for_guid(self, guid: str) -> list[tuple[str, int]]:
        """(context, id) of every context holding a schema with that guid."""
        return sorted(
            (context, schema_id)
            for (context, g), schema_id in self.ids_by_guid.items()
            if g == guid and self.holds(schema_id, context)
        )

    def users_of(
        self, schema_id: int, *, deleted: bool = False, context: str = "."
    ) -> list[SchemaValue]:
        users = self.id_users.get((context, schema_id), set())
        found = [self.subjects[s][v] for s, v in sorted(users)]
        return [sv for sv in found if deleted or not sv.deleted]

    def context_holding(self, schema_id: int, subject: str | None) -> str:
        """The context an id is looked up in, as Confluent resolves it: a qualified subject's
        own; for an unqualified subject the default context, else the first other context
        holding the id; without a subject the default context."""
        if subject:
            context = context_of(subject)
            if context != "." or self.holds(schema_id, "."):
                return context
            for other in self.contexts():
                if self.holds(schema_id, other):
                    return other
        return "."

    def associations_of(self, subject: str) -> list[tuple[AssociationValue, Association]]:
        """Every association naming ``subject``, with its resource."""
        return [
            (resource, a)
            for resource in self.associations.values()
            for a in resource.associations
            if a.subject == subject
        ]

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of live schemas whose references name this subject's version."""
        ids = {
            sv.id
            for versions in self.subjects.values()
            for sv in versions.values()
            if not sv.deleted
            and any(r.subject == subject and r.version == version for r in sv.references)
        }
        return sorted(ids)


def _with_deleted(sv: SchemaValue) -> SchemaValue:
    return SchemaValue(
        sv.subject, sv.version, sv.id, sv.schema_type, sv.schema, sv.references, True,
        sv.metadata, sv.rule_set, sv.md5,
    )
