"""Choosing the primary among registry instances through a Kafka consumer group.

Every instance of a group joins it as a consumer of the ``_schemas`` topic; the topic has one
partition, so the group's assignment gives it to exactly one member, and that member is the
primary (it alone writes; the others forward writes to it). The partition is paused at once:
the elector reads nothing, membership is all it wants. Each member's ``client.id`` is its URL,
so an instance finds the primary's address by describing the group (the member holding
partition 0). When the primary leaves or stops heartbeating, the group rebalances and the
partition goes to a survivor.

Owned by the registry's event loop, except :attr:`PrimaryElector.is_primary`, which the
elector's polling thread sets from the group's assignment callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

__all__ = ["PrimaryElector"]

_log = logging.getLogger("odradek.registry.election")


class PrimaryElector:
    """Membership of ``group_id``; :attr:`is_primary` while this instance holds the partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        url: str,
        *,
        session_timeout_ms: int = 10000,
        timeout: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.url = url
        self.timeout = timeout
        self._session_timeout_ms = session_timeout_ms
        self._primary = threading.Event()
        self._stopping = threading.Event()
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._admin: Any = None

    @property
    def is_primary(self) -> bool:
        return self._primary.is_set()

    async def start(self) -> None:
        common: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _log}
        self._consumer = Consumer({
            **common,
            "group.id": self.group_id,
            "client.id": self.url,
            "enable.auto.commit": False,
            "session.timeout.ms": self._session_timeout_ms,
            "heartbeat.interval.ms": max(100, self._session_timeout_ms // 5),
            "partition.assignment.strategy": "range",
        })
        self._admin = AdminClient(common)
        self._consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._thread = threading.Thread(target=self._poll_loop, name="registry-election",
                                        daemon=True)
        self._thread.start()

    def resign(self) -> None:
        """Leave the group (callable from any thread): the polling thread closes the consumer
        and the partition, with the role, goes to another member."""
        self._stopping.set()

    async def stop(self) -> None:
        self.resign()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consumer.poll(0.1)  # heartbeats and assignment callbacks run in here
            except (KafkaException, RuntimeError) as e:
                _log.warning("group %s: %s", self.group_id, e)
        self._primary.clear()
        try:
            self._consumer.close()  # leaves the group: the partition moves on at once
        except (KafkaException, RuntimeError) as e:
            _log.warning("leaving group %s: %s", self.group_id, e)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        if partitions:
            consumer.pause(partitions)
            self._primary.set()
            _log.info("%s is the primary of group %s", self.url, self.group_id)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        if self._primary.is_set():
            _log.info("%s is no longer the primary of group %s", self.url, self.group_id)
        self._primary.clear()

    async def primary_url(self) -> str | None:
        """The primary's URL as the group says now; ``None`` while there is none."""
        if self.is_primary:
            return self.url
        return await asyncio.to_thread(self._describe)

    def _describe(self) -> str | None:
        try:
            future = self._admin.describe_consumer_groups([self.group_id])[self.group_id]
            group = future.result(timeout=self.timeout)
        except KafkaException as e:
            _log.warning("describing group %s: %s", self.group_id, e)
            if e.args and getattr(e.args[0], "code", lambda: None)() == KafkaError.NOT_COORDINATOR:
                # Seen after a broker restarted within its session: the handle kept asking a
                # broker that no longer coordinates the group. A new handle looks it up anew.
                conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _log}
                self._admin = AdminClient(conf)
            return None
        for member in group.members:
            assignment = member.assignment
            if assignment is not None and any(
                tp.topic == self.topic for tp in assignment.topic_partitions
            ):
                return str(member.client_id)
        return None
