"""AlterConfigs (key 33, the legacy form): replace a topic's whole set of overrides.

Configs a resource does not list go back to their defaults. As Kafka: a resource named twice is
INVALID_REQUEST for every occurrence, as is a config key named twice within one resource;
BROKER_LOGGER is not supported by this API (INVALID_REQUEST); broker configs are static here, so
changing them is INVALID_REQUEST too. ``validate_only`` checks everything and changes nothing.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.errors import error_code_for
from odradek.broker.handlers._config_resources import (
    ResourceType,
    check_unique_names,
    duplicate_resources,
    refuse_broker_changes,
)
from odradek.broker.registry import ApiHandler
from odradek.errors import ErrorCode, InvalidConfigError, InvalidRequestError, KafkaError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.app import Broker

__all__ = ["API"]

KEY = 33
_ZERO = datetime.timedelta(0)


def _alter(broker: Broker, resource: Any, validate_only: bool) -> None:
    check_unique_names(resource.configs)
    kind, name = resource.resource_type, resource.resource_name
    if kind == ResourceType.TOPIC:
        configs: dict[str, str] = {}
        nulls = []
        for c in resource.configs:
            if c.value is None:
                nulls.append(c.name)
            else:
                configs[c.name] = c.value
        if nulls:
            raise InvalidConfigError(
                f"Null value not supported for topic configs: {','.join(nulls)}"
            )
        broker.topics.set_configs(name, configs, validate_only=validate_only)
    elif kind == ResourceType.BROKER:
        refuse_broker_changes(broker, name, [c.name for c in resource.configs])
    elif kind == ResourceType.BROKER_LOGGER:
        raise InvalidRequestError(
            "AlterConfigs is deprecated and does not support the resource type BROKER_LOGGER"
        )
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
            code = error_code_for(e, context=f"alter configs of {r.resource_name!r}")
            responses.append(
                _response(mod, r, code, e.message if isinstance(e, KafkaError) else None)
            )
        else:
            responses.append(_response(mod, r, ErrorCode.none, None))
    return build(mod.AlterConfigsResponse, throttle_time=_ZERO, responses=tuple(responses))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    responses = tuple(_response(mod, r, code, None) for r in request.body.resources)
    return build(mod.AlterConfigsResponse, throttle_time=_ZERO, responses=responses)


API = ApiHandler(
    api_key=KEY,
    name="AlterConfigs",
    min_version=0,
    max_version=2,
    handle=handle,
    error_response=error_response,
)
