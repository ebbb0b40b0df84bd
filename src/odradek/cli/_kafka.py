"""librdkafka glue for the client commands: client configuration, metadata look-ups and the
translation of client errors into one readable line (a :class:`~odradek.cli._common.CliError`).

Everything here runs on the command's single thread; the clients it configures are closed by
the commands that create them.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from odradek.cli._common import REQUEST_TIMEOUT_S, CliError
from odradek.cli._options import ClientOptions

__all__ = [
    "admin_result",
    "UNREACHABLE_CODES",
    "UNSUPPORTED_CODES",
    "admin_client",
    "client_config",
    "cluster_metadata",
    "delivery_reason",
    "error_of",
    "explain",
    "reachability_error",
    "require_topic",
    "topic_metadata",
]

#: Codes librdkafka reports when it never got an answer from any broker.
UNREACHABLE_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._DESTROY,
    }
)

#: Codes meaning the broker does not serve the API (or version) a command needs.
UNSUPPORTED_CODES = frozenset({KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION})


def client_config(options: ClientOptions, **extra: Any) -> dict[str, Any]:
    """A librdkafka configuration. Unless verbose, librdkafka's own log lines and error
    callbacks are silenced: the commands report failures themselves, in one line."""
    config: dict[str, Any] = {
        "bootstrap.servers": options.bootstrap,
        "client.id": "odradek-cli",
        "socket.connection.setup.timeout.ms": max(1000, int(options.connect_timeout * 1000)),
    }
    if not options.verbose:
        config["log_level"] = 0
        config["error_cb"] = _ignore_error
    config.update(extra)
    return config


def _ignore_error(error: KafkaError) -> None:
    """librdkafka reports transient connection trouble here; the commands' own time-outs decide."""


def error_of(exc: BaseException) -> KafkaError | None:
    """The KafkaError inside a KafkaException, if there is one."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def reachability_error(options: ClientOptions) -> CliError:
    return CliError(
        f"cannot reach broker at {options.bootstrap} "
        f"(no answer within {options.connect_timeout:g} s)"
    )


def _reason(error: KafkaError) -> str:
    text = error.str() or error.name()
    # librdkafka prefixes broker messages with "Broker: " and local ones with "Local: ".
    for prefix in ("Broker: ", "Local: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return text


def explain(error: KafkaError, subject: str, options: ClientOptions) -> CliError:
    """A one-line error for ``error`` that happened to ``subject`` (e.g. "topic 'orders'")."""
    code = error.code()
    if code in UNREACHABLE_CODES:
        return reachability_error(options)
    if code == KafkaError.TOPIC_ALREADY_EXISTS:
        return CliError(f"{subject} already exists")
    if code in (
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_ID,
    ):
        return CliError(f"{subject} does not exist")
    if code == KafkaError._UNKNOWN_PARTITION:
        return CliError(f"{subject}: no such partition")
    if code in UNSUPPORTED_CODES:
        return CliError(f"{subject}: the broker does not support this operation ({_reason(error)})")
    if code == KafkaError.INVALID_CONFIG:
        return CliError(f"{subject}: invalid config: {_reason(error)}")
    return CliError(f"{subject}: {_reason(error)} ({error.name()})")


def admin_result(
    future: concurrent.futures.Future[Any],
    subject: str,
    options: ClientOptions,
    explain_error: Callable[[KafkaError], CliError] | None = None,
) -> Any:
    """The result of an admin future; a failure becomes a one-line CliError about ``subject``
    (through ``explain_error`` when given, which may know the command's own cases)."""
    try:
        return future.result(timeout=REQUEST_TIMEOUT_S + options.connect_timeout)
    except concurrent.futures.TimeoutError:
        raise reachability_error(options) from None
    except KafkaException as e:
        error = error_of(e)
        if error is None:
            raise CliError(f"{subject}: {e}") from None
        if explain_error is not None:
            raise explain_error(error) from None
        raise explain(error, subject, options) from None


def topic_metadata(
    client: Any, topic: str, options: ClientOptions, *, attempts_for_new: float = 3.0
) -> Any:
    """The metadata of one topic (a ``TopicMetadata``), or CliError when the broker is
    unreachable or the topic does not exist. A topic that is still being created (leader not
    available) is asked for again for up to ``attempts_for_new`` seconds."""
    deadline = time.monotonic() + attempts_for_new
    while True:
        try:
            cluster = client.list_topics(topic=topic, timeout=options.connect_timeout)
        except KafkaException as e:
            error = error_of(e)
            if error is None:
                raise
            raise explain(error, f"topic {topic!r}", options) from None
        meta = cluster.topics.get(topic)
        if meta is None:
            raise CliError(f"topic {topic!r} does not exist")
        if meta.error is None:
            return meta
        if meta.error.code() == KafkaError.LEADER_NOT_AVAILABLE and time.monotonic() < deadline:
            time.sleep(0.1)
            continue
        raise explain(meta.error, f"topic {topic!r}", options)


def cluster_metadata(client: Any, options: ClientOptions) -> Any:
    """Metadata of every topic (a ``ClusterMetadata``); CliError when the broker is unreachable."""
    try:
        return client.list_topics(timeout=options.connect_timeout)
    except KafkaException as e:
        error = error_of(e)
        if error is None:
            raise
        raise explain(error, "listing topics", options) from None


def admin_client(options: ClientOptions) -> tuple[Any, Any]:
    """An AdminClient and the cluster metadata, which also proves the broker is reachable."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(options))
    return admin, cluster_metadata(admin, options)


def require_topic(cluster: Any, name: str) -> Any:
    """The metadata of topic ``name`` in ``cluster`` (a ``ClusterMetadata``); CliError when the
    topic does not exist."""
    meta = cluster.topics.get(name)
    if meta is None or meta.error is not None:
        raise CliError(f"topic {name!r} does not exist")
    return meta


def delivery_reason(error: KafkaError) -> str:
    """Why a record could not be produced or consumed, without librdkafka's prefixes."""
    text: str = error.str() or error.name()
    for prefix in ("Unable to produce message: ", "Broker: ", "Local: "):
        text = text.removeprefix(prefix)
    return text
