"""The ``/associations`` API through confluent-kafka's SchemaRegistryClient: create, look up by
resource name (with and without filters), delete, rebuilt after a restart, bad input; and the
serializer finding its subject through an association."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.common.schema_registry_client import (
    AssociationCreateOrUpdateInfo,
    AssociationCreateOrUpdateRequest,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from registrykit import CT, Http, formats, read_topic

from odradek.broker.runner import BrokerThread
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration

USER = json.dumps({"type": "record", "name": "User", "fields": [{"name": "n", "type": "string"}]})


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _topic_with_subjects(client: SchemaRegistryClient) -> tuple[str, str, str, str]:
    """A topic name, its id, and a key and a value subject that exist."""
    topic, resource_id = _unique("orders"), _unique("lkc")
    key_subject, value_subject = _unique("k"), _unique("v")
    client.register_schema(key_subject, Schema(json.dumps("string"), "AVRO"))
    client.register_schema(value_subject, Schema(USER, "AVRO"))
    return topic, resource_id, key_subject, value_subject


def _request(
    topic: str, resource_id: str, *entries: tuple[str, str], namespace: str = "cluster-1"
) -> AssociationCreateOrUpdateRequest:
    return AssociationCreateOrUpdateRequest(
        resource_name=topic, resource_namespace=namespace, resource_id=resource_id,
        resource_type="topic",
        associations=[AssociationCreateOrUpdateInfo(subject=s, association_type=t)
                      for s, t in entries],
    )


def test_create_find_and_delete(registry: RegistryThread) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    topic, rid, key_subject, value_subject = _topic_with_subjects(client)
    created = client.create_association(
        _request(topic, rid, (key_subject, "key"), (value_subject, "value"))
    )
    assert (created.resource_name, created.resource_id, created.resource_type) == (
        topic, rid, "topic")
    assert [(a.subject, a.association_type) for a in created.associations or ()] == [
        (key_subject, "key"), (value_subject, "value")]

    found = client.get_associations_by_resource_name(topic, "cluster-1")
    assert [(a.subject, a.association_type, a.resource_id, a.resource_namespace, a.resource_type)
            for a in found] == [(key_subject, "key", rid, "cluster-1", "topic"),
                                (value_subject, "value", rid, "cluster-1", "topic")]
    assert all(a.guid for a in found) and found[0].guid != found[1].guid
    # Filters: association type, resource type, the wildcard namespace, paging.
    only_value = client.get_associations_by_resource_name(
        topic, "cluster-1", association_types=["value"])
    assert [a.subject for a in only_value] == [value_subject]
    both = client.get_associations_by_resource_name(
        topic, "-", resource_type="topic", association_types=["key", "value"])
    assert [a.subject for a in both] == [key_subject, value_subject]
    assert client.get_associations_by_resource_name(topic, "cluster-1", resource_type="other") == []
    paged = client.get_associations_by_resource_name(topic, "cluster-1", offset=1, limit=1)
    assert [a.subject for a in paged] == [value_subject]

    # Asking again is answered with what is there; another subject for a taken type is refused.
    again = client.create_association(_request(topic, rid, (value_subject, "value")))
    assert [a.subject for a in again.associations or ()] == [value_subject]
    with pytest.raises(SchemaRegistryError) as e:
        client.create_association(_request(topic, rid, (key_subject, "value")))
    assert (e.value.http_status_code, e.value.error_code) == (409, 40903)

    client.delete_associations(rid, association_types=["key"])
    left = client.get_associations_by_resource_name(topic, "cluster-1")
    assert [(a.subject, a.association_type) for a in left] == [(value_subject, "value")]
    with pytest.raises(SchemaRegistryError) as e:
        client.delete_associations(rid, association_types=["key"])  # nothing left to delete
    assert (e.value.http_status_code, e.value.error_code) == (404, 40410)
    client.delete_associations(rid)
    # No association for a resource name is an empty list, as Confluent answers.
    assert client.get_associations_by_resource_name(topic, "cluster-1") == []
    # The subjects outlive their associations.
    assert client.get_latest_version(value_subject).version == 1


def test_create_with_a_schema_registers_it(registry: RegistryThread) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    topic, rid, subject = _unique("t"), _unique("id"), _unique("s")
    client.create_association(AssociationCreateOrUpdateRequest(
        resource_name=topic, resource_namespace="c", resource_id=rid, resource_type="topic",
        associations=[AssociationCreateOrUpdateInfo(
            subject=subject, association_type="value", lifecycle="STRONG", frozen=True,
            schema=Schema(USER, "AVRO"))],
    ))
    assert client.get_latest_version(subject).schema.schema_str == USER
    [found] = client.get_associations_by_resource_name(topic, "c")
    assert (found.subject, found.frozen) == (subject, True)


def test_bad_input(registry: RegistryThread, http: Http) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    topic, rid, key_subject, value_subject = _topic_with_subjects(client)

    def refused(request: AssociationCreateOrUpdateRequest) -> tuple[int | None, int | None]:
        with pytest.raises(SchemaRegistryError) as e:
            client.create_association(request)
        return e.value.http_status_code, e.value.error_code

    # A WEAK association needs a live version of its subject.
    assert refused(_request(topic, rid, (_unique("missing"), "value"))) == (409, 40907)
    assert refused(_request(topic, rid, (value_subject, "header"))) == (422, 42212)
    assert refused(_request(topic, rid, (key_subject, "value"), (value_subject, "value"))) == (
        422, 42212)
    assert refused(_request(topic, rid)) == (422, 42212)  # no associations
    assert refused(AssociationCreateOrUpdateRequest(
        resource_name=topic, resource_namespace="c",
        associations=[AssociationCreateOrUpdateInfo(subject=value_subject)])) == (422, 42212)
    assert http("POST", "/associations", raw=b"{not json", content_type=CT)[0] == 400
    # Nothing was written by the refused requests.
    assert client.get_associations_by_resource_name(topic, "-") == []
    with pytest.raises(SchemaRegistryError) as e:
        client.delete_associations(_unique("unknown"))
    assert (e.value.http_status_code, e.value.error_code) == (404, 40410)
    with pytest.raises(SchemaRegistryError) as e:
        client.get_associations_by_resource_name(topic, "-", association_types=["both"])
    assert (e.value.http_status_code, e.value.error_code) == (422, 42212)
    # A resource id keeps its name: another name under the same id is refused.
    client.create_association(_request(topic, rid, (value_subject, "value")))
    assert refused(_request(_unique("other"), rid, (key_subject, "key"))) == (422, 42212)


def test_the_serializer_finds_its_subject_through_the_association(
    registry: RegistryThread,
) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    topic, rid, subject = _unique("payments"), _unique("lkc"), _unique("payments-subject")
    schema_id = client.register_schema(subject, Schema(USER, "AVRO"))
    client.create_association(_request(topic, rid, (subject, "value")))
    # confluent-kafka 2.16's default strategy looks the topic up (wildcard namespace) first.
    serializer = AvroSerializer(client, USER, conf={"auto.register.schemas": False})
    data = serializer({"n": "x"}, SerializationContext(topic, MessageField.VALUE))
    assert data is not None and int.from_bytes(data[1:5], "big") == schema_id
    with pytest.raises(SchemaRegistryError):
        client.get_latest_version(f"{topic}-value")


def test_associations_survive_a_restart(registry_broker: BrokerThread) -> None:
    topic, rid = _unique("restart"), _unique("lkc")
    with RegistryThread(registry_broker.bootstrap, formats=formats, timeout=15.0) as first:
        client = SchemaRegistryClient({"url": first.url})
        _, _, key_subject, value_subject = _topic_with_subjects(client)
        client.create_association(
            _request(topic, rid, (key_subject, "key"), (value_subject, "value")))
        client.delete_associations(rid, association_types=["key"])
        before = client.get_associations_by_resource_name(topic, "cluster-1")
    with RegistryThread(registry_broker.bootstrap, formats=formats, timeout=15.0) as second:
        client = SchemaRegistryClient({"url": second.url})
        after = client.get_associations_by_resource_name(topic, "cluster-1")
    assert [(a.subject, a.association_type, a.guid) for a in after] == [
        (value_subject, "value", before[0].guid)]
    # Stored as Confluent stores them: one ASSOC record per association, a tombstone for the
    # deleted one.
    records = [(json.loads(k), v) for k, v in read_topic(registry_broker.bootstrap)]
    mine = [(k, v) for k, v in records
            if k["keytype"] == "ASSOC" and k["resourceName"] == topic]
    key_of = {t: {"keytype": "ASSOC", "tenant": "default", "resourceName": topic,
                  "resourceNamespace": "cluster-1", "resourceType": "topic",
                  "associationType": t, "subject": s, "magic": 0}
              for t, s in (("key", key_subject), ("value", value_subject))}
    assert [k for k, _ in mine] == [key_of["key"], key_of["value"], key_of["key"]]
    assert mine[2][1] is None
    assert json.loads(mine[1][1]) == {
        "guid": before[0].guid, "tenant": "default", "resourceName": topic,
        "resourceNamespace": "cluster-1", "resourceId": rid, "resourceType": "topic",
        "associationType": "value", "subject": value_subject, "lifecycle": "WEAK",
        "frozen": False}


def _strong(topic: str, rid: str, subject: str | None, schema: str = USER,
            association_type: str = "value") -> AssociationCreateOrUpdateRequest:
    return AssociationCreateOrUpdateRequest(
        resource_name=topic, resource_namespace="c", resource_id=rid, resource_type="topic",
        associations=[AssociationCreateOrUpdateInfo(
            subject=subject, association_type=association_type, lifecycle="STRONG",
            schema=Schema(schema, "AVRO"))],
    )


def test_lifecycles_as_confluent_defines_them(registry: RegistryThread) -> None:
    """STRONG (the topic owns its subject) against WEAK (the topic uses a subject that lives
    on its own): what each allows, and what deleting the association does to the subject."""
    client = SchemaRegistryClient({"url": registry.url})

    def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[int | None, int | None]:
        with pytest.raises(SchemaRegistryError) as e:
            call(*args, **kwargs)
        return e.value.http_status_code, e.value.error_code

    owner, owner_id, owned = _unique("owner"), _unique("id"), _unique("owned")
    # A schema of its own, so that its id has no other holder once the subject is gone.
    mine = json.dumps({"type": "record", "name": "Mine", "namespace": owner.replace("-", "_"),
                       "fields": [{"name": "n", "type": "string"}]})
    created = client.create_association(_strong(owner, owner_id, owned, mine))
    [info] = created.associations or []
    assert (info.lifecycle, info.frozen, info.subject) == ("STRONG", True, owned)
    owned_id = client.get_latest_version(owned).schema_id
    # The subject is the topic's: no other association, no reference to it, no deleting it.
    other = _unique("other")
    assert refused(client.create_association,
                   _request(other, _unique("id"), (owned, "value"))) == (409, 40905)
    assert refused(client.delete_subject, owned) == (409, 40904)
    ref = json.dumps({"type": "record", "name": "R", "fields": [
        {"name": "u", "type": f"{owner.replace('-', '_')}.Mine"}]})
    assert refused(client.register_schema, _unique("r"), Schema(
        ref, "AVRO", [SchemaReference(f"{owner.replace('-', '_')}.Mine", owned, 1)])) == (
        422, 42205)
    # STRONG without its schema, WEAK with one, a WEAK frozen: invalid.
    assert refused(client.create_association, AssociationCreateOrUpdateRequest(
        resource_name=other, resource_namespace="c", resource_id=_unique("id"),
        associations=[AssociationCreateOrUpdateInfo(
            subject=_unique("s"), lifecycle="STRONG")])) == (422, 42212)
    assert refused(client.create_association, AssociationCreateOrUpdateRequest(
        resource_name=other, resource_namespace="c", resource_id=_unique("id"),
        associations=[AssociationCreateOrUpdateInfo(
            subject=_unique("s"), lifecycle="WEAK", schema=Schema(USER, "AVRO"))])) == (
        422, 42212)
    # A frozen association is deleted only with cascadeLifecycle, which takes its subject.
    assert refused(client.delete_associations, owner_id) == (409, 40908)
    assert client.get_latest_version(owned).version == 1
    client.delete_associations(owner_id, cascade_lifecycle=True)
    assert client.get_associations_by_resource_name(owner, "c") == []
    assert refused(client.get_versions, owned, deleted=True) == (404, 40401)
    fresh = SchemaRegistryClient({"url": registry.url})  # the client caches ids it has seen
    assert refused(fresh.get_schema, owned_id) == (404, 40403)

    # WEAK: the subject outlives the association, cascade or not; while associated, it keeps
    # a live version and cannot be deleted.
    user, user_id, shared = _unique("user"), _unique("id"), _unique("shared")
    client.register_schema(shared, Schema(USER, "AVRO"))
    [weak] = client.create_association(
        _request(user, user_id, (shared, "value"))).associations or []
    assert (weak.lifecycle, weak.frozen) == ("WEAK", False)
    # Another topic may share it; a STRONG claim on it is refused.
    client.create_association(_request(_unique("user2"), _unique("id"), (shared, "value")))
    assert refused(client.create_association,
                   _strong(_unique("t"), _unique("id"), shared)) == (409, 40904)
    assert refused(client.delete_version, shared, 1) == (409, 40907)
    client.delete_associations(user_id, cascade_lifecycle=True)
    assert client.get_latest_version(shared).version == 1

    # Without a subject, a STRONG association takes the topic's default one in the context
    # named after the namespace.
    topic, rid = _unique("dflt"), _unique("id")
    [made] = client.create_association(_strong(topic, rid, None)).associations or []
    assert made.subject == f":.c:{topic}-value"
    assert client.get_latest_version(f":.c:{topic}-value").version == 1


def test_lookups_by_resource_id_and_subject_and_dry_run(
    registry: RegistryThread, http: Http
) -> None:
    """Confluent's other reads (by resource id, by subject, with the lifecycle filter) and a
    create with ``dryRun`` that checks and writes nothing."""
    client = SchemaRegistryClient({"url": registry.url})
    topic, rid, key_subject, value_subject = _topic_with_subjects(client)
    body = {"resourceName": topic, "resourceNamespace": "c", "resourceId": rid,
            "associations": [{"subject": key_subject, "associationType": "key"},
                             {"subject": value_subject}]}
    status, answer = http("POST", "/associations?dryRun=true", body)
    assert (status, answer["associations"]) == (200, [])
    assert http("GET", f"/associations/resources/{rid}") == (200, [])
    assert http("POST", "/associations", body)[0] == 200
    status, found = http("GET", f"/associations/resources/{rid}")
    assert status == 200 and [(a["subject"], a["associationType"], a["lifecycle"])
                              for a in found] == [(key_subject, "key", "WEAK"),
                                                  (value_subject, "value", "WEAK")]
    assert [a["subject"] for a in http(
        "GET", f"/associations/resources/{rid}?associationType=value")[1]] == [value_subject]
    assert http("GET", f"/associations/resources/{rid}?lifecycle=STRONG") == (200, [])
    status, by_subject = http("GET", f"/associations/subjects/{value_subject}")
    assert status == 200 and [(a["resourceName"], a["resourceId"]) for a in by_subject] == [
        (topic, rid)]
    assert http("GET", f"/associations/subjects/{_unique('none')}") == (200, [])
    assert http("GET", f"/associations/resources/{rid}?lifecycle=BOTH")[1]["error_code"] == 42212
    # A dry run still refuses what the real one would.
    again = {**body, "associations": [{"subject": key_subject, "associationType": "value"}]}
    assert http("POST", "/associations?dryRun=true", again)[1]["error_code"] == 40903
    # A dry run of a STRONG association with an incompatible schema is refused as incompatible.
    strong = _unique("strong")
    client.register_schema(strong, Schema(USER, "AVRO"))
    incompatible = json.dumps({"type": "record", "name": "User",
                               "fields": [{"name": "n", "type": "int"}]})
    status, refused = http("POST", "/associations?dryRun=true", {
        "resourceName": _unique("t"), "resourceNamespace": "c", "resourceId": _unique("id"),
        "associations": [{"subject": strong, "schema": {"schema": incompatible}}]})
    # The subject holds a schema already, so Confluent refuses the frozen association first.
    assert (status, refused["error_code"]) == (422, 42212), refused
