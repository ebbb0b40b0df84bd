"""Running the registry: its store, its service and its HTTP listener on the current event loop.

:class:`RegistryServer` is what both ``odradek serve --registry-listen`` (in the broker's
process and loop, bootstrapped from the broker's own address) and ``odradek registry`` (against
any Kafka cluster) start. Owned by the event loop that calls :meth:`RegistryServer.start`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from odradek.registry.app import DEFAULT_MAX_BODY_BYTES, make_app
from odradek.registry.formats import SchemaFormat, get_format
from odradek.registry.service import SchemaRegistry
from odradek.registry.store import DEFAULT_TOPIC, KafkaStore

__all__ = ["RegistryServer", "parse_listener"]

_log = logging.getLogger("odradek.registry")


def parse_listener(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or Confluent's ``http://HOST:PORT``; ValueError otherwise."""
    rest = text.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme.lower() != "http":
            raise ValueError(f"only http listeners are served, not {text!r}")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class RegistryServer:
    """A registry serving HTTP on ``host:port`` (port 0 picks one; :attr:`port` says which)."""

    def __init__(
        self,
        bootstrap: str,
        host: str = "127.0.0.1",
        port: int = 8081,
        *,
        topic: str = DEFAULT_TOPIC,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        timeout: float = 30.0,
        formats: Callable[[str], SchemaFormat] = get_format,
    ) -> None:
        self.host = host
        self.port = port
        self.store = KafkaStore(bootstrap, topic=topic, timeout=timeout)
        self.registry = SchemaRegistry(self.store, formats=formats)
        self._app = make_app(self.registry, max_body_bytes=max_body_bytes)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.store.start()
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        addresses = self._runner.addresses  # port 0 asks for a free port: which one it got
        if addresses:
            self.port = int(addresses[0][1])
        _log.info("schema registry listening on %s (store %s)", self.url, self.store.topic)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.stop()
