"""`odradek serve` as a user runs it: start-up, configuration errors, clean shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--log-level", "WARNING", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_port_zero_prints_the_bound_address_and_sigterm_shuts_down_cleanly(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    proc = _serve("--listen", "127.0.0.1:0", "--data-dir", str(data))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("odradek listening on 127.0.0.1:")
    port = int(line.rsplit(":", 1)[1])
    assert port > 0
    p = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
    p.produce("served", value=b"hello")
    assert p.flush(10) == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert (data / ".kafka_cleanshutdown").exists()
    assert (data / "served-0").is_dir()


def test_serving_imports_no_client_tools(tmp_path: Path) -> None:
    # -X importtime lists every module the process imported, on stderr, as it imports it.
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "odradek", "serve", "--log-level", "WARNING",
         "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("odradek listening on 127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = err.splitlines()
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert "odradek.broker.app" in imported  # the list is complete enough to judge by
    cli = {m for m in imported if m.startswith("odradek.cli.")}
    assert cli == {"odradek.cli.main", "odradek.cli._common", "odradek.cli.serve"}
    assert not {m for m in imported if m.split(".")[0] == "confluent_kafka"}
    assert "hypothesis" not in imported  # (kio's failing try of hypothesis.strategies is listed)


def test_config_file_is_read_and_flags_win(tmp_path: Path) -> None:
    conf = tmp_path / "server.properties"
    conf.write_text(
        "# a Kafka-style file\n"
        "listeners=PLAINTEXT://127.0.0.1:1\n"
        f"log.dirs={tmp_path / 'from-file'}\n"
        "num.partitions=3\n"
        "log.segment.bytes=1048576\n"
    )
    proc = _serve("--config", str(conf), "--listen", "127.0.0.1:0")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("odradek listening on 127.0.0.1:"), line
    port = int(line.rsplit(":", 1)[1])
    p = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
    p.produce("three", value=b"x")
    assert p.flush(10) == 0
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert sorted(d.name for d in (tmp_path / "from-file").glob("three-*")) == [
        "three-0", "three-1", "three-2"
    ]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("no.such.setting=1\n", "no.such.setting"),
        ("log.segment.bytes=abc\n", "log.segment.bytes"),
        ("num.partitions=-4\n", "num.partitions"),
        ("listeners=SSL://127.0.0.1:9093\n", "listeners"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_key(
    tmp_path: Path, content: str, key: str
) -> None:
    conf = tmp_path / "server.properties"
    conf.write_text(content)
    proc = _serve("--config", str(conf), "--data-dir", str(tmp_path / "d"))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert key in err
    assert "Traceback" not in err
    assert out == ""


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = _serve("--config", str(tmp_path / "nope.properties"))
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "nope.properties" in err
    assert "Traceback" not in err


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = _serve("--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "a"))
    assert first.stdout is not None
    port = first.stdout.readline().rsplit(":", 1)[1].strip()
    try:
        second = _serve("--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "b"))
        _, err = second.communicate(timeout=20)
        assert second.returncode == 1
        assert "cannot start" in err
        assert "Traceback" not in err
    finally:
        first.terminate()
        first.wait(10)
