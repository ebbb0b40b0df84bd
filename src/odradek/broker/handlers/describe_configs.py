"""DescribeConfigs (key 32): topic, broker and broker-logger configs with sources and synonyms.

As Kafka: an unknown topic is UNKNOWN_TOPIC_OR_PARTITION, an illegal topic name
INVALID_TOPIC_EXCEPTION; a BROKER resource names this node (its effective configs) or is empty
(the cluster-wide dynamic defaults: none here); any other broker id, and resource types this
broker does not serve, are INVALID_REQUEST. ``configuration_keys`` (null or empty: all) filters
the entries; synonyms and documentation are sent only when asked for.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._config_resources import ResourceType, check_node_id, logger_levels
from odradek.broker.topics import validate_topic_name
from odradek.config import (
    ConfigEntry,
    ConfigSource,
    ConfigType,
    Listener,
    broker_config_entries,
    effective_topic_configs,
)
from odradek.errors import (
    ErrorCode,
    InvalidRequestError,
    KafkaError,
    UnknownTopicOrPartitionError,
)
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 32
_ZERO = datetime.timedelta(0)


def _entries(broker: BrokerServices, resource_type: int, name: str) -> list[ConfigEntry]:
    if resource_type == ResourceType.TOPIC:
        validate_topic_name(name)
        meta = broker.topics.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return effective_topic_configs(broker.config, meta.configs)
    if resource_type == ResourceType.BROKER:
        if not name:
            return []  # no dynamic cluster-wide defaults: broker configs are static
        check_node_id(broker, name)
        advertised = Listener(
            broker.config.listener.name, broker.advertised_host, broker.advertised_port
        )
        return broker_config_entries(broker.config, advertised)
    if resource_type == ResourceType.BROKER_LOGGER:
        if not name:
            raise InvalidRequestError("Broker id must not be empty")
        check_node_id(broker, name)
        return [
            ConfigEntry(
                name=logger,
                value=level,
                source=ConfigSource.DYNAMIC_BROKER_LOGGER_CONFIG,
                is_default=False,
                read_only=False,
                sensitive=False,
                config_type=ConfigType.STRING,
            )
            for logger, level in logger_levels().items()
        ]
    raise InvalidRequestError(f"Unsupported resource type: {resource_type}")


def _config(mod: Any, entry: ConfigEntry, synonyms: bool, documentation: bool) -> Any:
    return build(
        mod.DescribeConfigsResourceResult,
        name=entry.name,
        value=entry.value,
        read_only=entry.read_only,
        config_source=int(entry.source),
        is_sensitive=entry.sensitive,
        synonyms=tuple(
            build(mod.DescribeConfigsSynonym, name=s.name, value=s.value, source=int(s.source))
            for s in entry.synonyms
        ) if synonyms else (),
        config_type=int(entry.config_type),
        documentation=entry.documentation if documentation else None,
    )


def _result(mod: Any, resource: Any, code: ErrorCode, message: str | None,
            configs: Iterable[Any] = ()) -> Any:
    return build(
        mod.DescribeConfigsResult,
        error_code=code,
        error_message=message,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
        configs=tuple(configs),
    )


def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    synonyms = bool(getattr(body, "include_synonyms", False))
    documentation = bool(getattr(body, "include_documentation", False))
    results = []
    for r in body.resources:
        try:
            entries = _entries(broker, r.resource_type, r.resource_name)
        except Exception as e:
            code = error_code_for(e, context=f"describe configs of {r.resource_name!r}")
            message = e.message if isinstance(e, KafkaError) else None
            results.append(_result(mod, r, code, message))
            continue
        keys = set(r.configuration_keys or ())
        results.append(_result(
            mod,
            r,
            ErrorCode.none,
            None,
            (
                _config(mod, e, synonyms, documentation)
                for e in entries
                if not keys or e.name in keys
            ),
        ))
    return build(mod.DescribeConfigsResponse, throttle_time=_ZERO, results=tuple(results))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    results = tuple(_result(mod, r, code, None) for r in request.body.resources)
    return build(mod.DescribeConfigsResponse, throttle_time=_ZERO, results=results)


API = ApiHandler(
    api_key=KEY,
    name="DescribeConfigs",
    min_version=1,
    max_version=4,
    handle=handle,
    error_response=error_response,
)
