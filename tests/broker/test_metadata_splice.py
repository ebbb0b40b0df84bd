"""The Metadata handler's cached, spliced encoding equals kio's encoding of the whole body."""

from __future__ import annotations

import types
import uuid

import pytest

from odradek.broker.handlers import metadata
from odradek.metadata.store import TopicMetadata
from odradek.protocol.build import response_module
from odradek.protocol.messages import encode_response


def _broker(topics: list[TopicMetadata]) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        node_id=1, advertised_host="127.0.0.1", advertised_port=9092,
        topics=types.SimpleNamespace(topics=lambda: topics),
        metadata=types.SimpleNamespace(cluster_id="abc"),
    )


@pytest.mark.parametrize("version", range(13))
@pytest.mark.parametrize("ops", [False, True])
def test_spliced_body_is_kios_encoding(version: int, ops: bool) -> None:
    topics = [
        TopicMetadata(name=f"t{i}", topic_id=uuid.uuid4(), partitions=p, configs={})
        for i, p in enumerate((1, 3, 200))
    ]
    broker = _broker(topics)
    body = types.SimpleNamespace(
        topics=None, include_topic_authorized_operations=ops,
        include_cluster_authorized_operations=ops, allow_auto_topic_creation=False,
    )
    request = types.SimpleNamespace(body=body, api_version=version)
    for _ in range(2):  # the second answer comes from the cache
        spliced = encode_response(3, 7, metadata.handle(broker, request))  # type: ignore[arg-type]
        mod = response_module(3, version)
        topic_ops = metadata.TOPIC_OPERATIONS if ops else metadata.NOT_REQUESTED
        cluster_ops = metadata.CLUSTER_OPERATIONS if ops else metadata.NOT_REQUESTED
        whole = metadata._body(
            broker,  # type: ignore[arg-type]
            version,
            tuple(metadata._topic(mod, broker, m, topic_ops) for m in topics),  # type: ignore[arg-type]
            cluster_ops,
        )
        assert spliced == encode_response(3, 7, whole)
