"""What the registry tests share: a real HTTP client and the formats lookup."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from confluent_kafka import Consumer, TopicPartition

from odradek.registry.formats import SchemaFormat, get_format

CT = "application/vnd.schemaregistry.v1+json"


def formats(schema_type: str) -> SchemaFormat:
    """The formats the registry serves (a hook kept for tests that need another lookup)."""
    return get_format(schema_type)


def registered(answer: tuple[int, Any]) -> tuple[int, Any]:
    """A register answer as (status, id): the body's guid is checked to be a UUID and left
    out; an error answer is returned as it is."""
    status, body = answer
    if status != 200:
        return answer
    assert set(body) == {"id", "guid"} and len(body["guid"]) == 36, body
    return status, body["id"]


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


def read_topic(bootstrap: str) -> list[tuple[bytes, bytes | None]]:
    """Every committed record of ``_schemas``; the registry writes in transactions, so the end offset also
    counts their markers, which a reader passes but is never handed."""
    tp = TopicPartition("_schemas", 0)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                         "isolation.level": "read_committed"})
    _, high = consumer.get_watermark_offsets(tp, 10, False)
    consumer.assign([TopicPartition("_schemas", 0, 0)])
    out = []
    deadline = time.monotonic() + 20
    while consumer.position([tp])[0].offset < high:
        assert time.monotonic() < deadline, "the topic was not read to its end"
        msg = consumer.poll(0.2)
        if msg is not None:
            assert msg.error() is None
            out.append((msg.key(), msg.value()))
    consumer.close()
    return out
