"""Settings derived from several keys (Kafka's precedence of ms over minutes over hours), shared by
the broker and topic config tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from odradek.config._types import MS_PER_HOUR, MS_PER_MINUTE

__all__ = ["flush_ms", "retention_ms", "roll_jitter_ms", "roll_ms"]

_Getter = Callable[[str], Any]


def retention_ms(value: _Getter) -> int:
    """``log.retention.ms``, else minutes, else hours; any negative value means -1 (forever)."""
    if value("log.retention.ms") is not None:
        millis = value("log.retention.ms")
    elif value("log.retention.minutes") is not None:
        millis = value("log.retention.minutes") * MS_PER_MINUTE
    else:
        millis = value("log.retention.hours") * MS_PER_HOUR
    return -1 if millis < 0 else int(millis)


def roll_ms(value: _Getter) -> int:
    """``log.roll.ms``, else ``log.roll.hours`` in ms."""
    millis = value("log.roll.ms")
    return int(millis) if millis is not None else int(value("log.roll.hours")) * MS_PER_HOUR


def roll_jitter_ms(value: _Getter) -> int:
    """``log.roll.jitter.ms``, else ``log.roll.jitter.hours`` in ms."""
    millis = value("log.roll.jitter.ms")
    if millis is not None:
        return int(millis)
    return int(value("log.roll.jitter.hours")) * MS_PER_HOUR


def flush_ms(value: _Getter) -> int:
    """``log.flush.interval.ms``, or when null ``log.flush.scheduler.interval.ms`` (whose default,
    Long.MAX_VALUE, means never)."""
    millis = value("log.flush.interval.ms")
    return int(millis if millis is not None else value("log.flush.scheduler.interval.ms"))
