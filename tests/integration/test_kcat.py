"""kcat (librdkafka's command-line client) against the broker."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed"),
]


def _kcat(bootstrap: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kcat", "-b", bootstrap, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_kcat_produce_consume_and_metadata(bootstrap: str) -> None:
    topic = f"kcat-{uuid.uuid4().hex[:6]}"
    lines = [f"key{i}:value {i}" for i in range(20)]
    _kcat(bootstrap, "-P", "-t", topic, "-K:", "-z", "lz4", stdin="\n".join(lines) + "\n")
    out = _kcat(bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%o %k=%s\n")
    assert out.splitlines() == [f"{i} key{i}=value {i}" for i in range(20)]
    out = _kcat(bootstrap, "-C", "-t", topic, "-o", "15", "-e", "-f", "%o\n")
    assert out.split() == [str(i) for i in range(15, 20)]
    meta = _kcat(bootstrap, "-L", "-t", topic)
    assert f'topic "{topic}" with 1 partitions' in meta
    assert "leader 1" in meta
