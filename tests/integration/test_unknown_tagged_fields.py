"""Tagged fields the broker does not know, in requests sent over a real socket.

KIP-482 lets a flexible version gain tagged fields without a new version number, and Kafka's
generated readers keep a tag they do not know aside instead of failing (the message specs'
README: "Older servers will ignore new tagged fields which they do not understand"), anywhere a
tag section may be: at the root of a message or at the end of any struct in it. So a client newer
than the broker may add one, and Kafka answers as if it were not there. These requests are real
ones, encoded by kio; one tagged field, tag 9999 with three bytes, is then put into the (empty)
tag section at the top level or at the end of one nested struct. The broker must answer exactly
as it answers the request without it, and not close the connection.
"""

from __future__ import annotations

import dataclasses
import datetime
import socket
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kio.schema.api_versions.v3 import request as api_versions_v3
from kio.schema.create_topics.v7 import request as create_topics_v7
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.find_coordinator.v4 import request as find_coordinator_v4
from kio.schema.join_group.v6 import request as join_group_v6
from kio.schema.metadata.v12 import request as metadata_v12

from odradek.errors import ErrorCode
from odradek.protocol.client import decode_response
from odradek.protocol.messages import encode_entity
from odradek.protocol.varint import encode_uvarint

pytestmark = pytest.mark.integration

#: One tagged field no version of any API defines: tag 9999, three bytes.
UNKNOWN_FIELD = encode_uvarint(9999) + encode_uvarint(3) + b"new"


def with_unknown_tag(body: bytes, inner: Any = None) -> bytes:
    """``body`` (kio's encoding of a request with no tagged field set) with UNKNOWN_FIELD in the
    tag section of the struct ``inner`` (found by its own encoding, which must occur once in
    ``body``), or of the request itself."""
    if inner is None:
        end = len(body) - 1
    else:
        encoded = encode_entity(inner)
        assert body.count(encoded) == 1
        end = body.index(encoded) + len(encoded) - 1
    assert body[end] == 0, "the struct already has tagged fields"
    return body[:end] + b"\x01" + UNKNOWN_FIELD + body[end + 1 :]


class Connection:
    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.correlation_id = 0

    def exchange(self, request: Any, body: bytes) -> Any:
        """Send ``body`` as a request of ``request``'s API and version; its decoded response, or
        None when the broker closes the connection instead."""
        self.correlation_id += 1
        schema = type(request)
        header = struct.pack(">hhih", schema.__api_key__, schema.__version__,
                             self.correlation_id, 4) + b"tags" + b"\x00"
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = self._exactly(4)
        if size is None:
            return None
        frame = self._exactly(struct.unpack(">i", size)[0])
        assert frame is not None
        correlation_id, response = decode_response(frame, schema.__api_key__, schema.__version__)
        assert correlation_id == self.correlation_id
        return response

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@dataclasses.dataclass(frozen=True)
class Case:
    request: Any
    inner: Any  # the nested struct that gets the unknown tag; None for the request itself
    view: Callable[[Any], Any]  # what of the response must not change


def _metadata_topic() -> Any:
    return metadata_v12.MetadataRequestTopic(topic_id=uuid.UUID(int=0), name="absent")


def _metadata(topic: Any) -> Any:
    return metadata_v12.MetadataRequest(
        topics=(topic,), allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def _fetch_partition() -> Any:
    return fetch_v12.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)


def _fetch(partition: Any) -> Any:
    return fetch_v12.FetchRequest(
        max_wait=datetime.timedelta(0), min_bytes=1, forgotten_topics_data=(),
        topics=(fetch_v12.FetchTopic(topic="absent", partitions=(partition,)),),
    )


def _join_protocol() -> Any:
    return join_group_v6.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x01")


def _join(protocol: Any) -> Any:
    return join_group_v6.JoinGroupRequest(
        group_id="tags", session_timeout=datetime.timedelta(seconds=10),
        rebalance_timeout=datetime.timedelta(seconds=10), member_id="",
        group_instance_id=None, protocol_type="consumer", protocols=(protocol,),
    )


def _topics(r: Any) -> Any:
    return [(t.name, t.error_code) for t in r.topics]


def _fetch_view(r: Any) -> Any:
    return (r.error_code, [(t.topic, [(p.partition_index, p.error_code) for p in t.partitions])
                           for t in r.responses])


CASES = {
    "api_versions_v3": Case(
        api_versions_v3.ApiVersionsRequest(client_software_name="tags",
                                           client_software_version="1"),
        None, lambda r: (r.error_code, r.api_keys)),
    "find_coordinator_v4": Case(
        find_coordinator_v4.FindCoordinatorRequest(key_type=0, coordinator_keys=("group",)),
        None, lambda r: [(c.key, c.error_code, c.node_id, c.port) for c in r.coordinators]),
    "metadata_v12": Case(_metadata(_metadata_topic()), None, _topics),
    "metadata_v12_topic": Case(_metadata(_metadata_topic()), _metadata_topic(), _topics),
    "fetch_v12": Case(_fetch(_fetch_partition()), None, _fetch_view),
    "fetch_v12_partition": Case(_fetch(_fetch_partition()), _fetch_partition(), _fetch_view),
    "join_group_v6": Case(_join(_join_protocol()), None, lambda r: r.error_code),
    "join_group_v6_protocol": Case(_join(_join_protocol()), _join_protocol(),
                                   lambda r: r.error_code),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_unknown_tag_is_ignored(bootstrap: str, name: str) -> None:
    case = CASES[name]
    body = encode_entity(case.request)
    tagged = with_unknown_tag(body, case.inner)
    conn = Connection(bootstrap)
    try:
        plain = conn.exchange(case.request, body)
        assert plain is not None
        answer = conn.exchange(case.request, tagged)
        assert answer is not None, "the broker closed the connection"
    finally:
        conn.close()
    assert case.view(answer) == case.view(plain)


def test_a_topic_created_with_unknown_tags_everywhere(bootstrap: str) -> None:
    """Unknown tags at the top level and in every nested struct at once, in a request whose
    effect can be seen: the topic exists afterwards with the partition count asked for."""
    config = create_topics_v7.CreatableTopicConfig(name="retention.ms", value="123456")
    topic = create_topics_v7.CreatableTopic(
        name="tagged", num_partitions=3, replication_factor=1, assignments=(), configs=(config,)
    )
    request = create_topics_v7.CreateTopicsRequest(
        topics=(topic,), timeout=datetime.timedelta(seconds=10), validate_only=False
    )
    body = encode_entity(request)
    # From the outside in: each insertion lies after the encodings still to be found.
    for inner in (None, topic, config):
        body = with_unknown_tag(body, inner)
    lookup = _metadata(metadata_v12.MetadataRequestTopic(topic_id=uuid.UUID(int=0), name="tagged"))
    conn = Connection(bootstrap)
    try:
        created = conn.exchange(request, body)
        assert created is not None, "the broker closed the connection"
        assert [(t.name, t.error_code) for t in created.topics] == [("tagged", ErrorCode.none)]
        meta = conn.exchange(lookup, encode_entity(lookup))
    finally:
        conn.close()
    (described,) = meta.topics
    assert (described.name, described.error_code, len(described.partitions)) == (
        "tagged", ErrorCode.none, 3
    )
