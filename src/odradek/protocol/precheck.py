"""A bounds check of request (and response) bytes before the ``kio`` decoder sees them, which
also takes out the tagged fields kio does not know.

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

Tagged fields (KIP-482) may be added to a flexible version without a new version number, at the
root of a message or at the end of any struct in it, and Kafka's readers keep a tag they do not
know aside and go on ("older servers will ignore new tagged fields which they do not
understand"). kio instead fails on such a tag, so the walk notes every tag the version's class
does not define (the values of the tags it does define are walked too: a struct there has a tag
section of its own) and, only when there is one, the frame is copied without them, tag counts
and the sizes of enclosing tagged fields rewritten, before kio sees it. A known tagged field
whose value does not take exactly its declared size is refused: readers could not agree on
where the next field starts.
"""

from __future__ import annotations

import dataclasses
import struct
import types
import typing
from typing import Any

from odradek.errors import CorruptFrameError
from odradek.protocol.varint import (
    MAX_VARINT32_BYTES,
    VarintError,
    encode_uvarint,
    read_uvarint,
)

__all__ = ["check_request", "check_response"]

_FIXED = {
    "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
    "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2, "timedelta_i32": 4,
    "timedelta_i64": 8, "datetime_i64": 8,
}
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")

# A plan step: (kind, arg). Kinds: "fixed" (size), "str" / "bytes" / "array" (a _Nullable:
# field name, whether null is allowed, and for arrays the element step), "struct" (a _Struct),
# "nullable_struct" (a _Struct).
Step = tuple[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Nullable:
    name: str
    nullable: bool
    element: Step | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Struct:
    """How to walk one struct: its fields in order, then (in flexible versions) its tag
    section, where ``tags`` maps each tag the class defines to the step of its value."""

    steps: list[Step]
    tags: dict[int, Step]


_PLANS: dict[type[Any], _Struct] = {}
#: An edit of the frame: bytes [start, end) replaced by the third item.
Edit = tuple[int, int, bytes]


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _primitive_step(kafka_type: str, name: str, nullable: bool) -> Step:
    if kafka_type in _FIXED:
        return ("fixed", _FIXED[kafka_type])
    if kafka_type == "string":
        return ("str", _Nullable(name, nullable))
    if kafka_type in ("bytes", "records"):
        return ("bytes", _Nullable(name, nullable))
    raise TypeError(f"unknown kafka type {kafka_type!r}")


def _field_step(f: dataclasses.Field[Any]) -> Step:
    kafka_type = f.metadata.get("kafka_type")
    tp, optional = _strip_optional(f.type)
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if kafka_type is not None:
            element = _primitive_step(kafka_type, f.name, False)
        else:
            element = ("struct", _plan(inner))
        return ("array", _Nullable(f.name, optional, element))
    if kafka_type is None:
        return ("nullable_struct" if optional else "struct", _plan(tp))
    return _primitive_step(kafka_type, f.name, optional)


def _plan(cls: type[Any]) -> _Struct:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    steps: list[Step] = []
    tags: dict[int, Step] = {}
    for f in dataclasses.fields(cls):
        if f.name.startswith("__"):
            continue
        if "tag" in f.metadata:  # tagged fields live in the trailing tag section
            tags[int(f.metadata["tag"])] = _field_step(f)
        else:
            steps.append(_field_step(f))
    plan = _PLANS[cls] = _Struct(_merge_fixed(steps), tags)
    return plan


def _merge_fixed(plan: list[Step]) -> list[Step]:
    """Runs of fixed-size fields as one step: skipping their total checks the same bytes."""
    out: list[Step] = []
    for kind, arg in plan:
        if kind == "fixed" and out and out[-1][0] == "fixed":
            out[-1] = ("fixed", out[-1][1] + arg)
        else:
            out.append((kind, arg))
    return out


class _Walker:
    __slots__ = ("buf", "pos", "end", "flexible", "edits")

    def __init__(self, buf: Any, pos: int, flexible: bool) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.flexible = flexible
        self.edits: list[Edit] = []  # what takes the unknown tagged fields out

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

    def skip_tags(self) -> None:
        """A tag section whose fields are all dropped (a header's: kio does not read it)."""
        for _ in range(self.uvarint()):
            self.uvarint()
            self.skip(self.uvarint())

    def tags(self, known: dict[int, Step]) -> None:
        pos = self.pos
        if pos < self.end and self.buf[pos] == 0:  # no tagged fields, by far the most common
            self.pos = pos + 1
            return
        count = self.uvarint()
        count_end = self.pos
        first_edit = len(self.edits)
        dropped = 0
        for _ in range(count):
            start = self.pos
            tag = self.uvarint()
            size_start = self.pos
            size = self.uvarint()
            step = known.get(tag)
            if step is None:
                self.skip(size)
                self.edits.append((start, self.pos, b""))
                dropped += 1
            else:
                self.tagged_value(tag, size_start, size, step)
        if dropped:
            self.edits.insert(first_edit, (pos, count_end, encode_uvarint(count - dropped)))

    def tagged_value(self, tag: int, size_start: int, size: int, step: Step) -> None:
        """Walk a known tagged field's value, which must take exactly ``size`` bytes (its size
        varint starts at ``size_start``)."""
        value_start = self.pos
        limit = value_start + size
        if limit > self.end:
            raise CorruptFrameError(f"tagged field {tag} of {size} bytes overruns the frame")
        end, self.end = self.end, limit
        first_edit = len(self.edits)
        try:
            self.step(*step)
        finally:
            self.end = end
        if self.pos != limit:
            raise CorruptFrameError(
                f"tagged field {tag} declares {size} bytes but its value takes "
                f"{self.pos - value_start}"
            )
        if len(self.edits) > first_edit:  # unknown tags inside: the value gets shorter
            removed = sum(e - s - len(r) for s, e, r in self.edits[first_edit:])
            self.edits.insert(first_edit,
                              (size_start, value_start, encode_uvarint(size - removed)))

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

    def struct(self, plan: _Struct) -> None:
        for kind, arg in plan.steps:
            if kind == "fixed":  # inline: most steps are
                pos = self.pos + arg
                if pos > self.end:
                    raise CorruptFrameError(f"request field of {arg} bytes overruns the frame")
                self.pos = pos
            else:
                self.step(kind, arg)
        if self.flexible:
            self.tags(plan.tags)

    def edited(self) -> Any:
        """The frame with the unknown tagged fields taken out (itself when there are none)."""
        if not self.edits:
            return self.buf
        out = bytearray()
        pos = 0
        for start, end, replacement in self.edits:
            out += self.buf[pos:start]
            out += replacement
            pos = end
        out += self.buf[pos:]
        return bytes(out)


def check_request(frame: Any, schema: type[Any]) -> tuple[str | None, int, Any]:
    """Raise CorruptFrameError unless every length in ``frame`` fits in it.

    Returns the header's client id, where the body starts, and the frame for kio: ``frame``
    itself, or a copy without the tagged fields ``schema`` does not define (the header's tagged
    fields are skipped whatever their tags, and not read by kio).
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
        w.skip_tags()
    body_start = w.pos
    w.flexible = bool(schema.__flexible__)
    w.struct(_plan(schema))
    return client_id, body_start, w.edited()


def check_response(frame: Any, schema: type[Any], header_flexible: bool) -> tuple[int, Any]:
    """What :func:`check_request` does, for a response frame (without its size prefix) of
    ``schema``, whose header (correlation id, then tagged fields when ``header_flexible``) is
    skipped. Returns where the body starts and the frame for kio."""
    w = _Walker(frame, 0, flexible=header_flexible)
    w.skip(4)  # correlation id
    if header_flexible:
        w.skip_tags()
    body_start = w.pos
    w.flexible = bool(schema.__flexible__)
    w.struct(_plan(schema))
    return body_start, w.edited()
