"""DeleteTopics (key 20): delete topics by name, or (v6+) by topic id.

As Kafka's controller: an unknown name is UNKNOWN_TOPIC_OR_PARTITION, an unknown id
UNKNOWN_TOPIC_ID; a name or id given twice, a v6 entry with both or neither, and a name that
resolves to an id also given are INVALID_REQUEST. With ``delete.topic.enable=false`` the whole
request fails (INVALID_REQUEST before v3, TOPIC_DELETION_DISABLED after). Kafka does not protect
internal topics here and neither do we. ``timeout_ms`` bounds the request (REQUEST_TIMED_OUT
past it). Results are in request order (Kafka shuffles them).
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from odradek.broker.contract import ApiHandler
from odradek.broker.errors import error_code_for
from odradek.broker.handlers._admin_deadline import AdminDeadline
from odradek.errors import (
    ErrorCode,
    InvalidRequestError,
    KafkaError,
    TopicDeletionDisabledError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from odradek.metadata.store import TopicMetadata
from odradek.protocol.build import build, response_module
from odradek.protocol.messages import Request

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["API"]

KEY = 20
_ZERO = datetime.timedelta(0)
ZERO_UUID = uuid.UUID(int=0)


def _entries(request: Request) -> list[tuple[str | None, uuid.UUID]]:
    """(name, topic_id) per requested topic, whichever the version carries."""
    body = request.body
    if request.api_version >= 6:
        return [(t.name, t.topic_id or ZERO_UUID) for t in body.topics]
    return [(name, ZERO_UUID) for name in body.topic_names]


def _result(mod: Any, name: str | None, topic_id: uuid.UUID, code: ErrorCode,
            message: str | None = None) -> Any:
    return build(
        mod.DeletableTopicResult,
        name=name,
        topic_id=topic_id,
        error_code=code,
        error_message=message,
    )


def _target(broker: BrokerServices, name: str | None, topic_id: uuid.UUID, names: list[str | None],
            ids: list[uuid.UUID]) -> TopicMetadata:
    """The topic one entry names, or the typed error that entry gets."""
    if name is None and topic_id == ZERO_UUID:
        raise InvalidRequestError("Neither topic name nor id were specified.")
    if name is not None and topic_id != ZERO_UUID:
        raise InvalidRequestError("You may not specify both topic name and topic id.")
    if name is not None:
        if names.count(name) > 1:
            raise InvalidRequestError("Duplicate topic name.")
        meta = broker.topics.topic(name)
        if meta is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return meta
    if ids.count(topic_id) > 1:
        raise InvalidRequestError("Duplicate topic id.")
    meta = broker.topics.topic_by_id(topic_id)
    if meta is None:
        raise UnknownTopicIdError(f"topic id {topic_id} does not exist")
    return meta


def handle(broker: BrokerServices, request: Request) -> Any:
    # Checked before anything is awaited: a refusal of the whole request is not a coroutine.
    if not broker.config.delete_topic_enable:
        if request.api_version < 3:
            raise InvalidRequestError("Topic deletion is disabled.")
        raise TopicDeletionDisabledError("Topic deletion is disabled.")
    return _delete(broker, request)


async def _delete(broker: BrokerServices, request: Request) -> Any:
    mod = response_module(KEY, request.api_version)
    entries = _entries(request)
    names = [n for n, i in entries if i == ZERO_UUID]
    ids = [i for n, i in entries if n is None]
    # Resolve every entry first, so that a name and an id of the same topic are both refused
    # whatever their order, and nothing is deleted twice.
    targets: list[TopicMetadata | Exception] = []
    for name, topic_id in entries:
        try:
            targets.append(_target(broker, name, topic_id, names, ids))
        except Exception as e:
            targets.append(e)
    by_id = [t.topic_id for t in targets if isinstance(t, TopicMetadata)]
    results = []
    deadline = AdminDeadline(request.body.timeout)
    for (name, topic_id), target in zip(entries, targets, strict=True):
        try:
            if isinstance(target, Exception):
                raise target
            if by_id.count(target.topic_id) > 1:
                raise InvalidRequestError(
                    "The provided topic name maps to an ID that was already supplied."
                )
            # The broker's image listener deletes the logs and the topic's group offsets.
            async with deadline.bound(f"deleting topic {target.name!r}"):
                await broker.topics.delete(target.name)
            results.append(_result(mod, target.name, target.topic_id, ErrorCode.none))
        except Exception as e:
            code = error_code_for(e, context=f"delete topic {name or topic_id}")
            message = e.message if isinstance(e, KafkaError) else None
            results.append(_result(mod, name, topic_id, code, message))
    return build(mod.DeleteTopicsResponse, throttle_time=_ZERO, responses=tuple(results))


def error_response(request: Request, code: ErrorCode) -> Any:
    mod = response_module(KEY, request.api_version)
    results = tuple(_result(mod, n, i, code) for n, i in _entries(request))
    return build(mod.DeleteTopicsResponse, throttle_time=_ZERO, responses=results)


API = ApiHandler(
    api_key=KEY,
    name="DeleteTopics",
    min_version=1,
    max_version=6,
    handle=handle,
    error_response=error_response,
)
