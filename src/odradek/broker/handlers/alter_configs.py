"""AlterConfigs (key 33, the legacy form): replace a topic's whole set of overrides.

Configs a resource does not list go back to their defaults. As Kafka: a resource named twice is
INVALID_REQUEST for every occurrence, as is a config key named twice within one resource;
BROKER_LOGGER is not supported by this API (INVALID_REQUEST); broker configs are static here, so
changing them is INVALID_REQUEST too. ``validate_only`` checks everything and changes nothing.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.handlers._config_resources import (
    ResourceType,
    alter_error_response,
    alter_resources,
    check_unique_names,
    refuse_broker_changes,
)
from odradek.errors import ErrorCode, InvalidConfigError, InvalidRequestError
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 33
_ZERO = datetime.timedelta(0)


async def _alter(broker: BrokerServices, resource: Any, validate_only: bool) -> None:
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
        await broker.topics.set_configs(name, configs, validate_only=validate_only)
    elif kind == ResourceType.BROKER:
        refuse_broker_changes(broker, name, [c.name for c in resource.configs])
    elif kind == ResourceType.BROKER_LOGGER:
        raise InvalidRequestError(
            "AlterConfigs is deprecated and does not support the resource type BROKER_LOGGER"
        )
    else:
        raise InvalidRequestError(f"Unknown resource type {kind}")


def handle(broker: BrokerServices, request: Request) -> Any:
    return alter_resources(broker, request, KEY, "AlterConfigsResponse", _alter)


def error_response(request: Request, code: ErrorCode) -> Any:
    return alter_error_response(request, code, KEY, "AlterConfigsResponse")


API = ApiHandler(
    api_key=KEY,
    name="AlterConfigs",
    min_version=0,
    max_version=2,
    handle=handle,
    error_response=error_response,
)
