"""DescribeCluster (key 60): the cluster id, the live brokers and the controller, from the
broker's :class:`~odradek.cluster.model.MetadataView`.

A live broker is a registered one; this broker, when fenced (its registration may have
expired), is listed with ``IsFenced`` only when the request asks for fenced brokers (v2), as
Kafka lists fenced brokers.

Only the broker endpoint type (1) is served: asking a broker for controllers (2) is
MISMATCHED_ENDPOINT_TYPE and an unknown type UNSUPPORTED_ENDPOINT_TYPE (INVALID_REQUEST for both in
v0, which has no endpoint type), as Kafka. There is no authorizer, so when the cluster's authorized
operations are asked for they are every operation Kafka defines on the cluster resource.
"""

from __future__ import annotations

import datetime
import enum
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.handlers._common import CLUSTER_OPERATIONS
from odradek.errors import (
    ErrorCode,
    InvalidRequestError,
    MismatchedEndpointTypeError,
    UnsupportedEndpointTypeError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API", "EndpointType", "CLUSTER_OPERATIONS"]

KEY = 60
_ZERO = datetime.timedelta(0)
NOT_REQUESTED = -(2**31)


class EndpointType(enum.IntEnum):
    UNKNOWN = 0
    BROKER = 1
    CONTROLLER = 2




def _check_endpoint(version: int, requested: int) -> None:
    if requested == EndpointType.BROKER:
        return
    if requested == EndpointType.CONTROLLER:
        message = (
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of "
            "type CONTROLLER"
        )
        raise (InvalidRequestError if version == 0 else MismatchedEndpointTypeError)(message)
    message = f"Unsupported endpoint type {requested}"
    raise (InvalidRequestError if version == 0 else UnsupportedEndpointTypeError)(message)


def _response(mod: Any, code: ErrorCode, message: str | None, **fields: Any) -> Any:
    values: dict[str, Any] = dict(
        throttle_time=_ZERO,
        error_code=code,
        error_message=message,
        endpoint_type=EndpointType.BROKER,
        cluster_id="",
        controller_id=-1,
        brokers=(),
        cluster_authorized_operations=NOT_REQUESTED,
    )
    values.update(fields)
    return build(mod.DescribeClusterResponse, **values)


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    version = request.api_version
    mod = response_module(KEY, version)
    _check_endpoint(version, getattr(body, "endpoint_type", EndpointType.BROKER))
    view = broker.cluster
    with_fenced = getattr(body, "include_fenced_brokers", False)
    brokers = []
    for b in view.live_brokers():
        fenced = broker.fenced and b.info.node_id == broker.node_id
        if fenced and not with_fenced:
            continue
        brokers.append(build(
            mod.DescribeClusterBroker,
            broker_id=b.info.node_id,
            host=b.info.host,
            port=b.info.port,
            rack=b.info.rack,
            is_fenced=fenced,
        ))
    operations = (
        CLUSTER_OPERATIONS if body.include_cluster_authorized_operations else NOT_REQUESTED
    )
    return _response(
        mod,
        ErrorCode.none,
        None,
        cluster_id=view.cluster_id,
        controller_id=view.controller_id,
        brokers=tuple(brokers),
        cluster_authorized_operations=operations,
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    return _response(response_module(KEY, request.api_version), code, None)


API = ApiHandler(
    api_key=KEY,
    name="DescribeCluster",
    min_version=0,
    max_version=2,
    handle=handle,
    error_response=error_response,
)
