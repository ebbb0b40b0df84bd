"""Bad input over raw sockets against a real broker process.

The broker runs as ``python -m odradek serve`` in a child process, so that input able to kill
it cannot take pytest down too, and "the broker keeps serving" means what it says. After every
test the process must be alive, a confluent-kafka producer and consumer (on connections of their
own, opened before the test) must still round-trip a record, a new connection must be accepted,
and the broker's log must hold no traceback.

Expected behaviour follows Apache Kafka unless noted: per-partition errors for bad record data
(``KafkaApis.handleProduceRequest`` validates each partition on its own), the connection closed
for frames that cannot be parsed, and ApiVersions in an unknown version answered in v0.
Where odradek deliberately differs from Kafka (a served API in an unserved version is answered
with UNSUPPORTED_VERSION rather than a closed connection) the test says so.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.create_topics.v7 import request as create_topics_v7
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.metadata.v12 import request as metadata_v12
from kio.schema.produce.v9 import request as produce_v9
from kio.schema.response_header.v0.header import ResponseHeader as ResponseHeaderV0
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer

from odradek.broker.registry import handlers
from odradek.errors import ErrorCode
from odradek.protocol.messages import request_schema, response_schema
from odradek.protocol.records import SimpleRecord, encode_batch

pytestmark = pytest.mark.integration

SOCKET_REQUEST_MAX_BYTES = 1 << 20  # small, so a frame of exactly the limit is cheap to send
HEALTH_TOPIC = "health"


# -- a tiny raw client ----------------------------------------------------------------------------


def request_header(api_key: int, api_version: int, correlation_id: int, *,
                   client_id: str | None = "bad-input", flexible: bool | None = None,
                   tagged: bytes = b"\x00") -> bytes:
    """Request header v1 (v2 when ``flexible``: v1 plus tagged fields, ``tagged`` verbatim).
    Whether it is flexible defaults to what the API version's schema says, v1 if none."""
    if flexible is None:
        schema = request_schema(api_key, api_version)
        flexible = bool(schema is not None and schema.__flexible__)
    out = struct.pack(">hhi", api_key, api_version, correlation_id)
    if client_id is None:
        out += struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        out += struct.pack(">h", len(raw)) + raw
    return out + (tagged if flexible else b"")


def encode_body(body: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(body))(buf, body)
    return buf.getvalue()


def decode_response(api_key: int, api_version: int, frame: bytes) -> tuple[int, Any]:
    schema = response_schema(api_key, api_version)
    flexible_header = schema.__flexible__ and api_key != 18
    header_cls: type[Any] = ResponseHeaderV1 if flexible_header else ResponseHeaderV0
    header, n = entity_reader(header_cls)(frame, 0)
    body, m = entity_reader(schema)(frame, n)
    assert n + m == len(frame), "trailing bytes after the response"
    return header.correlation_id, body


