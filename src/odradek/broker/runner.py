"""Running a broker from blocking code: on its own thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from odradek.broker.app import Broker
from odradek.config import BrokerConfig

__all__ = ["BrokerThread", "run_in_thread", "local_config"]


def local_config(data_dir: str | Path, *, listen: str = "127.0.0.1:0", **properties: str) -> BrokerConfig:
    """A broker config for tests and embedding: Kafka property names as keyword arguments with
    dots written as underscores (``num_partitions="3"``)."""
    props = {k.replace("_", "."): v for k, v in properties.items()}
    return BrokerConfig.from_properties(props).with_overrides(listen=listen, data_dir=str(data_dir))


class BrokerThread:
    """A broker serving on a background thread. ``stop()`` shuts it down cleanly."""

    def __init__(self, config: BrokerConfig, **broker_options: Any) -> None:
        """``broker_options`` are keyword arguments of :class:`Broker` (a clock, test hooks)."""
        self.config = config
        self._broker_options = broker_options
        self._loop = asyncio.new_event_loop()
        self._started: Future[Broker] = Future()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="odradek-broker", daemon=True)
        self.broker: Broker

    def start(self) -> BrokerThread:
        self._thread.start()
        self.broker = self._started.result()
        return self

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        broker = Broker(self.config, **self._broker_options)
        try:
            await broker.start()
        except BaseException as e:
            self._started.set_exception(e)
            return
        self._started.set_result(broker)
        try:
            await self._stopping.wait()
        finally:
            await broker.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> BrokerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(config: BrokerConfig) -> BrokerThread:
    """Start a broker on a background thread and return once it is serving."""
    return BrokerThread(config).start()
