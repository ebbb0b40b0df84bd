"""confluent-kafka's JSON Schema and Protobuf serializers producing to and consuming from odradek
through the registry, evolution accepted and refused. Each test runs when its format module is
present (they are written on other branches; the skips go when they are merged)."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from odradek.broker.runner import BrokerThread
from odradek.registry.formats import UnsupportedSchemaTypeError, get_format
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration


def _served(schema_type: str) -> bool:
    try:
        get_format(schema_type)
    except UnsupportedSchemaTypeError:
        return False
    return True


def _round_trip(broker: BrokerThread, topic: str, raw: bytes) -> bytes:
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, value=raw)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    consumer.assign([TopicPartition(topic, 0, 0)])
    msg = consumer.poll(10)
    consumer.close()
    assert msg is not None and msg.error() is None
    value: bytes = msg.value()
    return value


@pytest.mark.skipif(not _served("JSON"), reason="JSON Schema module not merged yet")
def test_json_schema_serializer(registry: RegistryThread, registry_broker: BrokerThread) -> None:
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer

    client = SchemaRegistryClient({"url": registry.url})
    topic = f"json-{uuid.uuid4().hex[:8]}"
    v1 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
          "properties": {"name": {"type": "string"}}, "additionalProperties": False}
    ctx = SerializationContext(topic, MessageField.VALUE)
    raw = JSONSerializer(json.dumps(v1), client)({"name": "ada"}, ctx)
    got = _round_trip(registry_broker, topic, raw)
    assert JSONDeserializer(json.dumps(v1))(got, ctx) == {"name": "ada"}
    subject = f"{topic}-value"
    # A closed model gaining an optional property is backward compatible; narrowing a type
    # is not.
    v2 = {**v1, "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    assert client.register_schema(subject, Schema(json.dumps(v2), "JSON")) > 0
    v3 = {**v2, "properties": {"name": {"type": "integer"}, "age": {"type": "integer"}}}
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(json.dumps(v3), "JSON"))
    assert refused.value.http_status_code == 409


@pytest.mark.skipif(not _served("PROTOBUF"), reason="Protobuf module not merged yet")
def test_protobuf_serializer(registry: RegistryThread, registry_broker: BrokerThread) -> None:
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    name = f"p{uuid.uuid4().hex[:8]}"
    fdp = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    msg = fdp.message_type.add(name="User")
    msg.field.add(name="name", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    user_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{name}.User"))
    client = SchemaRegistryClient({"url": registry.url})
    topic = f"proto-{name}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    serialize = ProtobufSerializer(user_cls, client, {"use.deprecated.format": False})
    raw = serialize(user_cls(name="ada"), ctx)
    got = _round_trip(registry_broker, topic, raw)
    decoded = ProtobufDeserializer(user_cls, {"use.deprecated.format": False})(got, ctx)
    assert decoded.name == "ada"
    subject = f"{topic}-value"
    evolved = f'syntax = "proto3";\npackage {name};\nmessage User {{\n  string name = 1;\n' \
              '  int32 age = 2;\n}\n'
    assert client.register_schema(subject, Schema(evolved, "PROTOBUF")) > 0
    changed = f'syntax = "proto3";\npackage {name};\nmessage User {{\n  int64 name = 1;\n}}\n'
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(changed, "PROTOBUF"))
    assert refused.value.http_status_code == 409


def test_avro_schema_guid_in_a_header(registry: RegistryThread,
                                      registry_broker: BrokerThread) -> None:
    """Confluent 8's header framing: the serializer puts the schema's guid in a record header
    (from the register answer) and the deserializer resolves it at ``/schemas/guids/{guid}``."""
    from confluent_kafka.schema_registry import header_schema_id_serializer
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

    topic = f"guid-{uuid.uuid4().hex[:8]}"
    schema = json.dumps({"type": "record", "name": "Guided",
                         "fields": [{"name": "n", "type": "long"},
                                    {"name": "s", "type": "string"}]})
    headers: list[tuple[str, bytes]] = []
    ctx = SerializationContext(topic, MessageField.VALUE, headers)
    serializer = AvroSerializer(SchemaRegistryClient({"url": registry.url}), schema,
                                conf={"schema.id.serializer": header_schema_id_serializer})
    # (The deserializer refuses a payload under 6 bytes before it looks at the headers.)
    raw = serializer({"n": 7, "s": "seven"}, ctx)
    (name, guid), = headers
    assert name == "__value_schema_id" and guid[0] == 1 and len(guid) == 17
    producer = Producer({"bootstrap.servers": registry_broker.bootstrap})
    producer.produce(topic, value=raw, headers=headers)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": registry_broker.bootstrap, "group.id": topic})
    consumer.assign([TopicPartition(topic, 0, 0)])
    msg = consumer.poll(10)
    consumer.close()
    assert msg is not None and msg.error() is None
    # A new client: nothing cached, the guid is looked up.
    fresh = SchemaRegistryClient({"url": registry.url})
    got = AvroDeserializer(fresh)(msg.value(), SerializationContext(
        topic, MessageField.VALUE, msg.headers()))
    assert got == {"n": 7, "s": "seven"}
    assert fresh.get_schema_by_guid(str(uuid.UUID(bytes=guid[1:]))).schema_str == schema
