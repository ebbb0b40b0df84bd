"""The seven compatibility levels for each of the three formats, through the HTTP API: a
subject holds v1 and v2 (registered under NONE), and a candidate is checked under each level,
both with ``/compatibility`` and by registering it.

The candidates are chosen so that the levels answer differently: ``SAME_AS_V2`` agrees with v2
and breaks v1 both ways (a field's type changed), so only the transitive levels refuse it; the
directional candidates break one direction against v2 only."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from registrykit import Http

pytestmark = pytest.mark.integration

LEVELS = ("NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
          "FULL_TRANSITIVE")
#: A candidate that v2 agrees with both ways and v1 with neither.
TRANSITIVE_ONLY = {"NONE": True, "BACKWARD": True, "BACKWARD_TRANSITIVE": False,
                   "FORWARD": True, "FORWARD_TRANSITIVE": False, "FULL": True,
                   "FULL_TRANSITIVE": False}
#: A candidate that reads v1's and v2's data, but whose data v2 cannot read.
FORWARD_BROKEN = {"NONE": True, "BACKWARD": True, "BACKWARD_TRANSITIVE": True,
                  "FORWARD": False, "FORWARD_TRANSITIVE": False, "FULL": False,
                  "FULL_TRANSITIVE": False}


def _avro(*fields: tuple[str, Any, Any]) -> str:
    return json.dumps({"type": "record", "name": "R", "fields": [
        {"name": n, "type": t, **({} if d is None else {"default": d})} for n, t, d in fields]})


def _json(props: dict[str, str], required: list[str], *, closed: bool = False,
          title: str | None = None) -> str:
    obj: dict[str, Any] = {"type": "object", "required": required,
                           "properties": {k: {"type": v} for k, v in props.items()}}
    if title is not None:  # another text for the same schema
        obj["title"] = title
    if closed:
        obj["additionalProperties"] = False
    return json.dumps(obj)


def _proto(*fields: str) -> str:
    body = "".join(f"  {f};\n" for f in fields)
    return f'syntax = "proto3";\npackage levels;\nmessage R {{\n{body}}}\n'


CASES = [
    # (format, v1, v2, candidate, expected per level)
    pytest.param("AVRO", _avro(("a", "int", None)), _avro(("a", "string", None)),
                 _avro(("a", "string", None), ("c", "int", 0)), TRANSITIVE_ONLY,
                 id="avro-type-changed-before"),
    pytest.param("AVRO", _avro(("a", "string", None)),
                 _avro(("a", "string", None), ("b", "string", "x")),
                 _avro(("b", "string", "x")), FORWARD_BROKEN,
                 id="avro-field-without-default-dropped"),
    pytest.param("JSON", _json({"a": "integer"}, ["a"]), _json({"a": "string"}, ["a"]),
                 _json({"a": "string"}, ["a"], title="again"), TRANSITIVE_ONLY,
                 id="json-type-changed-before"),
    pytest.param("JSON", _json({"a": "string"}, ["a"], closed=True),
                 _json({"a": "string"}, ["a"], closed=True, title="v2"),
                 _json({"a": "string", "b": "string"}, ["a"], closed=True), FORWARD_BROKEN,
                 id="json-property-added-to-closed-model"),
    pytest.param("PROTOBUF", _proto("int32 a = 1"), _proto("string a = 1"),
                 _proto("string a = 1", "string c = 2"), TRANSITIVE_ONLY,
                 id="protobuf-scalar-kind-changed-before"),
]


@pytest.mark.parametrize(("schema_type", "v1", "v2", "candidate", "expected"), CASES)
def test_seven_levels(
    http: Http, schema_type: str, v1: str, v2: str, candidate: str, expected: dict[str, bool]
) -> None:
    s = f"levels-{uuid.uuid4().hex[:8]}"
    assert http("PUT", f"/config/{s}", {"compatibility": "NONE"})[0] == 200
    for text in (v1, v2):
        status, body = http("POST", f"/subjects/{s}/versions",
                            {"schema": text, "schemaType": schema_type})
        assert status == 200, body
    answers = {}
    for level in LEVELS:
        assert http("PUT", f"/config/{s}", {"compatibility": level})[0] == 200
        status, body = http("POST", f"/compatibility/subjects/{s}/versions",
                            {"schema": candidate, "schemaType": schema_type})
        assert status == 200, body
        answers[level] = body["is_compatible"]
    assert answers == expected
    # Registering agrees with the check: refused (409) under a level that says no.
    refusing = next(level for level in LEVELS if not expected[level])
    assert http("PUT", f"/config/{s}", {"compatibility": refusing})[0] == 200
    status, body = http("POST", f"/subjects/{s}/versions",
                        {"schema": candidate, "schemaType": schema_type})
    assert (status, body["error_code"]) == (409, 40901), body
    assert http("PUT", f"/config/{s}", {"compatibility": "NONE"})[0] == 200
    status, body = http("POST", f"/subjects/{s}/versions",
                        {"schema": candidate, "schemaType": schema_type})
    assert status == 200 and http("GET", f"/subjects/{s}/versions")[1] == [1, 2, 3], body
