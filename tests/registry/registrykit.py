"""What the registry tests share: a real HTTP client and the formats lookup."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from odradek.registry.formats import SchemaFormat, get_format

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
