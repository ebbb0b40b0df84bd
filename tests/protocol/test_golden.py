"""Golden bytes from real clients: decode, round-trip and replay them through a real broker.

The frames in ``golden/`` were captured by ``tests/integration/recording_proxy.py`` from
librdkafka (confluent-kafka), kafka-python and aiokafka (see ``golden/README.md``). Each client
created a topic ``golden-<client>``, produced five compressed records with an idempotent
producer and consumed them from the beginning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer

from odradek.broker.app import Broker
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.registry import handlers
from odradek.broker.runner import local_config
from odradek.clock import ManualClock
from odradek.errors import CorruptFrameError, ErrorCode
from odradek.protocol.messages import (
    API_VERSIONS_KEY,
    decode_request,
    peek_preamble,
    request_schema,
    response_schema,
)
from odradek.protocol.produce import decode_produce_request
from odradek.protocol.records import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_ZSTD,
    MAGIC,
    batch_crc_ok,
    decode_records,
    read_batch_header,
    validate_batches,
)

GOLDEN = Path(__file__).parent / "golden"

API_KEYS = {
    "produce": 0,
    "fetch": 1,
    "list_offsets": 2,
    "metadata": 3,
    "api_versions": 18,
    "create_topics": 19,
    "init_producer_id": 22,
}
CLIENTS = ("librdkafka", "kafka-python", "aiokafka")  # the capture order

# What each client sent (its negotiated version per API), as captured.
VERSIONS = {
    "librdkafka": {"api_versions": 3, "metadata": 12, "create_topics": 4, "init_producer_id": 4,
                   "produce": 10, "list_offsets": 7, "fetch": 16},
    "kafka-python": {"api_versions": 4, "metadata": 12, "create_topics": 7, "init_producer_id": 4,
                     "produce": 9, "list_offsets": 8, "fetch": 12},
    "aiokafka": {"api_versions": 0, "metadata": 5, "create_topics": 3, "init_producer_id": 0,
                 "produce": 7, "list_offsets": 3, "fetch": 11},
}
SOFTWARE = {
    "librdkafka": ("confluent-kafka-python", "2.16.1-rdkafka-2.16.0"),
    "kafka-python": ("kafka-python", "3.0.12"),
}
CODEC = {"librdkafka": COMPRESSION_ZSTD, "kafka-python": COMPRESSION_GZIP, "aiokafka": COMPRESSION_LZ4}
CLIENT_ID = "golden"
BASE_TIMESTAMP_MS = 1_700_000_000_000
RECORDS = [
    (f"key-{i}".encode(), f"golden value {i} ".encode() * 4, BASE_TIMESTAMP_MS + i)
    for i in range(5)
]
# Replay order: the topic must exist before Metadata (which would auto-create it) and Produce.
REPLAY_ORDER = ("api_versions", "create_topics", "metadata", "init_producer_id", "produce",
                "list_offsets", "fetch")

_REQUEST_NAME = re.compile(r"(?P<api>[a-z_]+)_request_v(?P<version>\d+)_(?P<client>[a-z-]+)\.bin")
_RESPONSE_NAME = re.compile(r"(?P<api>[a-z_]+)_response_v(?P<version>\d+)\.bin")


@dataclass(frozen=True, slots=True)
class Golden:
    path: Path
    api: str
    version: int
    client: str | None  # None for responses

    @property
    def key(self) -> int:
        return API_KEYS[self.api]

    @property
    def frame(self) -> bytes:
        return self.path.read_bytes()


def _goldens(pattern: re.Pattern[str]) -> list[Golden]:
    out = []
    for path in sorted(GOLDEN.glob("*.bin")):
        m = pattern.fullmatch(path.name)
        if m:
            out.append(Golden(path, m["api"], int(m["version"]), m.groupdict().get("client")))
    return out


REQUESTS = _goldens(_REQUEST_NAME)
RESPONSES = _goldens(_RESPONSE_NAME)


def request(client: str, api: str) -> Golden:
    version = VERSIONS[client][api]
    return Golden(GOLDEN / f"{api}_request_v{version}_{client}.bin", api, version, client)


def response_source(api: str, version: int) -> str:
    """The client whose exchange supplied ``<api>_response_v<version>.bin`` (the first to use it)."""
    return next(c for c in CLIENTS if VERSIONS[c][api] == version)


def _ids(goldens: list[Golden]) -> list[str]:
    return [g.path.stem for g in goldens]


# -- kio helpers ----------------------------------------------------------------------------------


def _write(cls: type[Any], value: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(cls)(buf, value)
    return buf.getvalue()


def _response_header_cls(api_key: int, schema: type[Any]) -> type[Any]:
    if api_key == API_VERSIONS_KEY or not schema.__flexible__:
        return ResponseHeaderV0
    return ResponseHeaderV1


def decode_response(api_key: int, version: int, frame: bytes) -> tuple[int, Any]:
    """(correlation id, body) of a response frame without its size prefix; all bytes used."""
    schema = response_schema(api_key, version)
    header, n = entity_reader(_response_header_cls(api_key, schema))(frame, 0)
    body, m = entity_reader(schema)(frame, n)
    assert n + m == len(frame), "trailing bytes after the response body"
    return header.correlation_id, body


def kio_request(frame: bytes) -> tuple[Any, Any]:
    pre = peek_preamble(frame)
    schema = request_schema(pre.api_key, pre.api_version)
    assert schema is not None
    header, n = entity_reader(schema.__header_schema__)(frame, 0)
    body, m = entity_reader(schema)(frame, n)
    assert n + m == len(frame), "trailing bytes after the request body"
    return header, body


def encode_request(header: Any, body: Any) -> bytes:
    return _write(type(header), header) + _write(type(body), body)


def error_codes(entity: Any) -> list[ErrorCode]:
    """Every error code anywhere in a kio entity."""
    found: list[ErrorCode] = []
    if isinstance(entity, tuple):
        for item in entity:
            found += error_codes(item)
    elif dataclasses.is_dataclass(entity) and not isinstance(entity, type):
        for f in dataclasses.fields(entity):
            value = getattr(entity, f.name)
            if f.metadata.get("kafka_type") == "error_code":
                found.append(value)
            else:
                found += error_codes(value)
    return found


# -- the set of files -----------------------------------------------------------------------------


def test_golden_set_is_complete_and_small() -> None:
    expected = {f"{api}_request_v{v}_{c}.bin" for c in CLIENTS for api, v in VERSIONS[c].items()}
    assert {g.path.name for g in REQUESTS} == expected
    expected_responses = {
        f"{api}_response_v{v}.bin" for c in CLIENTS for api, v in VERSIONS[c].items()
    }
    assert {g.path.name for g in RESPONSES} == expected_responses
    assert (GOLDEN / "README.md").is_file()
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 200_000


# -- requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("golden", REQUESTS, ids=_ids(REQUESTS))
def test_request_decodes_with_its_header(golden: Golden) -> None:
    frame = golden.frame
    pre = peek_preamble(frame)
    assert (pre.api_key, pre.api_version) == (golden.key, golden.version)
    assert pre.correlation_id > 0
    schema = request_schema(pre.api_key, pre.api_version)
    assert schema is not None
    req = decode_request(frame, pre, schema)
    assert req.client_id == CLIENT_ID
    assert req.size == len(frame)
    assert req.correlation_id == pre.correlation_id


@pytest.mark.parametrize("golden", REQUESTS, ids=_ids(REQUESTS))
def test_request_round_trips_through_kio(golden: Golden) -> None:
    header, body = kio_request(golden.frame)
    assert encode_request(header, body) == golden.frame


@pytest.mark.parametrize("golden", REQUESTS, ids=_ids(REQUESTS))
def test_request_is_served_by_the_broker_in_that_version(golden: Golden) -> None:
    api = handlers()[golden.key]
    assert api.accepts(golden.version)


@pytest.mark.parametrize("client", CLIENTS)
def test_api_versions_request(client: str) -> None:
    body = _decode(request(client, "api_versions")).body
    if client in SOFTWARE:
        assert (body.client_software_name, body.client_software_version) == SOFTWARE[client]
    else:
        assert request(client, "api_versions").version == 0  # aiokafka: empty v0 body
        assert request(client, "api_versions").frame[-len(CLIENT_ID):] == CLIENT_ID.encode()


@pytest.mark.parametrize("client", CLIENTS)
def test_metadata_request_names_the_topic(client: str) -> None:
    body = _decode(request(client, "metadata")).body
    assert [t.name for t in body.topics] == [f"golden-{client}"]
    assert body.allow_auto_topic_creation is True


@pytest.mark.parametrize("client", CLIENTS)
def test_create_topics_request(client: str) -> None:
    body = _decode(request(client, "create_topics")).body
    (topic,) = body.topics
    assert topic.name == f"golden-{client}"
    assert (topic.num_partitions, topic.replication_factor) == (1, 1)
    assert topic.assignments == () and topic.configs == ()
    assert body.validate_only is False
    assert body.timeout.total_seconds() > 0


@pytest.mark.parametrize("client", CLIENTS)
def test_init_producer_id_request_is_idempotent_not_transactional(client: str) -> None:
    body = _decode(request(client, "init_producer_id")).body
    assert body.transactional_id is None
    if request(client, "init_producer_id").version >= 3:
        assert (body.producer_id, body.producer_epoch) == (-1, -1)


@pytest.mark.parametrize("client", CLIENTS)
def test_produce_request_carries_one_compressed_idempotent_batch(client: str) -> None:
    golden = request(client, "produce")
    frame = golden.frame
    req = decode_produce_request(frame, peek_preamble(frame))
    assert req.client_id == CLIENT_ID
    body = req.body
    assert body.acks == -1 and body.transactional_id is None
    assert body.timeout.total_seconds() > 0
    (topic,) = body.topic_data
    assert topic.name == f"golden-{client}"
    (part,) = topic.partition_data
    assert part.index == 0 and part.records is not None
    records = bytes(part.records)
    h = read_batch_header(records)
    assert h.magic == MAGIC and h.size == len(records)
    assert h.base_offset == 0
    assert h.compression == CODEC[client]
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (0, 0, 0)
    assert h.records_count == len(RECORDS) and h.last_offset_delta == len(RECORDS) - 1
    assert (h.base_timestamp, h.max_timestamp) == (BASE_TIMESTAMP_MS, BASE_TIMESTAMP_MS + 4)
    assert not h.is_transactional and not h.is_control
    assert batch_crc_ok(records, 0, h)
    assert validate_batches(records, max_batch_bytes=1 << 20) == [h]
    got = [(r.key, r.value, r.timestamp) for r in decode_records(records)]
    assert got == RECORDS
    # The broker's zero-copy produce decoder and the generic kio codec agree.
    schema = request_schema(0, golden.version)
    assert schema is not None
    generic = decode_request(frame, peek_preamble(frame), schema)
    (kio_topic,) = generic.body.topic_data
    (kio_part,) = kio_topic.partition_data
    assert (kio_topic.name, kio_part.index, bytes(kio_part.records)) == (topic.name, 0, records)
    assert (generic.body.acks, generic.body.timeout) == (body.acks, body.timeout)


@pytest.mark.parametrize("client", CLIENTS)
def test_list_offsets_request_asks_for_the_earliest_offset(client: str) -> None:
    body = _decode(request(client, "list_offsets")).body
    assert body.replica_id == -1
    (topic,) = body.topics
    assert topic.name == f"golden-{client}"
    (part,) = topic.partitions
    assert (part.partition_index, part.timestamp) == (0, -2)


@pytest.mark.parametrize("client", CLIENTS)
def test_fetch_request_reads_from_offset_zero(client: str) -> None:
    golden = request(client, "fetch")
    body = _decode(golden).body
    replica_id = body.replica_state.replica_id if golden.version >= 15 else body.replica_id
    assert replica_id == -1
    assert body.min_bytes == 1 and body.max_wait.total_seconds() == 0.5
    assert body.session_id == 0
    (topic,) = body.topics
    if golden.version >= 13:
        assert isinstance(topic.topic_id, uuid.UUID) and topic.topic_id.int != 0
    else:
        assert topic.topic == f"golden-{client}"
    (part,) = topic.partitions
    assert (part.partition, part.fetch_offset) == (0, 0)
    assert part.partition_max_bytes > 0


def _decode(golden: Golden) -> Any:
    frame = golden.frame
    pre = peek_preamble(frame)
    schema = request_schema(pre.api_key, pre.api_version)
    assert schema is not None
    return decode_request(frame, pre, schema)


# -- responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("golden", RESPONSES, ids=_ids(RESPONSES))
def test_response_round_trips_and_reports_no_error(golden: Golden) -> None:
    correlation_id, body = decode_response(golden.key, golden.version, golden.frame)
    source = request(response_source(golden.api, golden.version), golden.api)
    assert correlation_id == peek_preamble(source.frame).correlation_id
    header_cls = _response_header_cls(golden.key, type(body))
    header = header_cls(correlation_id=correlation_id)
    assert _write(header_cls, header) + _write(type(body), body) == golden.frame
    codes = error_codes(body)
    assert codes and all(c == ErrorCode.none for c in codes)


@pytest.mark.parametrize(
    "golden", [g for g in RESPONSES if g.api == "fetch"], ids=lambda g: g.path.stem
)
def test_fetch_response_returns_the_produced_records(golden: Golden) -> None:
    _, body = decode_response(golden.key, golden.version, golden.frame)
    client = response_source("fetch", golden.version)
    (topic,) = body.responses
    (part,) = topic.partitions
    assert (part.high_watermark, part.last_stable_offset, part.log_start_offset) == (5, 5, 0)
    h = read_batch_header(part.records)
    assert (h.base_offset, h.partition_leader_epoch, h.compression) == (0, 0, CODEC[client])
    got = [(r.offset, r.key, r.value, r.timestamp) for r in decode_records(part.records)]
    assert got == [(i, *rec) for i, rec in enumerate(RECORDS)]


def test_api_versions_responses_cover_every_captured_request() -> None:
    for golden in (g for g in RESPONSES if g.api == "api_versions"):
        _, body = decode_response(golden.key, golden.version, golden.frame)
        ranges = {a.api_key: (a.min_version, a.max_version) for a in body.api_keys}
        for client in CLIENTS:
            for api, version in VERSIONS[client].items():
                low, high = ranges[API_KEYS[api]]
                assert low <= version <= high, (golden.path.name, client, api)


# -- replay through a real broker -----------------------------------------------------------------

T = TypeVar("T")


class LoopThread:
    """An event loop on a thread of its own, where this module's brokers live; tests hand it
    coroutines. Owned by the module fixture that creates it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


