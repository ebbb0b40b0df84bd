"""Ids are never handed out twice: a hard-deleted schema's id stays taken after the broker's
cleaner has removed every record of it, tombstone included."""

from __future__ import annotations

import json
import time
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
