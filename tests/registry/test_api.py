"""The HTTP API through a real HTTP client against a registry on a real broker."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from registrykit import Http, registered

pytestmark = pytest.mark.integration

V1 = json.dumps({"type": "record", "name": "User", "fields": [{"name": "a", "type": "int"}]})
# v1 plus a field with a default: backward compatible.
V2 = json.dumps({"type": "record", "name": "User", "fields": [
    {"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}]})
# A required field the old data lacks: not backward compatible.
BAD = json.dumps({"type": "record", "name": "User", "fields": [
    {"name": "a", "type": "int"}, {"name": "c", "type": "string"}]})


def test_register_get_and_idempotence(http: Http) -> None:
    status, body = http("POST", "/subjects/reg-value/versions", {"schema": V1})
    assert status == 200, body
    first = body["id"]
    # The same schema, formatted differently: the same id, no new version.
    respaced = json.dumps(json.loads(V1), indent=2)
    assert http("POST", "/subjects/reg-value/versions", {"schema": respaced})[1]["id"] == first
    assert http("GET", "/subjects/reg-value/versions") == (200, [1])
    status, body = http("GET", "/subjects/reg-value/versions/latest")
    assert (status, body["version"], body["id"], body["subject"]) == (200, 1, first, "reg-value")
    assert "schemaType" not in body  # AVRO is implied, as Confluent answers
    # The guid is Confluent's: the UUID made of the MD5 of the schema (it has no references,
    # metadata or rules), the same for every subject and registry holding the schema.
    guid = str(uuid.UUID(bytes=hashlib.md5(V1.encode()).digest()))
    assert http("GET", f"/schemas/ids/{first}") == (200, {"guid": guid, "schema": V1})
    assert http("GET", f"/schemas/guids/{guid}") == (200, {"id": first, "guid": guid,
                                                           "schema": V1})
    assert http("GET", f"/schemas/guids/{uuid.uuid4()}")[1]["error_code"] == 40403
    assert http("GET", f"/schemas/ids/{first}/schema") == (200, json.loads(V1))
    assert http("GET", f"/schemas/ids/{first}/subjects") == (200, ["reg-value"])
    assert http("GET", f"/schemas/ids/{first}/versions") == (
        200, [{"subject": "reg-value", "version": 1}])
    # The same schema under another subject keeps its id.
    assert registered(http("POST", "/subjects/reg-other/versions", {"schema": V1})) == (
        200, first)


def test_evolution_accepted_and_refused(http: Http) -> None:
    s = "evolve-value"
    assert http("POST", f"/subjects/{s}/versions", {"schema": V1})[0] == 200
    status, body = http("POST", f"/subjects/{s}/versions", {"schema": BAD})
    assert status == 409 and body["error_code"] == 40901, body
    status, body = http(
        "POST", f"/compatibility/subjects/{s}/versions/latest?verbose=true", {"schema": BAD})
    assert status == 200 and body["is_compatible"] is False and body["messages"], body
    assert http("POST", f"/compatibility/subjects/{s}/versions/latest", {"schema": V2}) == (
        200, {"is_compatible": True})
    status, body = http("POST", f"/subjects/{s}/versions", {"schema": V2})
    assert status == 200
    assert http("GET", f"/subjects/{s}/versions") == (200, [1, 2])
    # NONE on the subject lets the refused schema in.
    assert http("PUT", f"/config/{s}", {"compatibility": "NONE"}) == (200, {"compatibility": "NONE"})
    assert http("POST", f"/subjects/{s}/versions", {"schema": BAD})[0] == 200
    assert http("GET", f"/subjects/{s}/versions") == (200, [1, 2, 3])


def test_lookup(http: Http) -> None:
    s = "lookup-value"
    _, reg = http("POST", f"/subjects/{s}/versions", {"schema": V1})
    status, body = http("POST", f"/subjects/{s}", {"schema": json.dumps(json.loads(V1), indent=1)})
    assert status == 200 and body["id"] == reg["id"] and body["version"] == 1
    assert http("POST", f"/subjects/{s}", {"schema": V2})[1]["error_code"] == 40403
    assert http("POST", "/subjects/no-such-subject", {"schema": V1})[1]["error_code"] == 40401


def test_soft_and_hard_delete(http: Http) -> None:
    s = "del-value"
    http("PUT", f"/config/{s}", {"compatibility": "NONE"})
    http("POST", f"/subjects/{s}/versions", {"schema": V1})
    http("POST", f"/subjects/{s}/versions", {"schema": V2})
    # Hard delete only after a soft delete.
    assert http("DELETE", f"/subjects/{s}/versions/1?permanent=true")[1]["error_code"] == 40407
    assert http("DELETE", f"/subjects/{s}/versions/1") == (200, 1)
    assert http("DELETE", f"/subjects/{s}/versions/1")[1]["error_code"] == 40406
    assert http("GET", f"/subjects/{s}/versions") == (200, [2])
    assert http("GET", f"/subjects/{s}/versions?deleted=true") == (200, [1, 2])
    assert http("GET", f"/subjects/{s}/versions/1")[1]["error_code"] == 40402
    assert http("GET", f"/subjects/{s}/versions/1?deleted=true")[0] == 200
    assert http("DELETE", f"/subjects/{s}/versions/1?permanent=true") == (200, 1)
    assert http("GET", f"/subjects/{s}/versions?deleted=true") == (200, [2])
    # The subject: permanent only after soft; soft twice is 40404.
    assert http("DELETE", f"/subjects/{s}?permanent=true")[1]["error_code"] == 40405
    assert http("DELETE", f"/subjects/{s}") == (200, [2])
    assert http("DELETE", f"/subjects/{s}")[1]["error_code"] == 40404
    assert s not in http("GET", "/subjects")[1]
    assert s in http("GET", "/subjects?deleted=true")[1]
    assert http("GET", f"/subjects/{s}/versions")[1]["error_code"] == 40401
    assert http("DELETE", f"/subjects/{s}?permanent=true") == (200, [2])
    assert s not in http("GET", "/subjects?deleted=true")[1]
    # Registering again after a hard delete starts a new history; ids are not reused.
    _, before = http("POST", "/subjects/del-fresh/versions", {"schema": json.dumps("string")})
    _, after = http("POST", f"/subjects/{s}/versions", {"schema": json.dumps("long")})
    assert after["id"] > before["id"]


def test_subjects_prefix_and_types(http: Http) -> None:
    http("POST", "/subjects/pfx-a/versions", {"schema": V1})
    http("POST", "/subjects/pfx-b/versions", {"schema": V1})
    assert http("GET", "/subjects?subjectPrefix=pfx-") == (200, ["pfx-a", "pfx-b"])
    status, types = http("GET", "/schemas/types")
    assert status == 200 and "AVRO" in types
    status, contexts = http("GET", "/contexts")
    assert status == 200 and contexts[0] == "."


def test_contexts(http: Http) -> None:
    """Subjects in Confluent's qualified syntax name their context; ``/contexts`` lists them."""
    for subject in (":.team-b:orders-value", ":.team-a:orders-value", ":.team-a:users-value"):
        assert http("POST", f"/subjects/{subject}/versions", {"schema": V1})[0] == 200
    status, contexts = http("GET", "/contexts")
    assert status == 200 and contexts[:1] == ["."] and {".team-a", ".team-b"} <= set(contexts)
    assert contexts == sorted(contexts)
    assert http("GET", "/contexts?offset=0&limit=1") == (200, ["."])
    assert http("GET", "/subjects?subjectPrefix=:.team-a:") == (
        200, [":.team-a:orders-value", ":.team-a:users-value"])
    assert http("GET", "/subjects/:.team-b:orders-value/versions") == (200, [1])