async def _start_broker(data_dir: Path) -> Broker:
    broker = Broker(local_config(data_dir), clock=ManualClock(BASE_TIMESTAMP_MS + 60_000))
    await broker.start()
    return broker


async def _dispatch(dispatcher: Dispatcher, frame: bytes) -> bytes:
    result = dispatcher(frame)
    if inspect.isawaitable(result):
        result = await asyncio.wait_for(result, 5)
    assert isinstance(result, bytes)
    (size,) = struct.unpack_from(">i", result, 0)
    assert size == len(result) - 4
    return result[4:]


def _with_topic_ids(frame: bytes, topic_id: uuid.UUID) -> bytes:
    """The same fetch request with every topic id replaced (ids are random per broker)."""
    header, body = kio_request(frame)
    topics = tuple(dataclasses.replace(t, topic_id=topic_id) for t in body.topics)
    return encode_request(header, dataclasses.replace(body, topics=topics))


def _normalised(entity: Any) -> Any:
    """Replace what differs from broker to broker (address, cluster id, topic ids)."""
    if isinstance(entity, tuple):
        return tuple(_normalised(e) for e in entity)
    if not dataclasses.is_dataclass(entity) or isinstance(entity, type):
        return entity
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(entity):
        value = getattr(entity, f.name)
        if f.name == "topic_id" and value is not None:
            changes[f.name] = uuid.UUID(int=1)
        elif f.name == "cluster_id" and value is not None:
            changes[f.name] = "cluster"
        elif f.name == "port":
            changes[f.name] = 0
        else:
            changes[f.name] = _normalised(value)
    return dataclasses.replace(entity, **changes)


