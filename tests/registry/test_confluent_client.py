"""confluent-kafka's SchemaRegistryClient and Avro serializer against the registry on a real
broker; the registry restarted and rebuilt from ``_schemas``; the topic in Confluent's format."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Metadata,
    MetadataProperties,
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    ServerConfig,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from registrykit import formats, read_topic

from odradek.broker.runner import BrokerThread
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration

USER = {"type": "record", "name": "User", "fields": [{"name": "name", "type": "string"}]}
USER2 = {"type": "record", "name": "User", "fields": [
    {"name": "name", "type": "string"}, {"name": "age", "type": "int", "default": 0}]}
USER_BAD = {"type": "record", "name": "User", "fields": [
    {"name": "name", "type": "string"}, {"name": "email", "type": "string"}]}


def _client(registry: RegistryThread) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def test_client_calls(registry: RegistryThread) -> None:
    client = _client(registry)
    subject = f"client-{uuid.uuid4().hex[:8]}-value"
    schema_id = client.register_schema(subject, Schema(json.dumps(USER), "AVRO"))
    assert client.get_schema(schema_id).schema_str == json.dumps(USER)
    found = client.lookup_schema(subject, Schema(json.dumps(USER), "AVRO"))
    assert (found.schema_id, found.version) == (schema_id, 1)
    assert client.get_latest_version(subject).version == 1
    assert client.get_version(subject, 1).schema_id == schema_id
    assert subject in client.get_subjects()
    assert client.get_versions(subject) == [1]
    assert client.test_compatibility(subject, Schema(json.dumps(USER2), "AVRO")) is True
    assert client.test_compatibility(subject, Schema(json.dumps(USER_BAD), "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(USER_BAD), "AVRO"))
    assert refused.value.http_status_code == 409
    assert client.set_compatibility(subject, "FULL")["compatibility"] == "FULL"
    assert client.get_compatibility(subject) == "FULL"
    second = client.register_schema(subject, Schema(json.dumps(USER2), "AVRO"))
    assert second != schema_id
    assert client.get_versions(subject) == [1, 2]
    assert client.get_subjects(subject_prefix=subject, offset=0, limit=1) == [subject]
    assert client.get_subjects(subject_prefix=subject, offset=1) == []
    tagged = Schema(json.dumps(USER2), "AVRO", metadata=Metadata(
        None, MetadataProperties({"owner": "ada"}), None))
    client.set_compatibility(subject, "NONE")
    client.register_schema(subject, tagged)
    latest = client.get_latest_with_metadata(subject, {"owner": "ada"})
    assert latest.version == 3 and latest.schema.metadata.properties.properties == {"owner": "ada"}
    with pytest.raises(SchemaRegistryError) as untagged:
        client.get_latest_with_metadata(subject, {"owner": "bob"})
    assert untagged.value.error_code == 40403
    assert client.delete_version(subject, 3) == 3
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject, deleted_only=True) == [2, 3]
    assert client.delete_subject(subject) == [1]
    assert client.delete_subject(subject, permanent=True) == [1, 2, 3]  # soft-deleted ones too
    with pytest.raises(SchemaRegistryError) as missing:
        _client(registry).get_latest_version(subject)  # a fresh client: no cached answer
    assert missing.value.error_code == 40401


def test_every_other_client_call(registry: RegistryThread) -> None:
    """The calls of confluent-kafka 2.16's client the test above does not make, each answered
    (associations, a Confluent Cloud API, are not served)."""
    client = _client(registry)
    base = f"calls-{uuid.uuid4().hex[:8]}"
    subject, user = f"{base}-value", f"{base}-user"
    full = client.register_schema_full_response(subject, Schema(json.dumps(USER), "AVRO"))
    assert full.schema_id > 0 and full.guid is not None
    assert client.get_schema_by_guid(full.guid).schema_str == json.dumps(USER)
    assert "AVRO" in client.get_schema_types()
    assert client.get_subjects_by_schema_id(full.schema_id) == [subject]
    assert [(v.subject, v.version) for v in client.get_schema_versions(full.schema_id)] == [
        (subject, 1)]
    # A reference to the subject's version 1, then who refers to it.
    ref = SchemaReference("User", subject, 1)
    holder = {"type": "record", "name": "Holder", "fields": [{"name": "u", "type": "User"}]}
    holder_id = client.register_schema(user, Schema(json.dumps(holder), "AVRO", [ref]))
    assert client.get_referenced_by(subject, 1) == [holder_id]
    assert client.test_compatibility_all_versions(
        subject, Schema(json.dumps(USER2), "AVRO")) is True
    config = client.set_config(subject, ServerConfig(
        compatibility=ConfigCompatibilityLevel.FULL_TRANSITIVE))
    assert config["compatibility"] == "FULL_TRANSITIVE"  # the answer, as it comes
    full_transitive = ConfigCompatibilityLevel.FULL_TRANSITIVE
    assert client.get_config(subject).compatibility_level == full_transitive
    assert client.delete_config(subject).compatibility_level == full_transitive
    assert client.get_config().compatibility_level == ConfigCompatibilityLevel.BACKWARD
    assert client.get_global_mode() == "READWRITE"
    assert client.update_mode(subject, "READONLY") == "READONLY"
    assert client.get_mode(subject) == "READONLY"
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(USER2), "AVRO"))
    assert refused.value.error_code == 42205
    assert client.delete_mode(subject) == "READONLY"
    assert client.update_global_mode("READWRITE") == "READWRITE"
    assert client.get_contexts() == ["."]


def test_avro_serializer_round_trip(registry: RegistryThread, registry_broker: BrokerThread) -> None:
    client = _client(registry)
    topic = f"users-{uuid.uuid4().hex[:8]}"
    serialize = AvroSerializer(client, json.dumps(USER))
    deserialize = AvroDeserializer(client)
    producer = Producer({"bootstrap.servers": registry_broker.bootstrap})
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer.produce(topic, value=serialize({"name": "ada"}, ctx))
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": registry_broker.bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    msg = consumer.poll(10)
    consumer.close()
    assert msg is not None and msg.error() is None
    raw = msg.value()
    assert raw[0] == 0  # Confluent's wire format: magic byte, then the schema id
    schema_id = int.from_bytes(raw[1:5], "big")
    assert client.get_schema(schema_id).schema_str == json.dumps(USER)
    assert deserialize(raw, ctx) == {"name": "ada"}


def test_restart_rebuilds_from_the_topic(tmp_path: Path) -> None:
    from odradek.broker.runner import local_config

    with BrokerThread(local_config(tmp_path / "data")) as broker:
        with RegistryThread(broker.bootstrap, formats=formats, timeout=15.0) as first:
            client = _client(first)
            a = client.register_schema("a-value", Schema(json.dumps(USER), "AVRO"))
            client.register_schema("a-value", Schema(json.dumps(USER2), "AVRO"))
            b = client.register_schema("b-value", Schema(json.dumps("string"), "AVRO"))
            client.set_compatibility("b-value", "NONE")
            client.delete_subject("b-value")
            client.delete_subject("b-value", permanent=True)
        with RegistryThread(broker.bootstrap, formats=formats, timeout=15.0) as second:
            client = _client(second)
            assert client.get_subjects() == ["a-value"]
            assert client.get_versions("a-value") == [1, 2]
            assert client.get_schema(a).schema_str == json.dumps(USER)
            # Ids stay unique after the restart, even past the hard-deleted one.
            c = client.register_schema("c-value", Schema(json.dumps("long"), "AVRO"))
            assert c > b
        records = read_topic(broker.bootstrap)
    keys = [json.loads(k) for k, _ in records]
    assert keys[0] == {"keytype": "SCHEMA", "subject": "a-value", "version": 1, "magic": 1}
    first_value = json.loads(records[0][1])
    assert first_value == {"subject": "a-value", "version": 1, "id": a,
                           "schema": json.dumps(USER), "references": [], "deleted": False}
    assert {"keytype": "CONFIG", "subject": "b-value", "magic": 0} in keys
    assert {"keytype": "DELETE_SUBJECT", "subject": "b-value", "magic": 0} in keys
    tombstones = [json.loads(k) for k, v in records if v is None]
    assert {"keytype": "SCHEMA", "subject": "b-value", "version": 1, "magic": 1} in tombstones
