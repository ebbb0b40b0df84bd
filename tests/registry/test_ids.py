"""Ids are never handed out twice: a hard-deleted schema's id stays taken after the broker's
cleaner has removed every record of it, tombstone included."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from registrykit import Http, formats, read_topic, registered

from odradek.broker.runner import BrokerThread, local_config
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration

#: Small segments, everything dirty cleanable, tombstones dropped at the next pass.
COMPACT = {"cleanup.policy": "compact", "segment.bytes": "16384",
           "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}


def _record(name: str) -> str:
    return json.dumps({"type": "record", "name": name,
                       "fields": [{"name": "f", "type": "string"}]})


def test_hard_deleted_id_not_reused_after_compaction(tmp_path: Path) -> None:
    config = local_config(tmp_path / "data", log_cleaner_backoff_ms="100",
                          offsets_topic_num_partitions="1")
    with BrokerThread(config) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("_schemas", 1, 1, config=COMPACT)])["_schemas"].result(10)
        with RegistryThread(broker.bootstrap, formats=formats, timeout=15.0) as reg:
            http = Http(reg.url)
            assert registered(http("POST", "/subjects/keep-value/versions",
                                   {"schema": _record("Keep")})) == (200, 1)
            assert registered(http("POST", "/subjects/gone-value/versions",
                                   {"schema": _record("Gone")})) == (200, 2)
            assert http("DELETE", "/subjects/gone-value") == (200, [1])
            assert http("DELETE", "/subjects/gone-value?permanent=true") == (200, [1])
        # Enough other records after the tombstone to roll segments past it, so the cleaner
        # removes the subject's SCHEMA record and then its tombstone.
        # Batches smaller than a segment, which refuses a larger one.
        filler = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                           "batch.size": 4096})
        failed: list[object] = []
        for i in range(400):
            filler.produce("_schemas", partition=0,
                           key=json.dumps({"keytype": "CONFIG", "subject": "filler",
                                           "magic": 0}).encode(),
                           value=json.dumps({"compatibilityLevel": "NONE", "n": i}).encode(),
                           on_delivery=lambda err, _msg: err and failed.append(err))
        assert filler.flush(10) == 0 and not failed, failed
        deadline = time.monotonic() + 60
        while True:
            keys = [json.loads(k) for k, _ in read_topic(broker.bootstrap)]
            if not any(k["keytype"] == "SCHEMA" and k["subject"] == "gone-value" for k in keys):
                break
            assert time.monotonic() < deadline, "the cleaner did not remove gone-value"
            time.sleep(0.2)
        # A new registry replays what is left: no record names id 2 but the counter.
        with RegistryThread(broker.bootstrap, formats=formats, timeout=15.0) as reg:
            http = Http(reg.url)
            assert http("GET", "/schemas/ids/2")[1]["error_code"] == 40403
            assert registered(http("POST", "/subjects/new-value/versions",
                                   {"schema": _record("New")})) == (200, 3)
        counters = [json.loads(v) for k, v in read_topic(broker.bootstrap)
                    if v is not None and json.loads(k).get("odradek") == "id-counter"]
        assert counters[-1] == {"maxId": 3}


def test_ids_are_numbered_per_context(
    registry_broker: BrokerThread, registry: RegistryThread, http: Http
) -> None:
    """Each context numbers its ids from 1, as Confluent's do: one number names a schema in
    each context, the same schema has one id per context, and a lookup by id resolves the
    context from its ``subject`` (a qualified one's own; an unqualified one's default context,
    else the first other context holding the id; none: the default context)."""
    tag = uuid.uuid4().hex[:8]
    c1, c2, c3 = f".one{tag}", f".two{tag}", f".three{tag}"
    a, b = _record(f"A{tag}"), _record(f"B{tag}")
    assert registered(http("POST", f"/subjects/:{c1}:s/versions", {"schema": a})) == (200, 1)
    assert registered(http("POST", f"/subjects/:{c1}:t/versions", {"schema": b})) == (200, 2)
    assert registered(http("POST", f"/subjects/:{c1}:u/versions", {"schema": a})) == (200, 1)
    assert registered(http("POST", f"/subjects/:{c2}:s/versions", {"schema": b})) == (200, 1)
    # In the default context the same schemas take the default context's next ids.
    status, default_a = registered(http("POST", f"/subjects/plain-{tag}/versions", {"schema": a}))
    assert status == 200 and isinstance(default_a, int)

    def name(path: str) -> str:
        status, body = http("GET", path)
        assert status == 200, body
        return str(json.loads(body["schema"])["name"])

    assert name(f"/schemas/ids/1?subject=:{c1}:s") == f"A{tag}"
    assert name(f"/schemas/ids/1?subject=:{c2}:s") == f"B{tag}"
    assert name(f"/schemas/ids/2?subject=:{c1}:") == f"B{tag}"
    assert http("GET", f"/schemas/ids/2?subject=:{c2}:s")[0] == 404
    assert name(f"/schemas/ids/{default_a}") == f"A{tag}"
    assert http("GET", f"/schemas/ids/1/subjects?subject=:{c1}:")[1] == [f":{c1}:s", f":{c1}:u"]
    assert http("GET", f"/schemas/ids/1/versions?subject=:{c2}:s")[1] == [
        {"subject": f":{c2}:s", "version": 1}]
    # IMPORT into a third context may take an id another context holds for another schema.
    assert http("PUT", f"/mode/:{c3}:imp", {"mode": "IMPORT"})[0] == 200
    assert registered(http("POST", f"/subjects/:{c3}:imp/versions",
                           {"schema": a, "id": 2, "version": 1})) == (200, 2)
    assert name(f"/schemas/ids/2?subject=:{c3}:imp") == f"A{tag}"
    # Each context's counter is its own record, written with the id it records.
    keys = [json.loads(k) for k, v in read_topic(registry_broker.bootstrap) if v is not None]
    counters = {k.get("context", "."): k for k in keys if k.get("odradek") == "id-counter"}
    assert {c1, c2, c3} <= set(counters)
    # And each context its CONTEXT record, once, as Confluent writes it.
    contexts = [k["context"] for k in keys if k["keytype"] == "CONTEXT"]
    assert sorted(c for c in contexts if tag in c) == sorted([c1, c2, c3])
    assert {"keytype": "CONTEXT", "tenant": "default", "context": c1, "magic": 0} in keys
    assert f"{c1}" in http("GET", "/contexts")[1]
    # The ids a guid has, one per context holding the schema.
    guid = http("GET", f"/schemas/ids/1?subject=:{c1}:s")[1]["guid"]
    status, ids = http("GET", f"/schemas/guids/{guid}/ids")
    assert status == 200 and {(c1, 1), (c3, 2), (".", default_a)} <= {
        (i["context"], i["id"]) for i in ids}, ids
    # A context that holds a subject (even a deleted one) is not deleted; an empty one is.
    assert http("DELETE", f"/contexts/{c2}")[1]["error_code"] == 42211
    for path in (f"/subjects/:{c2}:s", f"/subjects/:{c2}:s?permanent=true"):
        assert http("DELETE", path)[0] == 200
    assert http("DELETE", f"/contexts/{c2}")[0] == 204
    assert c2 not in http("GET", "/contexts")[1]
