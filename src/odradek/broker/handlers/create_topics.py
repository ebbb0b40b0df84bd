"""CreateTopics (key 19): create topics with partitions, replication factors (or explicit
replica assignments) and configs.

``timeout_ms`` bounds the whole request: topics not created by then (the metadata store slow or
unreachable) are REQUEST_TIMED_OUT, as in Kafka.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._admin_deadline import AdminDeadline
from odradek.config import effective_topic_configs
from odradek.errors import ErrorCode, InvalidRequestError, KafkaError
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 19
_ZERO = datetime.timedelta(0)


def _result(mod: Any, name: str, code: ErrorCode, message: str | None = None, **extra: Any) -> Any:
    fields: dict[str, Any] = dict(
        name=name,
        topic_id=None,
        error_code=code,
        error_message=message,
        num_partitions=-1,
        replication_factor=-1,
        configs=None,
    )
    fields.update(extra)
    return build(mod.CreatableTopicResult, **fields)


async def handle(broker: BrokerServices, request: Request) -> Any:
    body = request.body
    mod = response_module(KEY, request.api_version)
    seen: dict[str, int] = {}
    for t in body.topics:
        seen[t.name] = seen.get(t.name, 0) + 1
    results = []
    deadline = AdminDeadline(body.timeout)
    for t in body.topics:
        try:
            if seen[t.name] > 1:
                raise InvalidRequestError(f"topic {t.name!r} appears more than once in the request")
            configs: dict[str, str | None] = {}
            for c in t.configs:
                if c.name in configs:
                    raise InvalidRequestError(f"config {c.name!r} is given more than once")
                configs[c.name] = c.value
            assignments = {a.partition_index: list(a.broker_ids) for a in t.assignments}
            async with deadline.bound(f"creating topic {t.name!r}"):
                meta = await broker.topics.create(
                    t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    assignments=assignments or None,
                    configs=configs,
                    validate_only=body.validate_only,
                )
            entries = tuple(
                build(
                    mod.CreatableTopicConfigs,
                    name=e.name,
                    value=e.value,
                    read_only=e.read_only,
                    config_source=e.source,
                    is_sensitive=e.sensitive,
                )
                for e in effective_topic_configs(broker.config, meta.configs)
            ) if request.api_version >= 5 else None
            results.append(
                _result(
                    mod,
                    t.name,
                    ErrorCode.none,
                    topic_id=meta.topic_id,
                    num_partitions=meta.partitions,
                    replication_factor=_replication_factor(broker, t, assignments),
                    configs=entries,
                )
            )
        except Exception as e:
            code = error_code_for(e, context=f"create topic {t.name}")
            results.append(
                _result(mod, t.name, code, e.message if isinstance(e, KafkaError) else None)
            )
    return build(mod.CreateTopicsResponse, throttle_time=_ZERO, topics=tuple(results))


def _replication_factor(broker: BrokerServices, t: Any, assignments: dict[int, list[int]]) -> int:
    """The created topic's replication factor (as placed; for validate_only, as asked)."""
    info = broker.cluster.topic(t.name)
    if info is not None and info.partitions:
        return len(info.partitions[0].replicas)
    if assignments:
        return len(next(iter(assignments.values())))
    if t.replication_factor == -1:
        return int(broker.config.default_replication_factor)
    return int(t.replication_factor)


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    results = tuple(_result(mod, t.name, code) for t in request.body.topics)
    return build(mod.CreateTopicsResponse, throttle_time=_ZERO, topics=results)


API = ApiHandler(
    api_key=KEY,
    name="CreateTopics",
    min_version=2,
    max_version=7,
    handle=handle,
    error_response=error_response,
)
