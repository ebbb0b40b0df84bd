"""A broker started on a damaged data directory: a fetch that meets a corrupt batch is answered
CORRUPT_MESSAGE (a consume error for confluent-kafka, not an endless silent retry), the intact
segments after it stay readable, and the scrubber finds damage no reader has met yet."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from groupkit import wait_until

from odradek.broker.runner import BrokerThread, local_config
from odradek.protocol.records import read_batch_header

pytestmark = pytest.mark.integration

TOPIC = "fragile"
MAGIC_AT = 16


def fill(data: Path, n: int) -> None:
    """``n`` one-record batches in ``fragile-0``, several segments, then a clean shutdown."""
    config = local_config(data, log_segment_bytes="1500", num_partitions="1")
    with BrokerThread(config) as b:
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
        for i in range(n):
            p.produce(TOPIC, key=b"k", value=b"value-%03d" % i)
            p.flush(10)
        assert p.flush(10) == 0


def batches(path: Path) -> list[tuple[int, int, int]]:
    """(position, size, base offset) of each batch of a .log file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.append((pos, h.size, h.base_offset))
        pos += h.size
    return out


def flip(path: Path, position: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0xFF
    path.write_bytes(bytes(raw))


def consume_from(bootstrap: str, offset: int) -> tuple[list[int], list[KafkaError]]:
    """Poll from ``offset`` until a record or an error arrives (whichever comes first)."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"g-{offset}", "enable.auto.commit": False,
        "fetch.error.backoff.ms": 50,
    })
    try:
        c.assign([TopicPartition(TOPIC, 0, offset)])
        offsets: list[int] = []
        errors: list[KafkaError] = []
        deadline = time.monotonic() + 20
        while not offsets and not errors and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                errors.append(msg.error())
            else:
                offsets.append(msg.offset())
        return offsets, errors
    finally:
        c.close()


def test_corrupt_header_in_closed_segment_is_corrupt_message_and_later_segments_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    fill(data, 60)
    segments = sorted((data / f"{TOPIC}-0").glob("*.log"))
    assert len(segments) >= 3
    pos, _size, bad = batches(segments[0])[4]
    flip(segments[0], pos + MAGIC_AT)
    later = int(segments[1].name[:20])
    caplog.set_level(logging.WARNING, "odradek")
    # The scrubber is off here: the fetch is what finds the damage.
    with BrokerThread(local_config(data, log_scrubber_enable="false")) as b:
        offsets, errors = consume_from(b.bootstrap, bad)
        assert offsets == [] and errors, "the corrupt batch must surface as an error"
        # librdkafka names Kafka's CORRUPT_MESSAGE (2) INVALID_MSG.
        assert errors[0].code() == KafkaError.INVALID_MSG == 2
        plog = b.broker.logs.get_log(TOPIC, 0)
        assert plog is not None
        # A second reader meets it again: counted again, logged once.
        reads = plog.health.corrupt_reads
        assert reads >= 1
        offsets, errors = consume_from(b.bootstrap, bad)
        assert offsets == [] and errors[0].code() == KafkaError.INVALID_MSG
        assert plog.health.corrupt_reads > reads
        assert plog.health.corrupt_batches == 1
        offsets, errors = consume_from(b.bootstrap, later)
        assert (offsets, errors) == ([later], [])
    lines = [r.getMessage() for r in caplog.records if "corrupt record batch" in r.getMessage()]
    assert len(lines) == 1
    assert f"{TOPIC}-0" in lines[0] and f"position {pos}" in lines[0]
    assert f"offset {bad})" in lines[0]
    # No traceback, no UNKNOWN_SERVER_ERROR path.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_scrubber_reports_damage_in_a_broker_started_on_a_corrupt_data_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    fill(data, 60)
    segments = sorted((data / f"{TOPIC}-0").glob("*.log"))
    pos, size, bad = batches(segments[1])[2]
    flip(segments[1], pos + size - 2)  # a record byte: only a CRC check can tell
    caplog.set_level(logging.WARNING, "odradek")
    config = local_config(data, log_scrubber_bytes_per_second="100000")
    with BrokerThread(config) as b:
        # Logs open in the background on the broker's thread; take this one once it is open
        # rather than opening it from the test's thread.
        wait_until(lambda: b.broker.logs.pending_count == 0, "every log open")
        plog = b.broker.logs.get_log(TOPIC, 0)
        assert plog is not None
        wait_until(lambda: b.broker.scrubber.corrupt_batches_found == 1, "the scrubber's finding")
        (found,) = plog.health.corruptions()
        assert (found.segment_base_offset, found.position, found.offset, found.found_by) == (
            int(segments[1].name[:20]), pos, bad, "scrubber"
        )
    (line,) = [r.getMessage() for r in caplog.records if "corrupt record batch" in r.getMessage()]
    assert f"{TOPIC}-0" in line and f"segment {segments[1].name[:20]}" in line
    assert "scrubber" in line and "CRC32C" in line
