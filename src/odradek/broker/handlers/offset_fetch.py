"""OffsetFetch (key 9): a group's committed offsets; v8+ asks for several groups at once.

A partition without a commit answers offset -1. A null topic list (v2+) means every partition
the group has committed. KIP-848 members (v9) are checked against their group's member epoch.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.coordinator.group.coordinator import CommittedOffset
from odradek.errors import ErrorCode
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 9
_ZERO = datetime.timedelta(0)


def _topics(mod: Any, version: int, offsets: list[CommittedOffset]) -> Any:
    v8 = version >= 8
    partition_cls = mod.OffsetFetchResponsePartitions if v8 else mod.OffsetFetchResponsePartition
    topic_cls = mod.OffsetFetchResponseTopics if v8 else mod.OffsetFetchResponseTopic
    by_topic: dict[str, list[Any]] = {}
    for o in offsets:
        by_topic.setdefault(o.topic, []).append(
            build(
                partition_cls,
                partition_index=o.partition,
                committed_offset=o.offset,
                committed_leader_epoch=o.leader_epoch,
                metadata=o.metadata,
                error_code=o.error,
            )
        )
    return tuple(
        build(topic_cls, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()
    )


def _requested(topics: Any) -> list[tuple[str, list[int]]] | None:
    if topics is None:
        return None
    return [(t.name, list(t.partition_indexes)) for t in topics]


def _fetch(
    broker: BrokerServices, group_id: str, topics: Any, member_id: Any, epoch: int, stable: bool
) -> tuple[list[CommittedOffset], ErrorCode]:
    wanted = _requested(topics)
    coordinator = broker.group_coordinator
    try:
        return broker.groups.run(group_id, lambda: coordinator.fetch_offsets(
            group_id, wanted, member_id=member_id, member_epoch=epoch, require_stable=stable
        )), ErrorCode.none
    except Exception as e:
        return [], error_code_for(e, context=f"fetching offsets of group {group_id}")


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    stable = bool(getattr(body, "require_stable", False))
    if version < 8:
        offsets, code = _fetch(broker, body.group_id, body.topics, None, -1, stable)
        return build(
            mod.OffsetFetchResponse,
            throttle_time=_ZERO,
            error_code=code,
            topics=_topics(mod, version, offsets),
        )
    groups = []
    for g in body.groups:
        offsets, code = _fetch(
            broker, g.group_id, g.topics, getattr(g, "member_id", None),
            getattr(g, "member_epoch", -1), stable,
        )
        groups.append(
            build(mod.OffsetFetchResponseGroup, group_id=g.group_id, error_code=code,
                  topics=_topics(mod, version, offsets))
        )
    return build(mod.OffsetFetchResponse, throttle_time=_ZERO, groups=tuple(groups))


def error_response(request: Request, code: ErrorCode) -> Any:
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    if version < 8:
        # v0/v1 have no top-level error code: report it on each requested partition.
        offsets = [
            CommittedOffset(t, p, -1, error=code)
            for t, ps in (_requested(body.topics) or [])
            for p in ps
        ]
        return build(mod.OffsetFetchResponse, throttle_time=_ZERO, error_code=code,
                     topics=_topics(mod, version, offsets))
    return build(
        mod.OffsetFetchResponse,
        throttle_time=_ZERO,
        groups=tuple(
            build(mod.OffsetFetchResponseGroup, group_id=g.group_id, error_code=code, topics=())
            for g in body.groups
        ),
    )


API = ApiHandler(
    api_key=KEY,
    name="OffsetFetch",
    min_version=1,
    max_version=9,
    handle=handle,
    error_response=error_response,
)
