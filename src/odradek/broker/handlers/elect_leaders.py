"""ElectLeaders (key 43, KIP-183/KIP-460): elect the preferred replica, or (v1+) a leader for a
leaderless partition even out of sync, on request (:mod:`odradek.cluster.preferred`).

Each partition is answered on its own: NONE once the new leader is written,
ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
UNKNOWN_TOPIC_OR_PARTITION. Null ``topic_partitions`` means every partition, and then, as Kafka
answers, partitions that needed no election are left out. v0 has no election type (always
preferred); an unknown type is INVALID_REQUEST for the whole request.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_of
from odradek.cluster.preferred import ElectionType
from odradek.errors import ErrorCode, InvalidRequestError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 43
_ZERO = datetime.timedelta(0)

_Results = dict[str, list[tuple[int, ErrorCode, str | None]]]


def _response(request: Request, results: _Results, code: ErrorCode = ErrorCode.none) -> Any:
    mod = response_module(KEY, request.api_version)
    topics = tuple(
        build(
            mod.ReplicaElectionResult,
            topic=name,
            partition_result=tuple(
                build(mod.PartitionResult, partition_id=p, error_code=c, error_message=m)
                for p, c, m in partitions
            ),
        )
        for name, partitions in results.items()
    )
    return build(mod.ElectLeadersResponse, throttle_time=_ZERO, error_code=code,
                 replica_election_results=topics)


async def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    raw_type = int(getattr(body, "election_type", ElectionType.PREFERRED))
    try:
        election = ElectionType(raw_type)
    except ValueError:
        raise InvalidRequestError(f"Unknown election type {raw_type}") from None
    wanted = None
    if body.topic_partitions is not None:
        wanted = [(t.topic, int(p)) for t in body.topic_partitions for p in t.partitions]
    outcome = await broker.partition_changes.elect_leaders(election, wanted)
    results: _Results = {}
    for (topic, partition), e in outcome.items():
        code, message = (ErrorCode.none, None) if e is None else error_of(e, api_key=KEY)
        results.setdefault(topic, []).append((partition, code, message))
    return _response(request, results)


def error_response(request: Request, code: ErrorCode) -> Any:
    results: _Results = {}
    for t in request.body.topic_partitions or ():
        results.setdefault(t.topic, []).extend((int(p), code, None) for p in t.partitions)
    return _response(request, results, code)


API = ApiHandler(
    api_key=KEY,
    name="ElectLeaders",
    min_version=0,
    max_version=2,
    handle=handle,
    error_response=error_response,
)
