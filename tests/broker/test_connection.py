"""A connection driven in memory, as asyncio drives it: the "socket" writes into the buffers the
connection hands out (``get_buffer``/``buffer_updated``), the real dispatcher and storage do the
rest. The produce path must take record batches from there to the segment file without copying
them: storage patches offsets into the very bytes the socket wrote and ``os.write`` takes them
from there.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import io
import mmap
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kio.schema.response_header.v1.header import ResponseHeader
from kio.serial import entity_reader, entity_writer

from odradek.broker.app import Broker
from odradek.broker.connection import KafkaConnection
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.runner import local_config
from odradek.clock import ManualClock
from odradek.errors import ErrorCode
from odradek.protocol.framing import RECEIVE_BUFFER_BYTES
from odradek.protocol.messages import request_schema, response_schema
from odradek.protocol.records import SimpleRecord, encode_batch, read_batch_header
from odradek.storage.log import PartitionLog
from odradek.storage.segment import LogSegment

PRODUCE_VERSION = 9


def _address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class _Transport(asyncio.Transport):
    """The write side of an in-memory socket: keeps what the broker sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.sent += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.sent += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class Wire:
    """One connection to a started (not serving) broker, plus what storage was handed."""

    broker: Broker
    connection: KafkaConnection
    transport: _Transport
    loop: asyncio.AbstractEventLoop | None = None
    appended: list[memoryview] = field(default_factory=list)  # records given to the log
    written: list[memoryview] = field(default_factory=list)  # data given to the segment
    # (stream position, bytes, address) of every socket read
    placed: list[tuple[int, int, int]] = field(default_factory=list)
    stream_pos: int = 0
    correlation_id: int = 0

    def receive(self, data: bytes, read: int) -> None:
        """Deliver ``data`` as a socket does: ``recv_into`` the connection's buffer, at most
        ``read`` bytes a time."""
        pos = 0
        while pos < len(data):
            target = self.connection.get_buffer(-1)
            n = min(len(target), read, len(data) - pos)
            target[:n] = data[pos : pos + n]
            self.placed.append((self.stream_pos + pos, n, _address(target)))
            self.connection.buffer_updated(n)
            pos += n
        self.stream_pos += len(data)

    def moved(self, view: memoryview, stream_pos: int) -> int:
        """Bytes of ``view`` (which arrived at ``stream_pos``) not where the socket wrote them."""
        base = _address(view)
        in_place = 0
        for pos, n, address in self.placed:
            lo, hi = max(pos, stream_pos), min(pos + n, stream_pos + len(view))
            if lo < hi and address + (lo - pos) == base + (lo - stream_pos):
                in_place += hi - lo
        return len(view) - in_place

    def produce_frame(self, topic: str, records: bytes) -> bytes:
        schema = request_schema(0, PRODUCE_VERSION)
        assert schema is not None
        mod = sys.modules[schema.__module__]
        body = schema(
            transactional_id=None,
            acks=-1,
            timeout=datetime.timedelta(seconds=5),
            topic_data=(
                mod.TopicProduceData(
                    name=topic,
                    partition_data=(mod.PartitionProduceData(index=0, records=records),),
                ),
            ),
        )
        self.correlation_id += 1
        out = io.BytesIO()
        header_cls = schema.__header_schema__
        entity_writer(header_cls)(out, header_cls(
            request_api_key=0,
            request_api_version=PRODUCE_VERSION,
            correlation_id=self.correlation_id,
            client_id="zero-copy",
        ))
        entity_writer(schema)(out, body)
        payload = out.getvalue()
        return struct.pack(">i", len(payload)) + payload

    def responses(self) -> list[Any]:
        """Decode (and consume) the produce responses sent so far."""
        out = []
        data = bytes(self.transport.sent)
        self.transport.sent.clear()
        pos = 0
        schema = response_schema(0, PRODUCE_VERSION)
        while pos < len(data):
            (size,) = struct.unpack_from(">i", data, pos)
            frame = data[pos + 4 : pos + 4 + size]
            _, n = entity_reader(ResponseHeader)(frame, 0)
            body, m = entity_reader(schema)(frame, n)
            assert n + m == size
            out.append(body)
            pos += 4 + size
        return out


