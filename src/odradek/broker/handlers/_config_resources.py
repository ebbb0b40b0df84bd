"""Config resources shared by DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

What a resource (type, name) means here, as Apache Kafka does it:

- TOPIC: a topic's dynamic overrides (``TopicManager.set_configs`` replaces the whole set).
- BROKER: this node's configuration (resource name = the node id) or the cluster-wide dynamic
  defaults (empty name). Broker configs are static in odradek, so every change to them is refused
  with INVALID_REQUEST, the code Kafka gives configs that cannot be updated dynamically.
- BROKER_LOGGER: the process's loggers (Python's ``logging``, levels in log4j's names). Reading
  and changing them needs this node's id as the resource name. Levels are process-wide: every
  broker in one process shares them, as every broker in one JVM shares log4j's.
"""

from __future__ import annotations

import datetime
import enum
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from odradek.broker.errors import error_code_for
from odradek.broker.handlers._admin_deadline import AdminDeadline
from odradek.config import TOPIC_CONFIGS, ConfigType
from odradek.errors import ErrorCode, InvalidConfigError, InvalidRequestError, KafkaError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = [
    "alter_resources",
    "alter_error_response",
    "ResourceType",
    "AlterOp",
    "ROOT_LOGGER",
    "LOG_LEVELS",
    "check_node_id",
    "duplicate_resources",
    "check_unique_names",
    "refuse_broker_changes",
    "logger_levels",
    "check_logger_ops",
    "apply_logger_ops",
    "incremental_topic_configs",
]


