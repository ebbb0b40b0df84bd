"""Running an asyncio service from blocking code: on its own thread with its own event loop.

A service is anything with ``async start()`` and ``async stop()`` (the broker, the schema
registry). :class:`ServiceThread` makes it on that thread's loop, returns from :meth:`start`
once it serves (or raises what its start raised), and :meth:`stop` shuts it down cleanly. Other
threads talk to the service only by starting and stopping it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

__all__ = ["AsyncService", "ServiceThread"]


class AsyncService(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=AsyncService)


class ServiceThread(Generic[S]):
    """Owns its thread and event loop; ``service`` is set once :meth:`start` returns."""

    def __init__(self, make: Callable[[], S], *, name: str) -> None:
        """``make`` builds the service on the new loop (so it may bind to it)."""
        self._make = make
        self._loop = asyncio.new_event_loop()
        self._started: Future[S] = Future()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.service: S

    def start(self) -> Self:
        self._thread.start()
        self.service = self._started.result()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        service = self._make()
        try:
            await service.start()
        except BaseException as e:
            self._started.set_exception(e)
            return
        self._started.set_result(service)
        try:
            await self._stopping.wait()
        finally:
            await service.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
