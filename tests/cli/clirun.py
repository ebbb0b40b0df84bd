"""Running the ``odradek`` command line as a subprocess in CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["odradek", "ok", "fails"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ODRADEK_BOOTSTRAP"}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def odradek(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "odradek", *args],
        capture_output=True,
        env=_env(),
        timeout=60,
        check=False,
    )


def ok(*args: str) -> str:
    result = odradek(*args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def fails(*args: str) -> str:
    """Run a command that must fail with exit status 1 and one readable line on stderr."""
    result = odradek(*args)
    err = result.stderr.decode()
    assert result.returncode == 1, (result.stdout, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()