# Byte-for-byte equal in any fresh broker; the rest are compared after normalising.
BYTE_EXACT = {"produce", "list_offsets", "init_producer_id", "fetch"}


@pytest.mark.parametrize("client", CLIENTS)
def test_replayed_requests_get_the_captured_answers(
    client: str, loop_thread: LoopThread, tmp_path: Path
) -> None:
    async def replay() -> dict[str, tuple[bytes, bytes]]:
        broker = await _start_broker(tmp_path / "data")
        try:
            dispatcher = Dispatcher(broker)
            out = {}
            for api in REPLAY_ORDER:
                frame = request(client, api).frame
                sent = frame
                if api == "fetch" and request(client, api).version >= 13:
                    meta = broker.topics.topic(f"golden-{client}")
                    assert meta is not None
                    sent = _with_topic_ids(frame, meta.topic_id)
                out[api] = (sent, await _dispatch(dispatcher, sent))
            return out
        finally:
            await broker.stop()

    answers = loop_thread.run(replay())
    for api in REPLAY_ORDER:
        golden_req = request(client, api)
        sent, live = answers[api]
        correlation_id, body = decode_response(golden_req.key, golden_req.version, live)
        assert correlation_id == peek_preamble(sent).correlation_id
        codes = error_codes(body)
        assert codes and all(c == ErrorCode.none for c in codes), (api, codes)
        if response_source(api, golden_req.version) != client:
            continue  # the stored response of this version came from another client
        golden = (GOLDEN / f"{api}_response_v{golden_req.version}.bin").read_bytes()
        if api == "fetch" and golden_req.version >= 13:
            captured_id = kio_request(golden_req.frame)[1].topics[0].topic_id
            sent_id = kio_request(sent)[1].topics[0].topic_id
            live = live.replace(sent_id.bytes, captured_id.bytes)
        if api in BYTE_EXACT:
            if os.environ.get("ODRADEK_REGOLD") and live != golden:
                (GOLDEN / f"{api}_response_v{golden_req.version}.bin").write_bytes(live)
                continue
            assert live == golden, api
        elif api == "api_versions":
            # The API list grows as handlers are added; the captured versions must stay served.
            ranges = {a.api_key: (a.min_version, a.max_version) for a in body.api_keys}
            for name, version in VERSIONS[client].items():
                low, high = ranges[API_KEYS[name]]
                assert low <= version <= high
        else:
            _, golden_body = decode_response(golden_req.key, golden_req.version, golden)
            assert _normalised(body) == _normalised(golden_body), api


