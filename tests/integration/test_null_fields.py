"""Null where a version does not allow it: every API, every served version, every field.

Requests are built from Kafka's own message specs (``/work/shared/reference/kafka-message-specs``,
falling back to skipping the test where they are absent) rather than from kio's classes, so the
specs' ``nullableVersions`` are checked independently of the codec that the broker uses. Each
request is a well-formed minimal one (every array holds one element, so nested fields are
reached) except for one array, string or bytes field that is sent as null in a version where the
spec says it is not nullable. Kafka's generated readers refuse such a request ("non-nullable
field ... was serialized as null") and its socket server closes the connection; the broker must
do the same (or answer INVALID_REQUEST), log no traceback, and keep serving other clients.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
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
from odradek.protocol.messages import response_schema

pytestmark = pytest.mark.integration

SPECS = Path("/work/shared/reference/kafka-message-specs")

_FIXED = {"int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint16": 2, "uint32": 4,
          "float64": 8, "bool": 1, "uuid": 16}


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


@dataclass(frozen=True)
class Case:
    api_key: int
    version: int
    path: tuple[str, ...]  # field names from the request down to the field sent as null

    def __str__(self) -> str:
        return f"api{self.api_key}-v{self.version}-{'.'.join(self.path)}"


class SpecEncoder:
    """Writes a minimal request body for one version, with one field (by path) as null."""

    def __init__(self, spec: dict[str, Any], version: int) -> None:
        self.version = version
        self.flexible = _in(spec.get("flexibleVersions"), version)
        self.common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}

    def present(self, field: dict[str, Any]) -> bool:
        return _in(field.get("versions"), self.version) and not (
            "tag" in field and _in(field.get("taggedVersions"), self.version)
        )

    def nullable(self, field: dict[str, Any]) -> bool:
        return _in(field.get("nullableVersions"), self.version)

    def struct_fields(self, field: dict[str, Any]) -> list[dict[str, Any]]:
        name = field["type"].removeprefix("[]")
        return list(field.get("fields") or self.common[name])

    def length(self, n: int, *, legacy16: bool = False) -> bytes:
        if self.flexible:
            return _uvarint(n + 1)
        return struct.pack(">h" if legacy16 else ">i", n)

    def struct(self, fields: list[dict[str, Any]], null_path: tuple[str, ...]) -> bytes:
        out = b"".join(self.field(f, null_path) for f in fields if self.present(f))
        return out + (b"\x00" if self.flexible else b"")

    def field(self, f: dict[str, Any], null_path: tuple[str, ...]) -> bytes:
        kind: str = f["type"]
        here = bool(null_path) and null_path[0] == f["name"]
        rest = null_path[1:] if here else ()
        if here and not rest:
            return self.length(-1, legacy16=kind == "string")
        if kind.startswith("[]"):
            element = kind[2:]
            if element in _FIXED or element in ("string", "bytes"):
                body = self.primitive(element)
            else:
                body = self.struct(self.struct_fields(f), rest)
            return self.length(1) + body
        if kind in _FIXED or kind in ("string", "bytes", "records"):
            return self.primitive(kind)
        marker = b"\x01" if self.nullable(f) else b""
        return marker + self.struct(self.struct_fields(f), rest)

    def primitive(self, kind: str) -> bytes:
        if kind in _FIXED:
            return bytes(_FIXED[kind])
        if kind == "string":
            return self.length(1, legacy16=True) + b"a"
        return self.length(0)  # bytes, records: empty

    def null_targets(self, fields: list[dict[str, Any]],
                     prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        """Paths of every present array, string or bytes field that may not be null here."""
        for f in fields:
            if not self.present(f):
                continue
            kind, path = f["type"], (*prefix, f["name"])
            if (kind.startswith("[]") or kind in ("string", "bytes", "records")) \
                    and not self.nullable(f):
                yield path
            element = kind.removeprefix("[]")
            if element not in _FIXED and element not in ("string", "bytes", "records"):
                yield from self.null_targets(self.struct_fields(f), path)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def cases() -> list[tuple[Case, bytes]]:
    out = []
    for api_key, api in sorted(handlers().items()):
        spec = load_spec(api_key)
        if spec is None:
            continue
        for version in api.versions():
            if not api.accepts(version):
                continue
            enc = SpecEncoder(spec, version)
            for path in enc.null_targets(spec["fields"]):
                header = struct.pack(">hhih", api_key, version, 7, 4) + b"null"
                if enc.flexible:
                    header += b"\x00"
                out.append((Case(api_key, version, path), header + enc.struct(spec["fields"], path)))
    return out


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


@pytest.mark.skipif(not SPECS.is_dir(), reason="Kafka's message specs are not available")
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
