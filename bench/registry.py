"""Schema registry benchmark: what the registry answers, how fast, and what it costs a producer.

Against a broker in its own process (``python -m odradek serve``) and a registry in its own
(``python -m odradek registry``), the load generated here:

- register: new subjects one after another over HTTP (aiohttp, one kept-alive connection), each
  a write through ``_schemas`` (p50/p99 and requests/s);
- lookup by id: ``GET /schemas/ids/{id}`` for random ids, one at a time for latency, then from
  ``concurrency`` connections for requests/s (plain HTTP: no client cache hides the server);
- cold start: ``_schemas`` is filled up to ``subjects`` subjects (Confluent's records, written
  straight to the topic, as a registry would have), then a new registry process is timed from
  spawn until it answers a lookup of the last id, and its RSS read from ``/proc``;
- produce with confluent-kafka's ``AvroSerializer`` through the registry next to the same records
  encoded by fastavro without it, and next to pre-encoded bytes (records/s and the ratio).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import fastavro
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from odradek.registry.records import SchemaKey, SchemaValue, encode_key, encode_value

__all__ = ["RegistryResult", "bench_registry", "report"]

CT = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    per_s: float


@dataclass(frozen=True)
class RegistryResult:
    register: Latency
    lookup: Latency
    lookup_concurrent_per_s: float
    latest_concurrent_per_s: float
    concurrency: int
    subjects: int
    cold_start_s: float
    cold_rss_mb: float
    first_register_ms: float
    produce_records: int
    produce_raw_per_s: float
    produce_fastavro_per_s: float
    produce_serializer_per_s: float


def _start(args: list[str], ready: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", *args, "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=open(log, "a"),  # noqa: SIM115 - the child keeps it
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(ready):
        proc.kill()
        raise SystemExit(f"{args[0]} did not start: {line!r} (see {log})")
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _schema(i: int) -> str:
    """A small Avro record, different for every ``i``."""
    return json.dumps({
        "type": "record", "name": f"Event{i}", "namespace": "bench.registry",
        "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"},
                   {"name": f"f{i}", "type": ["null", "string"], "default": None}],
    })


def _latency(samples: list[float], elapsed: float) -> Latency:
    samples.sort()
    return Latency(len(samples), statistics.median(samples) * 1000,
                   samples[int(len(samples) * 0.99)] * 1000, len(samples) / elapsed)


async def _register(url: str, count: int, first: int = 0) -> tuple[Latency, int]:
    samples: list[float] = []
    last_id = 0
    async with aiohttp.ClientSession(headers={"Content-Type": CT}) as s:
        t0 = time.perf_counter()
        for i in range(count):
            t = time.perf_counter()
            async with s.post(f"{url}/subjects/bench-{first + i}-value/versions",
                              data=json.dumps({"schema": _schema(first + i)})) as r:
                body = await r.json()
                if r.status != 200:
                    raise SystemExit(f"register failed: {r.status} {body}")
                last_id = body["id"]
            samples.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
    return _latency(samples, elapsed), last_id


async def _lookups(url: str, max_id: int, count: int, concurrency: int,
                   seconds: float) -> tuple[Latency, float, float]:
    rng = random.Random(1)
    samples: list[float] = []
    async with aiohttp.ClientSession() as s:
        t0 = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            async with s.get(f"{url}/schemas/ids/{rng.randint(1, max_id)}") as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"lookup failed: {r.status}")
            samples.append(time.perf_counter() - t)
        sequential = _latency(samples, time.perf_counter() - t0)

        async def concurrent(path: Callable[[], str]) -> float:
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    async with s.get(url + path()) as r:
                        await r.read()
                        if r.status != 200:
                            raise SystemExit(f"GET {path()} failed: {r.status}")
                    done += 1

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done / (time.perf_counter() - t0)

        by_id = await concurrent(lambda: f"/schemas/ids/{rng.randint(1, max_id)}")
        # A read that reads the log to its end first (an id lookup answers from memory).
        latest = await concurrent(
            lambda: f"/subjects/bench-{rng.randint(0, max_id - 1)}-value/versions/latest")
    return sequential, by_id, latest


def _fill(bootstrap: str, topic: str, first_id: int, subjects: int) -> None:
    """Subjects ``first_id``..``subjects`` written as a registry writes them (one version each,
    one id each), straight to ``_schemas``."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "enable.idempotence": True})
    for i in range(first_id, subjects):
        subject = f"bench-{i}-value"
        value = SchemaValue(subject, 1, i + 1, "AVRO", _schema(i))
        while True:
            try:
                p.produce(topic, key=encode_key(SchemaKey(subject, 1)),
                          value=encode_value(value), partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    if p.flush(120):
        raise SystemExit("filling _schemas timed out")


async def _wait_answering(url: str, schema_id: int, timeout: float = 600) -> None:
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(f"{url}/schemas/ids/{schema_id}") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.perf_counter() > deadline:
                raise SystemExit(f"registry did not answer id {schema_id} in {timeout:.0f} s")
            await asyncio.sleep(0.01)


_PRODUCE_SCHEMA = {
    "type": "record", "name": "Order", "namespace": "bench.produce",
    "fields": [{"name": "id", "type": "long"}, {"name": "customer", "type": "string"},
               {"name": "amount", "type": "double"}, {"name": "note", "type": "string"}],
}


def _produce(bootstrap: str, topic: str, values: list[object]) -> float:
    """Records/s producing ``values``; each is bytes, or a callable making the bytes."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                  "enable.idempotence": False, "queue.buffering.max.messages": 1_000_000})
    t0 = time.perf_counter()
    for v in values:
        data = v() if callable(v) else v
        while True:
            try:
                p.produce(topic, data)
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(120):
        raise SystemExit("produce timed out")
    return len(values) / (time.perf_counter() - t0)


def _produce_avro(bootstrap: str, url: str, count: int) -> tuple[float, float, float]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    run = uuid.uuid4().hex[:6]
    topics = [f"bench-avro-{run}-{n}" for n in ("raw", "fastavro", "serializer")]
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        f.result(timeout=30)
    records = [{"id": i, "customer": f"customer-{i % 1000}", "amount": i * 0.5,
                "note": "x" * 40} for i in range(count)]
    parsed = fastavro.parse_schema(_PRODUCE_SCHEMA)

    def encode(record: dict[str, object]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        return buf.getvalue()

    raw = _produce(bootstrap, topics[0], [encode(r) for r in records])
    plain = _produce(bootstrap, topics[1], [lambda r=r: encode(r) for r in records])
    client = SchemaRegistryClient({"url": url})
    serializer = AvroSerializer(client, json.dumps(_PRODUCE_SCHEMA))
    ctx = SerializationContext(topics[2], MessageField.VALUE)
    with_registry = _produce(bootstrap, topics[2],
                             [lambda r=r: serializer(r, ctx) for r in records])
    return raw, plain, with_registry


def bench_registry(subjects: int = 10_000, registers: int = 1_000, lookups: int = 5_000,
                   concurrency: int = 16, seconds: float = 5.0,
                   produce_records: int = 200_000) -> RegistryResult:
    registers = min(registers, subjects)
    with tempfile.TemporaryDirectory(prefix="odradek-registry-bench-") as tmp:
        log = Path(tmp) / "bench.log"
        broker, bootstrap = _start(
            ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(Path(tmp) / "data")],
            "odradek listening on ", log,
        )
        registry_args = ["registry", "--listen", "127.0.0.1:0", "--bootstrap-server", bootstrap]
        try:
            reg, url = _start(registry_args, "schema registry listening on ", log)
            try:
                register, last_id = asyncio.run(_register(url, registers))
                lookup, concurrent, latest = asyncio.run(
                    _lookups(url, last_id, lookups, concurrency, seconds))
                raw, plain, serialized = _produce_avro(bootstrap, url, produce_records)
            finally:
                _stop(reg)
            # The ids above were 1..registers, one per subject, plus one for the produce schema.
            _fill(bootstrap, "_schemas", registers + 1, subjects + 1)
            t0 = time.perf_counter()
            reg, url = _start(registry_args, "schema registry listening on ", log)
            try:
                asyncio.run(_wait_answering(url, subjects + 1))
                cold_start = time.perf_counter() - t0
                rss = _rss_mb(reg.pid)
                # The first write after a start compares against every stored schema.
                t0 = time.perf_counter()
                asyncio.run(_register(url, 1, subjects + 1))
                first_register = time.perf_counter() - t0
            finally:
                _stop(reg)
        finally:
            _stop(broker)
    return RegistryResult(register, lookup, concurrent, latest, concurrency, subjects + 1, cold_start,
                          rss, first_register * 1000, produce_records, raw, plain, serialized)


def report(r: RegistryResult) -> str:
    def lat(name: str, x: Latency) -> str:
        return (f"{name:<34} p50 {x.p50_ms:6.2f} ms  p99 {x.p99_ms:6.2f} ms "
                f"{x.per_s:9,.0f} requests/s")

    return "\n".join([
        lat(f"registry register, {r.register.count:,} subjects", r.register),
        lat("registry lookup by id, sequential", r.lookup),
        f"registry lookup by id, {r.concurrency} connections {r.lookup_concurrent_per_s:27,.0f}"
        " requests/s",
        f"registry latest version, {r.concurrency} connections "
        f"{r.latest_concurrent_per_s:24,.0f} requests/s (each reads the log to its end)",
        f"registry cold start, {r.subjects:,} subjects  {r.cold_start_s:8.2f} s to answering, "
        f"{r.cold_rss_mb:.0f} MB RSS; first register then {r.first_register_ms:.0f} ms",
        f"produce Avro, {r.produce_records:,} records:  pre-encoded {r.produce_raw_per_s:9,.0f}/s"
        f", fastavro {r.produce_fastavro_per_s:9,.0f}/s, AvroSerializer via registry "
        f"{r.produce_serializer_per_s:9,.0f}/s "
        f"({r.produce_serializer_per_s / r.produce_fastavro_per_s:.2f} of fastavro alone)",
    ])


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--registers", type=int, default=1_000)
    ap.add_argument("--produce-records", type=int, default=200_000)
    a = ap.parse_args()
    print(report(bench_registry(a.subjects, a.registers, produce_records=a.produce_records)))