# -- mutated requests never escape the error boundary ---------------------------------------------
#
# Random damage to the golden requests (bytes overwritten after the API key and version, frames
# truncated or extended) goes through a real broker's dispatcher. Each request must either be
# answered with a well-formed response carrying its correlation id or raise CorruptFrameError
# (the connection closes); any other exception escapes the broker's error boundary. A malformed
# length can make the native kio codec abort the whole process, so the fuzzing runs in a child
# process (``python test_golden.py --fuzz``) that forks once per chunk of examples.

# CreateTopics is left out: a mutated partition count can ask for 100 000 partition directories.
FUZZ_SEEDS = [g for g in REQUESTS if g.api != "create_topics"]
FUZZ_CHUNKS = 8
FUZZ_PER_CHUNK = 150

# Broker bugs the fuzzing finds today (see the report in tests/integration/test_bad_input.py).


def _mutate(rng: random.Random) -> tuple[str, bytes]:
    seed = rng.choice(FUZZ_SEEDS)
    data = bytearray(seed.frame)
    kind = rng.choice(["overwrite", "truncate", "append", "overwrite+truncate"])
    if "overwrite" in kind:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
    if "truncate" in kind:
        del data[rng.randrange(len(data)) :]
    if kind == "append":
        data += rng.randbytes(rng.randint(1, 16))
    return seed.api, bytes(data)


