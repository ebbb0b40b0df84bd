"""Per-broker admin requests on a cluster of three broker processes, through one bootstrap.

As in Kafka, each broker answers DescribeLogDirs for its own log directory and DescribeConfigs
for its own BROKER resource (another broker's id is INVALID_REQUEST); the admin clients route
such requests to the broker the resource names (kafka-python and aiokafka send BROKER resources
to that node and DescribeLogDirs to every broker; librdkafka sends a BROKER resource to its
broker). So with one bootstrap server every node's log dirs and configs are retrievable."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource as AioConfigResource
from aiokafka.admin.config_resource import ConfigResourceType as AioConfigResourceType
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import ConfigResource as CConfigResource
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kio.schema.describe_configs.v4 import request as describe_configs_req
from rawclient import RawClient
from test_cluster_clients import _create, _leaders, _wait

from odradek.cluster.local import LocalCluster
from odradek.errors import ErrorCode

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _value(entries: Any, name: str) -> str | None:
    """A config's value from kafka-python's describe_configs answer for one resource."""
    entry = entries[name]
    return entry["value"] if isinstance(entry, dict) else entry


def test_every_brokers_log_dirs_and_configs_through_one_bootstrap(
    odradek_cluster: LocalCluster,
) -> None:
    cluster = odradek_cluster
    one = cluster.broker(1).address
    topic = f"admin-{uuid.uuid4().hex[:6]}"
    _create(one, topic, PARTITIONS)
    leaders = _wait(
        lambda: (lambda ls: ls if len(ls) == PARTITIONS and -1 not in ls.values() else None)(
            _leaders(one, topic)
        ),
        "every partition's leader",
    )
    assert set(leaders.values()) == {1, 2, 3}

    admin = KafkaAdminClient(bootstrap_servers=one, client_id="c12-admin")
    try:
        # DescribeLogDirs: kafka-python asks every broker; each lists its own dir and partitions.
        by_broker = {
            answer["broker"]: answer["log_dirs"]
            for answer in admin.describe_log_dirs(topic_partitions=[topic])
        }
        assert sorted(by_broker) == [1, 2, 3]
        for node, dirs in by_broker.items():
            assert len(dirs) == 1
            assert dirs[0]["error_code"] == 0
            assert dirs[0]["log_dir"] == os.path.abspath(cluster.broker(node).data_dir)
            held = {
                p["partition_index"] for t in dirs[0]["topics"] if t["name"] == topic
                for p in t["partitions"]
            }
            assert held == {p for p, leader in leaders.items() if leader == node}

        # DescribeConfigs of every broker's BROKER resource in one call: routed per node.
        answer = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(n)) for n in (1, 2, 3)],
            config_filter="all",
        )
        brokers = answer["broker"]
        for node in (1, 2, 3):
            entries = brokers[str(node)]
            assert _value(entries, "node.id") == str(node)
            assert str(cluster.broker(node).port) in (_value(entries, "advertised.listeners") or "")
    finally:
        admin.close()

    # librdkafka: one BROKER resource per request, sent to that broker.
    cadmin = AdminClient({"bootstrap.servers": one})
    for node in (1, 2, 3):
        resource = CConfigResource("BROKER", str(node))
        configs = cadmin.describe_configs([resource])[resource].result(30)
        assert configs["node.id"].value == str(node)
        assert str(cluster.broker(node).port) in (configs["advertised.listeners"].value or "")

    # aiokafka: BROKER resources grouped by node, each request sent to its broker.
    async def aio_node_ids() -> dict[str, str]:
        aadmin = AIOKafkaAdminClient(bootstrap_servers=one)
        await aadmin.start()
        try:
            responses = await aadmin.describe_configs(
                [AioConfigResource(AioConfigResourceType.BROKER, str(n)) for n in (1, 2, 3)]
            )
        finally:
            await aadmin.close()
        seen: dict[str, str] = {}
        for response in responses:
            for result in response.resources:
                error_code, _message, _type, name, entries = result[:5]
                assert error_code == 0
                seen[name] = next(e[1] for e in entries if e[0] == "node.id")
        return seen

    assert asyncio.run(aio_node_ids()) == {"1": "1", "2": "2", "3": "3"}


def test_a_broker_asked_for_another_brokers_config_answers_invalid_request(
    odradek_cluster: LocalCluster,
) -> None:
    """Kafka's answer: a broker describes only its own BROKER resource."""
    body = describe_configs_req.DescribeConfigsRequest(
        resources=(
            describe_configs_req.DescribeConfigsResource(
                resource_type=4, resource_name="2", configuration_keys=None
            ),
            describe_configs_req.DescribeConfigsResource(
                resource_type=4, resource_name="1", configuration_keys=("node.id",)
            ),
        ),
        include_synonyms=False,
        include_documentation=False,
    )
    with RawClient(odradek_cluster.broker(1).address) as c:
        response = c.request(body)
    other, own = response.results
    assert other.error_code == ErrorCode.invalid_request
    assert "expected 1" in (other.error_message or "")
    assert own.error_code == ErrorCode.none
    assert [(e.name, e.value) for e in own.configs] == [("node.id", "1")]