class ResourceType(enum.IntEnum):
    """Kafka's ConfigResource.Type ids."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8
    CLIENT_METRICS = 16
    GROUP = 32


class AlterOp(enum.IntEnum):
    """IncrementalAlterConfigs operation ids (Kafka's AlterConfigOp.OpType)."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


ROOT_LOGGER = "root"
#: log4j level name -> Python logging level, in Kafka's order (LogLevelConfig.VALID_LOG_LEVELS).
LOG_LEVELS: Mapping[str, int] = {
    "FATAL": logging.CRITICAL,
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": 5,
}
_JAVA_INT = re.compile(r"[+-]?[0-9]+")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def check_node_id(broker: BrokerServices, name: str | None) -> None:
    """Raise INVALID_REQUEST unless ``name`` is this node's id written as an integer."""
    text = name or ""
    if not _JAVA_INT.fullmatch(text) or not _INT_MIN <= int(text) <= _INT_MAX:
        raise InvalidRequestError(f"node id must be an integer, but it is: {text!r}")
    if int(text) != broker.node_id:
        raise InvalidRequestError(
            f"unexpected node id: expected {broker.node_id}, but received {text}"
        )


def duplicate_resources(resources: Iterable[Any]) -> set[tuple[int, str]]:
    """The (resource_type, resource_name) pairs that appear more than once."""
    seen: set[tuple[int, str]] = set()
    duplicates: set[tuple[int, str]] = set()
    for r in resources:
        key = (int(r.resource_type), r.resource_name)
        if key in seen:
            duplicates.add(key)
        seen.add(key)
    return duplicates


def check_unique_names(configs: Sequence[Any]) -> None:
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise InvalidRequestError("Error due to duplicate config keys")


def refuse_broker_changes(broker: BrokerServices, name: str, config_names: Sequence[str]) -> None:
    """The BROKER resource of an alter request: valid name, and nothing to change (broker
    configs are static here). An empty name is the cluster-wide default resource."""
    if name:
        check_node_id(broker, name)
    if config_names:
        raise InvalidRequestError(
            "broker configs are static in odradek; cannot update these configs dynamically: "
            + ", ".join(sorted(set(config_names)))
        )


# -- BROKER_LOGGER ------------------------------------------------------------------------------


def _level_name(level: int) -> str:
    for name, value in LOG_LEVELS.items():
        if level >= value:
            return name
    return "TRACE"


def _logger(name: str) -> logging.Logger | None:
    if name == ROOT_LOGGER:
        return logging.getLogger()
    existing = logging.Logger.manager.loggerDict.get(name)
    return existing if isinstance(existing, logging.Logger) else None


def logger_levels() -> dict[str, str]:
    """Every logger of the process and its effective level, the root logger first."""
    levels = {ROOT_LOGGER: _level_name(logging.getLogger().getEffectiveLevel())}
    for name in sorted(logging.Logger.manager.loggerDict):
        logger = _logger(name)
        if logger is not None:
            levels[name] = _level_name(logger.getEffectiveLevel())
    return levels


def check_logger_ops(ops: Sequence[Any]) -> None:
    """Kafka's checks for BROKER_LOGGER changes: the logger exists; SET names a log4j level;
    the root logger's level is never removed; APPEND/SUBTRACT make no sense here."""
    for op in ops:
        kind = op.config_operation
        if kind in (AlterOp.SET, AlterOp.DELETE) and _logger(op.name) is None:
            raise InvalidConfigError(f"Logger {op.name} does not exist!")
        if kind == AlterOp.SET:
            if op.value not in LOG_LEVELS:
                raise InvalidConfigError(
                    f"Cannot set the log level of {op.name} to {op.value} as it is not a "
                    f"supported log level. Valid log levels are {', '.join(LOG_LEVELS)}"
                )
        elif kind == AlterOp.DELETE:
            if op.name == ROOT_LOGGER:
                raise InvalidRequestError(
                    f"Removing the log level of the {ROOT_LOGGER} logger is not allowed"
                )
        elif kind in (AlterOp.APPEND, AlterOp.SUBTRACT):
            raise InvalidRequestError(
                f"{AlterOp(kind).name} operation is not allowed for the BROKER_LOGGER resource"
            )
        else:
            raise InvalidRequestError(
                f"Unknown operation type {kind} is not allowed for the BROKER_LOGGER resource"
            )


def apply_logger_ops(ops: Sequence[Any]) -> None:
    """Apply already-checked BROKER_LOGGER changes; DELETE makes a logger inherit again."""
    for op in ops:
        logger = _logger(op.name)
        assert logger is not None
        if op.config_operation == AlterOp.SET:
            logger.setLevel(LOG_LEVELS[op.value])
        else:
            logger.setLevel(logging.NOTSET)


# -- TOPIC --------------------------------------------------------------------------------------


def _list_items(text: str | None) -> list[str]:
    return [item for item in (text or "").split(",") if item]


def incremental_topic_configs(current: Mapping[str, str], ops: Sequence[Any]) -> dict[str, str]:
    """A topic's overrides after IncrementalAlterConfigs ``ops`` (validated later, as a whole).

    APPEND and SUBTRACT only apply to LIST configs and start from the override, else from
    Kafka's default for the config (not the broker's setting: that is what Kafka does)."""
    result = dict(current)
    for op in ops:
        kind, name = op.config_operation, op.name
        if kind == AlterOp.SET:
            result[name] = op.value
        elif kind == AlterOp.DELETE:
            result.pop(name, None)
        elif kind in (AlterOp.APPEND, AlterOp.SUBTRACT):
            definition = TOPIC_CONFIGS.get(name)
            if definition is None or definition.type is not ConfigType.LIST:
                raise InvalidConfigError(
                    f"Can't {AlterOp(kind).name} to key {name} because its type is not LIST."
                )
            if name in result:
                items = _list_items(result[name])
            else:
                items = _list_items(definition.format(definition.default))
            for value in _list_items(op.value):
                if kind == AlterOp.APPEND and value not in items:
                    items.append(value)
                elif kind == AlterOp.SUBTRACT and value in items:
                    items.remove(value)
            result[name] = ",".join(items)
        else:
            raise InvalidRequestError(f"Unknown operation type {kind}")
    return result


_ZERO = datetime.timedelta(0)


# -- the shared shape of AlterConfigs and IncrementalAlterConfigs ----------------------------------

AlterFn = Callable[["BrokerServices", Any, bool], Awaitable[None]]


def _alter_response(mod: Any, resource: Any, code: ErrorCode, message: str | None) -> Any:
    return build(
        mod.AlterConfigsResourceResponse,
        error_code=code,
        error_message=message,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
    )


async def alter_resources(
    broker: BrokerServices, request: Request, key: int, response_name: str, alter: AlterFn
) -> Any:
    """Apply ``alter`` to each resource of an alter-configs request, each with its own result;
    a resource named twice is INVALID_REQUEST for every occurrence, as Kafka answers. The
    request has no timeout of its own: the admin requests' default bound applies, so a
    metadata store that does not answer makes it REQUEST_TIMED_OUT, never a hang."""
    body = request.body
    mod = response_module(key, request.api_version)
    duplicates = duplicate_resources(body.resources)
    responses = []
    deadline = AdminDeadline(datetime.timedelta(0))
    for r in body.resources:
        try:
            if (int(r.resource_type), r.resource_name) in duplicates:
                raise InvalidRequestError("Each resource must appear at most once.")
            async with deadline.bound(f"altering the configs of {r.resource_name!r}"):
                await alter(broker, r, body.validate_only)
        except Exception as e:
            code = error_code_for(e, context=f"altering configs of {r.resource_name!r}")
            message = e.message if isinstance(e, KafkaError) else None
            responses.append(_alter_response(mod, r, code, message))
        else:
            responses.append(_alter_response(mod, r, ErrorCode.none, None))
    return build(
        getattr(mod, response_name), throttle_time=_ZERO, responses=tuple(responses)
    )


def alter_error_response(request: Request, code: ErrorCode, key: int, response_name: str) -> Any:
    mod = response_module(key, request.api_version)
    responses = tuple(_alter_response(mod, r, code, None) for r in request.body.resources)
    return build(getattr(mod, response_name), throttle_time=_ZERO, responses=responses)
