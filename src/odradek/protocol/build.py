"""Version-agnostic construction of ``kio`` message entities.

Each API version is its own set of generated classes, with fields that come and go between
versions. Handlers describe a response once with every field they know and :func:`build` keeps
the ones the target version has, so one handler serves every version it is registered for.
"""

from __future__ import annotations

import sys
from functools import cache
from types import ModuleType
from typing import Any

from odradek.protocol.messages import response_schema

__all__ = ["build", "response_module", "has_field", "error_body"]


_FIELD_NAMES: dict[type[Any], frozenset[str]] = {}


def _field_names(cls: type[Any]) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(
            n for n in cls.__dataclass_fields__ if not n.startswith("__")
        )
    return names


def has_field(cls: type[Any], name: str) -> bool:
    return name in _field_names(cls)


def build(cls: type[Any], /, **fields: Any) -> Any:
    """Instantiate ``cls`` from the subset of ``fields`` that exist in that version."""
    names = _field_names(cls)
    return cls(**{k: v for k, v in fields.items() if k in names})


@cache
def response_module(api_key: int, api_version: int) -> ModuleType:
    """The generated module holding the response classes of one API version."""
    return sys.modules[response_schema(api_key, api_version).__module__]


_ZERO_BY_KAFKA_TYPE: dict[str, Any] = {
    "int8": 0,
    "int16": 0,
    "int32": 0,
    "int64": 0,
    "uint8": 0,
    "uint16": 0,
    "uint32": 0,
    "uint64": 0,
    "float64": 0.0,
    "string": "",
    "bytes": b"",
    "records": None,
    "bool": False,
}


def error_body(cls: type[Any], code: Any) -> Any:
    """An instance of ``cls`` with every ``error_code`` field set to ``code``, arrays empty and
    other required fields zero: the generic error form of any response."""
    import dataclasses
    import datetime
    import types
    import typing
    import uuid

    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name.startswith("__"):
            continue
        kafka_type = f.metadata.get("kafka_type")
        if kafka_type == "error_code":
            values[f.name] = code
            continue
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        tp = f.type
        origin = typing.get_origin(tp)
        if origin is tuple:
            values[f.name] = ()
        elif origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            values[f.name] = None
        elif kafka_type in ("timedelta_i32", "timedelta_i64"):
            values[f.name] = datetime.timedelta(0)
        elif kafka_type == "datetime_i64":
            values[f.name] = datetime.datetime.fromtimestamp(0, datetime.UTC)
        elif kafka_type == "uuid":
            values[f.name] = uuid.UUID(int=0)
        elif kafka_type in _ZERO_BY_KAFKA_TYPE:
            values[f.name] = _ZERO_BY_KAFKA_TYPE[kafka_type]
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[f.name] = error_body(tp, code)
        else:
            raise TypeError(f"cannot build an error value for {cls.__name__}.{f.name}")
    return cls(**values)
