"""The services seam: what API handlers and coordinator runtimes may use of the broker.

Handlers and runtimes depend on this Protocol, never on :class:`odradek.broker.app.Broker`, so
what they reach is named here and the broker can be assembled differently (a cluster member, a
test double of one piece) without touching them. Everything here is owned by the broker's event
loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from odradek.broker.contract import ApiHandler
    from odradek.broker.delayed import AppendWatch
    from odradek.broker.groups import GroupRuntime
    from odradek.broker.inter_broker import InterBrokerClient
    from odradek.broker.replica_manager import ReplicaManager
    from odradek.broker.timings import RequestTimings
    from odradek.broker.topics import TopicManager
    from odradek.broker.transactions import TxnRuntime
    from odradek.clock import Clock
    from odradek.cluster.model import MetadataView
    from odradek.cluster.partition_changes import PartitionChanges
    from odradek.cluster.producer_ids import ProducerIdManager
    from odradek.config import BrokerConfig
    from odradek.coordinator.group.coordinator import GroupCoordinator
    from odradek.coordinator.txn.coordinator import TransactionCoordinator
    from odradek.metadata.store import MetadataStore, TopicMetadata
    from odradek.storage.log_manager import LogManager

__all__ = ["BrokerServices"]


class BrokerServices(Protocol):
    """The broker as handlers see it."""

    @property
    def config(self) -> BrokerConfig: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def node_id(self) -> int: ...

    @property
    def advertised_host(self) -> str: ...

    @property
    def advertised_port(self) -> int: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def metadata(self) -> MetadataStore:
        """This broker's data dir's cluster id."""
        ...

    @property
    def producer_ids(self) -> ProducerIdManager:
        """Producer ids unique in the cluster (allocate() raises COORDINATOR_LOAD_IN_PROGRESS
        while the next block loads)."""
        ...

    @property
    def cluster(self) -> MetadataView:
        """What clients are told about the cluster and what leadership checks read: live
        brokers, the controller, every partition's replicas, ISR, leader and epochs."""
        ...

    @property
    def fenced(self) -> bool:
        """True while this broker's registration may have expired (its session lost): it must
        not act as leader, so every append is refused with NOT_LEADER_OR_FOLLOWER."""
        ...

    @property
    def partition_changes(self) -> PartitionChanges:
        """Reassignments and leader elections asked for by clients, written to the store."""
        ...

    @property
    def topics(self) -> TopicManager:
        """Topic rules: create, delete, alter, and the partition logs of existing topics."""
        ...

    @property
    def logs(self) -> LogManager: ...

    @property
    def replicas(self) -> ReplicaManager:
        """The one owner of appends (produce, coordinator records, markers)."""
        ...

    @property
    def inter_broker(self) -> InterBrokerClient:
        """Requests to other brokers of the cluster (the transaction coordinator's markers)."""
        ...

    @property
    def timings(self) -> RequestTimings:
        """Request-latency histograms; handlers record their own stages into it."""
        ...

    @property
    def append_watch(self) -> AppendWatch:
        """Wake-ups for fetches waiting on new data."""
        ...

    @property
    def groups(self) -> GroupRuntime:
        """The group coordinator's host: requests go through its ``write``/``run`` with the
        group id (COORDINATOR_LOAD_IN_PROGRESS while the group's partition loads)."""
        ...

    @property
    def group_coordinator(self) -> GroupCoordinator:
        """The group state machine itself: its operations return records, which only
        ``groups.write`` persists; reading it directly skips the loading check."""
        ...

    @property
    def transactions(self) -> TxnRuntime:
        """The transaction coordinator's host, used as :attr:`groups` is."""
        ...

    @property
    def txn_coordinator(self) -> TransactionCoordinator:
        """The transaction state machine itself (see :attr:`group_coordinator`)."""
        ...

    def supported_apis(self) -> Mapping[int, ApiHandler]:
        """What ApiVersions advertises: every registered handler, by API key."""
        ...

    def maybe_auto_create(self, name: str) -> Awaitable[TopicMetadata | None]:
        """``name``'s metadata, creating the topic first when ``auto.create.topics.enable``."""
        ...
