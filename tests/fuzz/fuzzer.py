"""Fuzzes a broker process with mutated frames captured from real clients.

    .venv/bin/python tests/fuzz/fuzzer.py --frames 1000000 [--seed 1] [--batch 5000]

The broker runs as ``python -m odradek serve`` in a child process (so its resident memory can be
measured and a crash cannot take the fuzzer down). Frames from ``corpus/`` (see
``capture_corpus.py``) are mutated with a seeded :class:`random.Random` and sent, in batches, over
several connections at once; each connection waits briefly for an answer, reconnects when the
broker closes it, and gives up on a request that gets no answer in time (a long poll, acks=0, a
size prefix promising more bytes than were sent). After every batch the broker must still be
running, still serve a real client (a confluent-kafka produce and fetch round trip, and
ApiVersions on a new connection), stay under a resident memory cap, and have written no
traceback to its log. ``tests/fuzz/test_fuzz.py`` runs a short form in the suite; ``make fuzz``
runs the long one. The same seed and frame count give the same frames.

Topic creation is guarded: a mutated CreateTopics or CreatePartitions may legitimately ask for
thousands of partitions, which would exhaust file descriptors or disk rather than find a bug.
Until a broker-wide partition limit (``max.broker.partitions``) refuses such requests itself,
frames that would create more than :data:`MAX_PARTITIONS_PER_FRAME` partitions, or more than
:data:`MAX_PARTITIONS_PER_BATCH` in one batch, are not sent (counted as ``skipped``), and the
topics created during a batch are deleted after it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import io
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kio.serial import entity_reader, entity_writer

__all__ = ["FuzzSettings", "FuzzReport", "Mutator", "load_corpus", "run"]

CORPUS = Path(__file__).resolve().parent / "corpus"
HEALTH_TOPIC = "fuzz-health"
MAX_PARTITIONS_PER_FRAME = 8
MAX_PARTITIONS_PER_BATCH = 64
ANSWER_TIMEOUT_S = 0.5

_SIZE = struct.Struct(">i")
_INT16 = (0, -1, 1, 0x7FFF, -0x8000, 0xFF, 0x100)
_INT32 = (0, -1, 1, 0x7FFFFFFF, -0x80000000, 0xFFFF, 0x10000, 1 << 24, 100_000_000)
_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01)
# Varints: the largest 32-bit value, a five-byte overlong zero, and ones that never end.
_VARINTS = (b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x00", b"\xff\xff\xff\xff\xff",
            b"\xff" * 10, b"\xfe\xff\xff\xff\x07")


def load_corpus(directory: Path = CORPUS) -> list[bytes]:
    """Every request frame (without its size prefix) of every ``*.frames`` file, in name order."""
    frames = []
    for path in sorted(directory.glob("*.frames")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (size,) = _SIZE.unpack_from(data, pos)
            frames.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
    if not frames:
        raise FileNotFoundError(f"no corpus in {directory}; run tests/fuzz/capture_corpus.py")
    return frames


# -- mutations -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """Bytes to put on the wire (size prefix included) and how they were made."""

    source_api: int
    wire: bytes
    mutations: tuple[str, ...]
    # False when the size prefix promises more bytes than follow: no answer can come.
    complete: bool = True


class Mutator:
    """Seeded mutations of corpus frames. Owned by the one fuzzing task that calls it."""

    def __init__(self, corpus: list[bytes], seed: int) -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)
        self._ops: list[tuple[str, Callable[[bytearray], bytearray]]] = [
            ("bit_flip", self._bit_flip),
            ("byte", self._byte),
            ("int16", self._int16),
            ("int32", self._int32),
            ("varint", self._varint),
            ("truncate", self._truncate),
            ("extend", self._extend),
            ("length_field", self._length_field),
            ("api_version", self._api_version),
            ("api_key", self._api_key),
            ("splice", self._splice),
        ]
        # Weighted: byte-level mutations mostly exercise the parser; field mutations, which keep
        # the request parseable, are what reach the handlers.
        self._ops += [("field", self._field)] * 3

    def next(self) -> Mutant:
        rng = self.rng
        source = rng.choice(self.corpus)
        frame = bytearray(source)
        names = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            name, op = rng.choice(self._ops)
            frame = op(frame)
            names.append(name)
        size = len(frame)
        complete = True
        if rng.random() < 0.03:  # the size prefix itself
            names.append("size_prefix")
            size = rng.choice((size + 1, size - 1, size + rng.randint(2, 64), 0,
                               rng.randint(0, max(size - 1, 0))))
            complete = size <= len(frame)
            frame = frame[:size] if size < len(frame) and rng.random() < 0.5 else frame
        api = struct.unpack_from(">h", source)[0]
        return Mutant(api, _SIZE.pack(size) + bytes(frame), tuple(names), complete)

    def _pos(self, frame: bytearray, width: int = 1) -> int:
        # Mostly after the fixed header part, where the body is parsed.
        low = 8 if len(frame) > 8 + width and self.rng.random() < 0.9 else 0
        return self.rng.randint(low, max(low, len(frame) - width))

    def _bit_flip(self, frame: bytearray) -> bytearray:
        if frame:
            for _ in range(self.rng.randint(1, 4)):
                frame[self._pos(frame)] ^= 1 << self.rng.randrange(8)
        return frame

    def _byte(self, frame: bytearray) -> bytearray:
        if frame:
            frame[self._pos(frame)] = self.rng.choice(_BYTES)
        return frame

    def _int16(self, frame: bytearray) -> bytearray:
        if len(frame) >= 2:
            struct.pack_into(">h", frame, self._pos(frame, 2), self.rng.choice(_INT16))
        return frame

    def _int32(self, frame: bytearray) -> bytearray:
        if len(frame) >= 4:
            struct.pack_into(">i", frame, self._pos(frame, 4), self.rng.choice(_INT32))
        return frame

    def _varint(self, frame: bytearray) -> bytearray:
        pos = self._pos(frame)
        value = self.rng.choice(_VARINTS)
        if self.rng.random() < 0.5:
            return frame[:pos] + value + frame[pos + 1 :]  # replace one byte
        return frame[:pos] + value + frame[pos + len(value) :]

    def _truncate(self, frame: bytearray) -> bytearray:
        return frame[: self.rng.randint(0, len(frame))]

    def _extend(self, frame: bytearray) -> bytearray:
        rng = self.rng
        how = rng.random()
        if how < 0.4:
            return frame + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        if how < 0.7:
            return frame + frame[rng.randint(0, len(frame)) :]  # repeat a tail
        pos = self._pos(frame)
        return frame[:pos] + bytes(rng.randint(1, 16)) + frame[pos:]  # insert zeros

    def _length_field(self, frame: bytearray) -> bytearray:
        """Nudge a length: a small delta to an int16 / int32 / one-byte varint somewhere."""
        rng = self.rng
        width = rng.choice((1, 2, 4))
        if len(frame) < width:
            return frame
        pos = self._pos(frame, width)
        fmt = {1: ">B", 2: ">h", 4: ">i"}[width]
        (value,) = struct.unpack_from(fmt, frame, pos)
        value += rng.choice((-2, -1, 1, 2, 7, 127, 128, -128))
        if width == 1:
            value &= 0xFF
        elif width == 2:
            value = (value + 0x8000) % 0x10000 - 0x8000
        else:
            value = (value + 0x80000000) % 0x100000000 - 0x80000000
        struct.pack_into(fmt, frame, pos, value)
        return frame

    def _api_version(self, frame: bytearray) -> bytearray:
        if len(frame) >= 4:
            (version,) = struct.unpack_from(">h", frame, 2)
            choice = self.rng.choice((version - 1, version + 1, 0, -1, 0x7FFF,
                                      self.rng.randint(0, 17)))
            struct.pack_into(">h", frame, 2, (choice + 0x8000) % 0x10000 - 0x8000)
        return frame

    def _api_key(self, frame: bytearray) -> bytearray:
        if len(frame) >= 2:
            other = self.rng.choice(self.corpus)
            struct.pack_into(">h", frame, 0, struct.unpack_from(">h", other)[0])
        return frame

    def _splice(self, frame: bytearray) -> bytearray:
        other = self.rng.choice(self.corpus)
        return frame[: self._pos(frame)] + other[self.rng.randint(0, len(other)) :]

    def _field(self, frame: bytearray) -> bytearray:
        """Decode, give one field an interesting value of its type, encode: a request that
        still parses, so it reaches the handler."""
        parsed = _parse(frame)
        if parsed is None:
            return frame
        schema, header, body = parsed
        leaves = list(_leaves(body, ()))
        for _ in range(3 if leaves else 0):
            path, kafka_type, value = self.rng.choice(leaves)
            try:
                new = _set(body, path, self._value(kafka_type, value))
                out = io.BytesIO()
                entity_writer(schema)(out, new)
            except Exception:  # noqa: BLE001 - a value this field's type cannot carry
                continue
            return bytearray(header + out.getvalue())
        return frame

    def _value(self, kafka_type: str | None, value: Any) -> Any:
        rng = self.rng
        if rng.random() < 0.1:
            return None  # refused by the encoder unless the field is nullable
        if isinstance(value, tuple):
            return rng.choice(((), value * 2, value[:1] * 40, value[::-1]))
        if isinstance(value, bool):
            return not value
        if isinstance(value, datetime.timedelta):
            return datetime.timedelta(milliseconds=rng.choice((-1, 0, 1, 2**31 - 1, -(2**31))))
        if isinstance(value, float):
            return rng.choice((0.0, -1.0, float("inf"), float("nan"), 1e308))
        if isinstance(value, int) and kafka_type in _RANGES:
            low, high = _RANGES[kafka_type]
            return rng.choice((low, high, -1 if low < 0 else 0, 0, 1, value + 1, value - 1,
                               rng.randint(low, high)))
        if isinstance(value, str):
            return rng.choice(("", " ", ".", "..", "a" * 250, "a" * 300, "\u00e9\u4e2d\U0001f600",
                               "__consumer_offsets", "__transaction_state", value + value,
                               "fuzz-librdkafka-a", "x/y", "\x00"))
        if isinstance(value, uuid.UUID):
            return rng.choice((uuid.UUID(int=0), uuid.UUID(int=1),
                               uuid.UUID(int=rng.getrandbits(128))))
        if isinstance(value, bytes | memoryview):
            return rng.choice((b"", bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
                               bytes(value) + bytes(value)))
        return value


_RANGES = {"int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1),
           "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
           "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1), "error_code": (-(2**15), 2**15 - 1)}


def _parse(frame: bytes | bytearray) -> tuple[type[Any], bytes, Any] | None:
    """The request schema, header bytes and decoded body of a frame that parses."""
    from odradek.errors import CorruptFrameError
    from odradek.protocol.messages import peek_preamble, request_schema
    from odradek.protocol.precheck import check_request

    data = bytes(frame)
    try:
        preamble = peek_preamble(data)
        schema = request_schema(preamble.api_key, preamble.api_version)
        if schema is None:
            return None
        _, body_start, checked = check_request(data, schema)
        body, _ = entity_reader(schema)(checked, body_start)
    except (CorruptFrameError, Exception):  # noqa: BLE001 - not parseable: no field to mutate
        return None
    return schema, data[:body_start], body


def _leaves(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str | None, Any]]:
    """(path, kafka type, value) of every field below ``value``; arrays are leaves too."""
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        here = (*path, f.name)
        yield here, f.metadata.get("kafka_type"), item
        if dataclasses.is_dataclass(item):
            yield from _leaves(item, here)
        elif isinstance(item, tuple):
            for i, element in enumerate(item):
                if dataclasses.is_dataclass(element):
                    yield from _leaves(element, (*here, i))


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(value)
        items[head] = _set(items[head], rest, new)
        return tuple(items)
    return dataclasses.replace(value, **{head: _set(getattr(value, head), rest, new)})


# -- the topic creation guard ----------------------------------------------------------------------


def partitions_asked(wire: bytes) -> int | None:
    """How many partitions a CreateTopics / CreatePartitions frame would add, if it parses
    (``None`` for other APIs, unparseable or validate-only frames)."""
    frame = memoryview(wire)[4:]
    if len(frame) < 8:
        return None
    from odradek.errors import CorruptFrameError
    from odradek.protocol.messages import decode_request, peek_preamble, request_schema

    preamble = peek_preamble(frame)
    if preamble.api_key not in (19, 37):
        return None
    schema = request_schema(preamble.api_key, preamble.api_version)
    if schema is None:
        return None
    try:
        body = decode_request(frame, preamble, schema).body
    except CorruptFrameError:
        return None
    if getattr(body, "validate_only", False):
        return None
    total = 0
    for topic in body.topics:
        if preamble.api_key == 19:
            total += max(int(topic.num_partitions), len(topic.assignments), 1)
        else:
            total += max(int(topic.count), 0)
    return total


# -- the broker process ----------------------------------------------------------------------------


@dataclass
class BrokerProcess:
    """``python -m odradek serve`` with its log in a file. Owned by the fuzzing thread."""

    workdir: Path
    properties: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    bootstrap: str = ""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "broker.log"

    def start(self) -> BrokerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))
        with open(self.log, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
                 "--data-dir", str(self.workdir / "data"), "--config", str(config)],
                stdout=subprocess.PIPE, stderr=log_file, text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the broker prints its address once it listens
        if not line.startswith("odradek listening on "):
            self.proc.kill()
            raise RuntimeError(f"broker did not start: {line!r}\n{self.log.read_text()}")
        self.bootstrap = line.split()[-1]
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(match.group(1)) * 1024 if match else 0

    def tracebacks(self) -> list[tuple[str, int | None]]:
        """Each traceback in the log (with the line before it) and the client port it names."""
        lines = self.log.read_text(errors="replace").splitlines()
        found = []
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                end = next((j for j in range(i + 1, len(lines)) if not lines[j].startswith(" ")),
                           len(lines) - 1)
                port = re.search(r"from 127\.0\.0\.1:(\d+)", lines[i - 1] if i else "")
                found.append(("\n".join(lines[max(0, i - 1) : end + 1]),
                              int(port.group(1)) if port else None))
        return found

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait; the exit code, or None if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode


# -- real clients -----------------------------------------------------------------------------------


def _raw_request(bootstrap: str, frame: bytes, timeout: float = 10) -> bytes:
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(_SIZE.pack(len(frame)) + frame)
        return _recv_exactly(sock, _SIZE.unpack(_recv_exactly(sock, 4))[0])


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _admin_frame(body: Any, correlation_id: int = 1) -> bytes:
    import io

    from kio.serial import entity_writer

    schema = type(body)
    header_cls = schema.__header_schema__
    buf = io.BytesIO()
    entity_writer(header_cls)(buf, header_cls(
        request_api_key=schema.__api_key__, request_api_version=schema.__version__,
        correlation_id=correlation_id, client_id="fuzz-admin",
    ))
    entity_writer(schema)(buf, body)
    return buf.getvalue()


def _decode_response(api_key: int, version: int, frame: bytes) -> Any:
    from kio.serial import entity_reader

    from odradek.protocol.messages import response_schema

    schema = response_schema(api_key, version)
    header = 4 + (1 if schema.__flexible__ and api_key != 18 else 0)
    return entity_reader(schema)(frame, header)[0]


class Health:
    """A confluent-kafka producer and consumer connected before any fuzzing, plus raw checks."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Consumer, Producer

        self.bootstrap = bootstrap
        # Quiet: it reconnects after the broker stops; a failure is raised by check().
        conf = {"bootstrap.servers": bootstrap, "client.id": "fuzz-health", "log_level": 0}
        self.producer = Producer({**conf, "linger.ms": 0, "message.timeout.ms": 20000})
        self.consumer = Consumer({**conf, "group.id": "fuzz-health",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.count = 0

    def check(self) -> None:
        from confluent_kafka import TopicPartition
        from kio.schema.api_versions.v3.request import ApiVersionsRequest

        value = f"still serving {self.count}".encode()
        self.count += 1
        delivered: list[tuple[Any, Any]] = []
        self.producer.produce(HEALTH_TOPIC, value=value, partition=0,
                              on_delivery=lambda err, msg: delivered.append((err, msg)))
        if self.producer.flush(20) != 0 or not delivered or delivered[0][0] is not None:
            raise AssertionError(f"health producer could not deliver: {delivered}")
        offset = delivered[0][1].offset()
        self.consumer.assign([TopicPartition(HEALTH_TOPIC, 0, offset)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = self.consumer.poll(1)
            if got is not None and got.error() is None:
                if (got.offset(), got.value()) != (offset, value):
                    raise AssertionError(f"health consumer read {got.offset()} {got.value()!r}")
                break
        else:
            raise AssertionError("health consumer received nothing")
        body = _decode_response(18, 3, _raw_request(self.bootstrap, _admin_frame(
            ApiVersionsRequest(client_software_name="fuzz", client_software_version="1")
        )))
        if body.error_code != 0:
            raise AssertionError(f"ApiVersions answered {body.error_code}")

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(5)


def _create_health_topic(bootstrap: str) -> None:
    from kio.schema.create_topics.v7 import request as ct
    from kio.static.primitive import i16, i32

    topic: Any = ct.CreatableTopic
    request: Any = ct.CreateTopicsRequest
    body = request(
        topics=(topic(name=HEALTH_TOPIC, num_partitions=i32(1), replication_factor=i16(1),
                      assignments=(), configs=()),),
        timeout=datetime.timedelta(seconds=10), validate_only=False,
    )
    response = _decode_response(19, 7, _raw_request(bootstrap, _admin_frame(body)))
    assert [t.error_code for t in response.topics] == [0], response


def _topic_names(bootstrap: str) -> list[str]:
    from kio.schema.metadata.v12.request import MetadataRequest

    body = MetadataRequest(topics=None, allow_auto_topic_creation=False,
                           include_topic_authorized_operations=False)
    response = _decode_response(3, 12, _raw_request(bootstrap, _admin_frame(body)))
    return [t.name for t in response.topics if t.name]


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from kio.schema.delete_topics.v6 import request as dt

    request: Any = dt.DeleteTopicsRequest
    state: Any = dt.DeleteTopicState
    for i in range(0, len(names), 100):
        body = request(
            topics=tuple(state(name=n, topic_id=uuid.UUID(int=0)) for n in names[i : i + 100]),
            timeout=datetime.timedelta(seconds=30),
        )
        _raw_request(bootstrap, _admin_frame(body), timeout=60)


# -- sending ----------------------------------------------------------------------------------------


@dataclass
class Counts:
    sent: int = 0
    answered: int = 0
    closed: int = 0
    no_answer: int = 0
    skipped: int = 0
    by_api: collections.Counter[str] = field(default_factory=collections.Counter)
    by_mutation: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped_frames: list[str] = field(default_factory=list)
    # The frames sent on each client port's latest connection, to name a traceback's input.
    recent: dict[int, list[Mutant]] = field(default_factory=dict)


async def _send_batch(bootstrap: str, mutants: list[Mutant], connections: int,
                      counts: Counts) -> None:
    host, port = bootstrap.rsplit(":", 1)
    queue: collections.deque[Mutant] = collections.deque(mutants)

    async def worker() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while queue:
            mutant = queue.popleft()
            if writer is None:
                reader, writer = await asyncio.open_connection(host, int(port))
                sent_here: list[Mutant] = []
                counts.recent[writer.get_extra_info("sockname")[1]] = sent_here
            assert reader is not None
            if len(sent_here) < 8:
                sent_here.append(mutant)
            try:
                writer.write(mutant.wire)
                await writer.drain()
            except ConnectionError:  # closed by the broker after an earlier answer: resend
                queue.appendleft(mutant)
                writer.close()
                reader = writer = None
                continue
            counts.sent += 1
            if not mutant.complete:
                counts.no_answer += 1  # the size prefix promises more: nothing can come back
                writer.close()
                reader = writer = None
                continue
            try:
                (size,) = _SIZE.unpack(await asyncio.wait_for(reader.readexactly(4),
                                                              ANSWER_TIMEOUT_S))
                await asyncio.wait_for(reader.readexactly(size), ANSWER_TIMEOUT_S)
                counts.answered += 1
            except (asyncio.IncompleteReadError, ConnectionError):
                counts.closed += 1
                writer.close()
                reader = writer = None
            except TimeoutError:
                counts.no_answer += 1
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


# -- the run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzSettings:
    frames: int = 20_000
    seed: int = 1
    batch: int = 2_500
    connections: int = 8
    rss_cap_mb: int = 400
    workdir: Path | None = None  # a temporary directory when None


@dataclass
class FuzzReport:
    settings: FuzzSettings
    counts: Counts
    health_checks: int = 0
    max_rss_mb: float = 0.0
    seconds: float = 0.0
    exit_code: int | None = None
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {
            "frames_sent": c.sent, "answered": c.answered, "closed_by_broker": c.closed,
            "no_answer_in_time": c.no_answer, "skipped_by_partition_guard": c.skipped,
            "by_source_api": dict(sorted(c.by_api.items())),
            "by_mutation": dict(sorted(c.by_mutation.items())),
            "health_checks": self.health_checks, "max_rss_mb": round(self.max_rss_mb, 1),
            "seconds": round(self.seconds, 1), "broker_exit_code": self.exit_code,
            "failures": self.failures,
        }


BROKER_PROPERTIES = {
    # Conservative for fuzzing: nothing is created that a frame did not ask for explicitly.
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "socket.request.max.bytes": str(1 << 20),
}


def _api_names() -> dict[int, str]:
    from odradek.broker.registry import handlers

    return {k: h.name for k, h in handlers().items()}


def _batches(mutator: Mutator, settings: FuzzSettings, counts: Counts,
             names: dict[int, str]) -> Iterator[list[Mutant]]:
    left = settings.frames
    while left > 0:
        batch: list[Mutant] = []
        budget = MAX_PARTITIONS_PER_BATCH
        while len(batch) < min(settings.batch, left):
            mutant = mutator.next()
            asked = partitions_asked(mutant.wire)
            if asked is not None and (asked > MAX_PARTITIONS_PER_FRAME or asked > budget):
                counts.skipped += 1
                if len(counts.skipped_frames) < 20:
                    counts.skipped_frames.append(
                        f"{names.get(mutant.source_api)} asking {asked} partitions")
                continue
            budget -= asked or 0
            batch.append(mutant)
            counts.by_api[names.get(mutant.source_api, str(mutant.source_api))] += 1
            for m in mutant.mutations:
                counts.by_mutation[m] += 1
        left -= len(batch)
        yield batch


def run(settings: FuzzSettings, progress: Callable[[str], None] | None = None) -> FuzzReport:
    """Fuzz one broker process; failures are collected in the report, not raised."""
    with tempfile.TemporaryDirectory(prefix="odradek-fuzz-") as tmp:
        workdir = settings.workdir or Path(tmp)
        return _run(settings, workdir, progress or (lambda _: None))


def _run(settings: FuzzSettings, workdir: Path, progress: Callable[[str], None]) -> FuzzReport:
    counts = Counts()
    report = FuzzReport(settings, counts)
    names = _api_names()
    mutator = Mutator(load_corpus(), settings.seed)
    broker = BrokerProcess(workdir, dict(BROKER_PROPERTIES)).start()
    start = time.monotonic()
    health: Health | None = None
    try:
        _create_health_topic(broker.bootstrap)
        health = Health(broker.bootstrap)
        health.check()
        keep = set(_topic_names(broker.bootstrap))
        for number, batch in enumerate(_batches(mutator, settings, counts, names)):
            try:
                asyncio.run(_send_batch(broker.bootstrap, batch, settings.connections, counts))
            except OSError as e:  # the broker refused connections
                report.failures.append(f"during batch {number}: {e!r}")
                break
            if not broker.alive():
                report.failures.append(f"broker exited with {broker.proc and broker.proc.poll()}"
                                       f" during batch {number}")
                break
            try:
                health.check()
                report.health_checks += 1
                # Internal topics stay: the broker creates them when it needs them.
                created = [n for n in _topic_names(broker.bootstrap)
                           if n not in keep and not n.startswith("__")]
                if created:
                    _delete_topics(broker.bootstrap, created)
            except Exception as e:  # noqa: BLE001 - reported, with what was sent
                report.failures.append(f"after batch {number}: broker not serving: {e!r}")
                break
            rss = broker.rss_bytes() / 2**20
            report.max_rss_mb = max(report.max_rss_mb, rss)
            if rss > settings.rss_cap_mb:
                report.failures.append(f"after batch {number}: RSS {rss:.0f} MB over the cap")
                break
            if broker.tracebacks():
                break
            progress(f"batch {number}: {counts.sent} sent, {counts.closed} closed, "
                     f"{counts.no_answer} unanswered, {counts.skipped} skipped, RSS {rss:.0f} MB,"
                     f" {time.monotonic() - start:.0f} s")
    finally:
        if health is not None:
            health.close()
        report.seconds = time.monotonic() - start
        report.exit_code = broker.stop()
        if report.exit_code is None:
            report.failures.append("broker did not stop within 30 s of SIGTERM")
        for text, port in broker.tracebacks():
            sent = counts.recent.get(port, []) if port is not None else []
            frames = "\n".join(f"  {names.get(m.source_api)} {'+'.join(m.mutations)}: "
                               f"{m.wire.hex()}" for m in sent)
            report.failures.append(f"traceback in broker log:\n{text}\n"
                                   f"frames sent on that connection:\n{frames}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int,
                        default=int(os.environ.get("FUZZ_FRAMES", "1000000")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rss-cap-mb", type=int, default=400)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the broker's data and log here (default: a temporary dir)")
    args = parser.parse_args(argv)
    settings = FuzzSettings(frames=args.frames, seed=args.seed, batch=args.batch,
                            connections=args.connections, rss_cap_mb=args.rss_cap_mb,
                            workdir=args.workdir)
    report = run(settings, progress=lambda line: print(line, flush=True))
    print(json.dumps(report.summary(), indent=2))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