class Raw:
    """One blocking connection that writes whatever it is told to."""

    def __init__(self, bootstrap: str, timeout: float = 10) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_correlation_id(self) -> int:
        self._correlation_id += 1
        return self._correlation_id

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

    def frame_for(self, body: Any, *, api_version: int | None = None,
                  correlation_id: int | None = None) -> bytes:
        schema = type(body)
        version = schema.__version__ if api_version is None else api_version
        cid = self.next_correlation_id() if correlation_id is None else correlation_id
        return request_header(schema.__api_key__, version, cid) + encode_body(body)

    def recv_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._exactly(4))
        return self._exactly(size)

    def request(self, body: Any) -> Any:
        """Send ``body`` and return the decoded response body (its correlation id checked)."""
        frame = self.frame_for(body)
        self.send_frame(frame)
        correlation_id, response = decode_response(
            type(body).__api_key__, type(body).__version__, self.recv_frame()
        )
        assert correlation_id == struct.unpack_from(">i", frame, 4)[0]
        return response

    def closed_by_broker(self, timeout: float = 5) -> bool:
        """True once the broker closes the connection; False if it sends data or stays open."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return data == b""

    def _exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(n)
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


# -- the broker process and the health check ------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[str]
    bootstrap: str
    log: Path
    log_offset: int = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def new_log(self) -> str:
        """Log lines written since the last call."""
        text = self.log.read_text(errors="replace")
        new, self.log_offset = text[self.log_offset :], len(text)
        return new

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(workdir: Path, **properties: str) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    log = workdir / "broker.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "odradek", "serve", "--listen", "127.0.0.1:0",
             "--data-dir", str(workdir / "data"), "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the broker is listening (or has died)
    if not line.startswith("odradek listening on "):
        proc.kill()
        raise RuntimeError(f"broker did not start: {line!r}\n{log.read_text()}")
    return Server(proc, line.split()[-1], log)


class Health:
    """A confluent-kafka producer and consumer, connected before any bad input is sent."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        conf = {"bootstrap.servers": bootstrap, "client.id": "health"}
        self.producer = Producer({**conf, "linger.ms": 0})
        self.consumer = Consumer({**conf, "group.id": "health", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 10})
        self.count = 0

    def check(self) -> None:
        value = f"still serving {self.count}".encode()
        self.count += 1
        delivered: list[tuple[Any, Any]] = []
        self.producer.produce(HEALTH_TOPIC, value=value, partition=0,
                              on_delivery=lambda err, msg: delivered.append((err, msg)))
        assert self.producer.flush(10) == 0, "producer could not deliver"
        ((err, msg),) = delivered
        assert err is None, err
        self.consumer.assign([TopicPartition(HEALTH_TOPIC, 0, msg.offset())])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = self.consumer.poll(1)
            if got is None or got.error():
                continue
            assert (got.offset(), got.value()) == (msg.offset(), value)
            break
        else:
            raise AssertionError("consumer received nothing")
        with Raw(self.bootstrap) as raw:  # the broker still accepts new connections
            body = raw.request(api_versions_request())
            assert body.error_code == ErrorCode.none

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("bad-input"),
        **{"socket.request.max.bytes": str(SOCKET_REQUEST_MAX_BYTES),
           "auto.create.topics.enable": "false"},
    )
    try:
        with Raw(srv.bootstrap) as raw:
            created = raw.request(create_topics(topic(HEALTH_TOPIC)))
            assert error_codes(created) == [ErrorCode.none]
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def health(server: Server) -> Iterator[Health]:
    h = Health(server.bootstrap)
    h.check()
    yield h
    h.close()


@pytest.fixture(autouse=True)
def still_serving(request: pytest.FixtureRequest, server: Server, health: Health) -> Iterator[str]:
    server.new_log()
    yield server.bootstrap
    assert server.alive(), "the broker process died:\n" + server.new_log()[-3000:]
    health.check()
    log = server.new_log()
    if request.node.get_closest_marker("xfail") is None:
        assert "Traceback" not in log and "Fatal error" not in log, log[-3000:]


# -- request builders -----------------------------------------------------------------------------


def api_versions_request() -> Any:
    from kio.schema.api_versions.v3.request import ApiVersionsRequest

    return ApiVersionsRequest(client_software_name="bad-input", client_software_version="1")


def topic(name: str, partitions: int = 1, replication_factor: int = 1,
          configs: dict[str, str] | None = None) -> Any:
    return create_topics_v7.CreatableTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        assignments=(),
        configs=tuple(
            create_topics_v7.CreatableTopicConfig(name=k, value=v)
            for k, v in (configs or {}).items()
        ),
    )


def create_topics(*topics: Any) -> Any:
    return create_topics_v7.CreateTopicsRequest(topics=topics)


def produce(partitions: dict[str, dict[int, bytes | None]], acks: int = -1) -> Any:
    return produce_v9.ProduceRequest(
        acks=acks,
        timeout=datetime.timedelta(seconds=5),
        topic_data=tuple(
            produce_v9.TopicProduceData(
                name=name,
                partition_data=tuple(
                    produce_v9.PartitionProduceData(index=i, records=r) for i, r in parts.items()
                ),
            )
            for name, parts in partitions.items()
        ),
    )


