"""Running a registry from blocking code: on its own thread with its own event loop."""

from __future__ import annotations

from typing import Any

from odradek.registry.server import RegistryServer
from odradek.service_thread import ServiceThread

__all__ = ["RegistryThread"]


class RegistryThread(ServiceThread[RegistryServer]):
    """A :class:`RegistryServer` serving on a background thread; ``stop()`` shuts it down.
    Keyword arguments are :class:`RegistryServer`'s (``port=0`` by default: a free port)."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        options.setdefault("port", 0)
        super().__init__(lambda: RegistryServer(bootstrap, **options), name="odradek-registry")

    @property
    def server(self) -> RegistryServer:
        return self.service

    @property
    def url(self) -> str:
        return self.service.url
