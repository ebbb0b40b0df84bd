"""Running the registry: its store, its service and its HTTP listener on the current event loop.

:class:`RegistryServer` is what both ``odradek serve --registry-listen`` (in the broker's
process and loop, bootstrapped from the broker's own address) and ``odradek registry`` (against
any Kafka cluster) start. Owned by the event loop that calls :meth:`RegistryServer.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import web

from odradek.registry.app import DEFAULT_MAX_BODY_BYTES, make_app
from odradek.registry.election import PrimaryElector
from odradek.registry.formats import SchemaFormat, get_format
from odradek.registry.service import SchemaRegistry
from odradek.registry.store import DEFAULT_TOPIC, KafkaStore

__all__ = ["RegistryServer", "parse_listener"]

_log = logging.getLogger("odradek.registry")
#: How long a registry of a group waits for a starting cluster to have three live brokers
#: before creating ``_schemas`` with fewer replicas.
_CLUSTER_WAIT_S = 15.0


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
        group_id: str | None = None,
        advertised_url: str | None = None,
        session_timeout_ms: int = 10000,
    ) -> None:
        """With ``group_id``, the instance joins that group to elect a primary and forwards
        writes to it (``advertised_url`` is how the others reach this one, by default its
        listener); without, it is the only instance and the primary."""
        self.host = host
        self.port = port
        # With a group, several instances are expected, in a cluster that may still be
        # starting: creating _schemas waits a little for it to fill (KafkaStore._ensure_topic).
        self.store = KafkaStore(
            bootstrap, topic=topic, timeout=timeout,
            cluster_wait=_CLUSTER_WAIT_S if group_id is not None else 0.0,
        )
        self.registry = SchemaRegistry(self.store, formats=formats)
        self._bootstrap = bootstrap
        self._topic = topic
        self._timeout = timeout
        self._group_id = group_id
        self._advertised_url = advertised_url
        self._session_timeout_ms = session_timeout_ms
        self._max_body_bytes = max_body_bytes
        self.elector: PrimaryElector | None = None
        self._runner: web.AppRunner | None = None
        self._warming: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await self.store.start()
        self._warming = asyncio.create_task(self.registry.warm(), name="registry-warm")
        # The elector is made before the app and joins the group once the port is known (its
        # URL is its member name); until then every write waits for a primary.
        if self._group_id is not None:
            self.elector = PrimaryElector(
                self._bootstrap, self._topic, self._group_id, "",
                session_timeout_ms=self._session_timeout_ms, timeout=self._timeout,
            )
        app = make_app(self.registry, max_body_bytes=self._max_body_bytes, elector=self.elector)
        self._runner = web.AppRunner(app, access_log=None)
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
        if self.elector is not None:
            self.elector.url = self._advertised_url or self.url
            await self.elector.start()
        _log.info("schema registry listening on %s (store %s)", self.url, self.store.topic)

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        if self.elector is not None:
            await self.elector.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.stop()
