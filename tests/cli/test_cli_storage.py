"""``odradek storage verify DIR``: a readable report, exit status 0 intact / 1 corrupt / 2 usage."""

from __future__ import annotations

import struct
from pathlib import Path

from clirun import odradek

from odradek.clock import ManualClock
from odradek.protocol.records import SimpleRecord, encode_batch, read_batch_header
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig


def make_data_dir(root: Path) -> Path:
    data = root / "data"
    clock = ManualClock(1_700_000_000_000)
    config = LogConfig(segment_bytes=3000, index_interval_bytes=200)
    for p in range(2):
        plog = PartitionLog.open(data / f"orders-{p}", "orders", p, config, clock, recover=False)
        for i in range(80):
            rec = SimpleRecord(b"value-%03d" % i, key=b"k", timestamp=1_700_000_000_000 + i)
            plog.append_as_leader(encode_batch([rec]), leader_epoch=0)
        plog.close()
    (data / ".kafka_cleanshutdown").touch()
    return data


def batches(path: Path) -> list[tuple[int, int, int]]:
    """(position, size, base offset) of each batch of a .log file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        h = read_batch_header(data, pos)
        out.append((pos, h.size, h.base_offset))
        pos += h.size
    return out


def test_an_intact_data_dir_exits_0(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path)
    result = odradek("storage", "verify", str(data))
    out = result.stdout.decode()
    assert result.returncode == 0, (out, result.stderr)
    assert "orders-0: ok" in out and "orders-1: ok" in out
    assert "offsets up to 79" in out
    assert out.strip().endswith("2 partitions checked in " + str(data) + ": no problems")


def test_a_flipped_record_byte_exits_1_naming_partition_segment_position_offset(
    tmp_path: Path,
) -> None:
    data = make_data_dir(tmp_path)
    seg = sorted((data / "orders-1").glob("*.log"))[1]
    pos, size, offset = batches(seg)[3]
    raw = bytearray(seg.read_bytes())
    raw[pos + size - 3] ^= 0x01
    seg.write_bytes(bytes(raw))
    result = odradek("storage", "verify", str(data))
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert "orders-0: ok" in out and "orders-1: CORRUPT" in out
    assert f"orders-1/{seg.name} position {pos}, offset {offset}: CRC32C mismatch" in out
    assert "1 problem in 1 partition" in out


def test_an_index_entry_off_a_batch_boundary_exits_1(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path)
    index = sorted((data / "orders-0").glob("*.index"))[0]
    raw = bytearray(index.read_bytes())
    assert len(raw) >= 16
    rel, position = struct.unpack_from(">ii", raw, 8)
    struct.pack_into(">ii", raw, 8, rel, position + 1)
    index.write_bytes(bytes(raw))
    result = odradek("storage", "verify", str(data))
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert f"orders-0/{index.name} position 8" in out and "not a batch boundary" in out


def test_a_torn_tail_after_an_unclean_shutdown_is_reported_with_a_note(tmp_path: Path) -> None:
    data = make_data_dir(tmp_path)
    (data / ".kafka_cleanshutdown").unlink()
    seg = sorted((data / "orders-0").glob("*.log"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x00" * 30)
    result = odradek("storage", "verify", str(data))
    out = result.stdout.decode()
    assert result.returncode == 1, out
    assert "partial batch header (30 bytes left)" in out
    assert "did not shut down cleanly" in out


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = odradek("storage", "verify", str(tmp_path / "nope"))
    err = result.stderr.decode()
    assert result.returncode == 2
    assert err.strip() == f"odradek storage verify: {tmp_path / 'nope'}: no such directory"
    assert result.stdout == b""


def test_no_directory_given_is_a_usage_error() -> None:
    result = odradek("storage", "verify")
    assert result.returncode == 2
    assert b"DIR" in result.stderr and b"Traceback" not in result.stderr
