"""What OffsetCommit and TxnOffsetCommit share: partitions that do not exist are answered
UNKNOWN_TOPIC_OR_PARTITION without reaching the coordinator (as Kafka's KafkaApis does), and
per-partition results are grouped back by topic."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odradek.errors import ErrorCode
from odradek.protocol.build import build

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = [
    "Offset",
    "Result",
    "requested_offsets",
    "every_partition",
    "known_partitions",
    "in_request_order",
    "topic_results",
]

#: (topic, partition, offset, leader epoch, metadata) of one commit.
Offset = tuple[str, int, int, int, "str | None"]
Result = tuple[str, int, ErrorCode]
_ZERO = datetime.timedelta(0)


def requested_offsets(body: Any) -> list[Offset]:
    """The offsets of an OffsetCommit or TxnOffsetCommit request body, in request order."""
    return [
        (
            t.name,
            p.partition_index,
            p.committed_offset,
            getattr(p, "committed_leader_epoch", -1),
            p.committed_metadata,
        )
        for t in body.topics
        for p in t.partitions
    ]


def every_partition(body: Any, code: ErrorCode) -> list[Result]:
    """``code`` for every partition of the request: its whole-request error form."""
    return [(t.name, p.partition_index, code) for t in body.topics for p in t.partitions]


def known_partitions(broker: BrokerServices, offsets: Sequence[Offset]) -> tuple[list[Offset], list[Result]]:
    """Split ``offsets`` into those of existing partitions and results for the others."""
    known: list[Offset] = []
    unknown: list[Result] = []
    for item in offsets:
        meta = broker.topics.topic(item[0])
        if meta is None or not 0 <= item[1] < meta.partitions:
            unknown.append((item[0], item[1], ErrorCode.unknown_topic_or_partition))
        else:
            known.append(item)
    return known, unknown


def in_request_order(offsets: Sequence[Offset], *parts: Sequence[Result]) -> list[Result]:
    by_partition = {(t, p): code for results in parts for t, p, code in results}
    return [(t, p, by_partition[(t, p)]) for t, p, *_ in offsets]


def topic_results(
    mod: Any, response: str, topic: str, partition: str, results: Sequence[Result]
) -> Any:
    """``mod.<response>`` whose topics (``mod.<topic>``) list each partition's error code."""
    by_topic: dict[str, list[Any]] = {}
    for name, index, code in results:
        by_topic.setdefault(name, []).append(
            build(getattr(mod, partition), partition_index=index, error_code=code)
        )
    return build(
        getattr(mod, response),
        throttle_time=_ZERO,
        topics=tuple(
            build(getattr(mod, topic), name=name, partitions=tuple(parts))
            for name, parts in by_topic.items()
        ),
    )
