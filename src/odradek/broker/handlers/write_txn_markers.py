"""WriteTxnMarkers (key 27): append COMMIT/ABORT markers to partitions this broker leads.

The transaction coordinator sends this to the leaders of a transaction's partitions it does not
lead itself (``broker/transactions.py``; the markers of partitions it leads are appended
in-process). The other sender is an operator: KIP-664's ``Admin.abortTransaction`` (``odradek
transactions abort``) ends a hanging transaction -- one the coordinator no longer knows -- by
writing an ABORT marker for its producer to the partition.

Per partition, as Kafka's ``handleWriteTxnMarkersRequest``: a topic or partition that does not
exist is UNKNOWN_TOPIC_OR_PARTITION; otherwise the marker is appended as the coordinator would
append it, and storage's checks answer: a producer epoch older than the partition's is
INVALID_PRODUCER_EPOCH, a coordinator epoch older than the last marker's
TRANSACTION_COORDINATOR_FENCED. A marker for a producer with no open transaction is written
and only updates its epochs. Markers in ``__consumer_offsets`` also complete the producer's
pending transactional offset commits there. Unlike Kafka, a marker without a producer id or
epoch (negative) is INVALID_REQUEST: it could end no transaction.

Results are grouped by producer id, as Kafka groups them (two markers of one producer in a
request share one result); a partition named twice in one marker is written once.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.inter_broker import INTER_BROKER_CLIENT_PREFIX
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request
from odradek.protocol.records import encode_control_batch

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 27
log = logging.getLogger("odradek.broker.transactions")

# producer id -> topic -> partition -> outcome, in request order
_Results = dict[int, dict[str, dict[int, ErrorCode]]]


def _write_marker(
    broker: BrokerServices, marker: Any, results: _Results, *, from_broker: bool
) -> None:
    producer_id = marker.producer_id
    commit = bool(marker.transaction_result)
    by_topic = results.setdefault(producer_id, {})
    batch = None
    if producer_id >= 0 and marker.producer_epoch >= 0:
        batch = encode_control_batch(
            producer_id,
            marker.producer_epoch,
            commit=commit,
            coordinator_epoch=marker.coordinator_epoch,
            timestamp=broker.clock.milliseconds(),
        )
    seen: set[tuple[str, int]] = set()
    for t in marker.topics:
        codes = by_topic.setdefault(t.name, {})
        for index in t.partition_indexes:
            if (t.name, index) in seen:
                continue
            seen.add((t.name, index))
            if batch is None:
                codes[index] = ErrorCode.invalid_request
                continue
            codes[index] = broker.transactions.append_marker(
                t.name, index, batch, producer_id, commit
            )
            if codes[index] is ErrorCode.none:
                # An operator's marker is worth a line; a coordinator's are routine.
                log.log(
                    logging.DEBUG if from_broker else logging.INFO,
                    "wrote %s marker for %s-%d of producer %d epoch %d (coordinator epoch %d) "
                    "on request", "COMMIT" if commit else "ABORT", t.name, index,
                    producer_id, marker.producer_epoch, marker.coordinator_epoch,
                )


def _response(mod: Any, results: _Results) -> Any:
    return build(
        mod.WriteTxnMarkersResponse,
        markers=tuple(
            build(
                mod.WritableTxnMarkerResult,
                producer_id=producer_id,
                topics=tuple(
                    build(
                        mod.WritableTxnMarkerTopicResult,
                        name=name,
                        partitions=tuple(
                            build(
                                mod.WritableTxnMarkerPartitionResult,
                                partition_index=index,
                                error_code=code,
                            )
                            for index, code in codes.items()
                        ),
                    )
                    for name, codes in by_topic.items()
                ),
            )
            for producer_id, by_topic in results.items()
        ),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    results: _Results = {}
    from_broker = (request.client_id or "").startswith(INTER_BROKER_CLIENT_PREFIX)
    for marker in request.body.markers:
        _write_marker(broker, marker, results, from_broker=from_broker)
    return _response(response_module(KEY, request.api_version), results)


def error_response(request: Request, code: ErrorCode) -> Any:
    results: _Results = {}
    for marker in request.body.markers:
        by_topic = results.setdefault(marker.producer_id, {})
        for t in marker.topics:
            codes = by_topic.setdefault(t.name, {})
            for index in t.partition_indexes:
                codes[index] = code
    return _response(response_module(KEY, request.api_version), results)


API = ApiHandler(
    api_key=KEY,
    name="WriteTxnMarkers",
    # v0 left Kafka in 4.0 and has no codec here; Kafka 3.x's admin sends v1.
    min_version=1,
    max_version=1,
    handle=handle,
    error_response=error_response,
)
