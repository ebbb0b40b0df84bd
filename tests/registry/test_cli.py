"""The registry from the command line: ``odradek serve --registry-listen``, ``odradek
registry`` and ``odradek schemas``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from registrykit import Http, registered

from odradek.broker.runner import BrokerThread
from odradek.cli.main import main
from odradek.registry.runner import RegistryThread

pytestmark = pytest.mark.integration

V1 = json.dumps({"type": "record", "name": "Cli", "fields": [{"name": "a", "type": "int"}]})
V2 = json.dumps({"type": "record", "name": "Cli", "fields": [
    {"name": "a", "type": "int"}, {"name": "b", "type": "long", "default": 0}]})
BAD = json.dumps({"type": "record", "name": "Cli", "fields": [{"name": "a", "type": "string"}]})


def _lines(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for _ in range(3):
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r}")


def test_serve_with_registry_listen(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "serve", "--log-level", "WARNING", "--listen",
         "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), "--registry-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _lines(proc, "odradek listening on")
        url = _lines(proc, "schema registry listening on").split()[-1]
        http = Http(url)
        assert registered(http("POST", "/subjects/served-value/versions",
                               {"schema": V1})) == (200, 1)
        assert http("GET", "/subjects") == (200, ["served-value"])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_standalone_registry(tmp_path: Path, registry_broker: BrokerThread) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "odradek", "registry", "--log-level", "WARNING", "--listen",
         "127.0.0.1:0", "--bootstrap-server", registry_broker.bootstrap, "--topic", "_alt"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = _lines(proc, "schema registry listening on").split()[-1]
        assert Http(url)("GET", "/subjects") == (200, [])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_schemas_commands(
    registry: RegistryThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", registry.url]
    v1, v2, bad = tmp_path / "v1.avsc", tmp_path / "v2.avsc", tmp_path / "bad.avsc"
    v1.write_text(V1)
    v2.write_text(V2)
    bad.write_text(BAD)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["schemas", *args, *url])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("register", "cli-value", str(v1))
    assert code == 0
    first = int(out)
    assert run("subjects", "--prefix", "cli-")[1] == "cli-value\n"
    assert run("versions", "cli-value")[1] == "1\n"
    assert json.loads(run("get", "cli-value")[1])["id"] == first
    assert json.loads(run("get", "--id", str(first))[1])["schema"] == V1
    assert run("check", "cli-value", str(v2))[:2] == (0, "compatible\n")
    code, out, _ = run("check", "cli-value", str(bad))
    assert code == 1 and out.startswith("incompatible\n") and len(out.splitlines()) > 1
    code, _, err = run("register", "cli-value", str(bad))
    assert code == 1 and "409" in err
    assert json.loads(run("config", "cli-value", "--set", "none")[1]) == {"compatibility": "NONE"}
    assert json.loads(run("config", "cli-value")[1]) == {"compatibilityLevel": "NONE"}
    assert run("register", "cli-value", str(bad))[0] == 0
    assert run("delete", "cli-value", "--version", "2")[1] == "2\n"
    assert run("delete", "cli-value")[1] == "1\n"
    assert run("delete", "cli-value", "--permanent")[1] == "1\n2\n"
    code, _, err = run("versions", "cli-value")
    assert code == 1 and "40401" in err
