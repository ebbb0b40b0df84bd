from odradek.broker.registry import handlers
from odradek.protocol.messages import request_schema, response_schema


def test_every_accepted_version_has_codecs() -> None:
    for api in handlers().values():
        for v in api.versions():
            if not api.accepts(v):
                continue
            assert request_schema(api.api_key, v) is not None, f"{api.name} v{v}"
            assert response_schema(api.api_key, v) is not None, f"{api.name} v{v}"


def test_only_produce_advertises_versions_it_refuses() -> None:
    """Kafka 4 lists Produce from v0 in ApiVersions (KAFKA-18659: older librdkafka turns
    compression off otherwise) but serves it from v3; no other API does that."""
    refusing = {
        api.name: [v for v in api.versions() if not api.accepts(v)] for api in handlers().values()
    }
    assert {name: vs for name, vs in refusing.items() if vs} == {"Produce": [0, 1, 2]}
    produce = handlers()[0]
    assert [v for v in produce.versions() if produce.accepts(v)] == list(range(3, 12))


def test_issue_version_ranges() -> None:
    table = {api.name: (api.min_version, api.max_version) for api in handlers().values()}
    assert table["ApiVersions"] == (0, 4)
    assert table["Metadata"] == (0, 12)
    assert table["Produce"] == (0, 11)  # advertised; v3 and later accepted
    assert table["Fetch"] == (4, 16)
    assert table["ListOffsets"] == (1, 8)


def test_group_api_version_ranges() -> None:
    table = {api.name: (api.min_version, api.max_version) for api in handlers().values()}
    assert table["FindCoordinator"] == (0, 5)
    assert table["JoinGroup"] == (0, 9)
    assert table["SyncGroup"] == (0, 5)
    assert table["Heartbeat"] == (0, 4)
    assert table["LeaveGroup"] == (0, 5)
    assert table["OffsetCommit"] == (2, 9)
    assert table["OffsetFetch"] == (1, 9)
    assert table["DescribeGroups"] == (0, 5)
    assert table["ListGroups"] == (0, 5)
    assert table["DeleteGroups"] == (0, 2)
    assert table["OffsetDelete"] == (0, 0)
    assert table["ConsumerGroupHeartbeat"] == (0, 1)
    assert table["ConsumerGroupDescribe"] == (0, 1)


def test_transaction_api_version_ranges() -> None:
    table = {api.name: (api.min_version, api.max_version) for api in handlers().values()}
    assert table["InitProducerId"] == (0, 5)
    # KIP-890 part 2 (EndTxn v5, AddPartitionsToTxn v5) is not implemented, so not offered.
    assert table["AddPartitionsToTxn"] == (0, 4)
    assert table["AddOffsetsToTxn"] == (0, 4)
    assert table["EndTxn"] == (0, 4)
    assert table["TxnOffsetCommit"] == (0, 4)
    assert table["DescribeTransactions"] == (0, 0)
    assert table["ListTransactions"] == (0, 1)
    assert table["DescribeProducers"] == (0, 0)
    # v0 has no codec (Kafka 4.0 dropped it); Kafka 3.x admins send v1.
    assert table["WriteTxnMarkers"] == (1, 1)


def test_api_versions_answer_is_kios_encoding_of_the_apis_served() -> None:
    """ApiVersions is encoded once and kept: the kept bytes are what kio encodes for the APIs
    the broker serves, for every version, and another set of APIs gets its own answer."""
    import types

    from kio.serial import entity_reader

    from odradek.broker.handlers import api_versions
    from odradek.errors import ErrorCode
    from odradek.protocol.messages import encode_response

    table = handlers()
    for version in range(5):
        request = types.SimpleNamespace(api_version=version)
        for apis in (table, {k: h for k, h in table.items() if k != 1}):
            broker = types.SimpleNamespace(supported_apis=lambda apis=apis: apis)
            frame = encode_response(18, 5, api_versions.handle(broker, request))  # type: ignore[arg-type]
            whole = api_versions.versions_body(version, ErrorCode.none, apis.values())
            assert frame == encode_response(18, 5, whole)
            body, _ = entity_reader(response_schema(18, version))(frame, 8)
            assert [(k.api_key, k.min_version, k.max_version) for k in body.api_keys] == sorted(
                (h.api_key, h.min_version, h.max_version) for h in apis.values()
            )
