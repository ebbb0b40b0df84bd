from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from odradek.broker.runner import BrokerThread, local_config
from odradek.registry.formats import SchemaFormat, get_format
from odradek.registry.runner import RegistryThread

CT = "application/vnd.schemaregistry.v1+json"


def formats(schema_type: str) -> SchemaFormat:
    """The formats the registry serves (a hook kept for tests that need another lookup)."""
    return get_format(schema_type)


class Http:
    """A real HTTP client (aiohttp) against one registry; each call is one request."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
        content_type: str = CT,
    ) -> tuple[int, Any]:
        return asyncio.run(self._call(method, path, body, raw, content_type))

    async def _call(
        self, method: str, path: str, body: Any, raw: bytes | None, content_type: str
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        async with aiohttp.ClientSession() as session, session.request(
            method, self.url + path, data=data, headers={"Content-Type": content_type}
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except json.JSONDecodeError:
                return resp.status, text


@pytest.fixture(scope="module")
def registry_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerThread]:
    data: Path = tmp_path_factory.mktemp("registry-broker")
    with BrokerThread(local_config(data)) as broker:
        yield broker


@pytest.fixture(scope="module")
def registry(registry_broker: BrokerThread) -> Iterator[RegistryThread]:
    with RegistryThread(registry_broker.bootstrap, formats=formats, timeout=15.0) as reg:
        yield reg


@pytest.fixture(scope="module")
def http(registry: RegistryThread) -> Http:
    return Http(registry.url)
