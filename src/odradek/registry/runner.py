"""Running a registry from blocking code: on its own thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import Any

from odradek.registry.server import RegistryServer

__all__ = ["RegistryThread"]


class RegistryThread:
    """A :class:`RegistryServer` serving on a background thread; ``stop()`` shuts it down.
    Keyword arguments are :class:`RegistryServer`'s (``port=0`` by default: a free port)."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        options.setdefault("port", 0)
        self._options = options
        self._bootstrap = bootstrap
        self._loop = asyncio.new_event_loop()
        self._started: Future[RegistryServer] = Future()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="odradek-registry", daemon=True)
        self.server: RegistryServer

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> RegistryThread:
        self._thread.start()
        self.server = self._started.result()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = RegistryServer(self._bootstrap, **self._options)
        try:
            await server.start()
        except BaseException as e:
            self._started.set_exception(e)
            return
        self._started.set_result(server)
        try:
            await self._stopping.wait()
        finally:
            await server.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> RegistryThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
