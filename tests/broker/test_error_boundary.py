"""The error boundary: codes in the form each request version knows, and a whole-request error's
message carried to the client where the response has room for it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_admin_handlers import Admin, _start

from odradek.broker.errors import compatible_code, error_code_for, error_of
from odradek.broker.registry import handlers
from odradek.errors import ErrorCode, KafkaStorageError, ProducerFencedError
from odradek.storage.segment import SegmentCorruptError

INIT_PRODUCER_ID, END_TXN, PRODUCE, DESCRIBE_CLUSTER = 22, 26, 0, 60


@pytest.mark.parametrize(
    ("api_key", "version", "code", "expected"),
    [
        (INIT_PRODUCER_ID, 3, ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch),
        (INIT_PRODUCER_ID, 4, ErrorCode.producer_fenced, ErrorCode.producer_fenced),
        (END_TXN, 1, ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch),
        (END_TXN, 2, ErrorCode.producer_fenced, ErrorCode.producer_fenced),
        (PRODUCE, 11, ErrorCode.producer_fenced, ErrorCode.invalid_producer_epoch),
        (PRODUCE, 10, ErrorCode.transaction_abortable, ErrorCode.invalid_txn_state),
        (PRODUCE, 11, ErrorCode.transaction_abortable, ErrorCode.transaction_abortable),
        (PRODUCE, 3, ErrorCode.not_enough_replicas, ErrorCode.not_enough_replicas),
    ],
)
def test_codes_are_given_in_the_form_the_version_knows(
    api_key: int, version: int, code: ErrorCode, expected: ErrorCode
) -> None:
    assert compatible_code(api_key, version, code) is expected


def test_typed_errors_map_through_the_table_and_others_are_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fenced = ProducerFencedError("epoch 3 is older than 4")
    assert error_code_for(fenced, api_key=INIT_PRODUCER_ID, version=2) is (
        ErrorCode.invalid_producer_epoch
    )
    assert error_of(fenced) == (ErrorCode.producer_fenced, "epoch 3 is older than 4")
    assert not caplog.records
    # Other tests change the broker loggers' levels at run time (IncrementalAlterConfigs).
    with caplog.at_level(logging.ERROR, logger="odradek.broker"):
        assert error_of(RuntimeError("bug"), context="a test") == (
            ErrorCode.unknown_server_error, None
        )
    assert any("a test" in r.getMessage() for r in caplog.records)


def test_storage_errors_map_to_their_kafka_codes_without_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Storage logs corruption and I/O failures itself, once (storage/health.py); the boundary
    only maps them: a corrupt batch met by a read is CORRUPT_MESSAGE, as in Kafka."""
    corrupt = SegmentCorruptError(Path("t-0/00000000000000000000.log"), 120, "magic 0, not 2")
    with caplog.at_level(logging.WARNING, logger="odradek.broker"):
        assert error_code_for(corrupt, context="fetch") is ErrorCode.corrupt_message
        assert error_code_for(KafkaStorageError("disk full")) is ErrorCode.kafka_storage_error
    assert not caplog.records


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    yield from _start(tmp_path / "data")


def test_a_whole_request_error_carries_its_message(admin: Admin) -> None:
    api = handlers()[DESCRIBE_CLUSTER]

    def make(mod: Any) -> Any:
        # Endpoint type 2 asks for controllers, which a broker does not describe.
        return mod.DescribeClusterRequest(
            include_cluster_authorized_operations=False, endpoint_type=2
        )

    answer = admin.call(api, 1, make)
    assert answer.error_code == ErrorCode.mismatched_endpoint_type
    assert "CONTROLLER" in answer.error_message


def test_an_error_without_a_message_field_is_still_answered(admin: Admin) -> None:
    api = handlers()[END_TXN]

    def make(mod: Any) -> Any:
        return mod.EndTxnRequest(
            transactional_id="never-initialised", producer_id=1, producer_epoch=0, committed=True
        )

    answer = admin.call(api, 1, make)
    assert answer.error_code == ErrorCode.invalid_producer_id_mapping