def test_config(http: Http) -> None:
    assert http("GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    s = "cfg-value"
    http("POST", f"/subjects/{s}/versions", {"schema": V1})
    assert http("GET", f"/config/{s}")[1]["error_code"] == 40408
    assert http("GET", f"/config/{s}?defaultToGlobal=true") == (
        200, {"compatibilityLevel": "BACKWARD"})
    assert http("PUT", f"/config/{s}", {"compatibility": "full_transitive"}) == (
        200, {"compatibility": "FULL_TRANSITIVE"})
    assert http("GET", f"/config/{s}") == (200, {"compatibilityLevel": "FULL_TRANSITIVE"})
    assert http("DELETE", f"/config/{s}") == (200, {"compatibilityLevel": "FULL_TRANSITIVE"})
    assert http("GET", f"/config/{s}")[1]["error_code"] == 40408
    status, body = http("PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42203)


def test_bad_input(http: Http) -> None:
    status, body = http("POST", "/subjects/bad/versions", raw=b"{not json")
    assert status == 400 and body["error_code"] == 400
    status, body = http("POST", "/subjects/bad/versions", {"schema": "{\"type\": \"nope\""})
    assert (status, body["error_code"]) == (422, 42201)
    status, body = http("POST", "/subjects/bad/versions", {"schema": V1, "schemaType": "XML"})
    assert (status, body["error_code"]) == (422, 42201)
    status, body = http("POST", "/subjects/bad/versions", {"schema": V1, "references": [
        {"name": "Other", "subject": "missing", "version": 1}]})
    assert (status, body["error_code"]) == (422, 42201)
    assert http("GET", "/subjects/bad/versions/0")[1]["error_code"] == 42202
    assert http("GET", "/subjects/bad/versions/abc")[1]["error_code"] == 42202
    assert http("GET", "/subjects/nobody/versions/1")[1]["error_code"] == 40401
    assert http("GET", "/schemas/ids/999999")[1]["error_code"] == 40403
    status, body = http("PUT", "/mode", {"mode": "SIDEWAYS"})
    assert (status, body["error_code"]) == (422, 42204)
    http("POST", "/subjects/known/versions", {"schema": V1})
    assert http("GET", "/subjects/known/versions/7")[1]["error_code"] == 40402


def test_oversized_body(http: Http) -> None:
    big = json.dumps({"schema": "x" * (17 * 1024 * 1024)}).encode()
    status, body = http("POST", "/subjects/big/versions", raw=big)
    assert status == 413 and body["error_code"] == 413


def test_modes(http: Http) -> None:
    s = "mode-value"
    http("POST", f"/subjects/{s}/versions", {"schema": V1})
    assert http("GET", "/mode") == (200, {"mode": "READWRITE"})
    assert http("PUT", f"/mode/{s}", {"mode": "READONLY"}) == (200, {"mode": "READONLY"})
    status, body = http("POST", f"/subjects/{s}/versions", {"schema": V2})
    assert (status, body["error_code"]) == (422, 42205)
    assert http("DELETE", f"/mode/{s}") == (200, {"mode": "READONLY"})
    # IMPORT only on an empty subject, then ids and versions are the caller's.
    status, body = http("PUT", f"/mode/{s}", {"mode": "IMPORT"})
    assert (status, body["error_code"]) == (422, 42205)
    imp = "import-value"
    assert http("PUT", f"/mode/{imp}", {"mode": "IMPORT"}) == (200, {"mode": "IMPORT"})
    body = {"schema": json.dumps("bytes"), "id": 5000, "version": 7}
    assert registered(http("POST", f"/subjects/{imp}/versions", body)) == (200, 5000)
    assert http("GET", f"/subjects/{imp}/versions") == (200, [7])
    assert http("GET", "/schemas/ids/5000")[0] == 200
    http("PUT", f"/mode/{imp}", {"mode": "READWRITE"})
    _, fresh = http("POST", "/subjects/after-import/versions", {"schema": json.dumps("float")})
    assert fresh["id"] > 5000


def test_references(http: Http) -> None:
    _, _ = http("POST", "/subjects/ref-base/versions", {"schema": V1})
    refs = [{"name": "User", "subject": "ref-base", "version": 1}]
    uses = json.dumps({"type": "record", "name": "Holder", "fields": [
        {"name": "u", "type": "User"}]})
    status, body = http("POST", "/subjects/ref-user/versions", {"schema": uses, "references": refs})
    assert status == 200, body
    holder = body["id"]
    _, got = http("GET", "/subjects/ref-user/versions/1")
    assert got["references"] == refs
    assert http("GET", "/subjects/ref-base/versions/1/referencedby") == (200, [holder])
    # format=resolved writes the referenced type out in place (Avro).
    status, body = http("GET", f"/schemas/ids/{holder}?format=resolved")
    assert status == 200 and "references" in body
    resolved = json.loads(body["schema"])
    assert resolved["fields"][0]["type"]["fields"] == [{"name": "a", "type": "int"}]
    status, body = http("GET", f"/schemas/ids/{holder}?fetchMaxId=true")
    assert body["maxId"] >= holder
    # A referenced version cannot be deleted.
    status, body = http("DELETE", "/subjects/ref-base/versions/1")
    assert (status, body["error_code"]) == (422, 42206)
