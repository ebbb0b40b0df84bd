"""A deposed writer's in-flight write never lands: two instances on one ``_schemas`` topic, the
first held between deciding and writing while the second claims the writer and writes."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from registrykit import Http, read_topic, registered

from odradek.broker.runner import BrokerThread, local_config
from odradek.registry.formats import ParsedSchema, SchemaFormat, get_format
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration

HOLD = "held"  # a schema naming this waits in parse until the test lets it go


class _HeldAvro:
    """Avro, except that parsing a record named ``held`` waits for :attr:`release`: the
    instance has read the log and holds the write lock, and has not yet written."""

    schema_type = "AVRO"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._avro = get_format("AVRO")

    def parse(self, text: str, references: Mapping[str, str]) -> ParsedSchema:
        if HOLD in text and not self.release.is_set():
            self.entered.set()
            assert self.release.wait(30)
        return self._avro.parse(text, references)

    def incompatibilities(self, reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
        return self._avro.incompatibilities(reader, writer)


def _record(name: str) -> str:
    return json.dumps({"type": "record", "name": name,
                       "fields": [{"name": "f", "type": "string"}]})


def test_deposed_writer_is_fenced(tmp_path: Path) -> None:
    held = _HeldAvro()

    def formats(schema_type: str) -> SchemaFormat:
        return held if schema_type == "AVRO" else get_format(schema_type)

    config = local_config(tmp_path / "data", group_initial_rebalance_delay_ms="0")
    with BrokerThread(config) as broker, \
            RegistryThread(broker.bootstrap, formats=formats, timeout=15.0) as a:
        http_a = Http(a.url)
        assert registered(http_a("POST", "/subjects/one-value/versions",
                                 {"schema": _record("One")})) == (200, 1)
        with ThreadPoolExecutor(1) as pool:
            # A reads the log (id 1 is the highest) and decides while held...
            pending = pool.submit(http_a, "POST", "/subjects/held-value/versions",
                                  {"schema": _record(HOLD)})
            assert held.entered.wait(30)
            # ...while B claims the writer, which fences A, and takes id 2.
            with RegistryThread(broker.bootstrap, timeout=15.0) as b:
                http_b = Http(b.url)
                assert registered(http_b("POST", "/subjects/two-value/versions",
                                         {"schema": _record("Two")})) == (200, 2)
                held.release.set()
                # A's write of id 2 is refused; A claims again, reads B's write and decides
                # afresh.
                status, body = pending.result(60)
                assert registered((status, body)) == (200, 3)
                for http in (http_a, http_b):
                    assert http("GET", "/schemas/ids/2")[1]["schema"] == _record("Two")
                    assert http("GET", "/schemas/ids/3")[1]["schema"] == _record(HOLD)
                # B, fenced in turn, claims back on its next write.
                assert registered(http_b("POST", "/subjects/four-value/versions",
                                         {"schema": _record("Four")})) == (200, 4)
        # The log gives every id to one schema only: A's stale decision never landed.
        schemas_by_id: dict[int, set[str]] = {}
        for key, value in read_topic(broker.bootstrap):
            if json.loads(key)["keytype"] == "SCHEMA" and value is not None:
                v: dict[str, Any] = json.loads(value)
                schemas_by_id.setdefault(v["id"], set()).add(v["schema"])
        assert schemas_by_id == {1: {_record("One")}, 2: {_record("Two")},
                                 3: {_record(HOLD)}, 4: {_record("Four")}}
