"""The parts encoder of Fetch responses writes exactly what kio writes with the records inlined."""

from __future__ import annotations

import dataclasses
import datetime
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.fetch_response import FETCH_KEY, ResponseParts, encode_fetch_response
from odradek.protocol.messages import encode_response


@dataclass(frozen=True)
class Region:
    """Stands in for a file slice: the encoder sees only its size."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def _body(version: int, records: list[Any], *, aborted: bool, throttle_ms: int = 0) -> Any:
    mod = response_module(FETCH_KEY, version)
    partitions = []
    for i, r in enumerate(records):
        ab = None
        if aborted and i % 2 == 0:
            ab = tuple(
                build(mod.AbortedTransaction, producer_id=1000 + k, first_offset=7 * k)
                for k in range(i % 3)
            )
        partitions.append(build(
            mod.PartitionData, partition_index=i, error_code=ErrorCode(i % 4),
            high_watermark=10_000 + i, last_stable_offset=9_000 + i, log_start_offset=i,
            aborted_transactions=ab, preferred_read_replica=-1, records=r,
        ))
    topics = (
        build(mod.FetchableTopicResponse, topic="tópico-α", topic_id=uuid.uuid4(),
              partitions=tuple(partitions[: len(partitions) // 2])),
        build(mod.FetchableTopicResponse, topic="t" * 300, topic_id=None,
              partitions=tuple(partitions[len(partitions) // 2 :])),
        build(mod.FetchableTopicResponse, topic="empty", topic_id=uuid.uuid4(), partitions=()),
    )
    return build(mod.FetchResponse, throttle_time=datetime.timedelta(milliseconds=throttle_ms),
                 error_code=ErrorCode.none, session_id=0, responses=topics)


def _inlined(body: Any) -> Any:
    """The same body with every region replaced by its bytes."""
    topics = []
    for t in body.responses:
        parts = tuple(
            dataclasses.replace(p, records=p.records.data) if isinstance(p.records, Region) else p
            for p in t.partitions
        )
        topics.append(dataclasses.replace(t, partitions=parts))
    return dataclasses.replace(body, responses=tuple(topics))


def _joined(parts: ResponseParts) -> bytes:
    return b"".join(p if isinstance(p, bytes) else p.data for p in parts.parts)  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", range(4, 17))
@pytest.mark.parametrize("aborted", [False, True])
def test_parts_match_kio_byte_for_byte(version: int, aborted: bool) -> None:
    records: list[Any] = [
        b"", None, os.urandom(100), Region(os.urandom(5000)), Region(os.urandom(200)),
        os.urandom(130), Region(b""), Region(os.urandom(70_000)),
    ]
    body = _body(version, records, aborted=aborted, throttle_ms=17)
    parts = encode_fetch_response(4711, version, body)
    expected = encode_response(FETCH_KEY, 4711, _inlined(body))
    assert _joined(parts) == expected
    assert parts.size == len(expected)
    assert len(parts.regions) == 4
    # Regions stand alone between bytes parts, in order.
    assert [p.size for p in parts.regions] == [5000, 200, 0, 70_000]


@pytest.mark.parametrize("version", range(4, 17))
def test_without_regions_one_bytes_part(version: int) -> None:
    body = _body(version, [b"x" * 10, None, b""], aborted=True)
    parts = encode_fetch_response(-5, version, body)
    assert parts.parts == (encode_response(FETCH_KEY, -5, body),)


def test_varint_length_of_large_region_in_flexible_versions() -> None:
    # A length + 1 that needs several varint bytes (and a region that is never read here).
    class Big:
        size = 300_000_000

    body = _body(16, [Big()], aborted=False)
    parts = encode_fetch_response(1, 16, body)
    assert parts.size == sum(p.size if not isinstance(p, bytes) else len(p) for p in parts.parts)
    head = parts.parts[0]
    assert isinstance(head, bytes)
    assert head.endswith(bytes([0x81, 0xC6, 0x86, 0x8F, 0x01]))  # uvarint(300_000_001)
    assert int.from_bytes(head[:4], "big") == parts.size - 4


def test_versions_outside_the_served_range_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_fetch_response(1, 3, _body(4, [], aborted=False))
    with pytest.raises(ValueError):
        encode_fetch_response(1, 17, _body(16, [], aborted=False))


@pytest.mark.parametrize("racks", [(None, "rack-b"), ("é", None)])
def test_kip951_current_leader_and_node_endpoints_match_kio(racks: tuple[str | None, ...]) -> None:
    version = 16
    mod = response_module(FETCH_KEY, version)
    body = _body(version, [b"", None, Region(os.urandom(300))], aborted=True)
    leader = build(mod.LeaderIdAndEpoch, leader_id=2, leader_epoch=300)
    first = body.responses[0]
    moved = dataclasses.replace(
        first.partitions[0], error_code=ErrorCode.not_leader_or_follower, records=None,
        current_leader=leader,
    )
    endpoints = tuple(
        build(mod.NodeEndpoint, node_id=n, host=f"broker-{n}.example", port=9000 + n, rack=r)
        for n, r in zip((2, 3), racks, strict=True)
    )
    body = dataclasses.replace(
        body,
        responses=(dataclasses.replace(first, partitions=(moved, *first.partitions[1:])),
                   *body.responses[1:]),
        node_endpoints=endpoints,
    )
    parts = encode_fetch_response(9, version, body)
    assert _joined(parts) == encode_response(FETCH_KEY, 9, _inlined(body))


@pytest.mark.parametrize("with_leader", [False, True])
@pytest.mark.parametrize("version", [12, 16])
def test_kip279_diverging_epoch_matches_kio(version: int, with_leader: bool) -> None:
    mod = response_module(FETCH_KEY, version)
    body = _body(version, [b"", Region(os.urandom(100))], aborted=False)
    first = body.responses[0]
    extra = {"current_leader": build(mod.LeaderIdAndEpoch, leader_id=1, leader_epoch=7)}
    diverged = dataclasses.replace(
        first.partitions[0], records=b"",
        diverging_epoch=build(mod.EpochEndOffset, epoch=3, end_offset=1 << 40),
        **(extra if with_leader else {}),
    )
    body = dataclasses.replace(
        body,
        responses=(dataclasses.replace(first, partitions=(diverged, *first.partitions[1:])),
                   *body.responses[1:]),
    )
    parts = encode_fetch_response(5, version, body)
    assert _joined(parts) == encode_response(FETCH_KEY, 5, _inlined(body))


def test_snapshot_id_is_refused() -> None:
    mod = response_module(FETCH_KEY, 16)
    body = _body(16, [b""], aborted=False)
    p = dataclasses.replace(
        body.responses[0].partitions[0] if body.responses[0].partitions
        else body.responses[1].partitions[0],
        snapshot_id=build(mod.SnapshotId, epoch=3, end_offset=10),
    )
    t = dataclasses.replace(body.responses[0], partitions=(p,))
    with pytest.raises(ValueError):
        encode_fetch_response(1, 16, dataclasses.replace(body, responses=(t,)))
