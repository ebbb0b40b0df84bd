"""DescribeConfigs of the BROKER resource against `odradek serve --config FILE --listen ...`, as
real clients see it: where each value came from (the file, the command line, Kafka's default)
and Kafka's synonyms."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType
from kafka.admin import ConfigResource as KConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient

pytestmark = pytest.mark.integration

STATIC = ConfigSource.STATIC_BROKER_CONFIG.value
DEFAULT = ConfigSource.DEFAULT_CONFIG.value


@dataclass(frozen=True)
class Served:
    port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A broker whose file sets num.partitions, log.retention.hours and log.dirs, and whose
    command line sets the listener and a different data directory."""
    base = tmp_path_factory.mktemp("broker-configs")
    conf = base / "server.properties"
    conf.write_text(
        "num.partitions=3\n"
        "log.retention.hours=24\n"
        f"log.dirs={base / 'from-file'}\n"
    )
    data = base / "from-cli"
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--log-level", "WARNING", "--config",
         str(conf), "--listen", "127.0.0.1:0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        assert line.startswith("odradek listening on 127.0.0.1:"), line
        yield Served(int(line.rsplit(":", 1)[1]), data)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def _describe(served: Served) -> dict[str, Any]:
    admin = AdminClient({"bootstrap.servers": served.bootstrap})
    resource = ConfigResource(ResourceType.BROKER, "1")
    return admin.describe_configs([resource])[resource].result(10)  # type: ignore[no-any-return]


def test_sources_of_file_command_line_and_default_settings(served: Served) -> None:
    configs = _describe(served)
    # Set in the file.
    partitions = configs["num.partitions"]
    assert (partitions.value, partitions.source, partitions.is_default) == ("3", STATIC, False)
    assert partitions.is_read_only
    # From the command line: --data-dir wins over the file's log.dirs; --listen is listeners.
    assert (configs["log.dirs"].value, configs["log.dirs"].source) == (str(served.data_dir),
                                                                       STATIC)
    assert (configs["listeners"].value, configs["listeners"].source) == (
        "PLAINTEXT://127.0.0.1:0", STATIC,
    )
    # advertised.listeners is not set: what the broker advertises, derived from --listen.
    advertised = configs["advertised.listeners"]
    assert (advertised.value, advertised.source) == (f"PLAINTEXT://127.0.0.1:{served.port}",
                                                     STATIC)
    assert not advertised.is_default
    # Untouched.
    segment = configs["log.segment.bytes"]
    assert (segment.value, segment.source, segment.is_default) == ("1073741824", DEFAULT, True)
    # log.retention.ms is unset: Kafka reports it null, from the defaults, whatever the hours say.
    retention_ms = configs["log.retention.ms"]
    assert (retention_ms.value, retention_ms.source) == (None, DEFAULT)
    assert (configs["log.retention.hours"].value, configs["log.retention.hours"].source) == (
        "24", STATIC,
    )
    assert all(entry.is_read_only for entry in configs.values())


def test_synonyms_in_kafkas_order(served: Served) -> None:
    kadmin = KafkaAdminClient(bootstrap_servers=served.bootstrap)
    try:
        wanted = {name: None for name in (
            "log.retention.hours", "log.retention.ms", "num.partitions", "log.roll.hours",
            "advertised.listeners",
        )}
        result = kadmin.describe_configs(
            [KConfigResource(ConfigResourceType.BROKER, "1", configs=wanted)],
            include_synonyms=True,
            config_filter="all",
        )
    finally:
        kadmin.close()
    entries = result["broker"]["1"]

    def synonyms(name: str) -> list[tuple[str, str | None, str]]:
        return [(s["name"], s["value"], s["source"]) for s in entries[name]["synonyms"]]

    assert synonyms("num.partitions") == [
        ("num.partitions", "3", "STATIC_BROKER_CONFIG"),
        ("num.partitions", "1", "DEFAULT_CONFIG"),
    ]
    assert synonyms("log.retention.hours") == [
        ("log.retention.hours", "24", "STATIC_BROKER_CONFIG"),
        ("log.retention.hours", "168", "DEFAULT_CONFIG"),
    ]
    assert synonyms("log.retention.ms") == []
    assert synonyms("log.roll.hours") == [("log.roll.hours", "168", "DEFAULT_CONFIG")]
    assert synonyms("advertised.listeners") == [
        ("listeners", "PLAINTEXT://127.0.0.1:0", "STATIC_BROKER_CONFIG"),
        ("listeners", "PLAINTEXT://:9092", "DEFAULT_CONFIG"),
    ]
