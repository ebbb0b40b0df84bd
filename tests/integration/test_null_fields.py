"""Null where a version does not allow it: every API, every served version, every field.

Requests are written here byte by byte from a description of each version's fields, taken from
kio's generated classes; where Kafka's own message specs are at hand (``KAFKA_MESSAGE_SPECS``,
by default ``/work/shared/reference/kafka-message-specs``) a second test checks that the specs'
``nullableVersions`` give the very same requests, so the codec the broker uses is not its own
judge. Each request is a well-formed minimal one (every array holds one element, so nested
fields are reached) except for one array, string or bytes field sent as null in a version where
it is not nullable. Kafka's generated readers refuse such a request ("non-nullable
field ... was serialized as null") and its socket server closes the connection; the broker must
do the same (or answer INVALID_REQUEST), log no traceback, and keep serving other clients.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import struct
import types
import typing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kio.schema.metadata.v12.request import MetadataRequest
from kio.serial import entity_reader
from rawclient import RawClient

from odradek.broker.registry import handlers
from odradek.broker.runner import BrokerThread
from odradek.errors import ErrorCode
from odradek.protocol.messages import request_schema, response_schema

pytestmark = pytest.mark.integration

SPECS = Path(os.environ.get("KAFKA_MESSAGE_SPECS", "/work/shared/reference/kafka-message-specs"))

_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4,
          "uint64": 8, "float64": 8, "bool": 1, "uuid": 16, "error_code": 2, "timedelta_i32": 4,
          "timedelta_i64": 8, "datetime_i64": 8}
_VARIABLE = ("string", "bytes", "records")


@dataclass(frozen=True)
class Field:
    """One field of one version, wherever its description came from."""

    name: str
    kind: str  # a primitive Kafka type, or "struct"
    array: bool
    nullable: bool
    fields: tuple[Field, ...] = ()


# -- the two descriptions: kio's generated classes and Kafka's JSON specs --------------------------


def kio_fields(cls: type[Any]) -> tuple[Field, ...]:
    out = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("__") or "tag" in f.metadata:
            continue
        tp, nullable = f.type, False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
            nullable = True
        kafka_type = f.metadata.get("kafka_type")
        array = typing.get_origin(tp) is tuple
        if array:
            tp = typing.get_args(tp)[0]
        if kafka_type is None:
            out.append(Field(f.name, "struct", array, nullable, kio_fields(tp)))
        else:
            out.append(Field(f.name, kafka_type, array, nullable))
    return tuple(out)


def _in(versions: str | None, v: int) -> bool:
    if not versions or versions == "none":
        return False
    if versions.endswith("+"):
        return v >= int(versions[:-1])
    low, _, high = versions.partition("-")
    return int(low) <= v <= int(high or low)


def load_spec(api_key: int) -> dict[str, Any] | None:
    for path in SPECS.glob("*Request.json"):
        text = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)
        spec = json.loads(text)
        if spec.get("apiKey") == api_key and spec.get("type") == "request":
            return dict(spec)
    return None


def spec_fields(spec: dict[str, Any], version: int,
                fields: list[dict[str, Any]] | None = None) -> tuple[Field, ...]:
    common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}
    out = []
    for f in spec["fields"] if fields is None else fields:
        if not _in(f.get("versions"), version) or (
            "tag" in f and _in(f.get("taggedVersions"), version)
        ):
            continue
        kind: str = f["type"]
        array = kind.startswith("[]")
        element = kind.removeprefix("[]")
        nullable = _in(f.get("nullableVersions"), version)
        if element in _FIXED or element in _VARIABLE:
            out.append(Field(f["name"], element, array, nullable))
        else:
            inner = spec_fields(spec, version, f.get("fields") or common[element])
            out.append(Field(f["name"], "struct", array, nullable, inner))
    return tuple(out)


# -- writing a request with one field as null -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    api_key: int
    version: int
    path: tuple[str, ...]  # field names from the request down to the field sent as null

    def __str__(self) -> str:
        return f"api{self.api_key}-v{self.version}-{'.'.join(self.path)}"


class NullWriter:
    """Writes a minimal request body (one element in every array, so that nested fields are
    reached) with the field at ``null_path`` as null."""

    def __init__(self, flexible: bool) -> None:
        self.flexible = flexible

    def length(self, n: int, *, legacy16: bool = False) -> bytes:
        if self.flexible:
            return _uvarint(n + 1)
        return struct.pack(">h" if legacy16 else ">i", n)

    def struct(self, fields: tuple[Field, ...], null_path: tuple[str, ...]) -> bytes:
        out = b"".join(self.field(f, null_path) for f in fields)
        return out + (b"\x00" if self.flexible else b"")

    def field(self, f: Field, null_path: tuple[str, ...]) -> bytes:
        here = bool(null_path) and null_path[0] == f.name
        rest = null_path[1:] if here else ()
        if here and not rest:
            return self.length(-1, legacy16=f.kind == "string" and not f.array)
        if f.kind == "struct":
            value = self.struct(f.fields, rest)
            if not f.array and f.nullable:
                value = b"\x01" + value  # present
        else:
            value = self.primitive(f.kind)
        return self.length(1) + value if f.array else value

    def primitive(self, kind: str) -> bytes:
        if kind in _FIXED:
            return bytes(_FIXED[kind])
        if kind == "string":
            return self.length(1, legacy16=True) + b"a"
        return self.length(0)  # bytes, records: empty


def null_targets(fields: tuple[Field, ...],
                 prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of every array, string or bytes field that may not be null."""
    for f in fields:
        path = (*prefix, f.name)
        if (f.array or f.kind in _VARIABLE) and not f.nullable:
            yield path
        if f.kind == "struct":
            yield from null_targets(f.fields, path)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def served_versions() -> Iterator[tuple[int, int]]:
    for api_key, api in sorted(handlers().items()):
        for version in api.versions():
            if api.accepts(version):
                yield api_key, version


