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

from odradek.broker.contract import ApiHandler
from odradek.broker.handlers._config_resources import (
    AlterOp,
    ResourceType,
    alter_error_response,
    alter_resources,
    apply_logger_ops,
    check_logger_ops,
    check_node_id,
    check_unique_names,
    incremental_topic_configs,
    refuse_broker_changes,
)
from odradek.errors import (
    ErrorCode,
    InvalidRequestError,
    UnknownTopicOrPartitionError,
)
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 44
_ZERO = datetime.timedelta(0)


async def _alter(broker: BrokerServices, resource: Any, validate_only: bool) -> None:
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
        await broker.topics.set_configs(name, configs, validate_only=validate_only)
    elif kind == ResourceType.BROKER:
        refuse_broker_changes(broker, name, [op.name for op in ops])
    elif kind == ResourceType.BROKER_LOGGER:
        check_node_id(broker, name)
        check_logger_ops(ops)
        if not validate_only:
            apply_logger_ops(ops)
    else:
        raise InvalidRequestError(f"Unknown resource type {kind}")


def handle(broker: BrokerServices, request: Request) -> Any:
    return alter_resources(broker, request, KEY, "IncrementalAlterConfigsResponse", _alter)


def error_response(request: Request, code: ErrorCode) -> Any:
    return alter_error_response(request, code, KEY, "IncrementalAlterConfigsResponse")


API = ApiHandler(
    api_key=KEY,
    name="IncrementalAlterConfigs",
    min_version=0,
    max_version=1,
    handle=handle,
    error_response=error_response,
)
