"""A bounds check of request bytes before the ``kio`` decoder sees them.

kio's native decoder reserves memory for an array as soon as it reads the array's declared
length, so a 17-byte request claiming four billion elements aborts the whole process on a failed
allocation. This module walks the same wire format without building anything, checking every
length against the bytes actually present (every array element takes at least one byte), and
raises :class:`CorruptFrameError` for the first one that cannot fit. The walk plan for each
message class is derived once from the generated dataclasses (field order, ``kafka_type`` and
tag metadata) and cached.

It also refuses null (length -1) where the version's spec does not allow it: kio reads a null
array into ``None`` whatever the field's nullability, which handlers then trip over. Kafka's
generated readers throw "non-nullable field ... was serialized as null" and the request is not
parsed, so the connection is closed; the generated type hints (``X | None`` only in the versions
where the field is nullable) say which fields may be null.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from typing import Any

from odradek.errors import CorruptFrameError
from odradek.protocol.varint import MAX_VARINT32_BYTES, VarintError, read_uvarint

__all__ = ["check_request"]

_FIXED = {
    "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
    "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2, "timedelta_i32": 4,
    "timedelta_i64": 8, "datetime_i64": 8,
}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

# A plan step: (kind, arg). Kinds: "fixed" (size), "str" / "bytes" / "array" (a _Nullable:
# field name, whether null is allowed, and for arrays the element step), "struct" (plan),
# "nullable_struct" (plan).
Plan = list[tuple[str, Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Nullable:
    name: str
    nullable: bool
    element: tuple[str, Any] | None = None
_PLANS: dict[type[Any], Plan] = {}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _primitive_step(kafka_type: str, name: str, nullable: bool) -> tuple[str, Any]:
    if kafka_type in _FIXED:
        return ("fixed", _FIXED[kafka_type])
    if kafka_type == "string":
        return ("str", _Nullable(name, nullable))
    if kafka_type in ("bytes", "records"):
        return ("bytes", _Nullable(name, nullable))
    raise TypeError(f"unknown kafka type {kafka_type!r}")


def _plan(cls: type[Any]) -> Plan:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    plan = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("__") or "tag" in f.metadata:
            continue  # tagged fields live in the trailing tag section
        kafka_type = f.metadata.get("kafka_type")
        tp, optional = _strip_optional(f.type)
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            if kafka_type is not None:
                element = _primitive_step(kafka_type, f.name, False)
            else:
                element = ("struct", _plan(inner))
            plan.append(("array", _Nullable(f.name, optional, element)))
        elif kafka_type is None:
            plan.append(("nullable_struct" if optional else "struct", _plan(tp)))
        else:
            plan.append(_primitive_step(kafka_type, f.name, optional))
    plan = _merge_fixed(plan)
    _PLANS[cls] = plan
    return plan


def _merge_fixed(plan: Plan) -> Plan:
    """Runs of fixed-size fields as one step: skipping their total checks the same bytes."""
    out: Plan = []
    for kind, arg in plan:
        if kind == "fixed" and out and out[-1][0] == "fixed":
            out[-1] = ("fixed", out[-1][1] + arg)
        else:
            out.append((kind, arg))
    return out


class _Walker:
    __slots__ = ("buf", "pos", "end", "flexible")

    def __init__(self, buf: Any, pos: int, flexible: bool) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.flexible = flexible

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise CorruptFrameError(f"request field of {n} bytes overruns the frame")
        self.pos += n

    def uvarint(self) -> int:
        try:
            value, self.pos = read_uvarint(self.buf, self.pos, MAX_VARINT32_BYTES)
        except VarintError as e:
            raise CorruptFrameError(f"{e} in request") from None
        return value

    def int16(self) -> int:
        self.skip(2)
        return int(_I16.unpack_from(self.buf, self.pos - 2)[0])

    def int32(self) -> int:
        self.skip(4)
        return int(_I32.unpack_from(self.buf, self.pos - 4)[0])

    def length(self, legacy_int16: bool = False) -> int:
        if self.flexible:
            return self.uvarint() - 1
        return self.int16() if legacy_int16 else self.int32()

    def tags(self) -> None:
        pos = self.pos
        if pos < self.end and self.buf[pos] == 0:  # none: the usual case
            self.pos = pos + 1
            return
        for _ in range(self.uvarint()):
            self.uvarint()
            self.skip(self.uvarint())

    def step(self, kind: str, arg: Any) -> None:
        if kind == "fixed":
            self.skip(arg)
        elif kind == "str":
            n = self.length(legacy_int16=True)
            if n > 0:
                self.skip(n)
            elif n < 0:
                self.null(arg)
        elif kind == "bytes":
            n = self.length()
            if n > 0:
                self.skip(n)
            elif n < 0:
                self.null(arg)
        elif kind == "array":
            n = self.length()
            if n < 0:
                self.null(arg)
            elif n > self.end - self.pos:
                raise CorruptFrameError(
                    f"array of {n} elements cannot fit in the {self.end - self.pos} bytes left"
                )
            inner_kind, inner_arg = arg.element
            for _ in range(n):
                self.step(inner_kind, inner_arg)
        elif kind == "struct":
            self.struct(arg)
        else:  # nullable_struct
            self.skip(1)
            if self.buf[self.pos - 1] < 0x80:  # -1 (0xff) marks null
                self.struct(arg)

    def null(self, field: _Nullable) -> None:
        if not field.nullable:
            raise CorruptFrameError(f"non-nullable field {field.name} was serialized as null")

    def struct(self, plan: Plan) -> None:
        for kind, arg in plan:
            if kind == "fixed":  # inline: most steps are
                pos = self.pos + arg
                if pos > self.end:
                    raise CorruptFrameError(f"request field of {arg} bytes overruns the frame")
                self.pos = pos
            else:
                self.step(kind, arg)
        if self.flexible:
            self.tags()


def check_request(frame: Any, schema: type[Any]) -> tuple[str | None, int]:
    """Raise CorruptFrameError unless every length in ``frame`` fits in it.

    Returns the header's client id and where the body starts. Tagged fields of the header are
    skipped whatever their tags (KIP-482: unknown tags are ignored).
    """
    header_flexible = schema.__header_schema__.__flexible__
    w = _Walker(frame, 8, flexible=False)  # api key, version, correlation id
    n = w.int16()  # the header's client id is never compact
    client_id: str | None = None
    if n >= 0:
        w.skip(n)
        try:
            client_id = str(frame[w.pos - n : w.pos], "utf-8")
        except UnicodeDecodeError as e:
            raise CorruptFrameError(f"client id is not UTF-8: {e}") from None
    if header_flexible:
        w.flexible = True
        w.tags()
    body_start = w.pos
    w.flexible = bool(schema.__flexible__)
    w.struct(_plan(schema))
    return client_id, body_start