@pytest.fixture
def wire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    loop = asyncio.new_event_loop()
    broker = Broker(local_config(tmp_path / "data"), clock=ManualClock(1_700_000_000_000))
    loop.run_until_complete(broker.start())
    transport = _Transport()
    connection = KafkaConnection(
        Dispatcher(broker), 100 << 20, broker.connections, broker.request_memory
    )
    connection.connection_made(transport)
    w = Wire(broker, connection, transport, loop)

    # Spies, not stand-ins: they note what storage is handed and call the real thing.
    real_append = PartitionLog.append_as_leader
    real_write = LogSegment.append

    def append_as_leader(self: PartitionLog, records: Any, **kw: Any) -> Any:
        w.appended.append(records)
        return real_append(self, records, **kw)

    def segment_append(self: LogSegment, data: Any, batches: Any, **kw: Any) -> None:
        w.written.append(data)
        real_write(self, data, batches, **kw)

    monkeypatch.setattr(PartitionLog, "append_as_leader", append_as_leader)
    monkeypatch.setattr(LogSegment, "append", segment_append)
    try:
        yield w
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()


def _batch(n: int, size: int) -> bytes:
    return encode_batch(
        [SimpleRecord(bytes([i % 251]) * size, key=b"k%d" % i) for i in range(n)]
    )


def _stored(w: Wire, topic: str) -> bytes:
    log = w.broker.topics.log(topic, 0)
    log.flush()
    return b"".join(Path(s.log_path).read_bytes() for s in log.log_segments)


def _check_zero_copy(
    w: Wire, i: int, records_pos: int, batch: bytes, base_offset: int
) -> memoryview:
    """The records of the ``i``-th append are where the socket put them (``records_pos`` in the
    stream), patched in place, and that same memory went to the segment file."""
    records = w.appended[i]
    assert isinstance(records, memoryview) and not records.readonly
    assert len(records) == len(batch)
    assert w.moved(records, records_pos) == 0
    data = w.written[i]
    assert isinstance(data, memoryview)
    assert _address(data) == _address(records) and len(data) == len(records)
    # Storage wrote the offset (and leader epoch) into the received bytes themselves.
    assert read_batch_header(records).base_offset == base_offset
    assert bytes(records[17:]) == batch[17:]  # from the CRC on, exactly as the client sent it
    return records


def _create(wire: Wire, topic: str, configs: dict[str, str]) -> None:
    assert wire.loop is not None
    wire.loop.run_until_complete(
        wire.broker.topics.create(topic, num_partitions=1, configs=configs)
    )


def test_small_produce_reaches_the_segment_without_a_copy(wire: Wire) -> None:
    topic = "small"
    _create(wire, topic, {})
    first, second = _batch(3, 100), _batch(5, 200)
    frames = [wire.produce_frame(topic, first), wire.produce_frame(topic, second)]
    # Two pipelined requests arrive in one read: both are carved out of the receive chunk.
    wire.receive(b"".join(frames), read=65536)
    assert [r.responses[0].partition_responses[0].base_offset for r in wire.responses()] == [0, 3]
    assert len(wire.appended) == 2
    a = _check_zero_copy(wire, 0, frames[0].index(first), first, 0)
    b = _check_zero_copy(wire, 1, len(frames[0]) + frames[1].index(second), second, 3)
    assert a.obj is b.obj  # the one receive chunk the socket wrote both requests into
    assert _stored(wire, topic) == bytes(a) + bytes(b)


def test_large_produce_reaches_the_segment_without_a_copy(wire: Wire) -> None:
    """A request larger than the receive chunk is read into a buffer of its own. The first one
    on a connection is recognised only after its start has arrived, which is moved once; after
    it the broker reads the next size prefix alone, so the following ones are not copied at
    all."""
    topic = "large"
    _create(wire, topic, {"max.message.bytes": "4000000"})
    first, second = _batch(600, 1000), _batch(900, 1000)
    assert len(first) > RECEIVE_BUFFER_BYTES
    f1, f2 = wire.produce_frame(topic, first), wire.produce_frame(topic, second)
    wire.receive(f1, read=65536)
    wire.receive(f2, read=65536)
    assert [r.responses[0].partition_responses[0].error_code for r in wire.responses()] == [
        ErrorCode.none, ErrorCode.none
    ]
    a, b = wire.appended
    # The first request's buffer is its own; only the start of it that came with its size
    # prefix was copied into it.
    assert isinstance(a.obj, mmap.mmap) and len(a) == len(first)
    assert 0 < wire.moved(a, f1.index(first)) < 65536
    assert read_batch_header(a).base_offset == 0
    b = _check_zero_copy(wire, 1, len(f1) + f2.index(second), second, 600)
    assert isinstance(b.obj, mmap.mmap) and b.obj is not a.obj  # a is still held (by the spy)
    assert _stored(wire, topic) == bytes(a) + bytes(b)
