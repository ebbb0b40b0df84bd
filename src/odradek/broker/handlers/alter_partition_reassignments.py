"""AlterPartitionReassignments (key 45, KIP-455): start or cancel moving partitions to other
brokers (:mod:`odradek.cluster.reassignment`).

Each partition is answered on its own: NONE once the reassignment is written (it then runs: the
controller completes it when the new replicas are in sync), UNKNOWN_TOPIC_OR_PARTITION,
INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS for a cancellation (null replicas) of
nothing. Kafka sends this to its controller; here any broker writes it
(:class:`~odradek.cluster.partition_changes.PartitionChanges`).

Only v0 is served: the Kafka message specs this broker follows define no other. kio also has
v1 (KIP-860's ``allow_replication_factor_change``, refused with INVALID_REPLICATION_FACTOR when
false and the size changes); the handler reads the field where present and the rule is in
:func:`~odradek.cluster.reassignment.start_reassignment`, so serving v1 is a change of
``max_version`` once the specs have it.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_of
from odradek.errors import ErrorCode, KafkaError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 45
_ZERO = datetime.timedelta(0)


def _response(request: Request, errors: Sequence[Sequence[tuple[ErrorCode, str | None]]],
              code: ErrorCode = ErrorCode.none, message: str | None = None) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    topics = tuple(
        build(
            mod.ReassignableTopicResponse,
            name=t.name,
            partitions=tuple(
                build(mod.ReassignablePartitionResponse, partition_index=p.partition_index,
                      error_code=e[0], error_message=e[1])
                for p, e in zip(t.partitions, topic_errors, strict=True)
            ),
        )
        for t, topic_errors in zip(body.topics, errors, strict=True)
    )
    return build(
        mod.AlterPartitionReassignmentsResponse,
        throttle_time=_ZERO,
        allow_replication_factor_change=getattr(body, "allow_replication_factor_change", True),
        error_code=code,
        error_message=message,
        responses=topics,
    )


async def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    targets: dict[tuple[str, int], tuple[int, ...] | None] = {}
    for t in body.topics:
        for p in t.partitions:
            replicas = None if p.replicas is None else tuple(int(r) for r in p.replicas)
            targets[(t.name, int(p.partition_index))] = replicas
    results = await broker.partition_changes.alter_reassignments(
        targets,
        allow_replication_factor_change=getattr(body, "allow_replication_factor_change", True),
    )

    def error(name: str, partition: int) -> tuple[ErrorCode, str | None]:
        e: KafkaError | None = results[(name, partition)]
        return (ErrorCode.none, None) if e is None else error_of(e, api_key=KEY)

    return _response(
        request,
        [[error(t.name, int(p.partition_index)) for p in t.partitions] for t in body.topics],
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    errors = [[(code, None)] * len(t.partitions) for t in request.body.topics]
    return _response(request, errors, code)


API = ApiHandler(
    api_key=KEY,
    name="AlterPartitionReassignments",
    min_version=0,
    max_version=0,
    handle=handle,
    error_response=error_response,
)