def _check_answer(frame: bytes, result: bytes) -> None:
    pre = peek_preamble(frame)
    assert struct.unpack_from(">i", result, 0)[0] == len(result) - 4
    api = handlers().get(pre.api_key)
    if api is not None and api.accepts(pre.api_version):
        correlation_id, _ = decode_response(pre.api_key, pre.api_version, result[4:])
    else:
        (correlation_id,) = struct.unpack_from(">i", result, 4)
    assert correlation_id == pre.correlation_id


def _fuzz_chunk(dispatcher: Dispatcher, loop: asyncio.AbstractEventLoop, seed: int,
                out: Any) -> None:
    rng = random.Random(seed)
    for _ in range(FUZZ_PER_CHUNK):
        api, frame = _mutate(rng)
        out.write(json.dumps({"trying": frame.hex()}) + "\n")
        out.flush()
        try:
            result = dispatcher(frame)
            if inspect.isawaitable(result):
                # A long poll: let it start, then cancel it; the wait is not under test here.
                try:
                    result = loop.run_until_complete(asyncio.wait_for(result, 0.01))
                except TimeoutError:
                    continue
            if result is not None:
                assert isinstance(result, bytes)
                _check_answer(frame, result)
        except CorruptFrameError:
            continue
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            out.write(json.dumps({
                "api": api,
                "error": f"{type(e).__name__}: {e}",
                "where": f"{Path(where.filename).name}:{where.lineno}",
                "frame": frame.hex(),
            }) + "\n")


