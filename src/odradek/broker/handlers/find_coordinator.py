"""FindCoordinator (key 10): which broker coordinates a group or a transactional id.

The coordinator of a group is the leader of its ``__consumer_offsets`` partition, and of a
transactional id the leader of its ``__transaction_state`` partition (Kafka's hash:
``abs(String.hashCode(key)) % partitions``); the answer names that broker's advertised host and
port from the image. While the partition has no leader (its broker is gone and nobody took it
over) the key is COORDINATOR_NOT_AVAILABLE, and clients ask again. Asking for a group creates
``__consumer_offsets``, and for a transactional id ``__transaction_state``, on first use, as
Kafka does (answered once the topic is there). The answer does not wait for the coordinator to
load the partition: its requests answer COORDINATOR_LOAD_IN_PROGRESS meanwhile, as Kafka's.
A fenced broker (its session may have expired, so its image may be stale) answers
COORDINATOR_NOT_AVAILABLE rather than name a coordinator from that image, and so does a broker
the image names leader for an earlier incarnation of it. Versions 4+ batch the keys (KIP-699); key types other than group (0) and transaction (1) are
INVALID_REQUEST.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.errors import CoordinatorNotAvailableError, ErrorCode, InvalidRequestError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.internal_topics import InternalTopic
    from odradek.broker.services import BrokerServices

__all__ = ["API", "GROUP", "TRANSACTION"]

KEY = 10
GROUP = 0
TRANSACTION = 1
_ZERO = datetime.timedelta(0)


def _internal_topic(broker: BrokerServices, key_type: int) -> InternalTopic | None:
    if key_type == GROUP:
        return broker.groups.topic
    if key_type == TRANSACTION:
        return broker.transactions.topic
    return None


def _locate(
    broker: BrokerServices, key_type: int, key: str, failure: Exception | None
) -> dict[str, Any]:
    """The coordinator of ``key`` as response fields (node id, host, port); raises what the
    key is answered with instead."""
    if key_type not in (GROUP, TRANSACTION):
        raise InvalidRequestError(f"unknown coordinator key type {key_type}")
    if failure is not None:
        raise failure
    if broker.fenced:
        # Its image may be stale (another broker may lead the partition now): name nobody.
        raise CoordinatorNotAvailableError(
            f"broker {broker.node_id} is fenced: its view of the cluster may be stale"
        )
    host = broker.groups if key_type == GROUP else broker.transactions
    topic = host.topic.name
    partition = host.partition_for(key)
    state = broker.cluster.partition(topic, partition)
    leader = None
    if state is not None and state.leader >= 0:
        leader = broker.cluster.broker(state.leader)  # None: its registration is gone
    if leader is None:
        raise CoordinatorNotAvailableError(f"{topic}-{partition} has no live leader")
    if leader.info.node_id == broker.node_id:
        if not host.acts_as_leader(partition):
            # A leadership of an earlier incarnation of this broker: its requests would answer
            # NOT_COORDINATOR until the controller writes the partition again.
            raise CoordinatorNotAvailableError(
                f"{topic}-{partition}: broker {broker.node_id} does not act as its leader yet"
            )
        # This broker: its own advertised address, as every other answer of it gives it.
        return dict(node_id=broker.node_id, host=broker.advertised_host,
                    port=broker.advertised_port)
    return dict(node_id=leader.info.node_id, host=leader.info.host, port=leader.info.port)


def handle(broker: BrokerServices, request: Request) -> Any:
    topic = _internal_topic(broker, getattr(request.body, "key_type", GROUP))
    if topic is not None and not topic.exists():
        return _after_creating(broker, request, topic)
    return _answer(broker, request, None)


async def _after_creating(broker: BrokerServices, request: Request, topic: InternalTopic) -> Any:
    try:
        await topic.ensure()
    except Exception as e:
        return _answer(broker, request, e)
    return _answer(broker, request, None)


def _answer(broker: BrokerServices, request: Request, failure: Exception | None) -> Any:
    """The response, given how creating the internal topic went (``failure``)."""
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    key_type = getattr(body, "key_type", GROUP)
    if version < 4:
        try:
            node = _locate(broker, key_type, body.key, failure)
        except Exception as e:
            code = error_code_for(e, context="FindCoordinator")
            return _single(mod, code, str(e))
        return build(mod.FindCoordinatorResponse, throttle_time=_ZERO,
                     error_code=ErrorCode.none, error_message=None, **node)
    coordinators = []
    for key in body.coordinator_keys:
        try:
            node = _locate(broker, key_type, key, failure)
        except Exception as e:
            code = error_code_for(e, context="FindCoordinator")
            coordinators.append(
                build(mod.Coordinator, key=key, node_id=-1, host="", port=-1, error_code=code,
                      error_message=str(e))
            )
            continue
        coordinators.append(
            build(mod.Coordinator, key=key, error_code=ErrorCode.none, error_message=None, **node)
        )
    return build(mod.FindCoordinatorResponse, throttle_time=_ZERO, coordinators=tuple(coordinators))


def _single(mod: Any, code: ErrorCode, message: str | None) -> Any:
    return build(mod.FindCoordinatorResponse, throttle_time=_ZERO, error_code=code,
                 error_message=message, node_id=-1, host="", port=-1)


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    if request.api_version < 4:
        return _single(mod, code, None)
    return build(
        mod.FindCoordinatorResponse,
        throttle_time=_ZERO,
        coordinators=tuple(
            build(mod.Coordinator, key=k, node_id=-1, host="", port=-1, error_code=code,
                  error_message=None)
            for k in request.body.coordinator_keys
        ),
    )


API = ApiHandler(
    api_key=KEY,
    name="FindCoordinator",
    min_version=0,
    max_version=5,
    handle=handle,
    error_response=error_response,
)
