"""The helpers the commands share (``odradek.cli._common``) and the connection options of the
client commands (``odradek.cli._options``)."""

from __future__ import annotations

import argparse

import pytest

from odradek.cli._common import CliError, format_table, require_positive
from odradek.cli._options import (
    BOOTSTRAP_ENV,
    DEFAULT_BOOTSTRAP,
    ClientOptions,
    client_options,
    connection_parser,
)


def test_format_table_aligns_columns() -> None:
    lines = format_table(("A", "LONG-HEADER", "C"), [("xyz", 1, ""), ("q", 22, "last")])
    assert lines == ["A   LONG-HEADER C", "xyz 1", "q   22          last"]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(parents=[connection_parser()])
    return parser.parse_args(argv)


def test_client_options_flag_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    assert client_options(_parse()) == ClientOptions(DEFAULT_BOOTSTRAP, 5.0, False)
    monkeypatch.setenv(BOOTSTRAP_ENV, "env-host:1")
    assert client_options(_parse("--verbose")) == ClientOptions("env-host:1", 5.0, True)
    given = _parse("--bootstrap-server", "flag-host:2", "--connect-timeout", "0.5")
    assert client_options(given) == ClientOptions("flag-host:2", 0.5, False)


def test_client_options_mistakes() -> None:
    with pytest.raises(CliError, match="HOST:PORT"):
        client_options(_parse("--bootstrap-server", "nohost"))
    with pytest.raises(CliError, match="--connect-timeout must be positive"):
        client_options(_parse("--bootstrap-server", "h:1", "--connect-timeout", "0"))


def test_require_positive() -> None:
    require_positive(None, "--n")
    require_positive(0.1, "--n")
    for bad in (0, -1, 0.0):
        with pytest.raises(CliError, match="--n must be positive"):
            require_positive(bad, "--n")