def _fuzz_worker(data_dir: Path) -> None:
    """Runs in a child process: print one JSON summary of failures and aborted chunks."""
    import logging
    import os
    import signal

    logging.disable(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    broker = loop.run_until_complete(_start_broker(data_dir))
    dispatcher = Dispatcher(broker)
    for client in CLIENTS:
        for api in ("create_topics", "produce"):
            loop.run_until_complete(_dispatch(dispatcher, request(client, api).frame))
    failures: list[dict[str, str]] = []
    aborts: list[str] = []
    for chunk in range(FUZZ_CHUNKS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            with os.fdopen(w, "w") as out:
                _fuzz_chunk(dispatcher, loop, chunk, out)
            os._exit(0)
        os.close(w)
        last = ""
        with os.fdopen(r) as lines:
            for line in lines:
                message = json.loads(line)
                if "trying" in message:
                    last = message["trying"]
                else:
                    failures.append(message)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGABRT:
            aborts.append(last)
        elif status != 0:
            failures.append({"api": "?", "error": f"chunk exited with {status}", "where": "?",
                             "frame": last})
    loop.run_until_complete(broker.stop())
    print(json.dumps({"failures": failures, "aborts": aborts}))


def test_mutated_requests_are_answered_or_refused_cleanly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, __file__, "--fuzz", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not summary["aborts"], f"the broker process aborted on {summary['aborts'][:3]}"
    assert not summary["failures"], json.dumps(summary["failures"][:5], indent=1)


if __name__ == "__main__" and sys.argv[1:2] == ["--fuzz"]:
    _fuzz_worker(Path(sys.argv[2]))
