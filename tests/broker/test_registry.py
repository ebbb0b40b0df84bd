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
