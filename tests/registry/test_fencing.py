"""A deposed writer's in-flight write never lands: two instances on one ``_schemas`` topic, the
first held between deciding and writing while the second claims the writer and writes; alone,
and as primary and secondary of one group."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from registrykit import Http, read_topic, registered

from odradek.broker.runner import BrokerThread, local_config
from odradek.registry.formats import ParsedSchema, SchemaFormat, get_format
from odradek.registry.records import SchemaKey, SchemaValue, encode_key, encode_value
from odradek.registry.runner import RegistryThread
from odradek.registry.store import KafkaStore

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


def _held_formats(held: _HeldAvro) -> Callable[[str], SchemaFormat]:
    def formats(schema_type: str) -> SchemaFormat:
        return held if schema_type == "AVRO" else get_format(schema_type)
    return formats


def _ids_in_log(bootstrap: str) -> dict[int, set[str]]:
    schemas_by_id: dict[int, set[str]] = {}
    for key, value in read_topic(bootstrap):
        if json.loads(key)["keytype"] == "SCHEMA" and value is not None:
            v: dict[str, Any] = json.loads(value)
            schemas_by_id.setdefault(v["id"], set()).add(v["schema"])
    return schemas_by_id


def _wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_deposed_writer_is_fenced(tmp_path: Path) -> None:
    held = _HeldAvro()
    formats = _held_formats(held)

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
        assert _ids_in_log(broker.bootstrap) == {1: {_record("One")}, 2: {_record("Two")},
                                                 3: {_record(HOLD)}, 4: {_record("Four")}}


def test_deposed_primary_write_goes_to_the_new_primary(tmp_path: Path) -> None:
    """A primary loses the election while deciding a write; the new primary takes a write
    (claiming the writer); the old one's write is refused and sent on to the new primary."""
    held = _HeldAvro()
    config = local_config(tmp_path / "data", group_initial_rebalance_delay_ms="0")
    options: dict[str, Any] = {"group_id": "sr-fence", "session_timeout_ms": 6000,
                               "timeout": 20.0, "formats": _held_formats(held)}
    with BrokerThread(config) as broker, \
            RegistryThread(broker.bootstrap, **options) as a, \
            RegistryThread(broker.bootstrap, **options) as b:
        electors = [a.server.elector, b.server.elector]
        assert electors[0] is not None and electors[1] is not None
        # Either may hold the partition once both have joined and the group is stable.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})

        def settled() -> bool:
            group = admin.describe_consumer_groups(["sr-fence"])["sr-fence"].result(10)
            return (len(group.members) == 2 and str(group.state).endswith("STABLE")
                    and sum(e.is_primary for e in electors if e is not None) == 1)

        _wait_for(settled)
        primary, other = (a, b) if electors[0].is_primary else (b, a)
        http_p, http_o = Http(primary.url), Http(other.url)
        assert registered(http_o("POST", "/subjects/one-value/versions",
                                 {"schema": _record("One")})) == (200, 1)  # forwarded
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(http_p, "POST", "/subjects/held-value/versions",
                                  {"schema": _record(HOLD)})
            assert held.entered.wait(30)
            assert primary.server.elector is not None and other.server.elector is not None
            primary.server.elector.resign()  # deposed while it decides
            new = other.server.elector
            _wait_for(lambda: new.is_primary)
            assert registered(http_o("POST", "/subjects/two-value/versions",
                                     {"schema": _record("Two")})) == (200, 2)
            held.release.set()
            assert registered(pending.result(60)) == (200, 3)
        for http in (http_p, http_o):
            assert http("GET", "/schemas/ids/3")[1]["schema"] == _record(HOLD)
        assert _ids_in_log(broker.bootstrap) == {1: {_record("One")}, 2: {_record("Two")},
                                                 3: {_record(HOLD)}}


def test_open_transaction_of_a_deposed_writer_is_aborted(tmp_path: Path) -> None:
    """The deposed writer has already written into its transaction when the new one claims:
    the claim aborts it, no reader applies it, and reading to the end passes over it."""
    config = local_config(tmp_path / "data", group_initial_rebalance_delay_ms="0")

    async def scenario(bootstrap: str) -> None:
        old, new = KafkaStore(bootstrap, timeout=15.0), KafkaStore(bootstrap, timeout=15.0)
        await old.start()
        await new.start()
        try:
            async with old.writing():
                await old.append([(SchemaKey("a", 1), SchemaValue("a", 1, 1, "AVRO", '"int"'))])
            # The old writer's next transaction is open, its record in the log, uncommitted.
            producer = old._producer  # noqa: SLF001 - the test plays the writer's thread
            producer.begin_transaction()
            producer.produce(old.topic, partition=0, key=encode_key(SchemaKey("b", 1)),
                             value=encode_value(SchemaValue("b", 1, 2, "AVRO", '"long"')))
            assert producer.flush(10) == 0
            async with new.writing():  # claims: the open transaction is aborted
                assert set(new.state.subjects) == {"a"}
                await new.append([(SchemaKey("c", 1),
                                   SchemaValue("c", 1, 2, "AVRO", '"string"'))])
            await old.read_to_end()
            assert set(old.state.subjects) == {"a", "c"}
            with pytest.raises(KafkaException) as fenced:
                producer.commit_transaction(10)
            assert fenced.value.args[0].fatal() or fenced.value.args[0].code() in (
                KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                KafkaError.INVALID_PRODUCER_EPOCH)
        finally:
            await old.stop()
            await new.stop()

    with BrokerThread(config) as broker:
        asyncio.run(scenario(broker.bootstrap))
        assert _ids_in_log(broker.bootstrap) == {1: {'"int"'}, 2: {'"string"'}}
