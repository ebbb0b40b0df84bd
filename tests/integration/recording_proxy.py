"""A TCP proxy that records the Kafka frames passing through it, and the golden-bytes capture.

:class:`RecordingProxy` sits between real clients and a broker, forwards every byte unchanged and
splits both directions into frames (4-byte size prefix removed), pairing each response with its
request by connection and correlation id. The broker must advertise the proxy's address
(``advertised.listeners``) so that clients reconnecting after Metadata stay on the proxy.

Run as a script to (re)capture ``tests/protocol/golden/``:

    .venv/bin/python tests/integration/recording_proxy.py tests/protocol/golden

Each client (librdkafka through confluent-kafka, kafka-python, aiokafka) talks to a fresh broker
of its own: create a topic, produce a few compressed records with an idempotent producer, then
consume them from the beginning. Existing files are never overwritten; a differing capture is
reported instead. The proxy is owned by the thread that starts it; its pump threads only append
to :attr:`RecordingProxy.exchanges` under a lock.
"""

from __future__ import annotations

import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Exchange", "RecordingProxy", "API_NAMES", "capture_all"]

API_NAMES = {
    0: "produce",
    1: "fetch",
    2: "list_offsets",
    3: "metadata",
    18: "api_versions",
    19: "create_topics",
    22: "init_producer_id",
}

_SIZE = struct.Struct(">i")
_PREAMBLE = struct.Struct(">hhi")


@dataclass
class Exchange:
    """One request seen on connection ``conn`` and, once it arrives, its response frame."""

    conn: int
    api_key: int
    api_version: int
    correlation_id: int
    request: bytes
    response: bytes | None = None


