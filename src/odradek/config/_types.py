"""The vocabulary of settings: Kafka's config types and sources, validators, and :class:`ConfigDef`,
which parses, checks and prints one setting the way Kafka's ``ConfigDef`` does."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

__all__ = [
    "INT_MIN",
    "INT_MAX",
    "SHORT_MIN",
    "SHORT_MAX",
    "LONG_MIN",
    "LONG_MAX",
    "DOUBLE_MAX",
    "MS_PER_MINUTE",
    "MS_PER_HOUR",
    "ConfigType",
    "ConfigSource",
    "ConfigError",
    "Validator",
    "AtLeast",
    "Between",
    "OneOf",
    "ListOf",
    "ConfigDef",
    "java_trim",
]

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
SHORT_MIN = -(2**15)
SHORT_MAX = 2**15 - 1
LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
DOUBLE_MAX = sys.float_info.max

MS_PER_MINUTE = 60 * 1000
MS_PER_HOUR = 60 * MS_PER_MINUTE


class ConfigType(IntEnum):
    """DescribeConfigs ``config_type`` codes (Kafka's ConfigDef.Type)."""

    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


class ConfigSource(IntEnum):
    """DescribeConfigs ``config_source`` codes."""

    UNKNOWN = 0
    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    DYNAMIC_BROKER_LOGGER_CONFIG = 6


class ConfigError(ValueError):
    """The broker's configuration is unusable; the message starts with the offending key."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


# -- validators ---------------------------------------------------------------------------------


class Validator(Protocol):
    """Checks an already-typed value; returns the problem's description, or None if it is fine."""

    def check(self, value: Any) -> str | None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class AtLeast:
    minimum: int | float

    def check(self, value: Any) -> str | None:
        if value is not None and value < self.minimum:
            return f"must be at least {self.minimum}, got {_plain(value)}"
        return None

    def describe(self) -> str:
        return f"[{self.minimum},...]"


@dataclass(frozen=True, slots=True)
class Between:
    low: int | float
    high: int | float

    def check(self, value: Any) -> str | None:
        if value is not None and not (self.low <= value <= self.high):
            return f"must be between {self.low} and {self.high}, got {_plain(value)}"
        return None

    def describe(self) -> str:
        return f"[{self.low},...,{self.high}]"


@dataclass(frozen=True, slots=True)
class OneOf:
    """A string from a fixed set (case-sensitive, as Kafka's ValidString)."""

    choices: tuple[str, ...]

    def check(self, value: Any) -> str | None:
        if value is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        return None

    def describe(self) -> str:
        return "[" + ", ".join(self.choices) + "]"


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list whose items all come from a fixed set, each at most once; empty only if allowed."""

    choices: tuple[str, ...]
    allow_empty: bool = False

    def check(self, value: Any) -> str | None:
        if value is None:
            return None
        if not value and not self.allow_empty:
            return f"must list at least one of {', '.join(self.choices)}"
        for item in value:
            if item not in self.choices:
                return f"must be a list of {', '.join(self.choices)}, got {item!r}"
        if len(set(value)) != len(value):
            return f"lists a value twice: {','.join(value)!r}"
        return None

    def describe(self) -> str:
        return "[" + ", ".join(self.choices) + "]"


def _plain(value: Any) -> str:
    return _java_double(value) if isinstance(value, float) else str(value)


# -- typed values ------------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_JAVA_TRIMMED = "".join(chr(code) for code in range(0x21))
_DOUBLE_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INTEGER_RANGES = {
    ConfigType.SHORT: (SHORT_MIN, SHORT_MAX, "a 16-bit"),
    ConfigType.INT: (INT_MIN, INT_MAX, "a 32-bit"),
    ConfigType.LONG: (LONG_MIN, LONG_MAX, "a 64-bit"),
}


def java_trim(text: str) -> str:
    """Java's ``String.trim``: strips every character up to and including U+0020, nothing else."""
    return text.strip(_JAVA_TRIMMED)


def _java_double(value: float) -> str:
    """Format a float as Java's ``Double.toString`` does (which is how Kafka prints doubles)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    sign = "-" if value < 0 else ""
    if 1e-3 <= magnitude < 1e7:
        text = repr(magnitude)
        return sign + (text if "." in text else text + ".0")
    from decimal import Decimal  # rarely needed: not worth its import at start-up

    parts = Decimal(repr(magnitude)).as_tuple()
    digits = "".join(map(str, parts.digits))
    exponent = len(digits) + int(parts.exponent) - 1
    digits = digits.rstrip("0") or "0"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{exponent}"


@dataclass(frozen=True, slots=True)
class ConfigDef:
    """One Kafka setting: its name, type, default (already typed; None means null) and checks.

    ``synonyms`` are the settings a DescribeConfigs answer lists for this one, in Kafka's order
    (highest precedence first). For a broker setting they are Kafka's broker synonyms (empty means
    just itself; ``log.retention.hours`` has ``log.retention.ms``, ``log.retention.minutes``,
    ``log.retention.hours``); for a topic setting, the broker settings its default comes from.
    """

    name: str
    type: ConfigType
    default: Any
    doc: str
    validator: Validator | None = None
    synonyms: tuple[str, ...] = ()
    sensitive: bool = False

    @property
    def broker_synonym(self) -> str | None:
        """The main broker setting a topic config defaults from."""
        return self.synonyms[0] if self.synonyms else None

    def parse(self, raw: str) -> Any:
        """Convert a string to this setting's type and validate it; raises :class:`ConfigError`."""
        value = self._convert(java_trim(raw))
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        """Validate an already-typed value; raises :class:`ConfigError`."""
        if self.validator is not None:
            problem = self.validator.check(value)
            if problem is not None:
                raise ConfigError(self.name, problem)

    def check_typed(self, value: Any) -> None:
        """Check that a value built in code (not parsed) has this setting's type and range, then
        validate it; raises :class:`ConfigError`."""
        kind = self.type
        if value is None:
            if self.default is not None:
                raise ConfigError(self.name, "must not be null")
            return
        if kind in _INTEGER_RANGES:
            low, high, _ = _INTEGER_RANGES[kind]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(self.name, f"expected an integer in [{low},{high}], got {value!r}")
        elif kind is ConfigType.BOOLEAN and not isinstance(value, bool):
            raise ConfigError(self.name, f"expected a boolean, got {value!r}")
        elif kind is ConfigType.DOUBLE and (
            isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(self.name, f"expected a finite number, got {value!r}")
        elif kind is ConfigType.STRING and not isinstance(value, str):
            raise ConfigError(self.name, f"expected a string, got {value!r}")
        elif kind is ConfigType.LIST and not (
            isinstance(value, tuple) and all(isinstance(item, str) for item in value)
        ):
            raise ConfigError(self.name, f"expected a tuple of strings, got {value!r}")
        self.check(value)

    def format(self, value: Any) -> str | None:
        """The string form Kafka prints for a typed value (None stays None, i.e. null)."""
        if value is None or self.sensitive:
            return None
        if self.type is ConfigType.BOOLEAN:
            return "true" if value else "false"
        if self.type is ConfigType.DOUBLE:
            return _java_double(float(value))
        if self.type is ConfigType.LIST:
            return ",".join(str(item) for item in value)
        return str(value)

    def _convert(self, text: str) -> Any:
        kind = self.type
        if kind is ConfigType.BOOLEAN:
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise ConfigError(self.name, f"expected true or false, got {text!r}")
            return lowered == "true"
        if kind in _INTEGER_RANGES:
            if not _INT_RE.fullmatch(text):
                raise ConfigError(self.name, f"expected an integer, got {text!r}")
            number = int(text)
            low, high, what = _INTEGER_RANGES[kind]
            if not (low <= number <= high):
                raise ConfigError(
                    self.name, f"expected {what} integer, got {text!r} (out of range)"
                )
            return number
        if kind is ConfigType.DOUBLE:
            if not _DOUBLE_RE.fullmatch(text):
                raise ConfigError(self.name, f"expected a number, got {text!r}")
            number_f = float(text)
            if math.isinf(number_f):
                raise ConfigError(self.name, f"expected a finite number, got {text!r}")
            return number_f
        if kind is ConfigType.LIST:
            if not text:
                return ()
            return tuple(java_trim(item) for item in text.split(","))
        return text
