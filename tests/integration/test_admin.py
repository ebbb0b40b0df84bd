"""Admin APIs driven by real clients: confluent-kafka (librdkafka) and kafka-python."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
)
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from kafka import TopicPartition as KTopicPartition
from kafka.admin import AlterConfigOp, ConfigResourceType, KafkaAdminClient
from kafka.admin import ConfigResource as KConfigResource
from kafka.errors import (
    InvalidPartitionsError,
    InvalidReplicationAssignmentError,
    OffsetOutOfRangeError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)

from odradek.broker.runner import BrokerThread, local_config

pytestmark = pytest.mark.integration

TIMEOUT = 10


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerThread]:
    with BrokerThread(local_config(tmp_path_factory.mktemp("admin") / "data")) as b:
        yield b


@pytest.fixture(scope="module")
def admin(broker: BrokerThread) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


@pytest.fixture(scope="module")
def kadmin(broker: BrokerThread) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    yield client
    client.close()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(admin: AdminClient, partitions: int = 1, config: dict[str, str] | None = None) -> str:
    name = _name("adm")
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(TIMEOUT)
    return name


def _error(future: Any) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(TIMEOUT)
    error: KafkaError = info.value.args[0]
    return error


def _produce(bootstrap: str, topic: str, count: int, partition: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(count):
        p.produce(topic, value=b"v%d" % i, partition=partition)
        p.flush(TIMEOUT)  # one batch each, so offsets inside batches are deletable points
    assert p.flush(TIMEOUT) == 0


def _topic_configs(admin: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    result: dict[str, ConfigEntry] = admin.describe_configs([resource])[resource].result(TIMEOUT)
    return result


# -- DeleteTopics -------------------------------------------------------------------------------


def test_delete_topics_confluent(admin: AdminClient) -> None:
    topic = _create(admin, 2)
    admin.delete_topics([topic])[topic].result(TIMEOUT)
    assert topic not in admin.list_topics(timeout=TIMEOUT).topics
    again = _error(admin.delete_topics([topic])[topic])
    assert again.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # The name is free again, and the new topic starts empty.
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(TIMEOUT)
    assert len(admin.list_topics(timeout=TIMEOUT).topics[topic].partitions) == 1


def test_delete_topics_by_id_kafka_python(admin: AdminClient, kadmin: KafkaAdminClient,
                                          broker: BrokerThread) -> None:
    topic = _create(admin)
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(TIMEOUT)
    meta = broker.broker.topics.topic(topic)
    assert meta is not None
    topic_id = meta.topic_id
    assert not description.is_internal
    kadmin.delete_topics([topic_id])
    assert topic not in admin.list_topics(timeout=TIMEOUT).topics
    with pytest.raises(UnknownTopicIdError):
        kadmin.delete_topics([topic_id])


# -- CreatePartitions ---------------------------------------------------------------------------


def test_create_partitions_confluent(admin: AdminClient, broker: BrokerThread) -> None:
    topic = _create(admin, 1)
    admin.create_partitions([NewPartitions(topic, 3)])[topic].result(TIMEOUT)
    assert sorted(admin.list_topics(timeout=TIMEOUT).topics[topic].partitions) == [0, 1, 2]
    # The new partitions take records.
    _produce(broker.bootstrap, topic, 2, partition=2)

    dry = admin.create_partitions([NewPartitions(topic, 5)], validate_only=True)
    dry[topic].result(TIMEOUT)
    assert len(admin.list_topics(timeout=TIMEOUT).topics[topic].partitions) == 3

    same = _error(admin.create_partitions([NewPartitions(topic, 3)])[topic])
    assert same.code() == KafkaError.INVALID_PARTITIONS
    fewer = _error(admin.create_partitions([NewPartitions(topic, 2)])[topic])
    assert fewer.code() == KafkaError.INVALID_PARTITIONS

    node = broker.broker.node_id
    assigned = admin.create_partitions([NewPartitions(topic, 4, [[node]])])
    assigned[topic].result(TIMEOUT)
    elsewhere = admin.create_partitions([NewPartitions(topic, 5, [[node + 1]])])
    assert _error(elsewhere[topic]).code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    assert len(admin.list_topics(timeout=TIMEOUT).topics[topic].partitions) == 4

    missing = _name("missing")
    gone = _error(admin.create_partitions([NewPartitions(missing, 2)])[missing])
    assert gone.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_create_partitions_kafka_python(admin: AdminClient, kadmin: KafkaAdminClient) -> None:
    topic = _create(admin, 2)
    kadmin.create_partitions({topic: 4})
    assert len(admin.list_topics(timeout=TIMEOUT).topics[topic].partitions) == 4
    with pytest.raises(InvalidPartitionsError):
        kadmin.create_partitions({topic: 4})
    with pytest.raises(InvalidReplicationAssignmentError):
        kadmin.create_partitions({topic: {"count": 6, "assignments": [[1]]}})
    with pytest.raises(UnknownTopicOrPartitionError):
        kadmin.create_partitions({_name("missing"): 2})


# -- DescribeConfigs / AlterConfigs / IncrementalAlterConfigs ------------------------------------


def test_describe_topic_configs(admin: AdminClient) -> None:
    topic = _create(admin, config={"retention.ms": "12345"})
    configs = _topic_configs(admin, topic)
    retention = configs["retention.ms"]
    assert retention.value == "12345"
    assert retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not retention.is_default and not retention.is_read_only
    policy = configs["cleanup.policy"]
    assert policy.value == "delete" and policy.source == ConfigSource.DEFAULT_CONFIG.value

    missing = ConfigResource(ResourceType.TOPIC, _name("missing"))
    error = _error(admin.describe_configs([missing])[missing])
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_describe_broker_configs(admin: AdminClient, broker: BrokerThread) -> None:
    node = str(broker.broker.node_id)
    resource = ConfigResource(ResourceType.BROKER, node)
    configs = admin.describe_configs([resource])[resource].result(TIMEOUT)
    assert configs["num.partitions"].value == "1"
    assert configs["num.partitions"].is_read_only
    assert configs["log.dirs"].source == ConfigSource.STATIC_BROKER_CONFIG.value


def test_describe_configs_kafka_python_filters(admin: AdminClient,
                                               kadmin: KafkaAdminClient) -> None:
    topic = _create(admin, config={"segment.bytes": "1048576"})
    wanted = {"segment.bytes": None, "retention.ms": None}
    result = kadmin.describe_configs(
        [KConfigResource(ConfigResourceType.TOPIC, topic, configs=wanted)],
        include_synonyms=True,
        config_filter="all",
    )
    entries = result["topic"][topic]
    assert set(entries) == {"segment.bytes", "retention.ms"}
    assert entries["segment.bytes"]["value"] == "1048576"
    synonyms = [s["name"] for s in entries["retention.ms"]["synonyms"]]
    assert synonyms[0] == "log.retention.hours"


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_alter_configs_replaces_the_whole_set(admin: AdminClient) -> None:
    topic = _create(admin, config={"retention.ms": "1000", "segment.ms": "5000"})
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"max.message.bytes": "2048"})
    admin.alter_configs([resource])[resource].result(TIMEOUT)
    configs = _topic_configs(admin, topic)
    assert configs["max.message.bytes"].value == "2048"
    # Not listed: back to the defaults.
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["segment.ms"].value == "604800000"

    bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "soon"})
    assert _error(admin.alter_configs([bad])[bad]).code() == KafkaError.INVALID_CONFIG
    dry = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "7"})
    admin.alter_configs([dry], validate_only=True)[dry].result(TIMEOUT)
    assert _topic_configs(admin, topic)["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_alter_broker_configs_is_refused(admin: AdminClient, broker: BrokerThread) -> None:
    node = str(broker.broker.node_id)
    resource = ConfigResource(ResourceType.BROKER, node, set_config={"log.retention.ms": "1"})
    assert _error(admin.alter_configs([resource])[resource]).code() == KafkaError.INVALID_REQUEST
    inc = ConfigResource(ResourceType.BROKER, node, incremental_configs=[
        ConfigEntry("log.retention.ms", "1", incremental_operation=AlterConfigOpType.SET)
    ])
    error = _error(admin.incremental_alter_configs([inc])[inc])
    assert error.code() == KafkaError.INVALID_REQUEST
    assert "static" in error.str()


def test_incremental_alter_configs_confluent(admin: AdminClient) -> None:
    topic = _create(admin, config={"retention.ms": "1000"})

    def alter(*ops: ConfigEntry, validate_only: bool = False) -> Any:
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(ops))
        return admin.incremental_alter_configs([resource], validate_only=validate_only)[resource]

    alter(
        ConfigEntry("segment.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ).result(TIMEOUT)
    configs = _topic_configs(admin, topic)
    assert configs["retention.ms"].value == "1000"  # untouched, unlike AlterConfigs
    assert configs["segment.ms"].value == "60000"
    assert configs["cleanup.policy"].value == "delete,compact"

    alter(
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
    ).result(TIMEOUT)
    configs = _topic_configs(admin, topic)
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["cleanup.policy"].value == "compact"

    not_a_list = alter(
        ConfigEntry("segment.ms", "1", incremental_operation=AlterConfigOpType.APPEND)
    )
    assert _error(not_a_list).code() == KafkaError.INVALID_CONFIG
    alter(
        ConfigEntry("segment.ms", "1", incremental_operation=AlterConfigOpType.SET),
        validate_only=True,
    ).result(TIMEOUT)
    assert _topic_configs(admin, topic)["segment.ms"].value == "60000"


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated")
def test_cleanup_policy_may_be_emptied(admin: AdminClient, broker: BrokerThread) -> None:
    """Kafka accepts an empty cleanup.policy: neither delete nor compact."""

    def incremental(topic: str, value: str, op: AlterConfigOpType) -> None:
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry("cleanup.policy", value, incremental_operation=op)
        ])
        admin.incremental_alter_configs([resource])[resource].result(TIMEOUT)

    def policy(topic: str) -> tuple[str, int]:
        entry = _topic_configs(admin, topic)["cleanup.policy"]
        return entry.value, entry.source

    def storage_policy(topic: str) -> str:
        log = broker.broker.logs.get_log(topic, 0)
        assert log is not None
        return log.config.cleanup_policy

    dynamic = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    subtracted = _create(admin)
    incremental(subtracted, "delete", AlterConfigOpType.SUBTRACT)  # the last policy
    assert policy(subtracted) == ("", dynamic)
    assert storage_policy(subtracted) == ""
    incremental(subtracted, "compact", AlterConfigOpType.APPEND)
    assert policy(subtracted) == ("compact", dynamic)

    set_empty = _create(admin, config={"cleanup.policy": "compact,delete"})
    incremental(set_empty, "", AlterConfigOpType.SET)
    assert policy(set_empty) == ("", dynamic)
    assert storage_policy(set_empty) == ""

    legacy = _create(admin)
    resource = ConfigResource(ResourceType.TOPIC, legacy, set_config={"cleanup.policy": ""})
    admin.alter_configs([resource])[resource].result(TIMEOUT)
    assert policy(legacy) == ("", dynamic)

    created = _create(admin, config={"cleanup.policy": ""})
    assert policy(created) == ("", dynamic)
    assert storage_policy(created) == ""


def test_incremental_alter_configs_kafka_python(admin: AdminClient,
                                                kadmin: KafkaAdminClient) -> None:
    topic = _create(admin)
    kadmin.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic, configs={
        "retention.ms": (AlterConfigOp.SET, "4242"),
        "cleanup.policy": (AlterConfigOp.APPEND, "compact"),
    })])
    configs = _topic_configs(admin, topic)
    assert configs["retention.ms"].value == "4242"
    assert configs["cleanup.policy"].value == "delete,compact"
    kadmin.reset_configs([KConfigResource(ConfigResourceType.TOPIC, topic,
                                          configs=["retention.ms"])])
    assert _topic_configs(admin, topic)["retention.ms"].value == "604800000"


def test_legacy_alter_configs_kafka_python(admin: AdminClient, kadmin: KafkaAdminClient) -> None:
    topic = _create(admin, config={"retention.ms": "1000"})
    kadmin.alter_configs(
        [KConfigResource(ConfigResourceType.TOPIC, topic, configs={"segment.ms": "90000"})],
        incremental=False,
    )
    configs = _topic_configs(admin, topic)
    assert configs["segment.ms"].value == "90000"
    # kafka-python carries the other overrides over itself, as the legacy API replaces them all.
    assert configs["retention.ms"].value == "1000"


# -- DeleteRecords ------------------------------------------------------------------------------


def _first_offset(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": _name("g"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        # From the earliest offset the broker reports (no group coordinator needed).
        c.assign([CTopicPartition(topic, 0, OFFSET_BEGINNING)])
        message = c.poll(TIMEOUT)
        assert message is not None and message.error() is None
        offset = message.offset()
        assert offset is not None
        return int(offset)
    finally:
        c.close()


def test_delete_records_confluent(admin: AdminClient, broker: BrokerThread) -> None:
    topic = _create(admin)
    _produce(broker.bootstrap, topic, 10)
    tp = CTopicPartition(topic, 0, 4)
    deleted = admin.delete_records([tp])[tp].result(TIMEOUT)
    assert deleted.low_watermark == 4
    assert _first_offset(broker.bootstrap, topic) == 4
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "wm"})
    try:
        watermarks = consumer.get_watermark_offsets(CTopicPartition(topic, 0), TIMEOUT)
    finally:
        consumer.close()
    assert watermarks == (4, 10)

    beyond = CTopicPartition(topic, 0, 11)
    assert _error(admin.delete_records([beyond])[beyond]).code() == KafkaError.OFFSET_OUT_OF_RANGE
    backwards = CTopicPartition(topic, 0, 2)
    assert admin.delete_records([backwards])[backwards].result(TIMEOUT).low_watermark == 4

    everything = CTopicPartition(topic, 0, -1)  # -1: up to the high watermark
    assert admin.delete_records([everything])[everything].result(TIMEOUT).low_watermark == 10


def test_delete_records_kafka_python(admin: AdminClient, kadmin: KafkaAdminClient,
                                     broker: BrokerThread) -> None:
    topic = _create(admin, 2)
    _produce(broker.bootstrap, topic, 5)
    result = kadmin.delete_records({KTopicPartition(topic, 0): 3})
    assert result[KTopicPartition(topic, 0)]["low_watermark"] == 3
    with pytest.raises(OffsetOutOfRangeError):
        kadmin.delete_records({KTopicPartition(topic, 1): 1})


# -- DescribeCluster, DescribeTopics, ListTopics, DescribeLogDirs -------------------------------


def test_describe_cluster_confluent(admin: AdminClient, broker: BrokerThread) -> None:
    # librdkafka answers this from a Metadata request, not DescribeCluster.
    cluster = admin.describe_cluster().result(TIMEOUT)
    assert cluster.cluster_id == broker.broker.metadata.cluster_id
    assert cluster.controller.id == broker.broker.node_id
    [node] = cluster.nodes
    assert (node.id, node.host, node.port) == (
        broker.broker.node_id, broker.broker.advertised_host, broker.broker.advertised_port
    )


def test_describe_cluster_kafka_python(kadmin: KafkaAdminClient, broker: BrokerThread) -> None:
    cluster = kadmin.describe_cluster()
    assert cluster["cluster_id"] == broker.broker.metadata.cluster_id
    assert cluster["controller_id"] == broker.broker.node_id
    assert [b["broker_id"] for b in cluster["brokers"]] == [broker.broker.node_id]
    # No authorizer: every operation Kafka defines on the cluster resource.
    assert set(cluster["authorized_operations"]) == {
        "CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE",
    }


def test_describe_and_list_topics(admin: AdminClient, kadmin: KafkaAdminClient) -> None:
    topic = _create(admin, 3)
    description = admin.describe_topics(TopicCollection([topic]))[topic].result(TIMEOUT)
    assert [p.id for p in description.partitions] == [0, 1, 2]
    assert not description.is_internal
    assert topic in kadmin.list_topics()
    [described] = kadmin.describe_topics([topic])
    assert len(described["partitions"]) == 3


def test_describe_log_dirs_kafka_python(admin: AdminClient, kadmin: KafkaAdminClient,
                                        broker: BrokerThread) -> None:
    topic = _create(admin, 2)
    _produce(broker.bootstrap, topic, 3)
    [answer] = kadmin.describe_log_dirs({topic: [0, 1, 7]})
    [log_dir] = answer["log_dirs"]
    assert log_dir["error_code"] == 0
    assert Path(log_dir["log_dir"]) == broker.broker.data_dir.absolute()
    assert log_dir["total_bytes"] >= log_dir["usable_bytes"] > 0
    [entry] = log_dir["topics"]
    sizes = {p["partition_index"]: p["partition_size"] for p in entry["partitions"]}
    assert set(sizes) == {0, 1}  # partition 7 does not exist
    assert sizes[0] == broker.broker.topics.log(topic, 0).size_in_bytes > 0
    assert sizes[1] == 0
    assert all(p["offset_lag"] == 0 and not p["is_future_key"] for p in entry["partitions"])


def test_authorized_operations_through_metadata(bootstrap: str) -> None:
    """librdkafka asks Metadata (not DescribeCluster) for authorized operations; with no
    authorizer every operation of the resource type is allowed."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation, AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("ops", 1, 1)])["ops"].result(timeout=10)
    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=10)
    assert AclOperation.IDEMPOTENT_WRITE in cluster.authorized_operations
    assert AclOperation.READ not in cluster.authorized_operations
    desc = admin.describe_topics(
        TopicCollection(["ops"]), include_authorized_operations=True
    )["ops"].result(timeout=10)
    assert AclOperation.READ in desc.authorized_operations
    assert AclOperation.WRITE in desc.authorized_operations
    assert AclOperation.CLUSTER_ACTION not in desc.authorized_operations
