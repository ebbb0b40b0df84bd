"""Running a broker from blocking code: on its own thread with its own event loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odradek.broker.app import Broker
from odradek.config import BrokerConfig
from odradek.service_thread import ServiceThread

__all__ = ["BrokerThread", "run_in_thread", "local_config"]


def local_config(data_dir: str | Path, *, listen: str = "127.0.0.1:0", **properties: str) -> BrokerConfig:
    """A broker config for tests and embedding: Kafka property names as keyword arguments with
    dots written as underscores (``num_partitions="3"``)."""
    props = {k.replace("_", "."): v for k, v in properties.items()}
    return BrokerConfig.from_properties(props).with_overrides(listen=listen, data_dir=str(data_dir))


class BrokerThread(ServiceThread[Broker]):
    """A broker serving on a background thread. ``stop()`` shuts it down cleanly."""

    def __init__(self, config: BrokerConfig, **broker_options: Any) -> None:
        """``broker_options`` are keyword arguments of :class:`Broker` (a clock, test hooks)."""
        super().__init__(lambda: Broker(config, **broker_options), name="odradek-broker")
        self.config = config

    @property
    def broker(self) -> Broker:
        return self.service

    @property
    def bootstrap(self) -> str:
        return self.service.bootstrap


def run_in_thread(config: BrokerConfig) -> BrokerThread:
    """Start a broker on a background thread and return once it is serving."""
    return BrokerThread(config).start()