def fetch(name: str, partition: int, offset: int) -> Any:
    return fetch_v12.FetchRequest(
        max_wait=datetime.timedelta(0),
        min_bytes=1,
        topics=(
            fetch_v12.FetchTopic(
                topic=name,
                partitions=(
                    fetch_v12.FetchPartition(
                        partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )


def metadata(*names: str) -> Any:
    return metadata_v12.MetadataRequest(
        topics=tuple(metadata_v12.MetadataRequestTopic(topic_id=None, name=n) for n in names),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def batch(*values: bytes) -> bytes:
    return encode_batch([SimpleRecord(key=None, value=v, timestamp=1_700_000_000_000)
                         for v in values])


def legacy_message(magic: int, value: bytes) -> bytes:
    """A message set of one uncompressed message in format v0 or v1 (pre-0.11 clients)."""
    body = struct.pack(">bb", magic, 0)
    if magic == 1:
        body += struct.pack(">q", 1_700_000_000_000)
    body += struct.pack(">i", -1) + struct.pack(">i", len(value)) + value
    message = struct.pack(">I", zlib.crc32(body)) + body
    return struct.pack(">qi", 0, len(message)) + message


def error_codes(entity: Any) -> list[ErrorCode]:
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


def partition_errors(response: Any) -> dict[tuple[str, int], ErrorCode]:
    return {
        (t.name, p.index): p.error_code
        for t in response.responses
        for p in t.partition_responses
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_topic(bootstrap: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
    name = unique("t")
    with Raw(bootstrap) as raw:
        response = raw.request(create_topics(topic(name, partitions, configs=configs)))
    assert error_codes(response) == [ErrorCode.none]
    return name


def high_watermark(bootstrap: str, name: str, partition: int) -> int:
    with Raw(bootstrap) as raw:
        response = raw.request(fetch(name, partition, 0))
    ((p,),) = [t.partitions for t in response.responses]
    assert p.error_code == ErrorCode.none
    return int(p.high_watermark)


# -- framing --------------------------------------------------------------------------------------


def test_negative_frame_size_closes_only_that_connection(still_serving: str) -> None:
    with Raw(still_serving) as bad, Raw(still_serving) as good:
        assert good.request(api_versions_request()).error_code == ErrorCode.none
        bad.send_raw(struct.pack(">i", -1))
        assert bad.closed_by_broker()
        assert good.request(api_versions_request()).error_code == ErrorCode.none


@pytest.mark.parametrize("size", [SOCKET_REQUEST_MAX_BYTES + 1, 2**31 - 1])
def test_frame_over_socket_request_max_bytes_closes_the_connection(
    still_serving: str, size: int
) -> None:
    with Raw(still_serving) as bad, Raw(still_serving) as good:
        # Only the size prefix and a little of the body: the broker must not wait for the rest.
        bad.send_raw(struct.pack(">i", size) + b"\x00" * 64)
        assert bad.closed_by_broker()
        assert good.request(api_versions_request()).error_code == ErrorCode.none


def test_frame_of_exactly_socket_request_max_bytes_is_served(still_serving: str) -> None:
    name = new_topic(still_serving, configs={"max.message.bytes": str(2 * SOCKET_REQUEST_MAX_BYTES)})
    with Raw(still_serving) as raw:
        empty = raw.frame_for(produce({name: {0: batch(b"")}}), correlation_id=77)
        # Grow the one record's value until the whole frame is exactly the limit.
        pad = SOCKET_REQUEST_MAX_BYTES - len(empty)
        for extra in range(pad - 8, pad + 1):
            frame = raw.frame_for(produce({name: {0: batch(b"x" * extra)}}), correlation_id=77)
            if len(frame) == SOCKET_REQUEST_MAX_BYTES:
                break
        assert len(frame) == SOCKET_REQUEST_MAX_BYTES
        raw.send_frame(frame)
        correlation_id, response = decode_response(0, 9, raw.recv_frame())
    assert correlation_id == 77
    assert partition_errors(response) == {(name, 0): ErrorCode.none}


def test_good_request_pipelined_before_a_bad_frame_is_answered_first(still_serving: str) -> None:
    with Raw(still_serving) as raw:
        good = raw.frame_for(api_versions_request(), correlation_id=5)
        raw.send_raw(struct.pack(">i", len(good)) + good + struct.pack(">i", -7))
        correlation_id, body = decode_response(18, 3, raw.recv_frame())
        assert (correlation_id, body.error_code) == (5, ErrorCode.none)
        assert raw.closed_by_broker()


# -- garbage and unknown requests -----------------------------------------------------------------

GARBAGE = {"one-zero-byte": b"\x00", "0x7f-run": b"\x7f" * 8, "unended-varints": b"\x80" * 8}
SERVED = sorted(handlers().values(), key=lambda h: h.api_key)


@pytest.mark.parametrize("api", SERVED, ids=[h.name for h in SERVED])
def test_garbage_body_closes_the_connection(still_serving: str, api: Any) -> None:
    """Every served version of every API, with bodies no codec can parse. Some versions
    (ApiVersions v0-v2, ListGroups v0-v2) have empty bodies, so any bytes after their header
    parse (trailing bytes are ignored) and get an answer, unless the version is flexible: then
    the bytes must also be a valid (here: empty) set of tagged fields."""
    for version in filter(api.accepts, api.versions()):
        schema = request_schema(api.api_key, version)
        assert schema is not None
        empty_body = not [f for f in dataclasses.fields(schema) if not f.name.startswith("__")]
        for name, garbage in GARBAGE.items():
            with Raw(still_serving) as raw:
                raw.send_frame(request_header(api.api_key, version, 9) + garbage)
                if empty_body and (not schema.__flexible__ or garbage == b"\x00"):
                    correlation_id, body = decode_response(api.api_key, version, raw.recv_frame())
                    assert (correlation_id, body.error_code) == (9, ErrorCode.none)
                else:
                    assert raw.closed_by_broker(), (api.name, version, name)


@pytest.mark.parametrize("api_key", [9999, -1, 32767])
def test_unknown_api_key_closes_the_connection(still_serving: str, api_key: int) -> None:
    with Raw(still_serving) as raw:
        raw.send_frame(request_header(api_key, 0, 1) + b"\x00\x00\x00\x00")
        assert raw.closed_by_broker()


def test_version_no_codec_knows_closes_the_connection(still_serving: str) -> None:
    with Raw(still_serving) as raw:
        raw.send_frame(request_header(3, 99, 1) + b"\x00\x00\x00\x00")
        assert raw.closed_by_broker()


@pytest.mark.parametrize(
    ("api_key", "version"),
    [(3, 13), (1, 17), (22, 6)],
    ids=["Metadata-v13", "Fetch-v17", "InitProducerId-v6"],
)
def test_unsupported_version_is_answered_with_unsupported_version(
    still_serving: str, api_key: int, version: int
) -> None:
    """odradek's choice (dispatcher.py): a version kio has a codec for but the broker does not
    serve is answered in that version with UNSUPPORTED_VERSION. (Kafka closes the connection.)"""
    schema = request_schema(api_key, version)
    assert schema is not None
    api = handlers()[api_key]
    assert not api.accepts(version)
    with Raw(still_serving) as raw:
        raw.send_frame(request_header(api_key, version, 42) + b"\x00" * 16)
        correlation_id, body = decode_response(api_key, version, raw.recv_frame())
        assert correlation_id == 42
        assert body.error_code == ErrorCode.unsupported_version
        # The connection stays usable.
        assert raw.request(api_versions_request()).error_code == ErrorCode.none


def test_unsupported_produce_version_reports_an_error(still_serving: str) -> None:
    name = new_topic(still_serving)
    body = produce({name: {0: batch(b"v12")}})
    schema = request_schema(0, 12)
    assert schema is not None
    with Raw(still_serving) as raw:
        frame = request_header(0, 12, 3) + encode_body(body)  # v9 and v12 bodies are identical
        raw.send_frame(frame)
        try:
            _, response = decode_response(0, 12, raw.recv_frame())
        except ConnectionError:
            return  # closing the connection, as Kafka does, is fine
        assert ErrorCode.unsupported_version in error_codes(response)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_produce_advertised_but_refused_closes_the_connection(
    still_serving: str, version: int
) -> None:
    """Produce v0-v2 are listed in ApiVersions (Kafka 4 lists them too, KAFKA-18659: older
    librdkafka compresses nothing otherwise) but refused. Kafka 4 has no codec for them either:
    its socket server fails the request header with UnsupportedVersionException and closes the
    connection, without an answer; so does odradek."""
    name = new_topic(still_serving)
    with Raw(still_serving) as raw:
        body = encode_body(api_versions_request())
        raw.send_frame(request_header(18, 3, 1) + body)
        _, versions = decode_response(18, 3, raw.recv_frame())
        (produce_range,) = [(a.min_version, a.max_version) for a in versions.api_keys
                            if a.api_key == 0]
        assert produce_range[0] == 0 and produce_range[1] >= 3
        # Produce v0-v2 body: acks, timeout, [topic [partition message_set]].
        message_set = legacy_message(1 if version == 2 else 0, b"old client")
        raw_name = name.encode()
        v0_body = (struct.pack(">hii", 1, 5000, 1) + struct.pack(">h", len(raw_name)) + raw_name
                   + struct.pack(">ii", 1, 0) + struct.pack(">i", len(message_set)) + message_set)
        raw.send_frame(request_header(0, version, 2, flexible=False) + v0_body)
        assert raw.closed_by_broker()
    assert high_watermark(still_serving, name, 0) == 0


def _unserved_api() -> tuple[int, int]:
    """An API and version kio has codecs for, whose response has a top-level error code, but
    for which the broker has no handler (OffsetFetch v2 today)."""
    for api_key in range(100):
        if api_key in handlers():
            continue
        for version in range(10):
            if request_schema(api_key, version) is None:
                continue
            fields = {f.name for f in dataclasses.fields(response_schema(api_key, version))}
            if "error_code" in fields:
                return api_key, version
    raise AssertionError("every API kio knows is served")


def test_api_kafka_has_but_odradek_does_not_serve_gets_unsupported_version(
    still_serving: str,
) -> None:
    """Answered like an unsupported version (odradek's choice; Kafka closes the connection for
    an API it has not enabled)."""
    api_key, version = _unserved_api()
    with Raw(still_serving) as raw:
        raw.send_frame(request_header(api_key, version, 8) + b"\x00" * 16)
        correlation_id, body = decode_response(api_key, version, raw.recv_frame())
    assert (correlation_id, body.error_code) == (8, ErrorCode.unsupported_version)


@pytest.mark.parametrize("version", [5, 99, 32767])
def test_api_versions_in_an_unknown_version_gets_v0_with_the_api_list(
    still_serving: str, version: int
) -> None:
    with Raw(still_serving) as raw:
        # A client newer than the broker sends a flexible header and a body the broker cannot
        # know; neither may matter.
        raw.send_frame(request_header(18, version, 11, flexible=True) + b"\x07future\x00\x00")
        correlation_id, body = decode_response(18, 0, raw.recv_frame())
    assert correlation_id == 11
    assert body.error_code == ErrorCode.unsupported_version
    advertised = {(a.api_key, a.min_version, a.max_version) for a in body.api_keys}
    assert advertised == {(h.api_key, h.min_version, h.max_version) for h in handlers().values()}
    assert (18, 0, handlers()[18].max_version) in advertised


def test_unknown_tagged_field_in_the_header_is_ignored(still_serving: str) -> None:
    # One tagged field, tag 100, 3 bytes: a header field from some future client.
    tagged = b"\x01" + b"\x64" + b"\x03abc"
    with Raw(still_serving) as raw:
        body = encode_body(api_versions_request())
        raw.send_frame(request_header(18, 3, 21, tagged=tagged) + body)
        correlation_id, response = decode_response(18, 3, raw.recv_frame())
    assert (correlation_id, response.error_code) == (21, ErrorCode.none)


# -- produce --------------------------------------------------------------------------------------


def test_corrupt_crc_fails_only_that_partition(still_serving: str) -> None:
    name = new_topic(still_serving, partitions=3)
    other = new_topic(still_serving)
    corrupt = bytearray(batch(b"a", b"b"))
    corrupt[-1] ^= 0xFF  # inside the CRC-covered region
    with Raw(still_serving) as raw:
        response = raw.request(produce({
            name: {0: batch(b"p0"), 1: bytes(corrupt), 2: batch(b"p2")},
            other: {0: batch(b"o0")},
        }))
    assert partition_errors(response) == {
        (name, 0): ErrorCode.none,
        (name, 1): ErrorCode.corrupt_message,
        (name, 2): ErrorCode.none,
        (other, 0): ErrorCode.none,
    }
    assert [high_watermark(still_serving, name, p) for p in range(3)] == [1, 0, 1]
    assert high_watermark(still_serving, other, 0) == 1


@pytest.mark.parametrize("magic", [0, 1])
def test_old_message_format_is_invalid_record(still_serving: str, magic: int) -> None:
    """Kafka: ProduceRequest.validateRecords rejects any batch whose magic is not 2 in Produce v3+
    with InvalidRecordException, reported for that partition only."""
    name = new_topic(still_serving, partitions=2)
    with Raw(still_serving) as raw:
        response = raw.request(produce({
            name: {0: legacy_message(magic, b"old"), 1: batch(b"new")},
        }))
    assert partition_errors(response) == {
        (name, 0): ErrorCode.invalid_record,
        (name, 1): ErrorCode.none,
    }
    assert high_watermark(still_serving, name, 0) == 0


@pytest.mark.parametrize("version", [7, 8, 9, 11])
def test_keyless_records_on_a_compacted_topic_are_named(still_serving: str, version: int) -> None:
    """KIP-467: from Produce v8 the answer names the records that made the batch invalid (their
    index in the batch) and says why in error_message; v7 has no room for either."""
    name = new_topic(still_serving, configs={"cleanup.policy": "compact"})
    records = encode_batch([
        SimpleRecord(value=b"a", key=b"ka"),
        SimpleRecord(value=b"b", key=None),
        SimpleRecord(value=b"c", key=b"kc"),
        SimpleRecord(value=b"d", key=None),
    ])
    schema = request_schema(0, version)
    assert schema is not None
    mod = sys.modules[schema.__module__]
    body = schema(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=5),
        topic_data=(mod.TopicProduceData(
            name=name, partition_data=(mod.PartitionProduceData(index=0, records=records),)
        ),),
    )
    with Raw(still_serving) as raw:
        response = raw.request(body)
    ((partition,),) = [t.partition_responses for t in response.responses]
    assert partition.error_code == ErrorCode.invalid_record
    if version >= 8:
        assert [e.batch_index for e in partition.record_errors] == [1, 3]
        assert all("key" in (e.batch_index_error_message or "") for e in partition.record_errors)
        assert "key" in (partition.error_message or "")
    else:
        assert not hasattr(partition, "record_errors")
    assert high_watermark(still_serving, name, 0) == 0


def test_null_records_are_invalid_record(still_serving: str) -> None:
    name = new_topic(still_serving)
    with Raw(still_serving) as raw:
        response = raw.request(produce({name: {0: None}}))
    assert partition_errors(response) == {(name, 0): ErrorCode.invalid_record}


@pytest.mark.parametrize("records", ["none", "two"])
def test_produce_needs_exactly_one_batch(still_serving: str, records: str) -> None:
    name = new_topic(still_serving)
    data = b"" if records == "none" else batch(b"one") + batch(b"two")
    with Raw(still_serving) as raw:
        response = raw.request(produce({name: {0: data}}))
    assert partition_errors(response) == {(name, 0): ErrorCode.invalid_record}


def test_batch_over_max_message_bytes_is_message_too_large(still_serving: str) -> None:
    name = new_topic(still_serving, partitions=2, configs={"max.message.bytes": "1024"})
    small, large = batch(b"s" * 500), batch(b"l" * 2000)
    assert len(small) <= 1024 < len(large)
    with Raw(still_serving) as raw:
        response = raw.request(produce({name: {0: large, 1: small}}))
    assert partition_errors(response) == {
        (name, 0): ErrorCode.message_too_large,
        (name, 1): ErrorCode.none,
    }
    assert high_watermark(still_serving, name, 0) == 0


def test_produce_to_unknown_topic_or_partition(still_serving: str) -> None:
    name = new_topic(still_serving)
    missing = unique("missing")
    with Raw(still_serving) as raw:
        response = raw.request(produce({missing: {0: batch(b"x")}, name: {0: batch(b"y"),
                                                                          7: batch(b"z")}}))
        assert partition_errors(response) == {
            (missing, 0): ErrorCode.unknown_topic_or_partition,
            (name, 0): ErrorCode.none,
            (name, 7): ErrorCode.unknown_topic_or_partition,
        }
        # Produce never creates topics.
        (t,) = raw.request(metadata(missing)).topics
        assert t.error_code == ErrorCode.unknown_topic_or_partition


@pytest.mark.parametrize("acks", [2, -2, 100])
def test_invalid_acks_is_invalid_required_acks(still_serving: str, acks: int) -> None:
    name = new_topic(still_serving, partitions=2)
    with Raw(still_serving) as raw:
        response = raw.request(produce({name: {0: batch(b"a"), 1: batch(b"b")}}, acks=acks))
    assert partition_errors(response) == {
        (name, 0): ErrorCode.invalid_required_acks,
        (name, 1): ErrorCode.invalid_required_acks,
    }
    assert [high_watermark(still_serving, name, p) for p in range(2)] == [0, 0]


# -- fetch ----------------------------------------------------------------------------------------


def test_fetch_beyond_the_log_end_is_offset_out_of_range(still_serving: str) -> None:
    name = new_topic(still_serving)
    with Raw(still_serving) as raw:
        response = raw.request(produce({name: {0: batch(b"a", b"b", b"c")}}))
        assert partition_errors(response) == {(name, 0): ErrorCode.none}

        def fetched(offset: int) -> Any:
            (t,) = raw.request(fetch(name, 0, offset)).responses
            (p,) = t.partitions
            return p

        at_end = fetched(3)  # the log end offset itself: nothing yet, not an error
        assert (at_end.error_code, at_end.high_watermark, at_end.records) == (
            ErrorCode.none, 3, b"")
        for offset in (4, 1000, -5):
            p = fetched(offset)
            assert p.error_code == ErrorCode.offset_out_of_range, offset
            assert not p.records
            # The offsets to reset from come with the error, as Kafka sends them.
            assert (p.high_watermark, p.log_start_offset) == (3, 0)


def test_fetch_from_unknown_topic(still_serving: str) -> None:
    with Raw(still_serving) as raw:
        (t,) = raw.request(fetch(unique("missing"), 0, 0)).responses
    assert [p.error_code for p in t.partitions] == [ErrorCode.unknown_topic_or_partition]


# -- create topics --------------------------------------------------------------------------------


def test_create_topics_reports_each_topic_on_its_own(still_serving: str) -> None:
    existing = new_topic(still_serving)
    good = unique("good")
    cases = {
        good: (topic(good), ErrorCode.none),
        "bad name!": (topic("bad name!"), ErrorCode.invalid_topic_exception),
        "..": (topic(".."), ErrorCode.invalid_topic_exception),
        "x" * 250: (topic("x" * 250), ErrorCode.invalid_topic_exception),
        existing: (topic(existing), ErrorCode.topic_already_exists),
        "bad-config": (topic("bad-config", configs={"cleanup.policy": "sometimes"}),
                       ErrorCode.invalid_config),
        "unknown-config": (topic("unknown-config", configs={"no.such.config": "1"}),
                           ErrorCode.invalid_config),
        "zero-partitions": (topic("zero-partitions", partitions=0), ErrorCode.invalid_partitions),
        "minus-two-partitions": (topic("minus-two-partitions", partitions=-2),
                                 ErrorCode.invalid_partitions),
        "zero-replicas": (topic("zero-replicas", replication_factor=0),
                          ErrorCode.invalid_replication_factor),
        "three-replicas": (topic("three-replicas", replication_factor=3),
                           ErrorCode.invalid_replication_factor),
    }
    with Raw(still_serving) as raw:
        response = raw.request(create_topics(*(t for t, _ in cases.values())))
        got = {t.name: t.error_code for t in response.topics}
        assert got == {name: code for name, (_, code) in cases.items()}
        for t in response.topics:
            if t.error_code != ErrorCode.none:
                assert t.error_message, t.name
        # Only the good one exists now.
        names = [n for n in cases if n != existing]
        found = {t.name: t.error_code for t in raw.request(metadata(*names)).topics}
        assert found[good] == ErrorCode.none
        assert all(code != ErrorCode.none for n, code in found.items() if n != good), found


def test_create_topics_with_a_name_twice_is_invalid_request(still_serving: str) -> None:
    twice = unique("twice")
    with Raw(still_serving) as raw:
        response = raw.request(create_topics(topic(twice), topic(twice, partitions=2)))
        assert [t.error_code for t in response.topics] == [ErrorCode.invalid_request] * 2
        (t,) = raw.request(metadata(twice)).topics
        assert t.error_code == ErrorCode.unknown_topic_or_partition


# -- input that kills the broker process ----------------------------------------------------------


def test_huge_array_length_closes_only_that_connection(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "own-broker")
    try:
        with Raw(srv.bootstrap) as raw:
            # Metadata v12 whose topics array claims 4 294 967 294 entries, in 17 bytes.
            raw.send_frame(request_header(3, 12, 1) + b"\xff\xff\xff\xff\x0f")
            assert raw.closed_by_broker()
        try:
            with Raw(srv.bootstrap) as raw:
                assert raw.request(api_versions_request()).error_code == ErrorCode.none
        except OSError as e:
            status = srv.proc.wait(timeout=10)
            pytest.fail(f"the broker is gone ({e}); it exited with status {status}")
        assert srv.alive()
    finally:
        srv.stop()