def null_frames(api_key: int, version: int, flexible: bool,
                fields: tuple[Field, ...]) -> list[tuple[Case, bytes]]:
    header = struct.pack(">hhih", api_key, version, 7, 4) + b"null"
    if flexible:
        header += b"\x00"
    writer = NullWriter(flexible)
    return [(Case(api_key, version, path), header + writer.struct(fields, path))
            for path in null_targets(fields)]


def cases() -> list[tuple[Case, bytes]]:
    """From kio's classes, which say per version which fields are nullable."""
    out = []
    for api_key, version in served_versions():
        schema = request_schema(api_key, version)
        assert schema is not None
        out += null_frames(api_key, version, bool(schema.__flexible__), kio_fields(schema))
    return out


@pytest.mark.skipif(not SPECS.is_dir(), reason="Kafka's message specs are not available")
def test_kio_nullability_is_kafkas() -> None:
    """The cases come from kio's classes; Kafka's specs must give the very same frames."""
    checked = 0
    for api_key, version in served_versions():
        spec = load_spec(api_key)
        assert spec is not None, api_key
        flexible = _in(spec.get("flexibleVersions"), version)
        from_spec = null_frames(api_key, version, flexible, spec_fields(spec, version))
        schema = request_schema(api_key, version)
        assert schema is not None
        from_kio = null_frames(api_key, version, bool(schema.__flexible__), kio_fields(schema))
        assert sorted(f for _, f in from_spec) == sorted(f for _, f in from_kio), (api_key, version)
        checked += len(from_kio)
    assert checked > 300


def _error_codes(value: Any) -> Iterator[int]:
    if hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            item = getattr(value, name)
            if name == "error_code":
                yield int(item)
            else:
                yield from _error_codes(item)
    elif isinstance(value, tuple):
        for item in value:
            yield from _error_codes(item)


def _answer(bootstrap: str, case: Case, frame: bytes) -> str:
    """'closed', or 'invalid_request' for a response carrying INVALID_REQUEST; anything else
    fails the test."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return "closed"
            if not chunk:
                break
            data += chunk
            if len(data) >= 4 and len(data) >= 4 + struct.unpack_from(">i", data)[0]:
                break
    if not data:
        return "closed"
    schema = response_schema(case.api_key, case.version)
    header_len = 4 + 4 + (1 if schema.__flexible__ and case.api_key != 18 else 0)
    body, _ = entity_reader(schema)(data, header_len)
    codes = set(_error_codes(body))
    assert ErrorCode.invalid_request in codes, f"{case}: answered {body!r}"
    return "invalid_request"


def test_null_in_non_nullable_fields_is_refused_without_traceback(
    broker: BrokerThread, caplog: pytest.LogCaptureFixture
) -> None:
    all_cases = cases()
    apis = {c.api_key for c, _ in all_cases}
    assert len(apis) >= 30, f"only {len(apis)} APIs have a spec"
    caplog.set_level(logging.INFO)
    answers: dict[str, int] = {}
    with RawClient(broker.bootstrap) as other:
        for case, frame in all_cases:
            answer = _answer(broker.bootstrap, case, frame)
            answers[answer] = answers.get(answer, 0) + 1
            # Another client, connected throughout, is still served.
            meta = other.request(MetadataRequest(
                topics=(), allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            ))
            assert meta.brokers, case
    assert sum(answers.values()) == len(all_cases) > 300
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [(r.getMessage(), r.exc_info) for r in tracebacks[:3]]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]
    closing = [r for r in caplog.records if "closing connection" in r.getMessage()]
    assert len(closing) == answers.get("closed", 0)


@pytest.mark.parametrize("version", [10, 11, 12])
@pytest.mark.parametrize("by_id", [False, True])
def test_metadata_topic_without_a_name(
    broker: BrokerThread, caplog: pytest.LogCaptureFixture, version: int, by_id: bool
) -> None:
    """A null topic name is allowed in Metadata requests from v10 but names in responses only
    from v12; before v12 Kafka refuses null names and topic ids with INVALID_REQUEST (and an
    empty name in the answer). Found by the fuzzer: the answer could not be encoded."""
    request_module = __import__(f"kio.schema.metadata.v{version}.request", fromlist=["_"])
    topic_id = uuid.UUID(int=0x25D46E87) if by_id else uuid.UUID(int=0)
    extra = {"include_cluster_authorized_operations": False} if version == 10 else {}
    body = request_module.MetadataRequest(
        topics=(request_module.MetadataRequestTopic(topic_id=topic_id, name=None),),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False, **extra,
    )
    with RawClient(broker.bootstrap) as client:
        response = client.request(body)
    (topic,) = response.topics
    if version < 12:
        assert (topic.error_code, topic.name) == (ErrorCode.invalid_request, "")
    elif by_id:
        assert (topic.error_code, topic.name) == (ErrorCode.unknown_topic_id, None)
    else:
        assert topic.error_code == ErrorCode.invalid_request
    assert not [r for r in caplog.records if r.exc_info]