class _Splitter:
    """Cuts a byte stream into frames without the size prefix."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 4:
            (size,) = _SIZE.unpack_from(self._buf, 0)
            if size < 0 or len(self._buf) < 4 + size:
                break
            out.append(bytes(self._buf[4 : 4 + size]))
            del self._buf[: 4 + size]
        return out


@dataclass
class _Conn:
    index: int
    pending: dict[int, Exchange] = field(default_factory=dict)


class RecordingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (set before the first client connects)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._next_conn = 0

    def start(self) -> RecordingProxy:
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            assert self.upstream is not None, "set RecordingProxy.upstream first"
            try:
                server = socket.create_connection(self.upstream)
            except OSError:  # the broker is gone: refuse this client too
                client.close()
                continue
            with self._lock:
                conn = _Conn(self._next_conn)
                self._next_conn += 1
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, conn, True)
            self._spawn(self._pump, server, client, conn, False)

    def _pump(self, src: socket.socket, dst: socket.socket, conn: _Conn, requests: bool) -> None:
        splitter = _Splitter()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            # Record before forwarding, so a response can never overtake its request.
            for frame in splitter.feed(data):
                self._record(conn, frame, requests)
            try:
                dst.sendall(data)
            except OSError:
                return

    def _record(self, conn: _Conn, frame: bytes, is_request: bool) -> None:
        with self._lock:
            if is_request:
                api_key, api_version, correlation_id = _PREAMBLE.unpack_from(frame, 0)
                ex = Exchange(conn.index, api_key, api_version, correlation_id, frame)
                conn.pending[correlation_id] = ex
                self.exchanges.append(ex)
            else:
                (correlation_id,) = struct.unpack_from(">i", frame, 0)
                pending = conn.pending.pop(correlation_id, None)
                if pending is not None:
                    pending.response = frame

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)


# -- the golden capture -----------------------------------------------------------------------------

CLIENT_ID = "golden"
RECORD_COUNT = 5
BASE_TIMESTAMP_MS = 1_700_000_000_000


def _records() -> list[tuple[bytes, bytes, int]]:
    return [
        (f"key-{i}".encode(), f"golden value {i} ".encode() * 4, BASE_TIMESTAMP_MS + i)
        for i in range(RECORD_COUNT)
    ]


def _run_librdkafka(bootstrap: str, topic: str) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": CLIENT_ID})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_ID,
        "enable.idempotence": True,
        "compression.type": "zstd",
        "linger.ms": 50,
    })
    for key, value, ts in _records():
        producer.produce(topic, key=key, value=value, timestamp=ts, partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "client.id": CLIENT_ID,
        "group.id": "golden",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = 0
    while got < RECORD_COUNT:
        msgs = consumer.consume(RECORD_COUNT - got, timeout=10)
        assert msgs, "librdkafka consumer timed out"
        got += sum(1 for m in msgs if m.error() is None)
    consumer.close()


def _run_kafka_python(bootstrap: str, topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=CLIENT_ID,
        enable_idempotence=True,
        compression_type="gzip",
        linger_ms=50,
    )
    futures = [
        producer.send(topic, key=k, value=v, timestamp_ms=ts, partition=0)
        for k, v, ts in _records()
    ]
    for f in futures:
        f.get(10)
    producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, client_id=CLIENT_ID, enable_auto_commit=False
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = 0
    while got < RECORD_COUNT:
        batch = consumer.poll(timeout_ms=10_000)
        assert batch, "kafka-python consumer timed out"
        got += sum(len(v) for v in batch.values())
    consumer.close()


def _run_aiokafka(bootstrap: str, topic: str) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=CLIENT_ID)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=CLIENT_ID,
            enable_idempotence=True,
            compression_type="lz4",
            linger_ms=50,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=k, value=v, timestamp_ms=ts, partition=0)
                for k, v, ts in _records()
            ]
            for f in futures:
                await f
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, client_id=CLIENT_ID, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got = 0
            while got < RECORD_COUNT:
                batch = await consumer.getmany(timeout_ms=10_000)
                assert batch, "aiokafka consumer timed out"
                got += sum(len(v) for v in batch.values())
        finally:
            await consumer.stop()

    asyncio.run(run())


CLIENTS: dict[str, Callable[[str, str], None]] = {
    "librdkafka": _run_librdkafka,
    "kafka-python": _run_kafka_python,
    "aiokafka": _run_aiokafka,
}


def _interesting(ex: Exchange, topic: str) -> bool:
    """Prefer, among the requests of one API version, one that says something about the topic."""
    if ex.api_key == 3:  # Metadata naming the topic
        return topic.encode() in ex.request
    if ex.api_key == 1:  # a Fetch that returned records
        return ex.response is not None and b"golden value" in ex.response
    return True


def capture_client(client: str, work: Path) -> list[Exchange]:
    """Run ``client`` through a proxy against a fresh broker; one exchange per API version."""
    from odradek.broker.runner import BrokerThread, local_config

    topic = f"golden-{client}"
    with RecordingProxy() as proxy:
        config = local_config(
            work / client,
            advertised_listeners=f"PLAINTEXT://127.0.0.1:{proxy.port}",
        )
        with BrokerThread(config) as broker:
            proxy.upstream = (broker.broker.host, broker.broker.port)
            CLIENTS[client](f"127.0.0.1:{proxy.port}", topic)
        exchanges = proxy.snapshot()
    chosen: dict[tuple[int, int], Exchange] = {}
    for ex in exchanges:
        if ex.api_key not in API_NAMES or ex.response is None:
            continue
        key = (ex.api_key, ex.api_version)
        if key not in chosen or (
            not _interesting(chosen[key], topic) and _interesting(ex, topic)
        ):
            chosen[key] = ex
    return sorted(chosen.values(), key=lambda e: (e.api_key, e.api_version))


def _write(path: Path, data: bytes) -> None:
    if path.exists():
        if path.read_bytes() != data:
            print(f"  kept existing {path.name} (new capture differs)")
        return
    path.write_bytes(data)
    print(f"  wrote {path.name} ({len(data)} bytes)")


def capture_all(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for client in CLIENTS:
            print(f"{client}:")
            for ex in capture_client(client, Path(tmp)):
                name = API_NAMES[ex.api_key]
                _write(out_dir / f"{name}_request_v{ex.api_version}_{client}.bin", ex.request)
                assert ex.response is not None
                # One response per API version: the first client to use that version supplies it.
                _write(out_dir / f"{name}_response_v{ex.api_version}.bin", ex.response)


if __name__ == "__main__":
    capture_all(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/protocol/golden"))
