"""IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT single configs.

TOPIC resources change the topic's overrides (the result is validated as a whole, then stored
with ``TopicManager.set_configs``); BROKER_LOGGER resources change this process's log levels;
BROKER configs are static here, so changing them is INVALID_REQUEST. As Kafka: a resource named
twice is INVALID_REQUEST for every occurrence, so are a key named twice in one resource and a
null value for anything but DELETE; APPEND/SUBTRACT on a non-LIST config is INVALID_CONFIG.
``validate_only`` checks everything and changes nothing.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.errors import error_code_for
from odradek.broker.handlers._config_resources import (
    AlterOp,
    ResourceType,
    apply_logger_ops,
    check_logger_ops,
    check_node_id,
    check_unique_names,
    duplicate_resources,
    incremental_topic_configs,
    refuse_broker_changes,
)
from odradek.broker.registry import ApiHandler
from odradek.errors import (
    ErrorCode,
    InvalidRequestError,
    KafkaError,
    UnknownTopicOrPartitionError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.app import Broker

__all__ = ["API"]

KEY = 44
_ZERO = datetime.timedelta(0)


def _alter(broker: Broker, resource: Any, validate_only: bool) -> None:
    ops = resource.configs
    check_unique_names(ops)
    nulls = [op.name for op in ops if op.config_operation != AlterOp.DELETE and op.value is None]
    if nulls:
        raise InvalidRequestError(f"Null value not supported for : {', '.join(nulls)}")
    kind, name = resource.resource_type, resource.resource_name
    if kind == ResourceType.TOPIC:
        meta = broker.topics.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        configs = incremental_topic_configs(meta.configs, ops)
        broker.topics.set_configs(name, configs, validate_only=validate_only)
    elif kind == ResourceType.BROKER:
        refuse_broker_changes(broker, name, [op.name for op in ops])
    elif kind == ResourceType.BROKER_LOGGER:
        check_node_id(broker, name)
        check_logger_ops(ops)
        if not validate_only:
            apply_logger_ops(ops)
    else:
        raise InvalidRequestError(f"Unknown resource type {kind}")


def _response(mod: Any, resource: Any, code: ErrorCode, message: str | None) -> Any:
    return build(
        mod.AlterConfigsResourceResponse,
        error_code=code,
        error_message=message,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
    )


def handle(broker: Broker, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    duplicates = duplicate_resources(body.resources)
    responses = []
    for r in body.resources:
        try:
            if (int(r.resource_type), r.resource_name) in duplicates:
                raise InvalidRequestError("Each resource must appear at most once.")
            _alter(broker, r, body.validate_only)
        except Exception as e:
            code = error_code_for(e, context=f"incremental alter configs of {r.resource_name!r}")
            responses.append(
                _response(mod, r, code, e.message if isinstance(e, KafkaError) else None)
            )
        else:
            responses.append(_response(mod, r, ErrorCode.none, None))
    return build(
        mod.IncrementalAlterConfigsResponse, throttle_time=_ZERO, responses=tuple(responses)
    )


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    responses = tuple(_response(mod, r, code, None) for r in request.body.resources)
    return build(mod.IncrementalAlterConfigsResponse, throttle_time=_ZERO, responses=responses)


API = ApiHandler(
    api_key=KEY,
    name="IncrementalAlterConfigs",
    min_version=0,
    max_version=1,
    handle=handle,
    error_response=error_response,
)
