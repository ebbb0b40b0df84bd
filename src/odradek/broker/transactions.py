"""The transaction coordinator on the broker's event loop: ``__transaction_state`` (created on
first use, compacted), its loading and timers (hosted as the group coordinator is, by
:class:`~odradek.broker.internal_topics.CoordinatorHost`), and the markers it writes.
Handlers reach it through :meth:`TxnRuntime.write` / :meth:`TxnRuntime.run` with the
transactional id, which answer COORDINATOR_LOAD_IN_PROGRESS while its partition is loading
and NOT_COORDINATOR when another broker leads it.

Markers are COMMIT/ABORT control batches appended to each partition of a transaction as the
coordinator; storage recognises them and ends the producer's transaction there (last stable
offset, aborted-transaction index). Each carries the coordinator epoch, as Kafka's: the leader
epoch of the transaction's ``__transaction_state`` partition. Storage keeps the latest per
producer and refuses an older one (TRANSACTION_COORDINATOR_FENCED), so a deposed coordinator
cannot end a transaction its successor has taken over. A marker in ``__consumer_offsets`` also
tells the group coordinator to commit or drop the transaction's pending offsets. Partitions this
broker leads get theirs here; the others' leaders get WriteTxnMarkers (:class:`_RemoteMarkers`),
whose handler does the same there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar, overload

from kio.schema.types import ProducerId, TopicName
from kio.schema.write_txn_markers.v1 import request as write_txn_markers_v1
from kio.static.primitive import i16, i32

from odradek.broker.errors import error_code_for
from odradek.broker.internal_topics import CoordinatorHost, InternalTopic, LoadHook
from odradek.coordinator.runtime import CoordinatorResult
from odradek.coordinator.timer import Timer
from odradek.coordinator.txn.context import TxnConfig
from odradek.coordinator.txn.coordinator import TransactionCoordinator, TransactionListing
from odradek.errors import ErrorCode
from odradek.protocol.records import encode_control_batch
from odradek.storage.log import AppendOrigin
from odradek.topic_names import OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices

__all__ = ["TxnRuntime"]

log = logging.getLogger("odradek.broker.transactions")

R = TypeVar("R")


#: (producer id, producer epoch, commit, coordinator epoch)
_MarkerKey = tuple[int, int, bool, int]
#: :meth:`_RemoteMarkers.take`'s answer for a marker still under way.
_IN_FLIGHT = object()


class TxnRuntime(CoordinatorHost):
    """Implements :class:`~odradek.coordinator.txn.context.TxnContext` for the broker."""

    def __init__(self, broker: BrokerServices, *, load_hook: LoadHook | None = None) -> None:
        self._broker = broker
        config = TxnConfig.from_broker(broker.config)
        existing = broker.topics.topic(TRANSACTION_STATE_TOPIC)
        if existing is not None:
            # Ids hash over the partitions the topic has, whatever the setting says today.
            config = dataclasses.replace(config, state_log_partitions=existing.partitions)
        self._config = config
        self._timer = Timer()
        self.coordinator = TransactionCoordinator(self)
        topic = InternalTopic(
            broker,
            TRANSACTION_STATE_TOPIC,
            self._config.state_log_partitions,
            {"cleanup.policy": "compact", "segment.bytes": "104857600",
             "compression.type": "uncompressed"},
        )
        super().__init__(broker, topic, self.coordinator, name="txn", load_hook=load_hook)
        self._remote_markers = _RemoteMarkers(broker, self.coordinator.retry_markers)
        # partition -> the leader epoch of the partition when this broker began to load it
        self._loaded_epochs: dict[int, int] = {}

    def partition_for(self, key: str) -> int:
        return self.coordinator.partition_for(key)

    def init_producer_id(
        self, transactional_id: str | None, op: Callable[[], CoordinatorResult[R]]
    ) -> R:
        """InitProducerId: an idempotent producer (no transactional id) involves no partition
        of the topic; a transactional one is a write of its id's partition."""
        if transactional_id is None:
            return self.runtime.execute(op())
        return self.write(transactional_id, op)

    def load(self, partition: int, skip: tuple[int, int] = (0, 0)) -> asyncio.Task[None]:
        self._loaded_epochs[partition] = self._leader_epoch(partition)
        return super().load(partition, skip)

    def unload(self, partition: int) -> None:
        super().unload(partition)
        self._loaded_epochs.pop(partition, None)
        self._remote_markers.clear()

    def _leader_epoch(self, partition: int) -> int:
        state = self._broker.cluster.partition(TRANSACTION_STATE_TOPIC, partition)
        return max(state.leader_epoch, 0) if state is not None else 0

    def coordinator_epoch(self, partition: int) -> int:
        """The coordinator epoch of ``partition`` of ``__transaction_state`` on this broker:
        its leader epoch while the image names this broker leader (the leader epoch moves on
        when a broker leads again after a restart, and the partition stays loaded), else the
        epoch it was loaded at, so that a broker deposed before it unloads writes an older
        epoch than its successor."""
        loaded = self._loaded_epochs.get(partition, 0)
        if self.leads(partition):
            return max(loaded, self._leader_epoch(partition))
        return loaded

    async def stop(self) -> None:
        await self._remote_markers.stop()
        await super().stop()

    def list_transactions(self, op: Callable[[], TransactionListing]) -> TransactionListing:
        """ListTransactions: COORDINATOR_LOAD_IN_PROGRESS while any partition loads, as Kafka."""
        self.check_loaded()
        return op()

    # -- TxnContext ---------------------------------------------------------------------------

    @property
    def timer(self) -> Timer:
        return self._timer

    @property
    def config(self) -> TxnConfig:
        return self._config

    def now_ms(self) -> int:
        return self._broker.clock.milliseconds()

    def allocate_producer_id(self) -> int:
        return self._broker.producer_ids.allocate()

    def write_markers(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        partitions: Sequence[tuple[str, int]],
        *,
        state_partition: int,
    ) -> dict[tuple[str, int], ErrorCode]:
        """Markers of partitions this broker leads are appended here; those of partitions
        another broker leads go to it in one WriteTxnMarkers per leader, and are left out of
        the result until its answer is in (the next call returns it; see
        :class:`_RemoteMarkers`). A partition without a leader is LEADER_NOT_AVAILABLE."""
        coordinator_epoch = self.coordinator_epoch(state_partition)
        batch = encode_control_batch(
            producer_id, producer_epoch, commit=commit, coordinator_epoch=coordinator_epoch,
            timestamp=self.now_ms(),
        )
        results: dict[tuple[str, int], ErrorCode] = {}
        remote: dict[int, list[tuple[str, int]]] = {}
        cluster = self._broker.cluster
        marker = (producer_id, producer_epoch, commit, coordinator_epoch)
        for topic, partition in partitions:
            state = cluster.partition(topic, partition)
            if state is None or state.leader == self._broker.node_id:
                # A marker appended here counts once replicated (Kafka's coordinator writes
                # it with acks=all): until then it is in flight, as a remote one is.
                tracked = self._remote_markers.take(marker, (topic, partition))
                if tracked is _IN_FLIGHT:
                    continue
                if isinstance(tracked, ErrorCode):
                    results[(topic, partition)] = tracked
                    continue
                # Unknown partitions are answered by the append (UNKNOWN_TOPIC_OR_PARTITION).
                code = self.append_marker(
                    topic, partition, batch, producer_id, commit, track=marker
                )
                if code is not None:
                    results[(topic, partition)] = code
            elif state.leader < 0:
                results[(topic, partition)] = ErrorCode.leader_not_available
            else:
                remote.setdefault(state.leader, []).append((topic, partition))
        if remote:
            results.update(self._remote_markers.write(marker, remote))
        return results

    @overload
    def append_marker(
        self, topic: str, partition: int, batch: bytes, producer_id: int, commit: bool
    ) -> ErrorCode: ...

    @overload
    def append_marker(
        self, topic: str, partition: int, batch: bytes, producer_id: int, commit: bool,
        *, track: _MarkerKey,
    ) -> ErrorCode | None: ...

    def append_marker(
        self, topic: str, partition: int, batch: bytes, producer_id: int, commit: bool,
        *, track: _MarkerKey | None = None,
    ) -> ErrorCode | None:
        """Append a COMMIT/ABORT control ``batch`` to ``topic``-``partition``; storage ends the
        producer's transaction there, and in ``__consumer_offsets`` the group coordinator
        commits or drops the transaction's pending offsets. Returns the partition's outcome;
        with ``track`` (the coordinator's own markers), None while the marker replicates: its
        outcome is kept as a remote marker's is, and the coordinator woken when it is in."""
        context = f"{'COMMIT' if commit else 'ABORT'} marker for {topic}-{partition}"
        try:
            info = self._broker.replicas.append_as_leader(
                topic, partition, batch, origin=AppendOrigin.COORDINATOR, required_acks=-1
            )
        except Exception as e:
            return error_code_for(e, context=context)
        replication = (
            self._broker.replicas.wait_for_replication(topic, partition, info)
            if track is not None else None
        )
        if track is not None and replication is not None:
            self._remote_markers.track(track, (topic, partition), replication)
        if topic == OFFSETS_TOPIC:
            try:
                self._broker.groups.on_marker(partition, producer_id, commit, info.last_offset)
            except Exception as e:
                # The marker is written; only the offsets cache missed it (as Kafka).
                return error_code_for(e, context=context)
        return None if replication is not None else ErrorCode.none

    def partition_exists(self, topic: str, partition: int) -> bool:
        meta = self._broker.topics.topic(topic)
        return meta is not None and 0 <= partition < meta.partitions

    def offsets_partition_for(self, group_id: str) -> int:
        return self._broker.groups.partition_for(group_id)




class _RemoteMarkers:
    """Markers for partitions other brokers lead, sent as WriteTxnMarkers (v1) to each leader
    through the broker's :class:`~odradek.broker.inter_broker.InterBrokerClient`, as Kafka's
    transaction marker channel does. :meth:`write` starts one request per leader for the
    partitions of a marker that have no write under way, and returns the outcomes that came in
    since the last call (each returned once); a write that comes back calls ``wake`` with the
    producer id, so the coordinator asks again at once (False: no transaction of that producer
    waits for markers, and the outcomes are dropped). A failed partition (the leader moved:
    NOT_LEADER_OR_FOLLOWER; the broker unreachable: NETWORK_EXCEPTION) is returned as such and
    the coordinator's retry sends it again, to the leader the image then names.

    Owned by the broker's event loop, with the transaction runtime."""

    def __init__(self, broker: BrokerServices, wake: Callable[[int], bool]) -> None:
        self._broker = broker
        self._wake = wake
        # marker -> partition -> outcome (None while its request is under way)
        self._outcomes: dict[_MarkerKey, dict[tuple[str, int], ErrorCode | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def write(
        self, marker: _MarkerKey, by_leader: dict[int, list[tuple[str, int]]]
    ) -> dict[tuple[str, int], ErrorCode]:
        outcomes = self._outcomes.setdefault(marker, {})
        results: dict[tuple[str, int], ErrorCode] = {}
        for leader, tps in by_leader.items():
            to_send = []
            for tp in tps:
                if tp not in outcomes:
                    to_send.append(tp)
                    continue
                code = outcomes[tp]
                if code is not None:
                    results[tp] = code
                    del outcomes[tp]
            if to_send:
                for tp in to_send:
                    outcomes[tp] = None
                task = asyncio.get_running_loop().create_task(
                    self._send(marker, leader, to_send),
                    name=f"odradek-txn-markers-{marker[0]}-to-{leader}",
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if not outcomes:
            del self._outcomes[marker]
        return results

    def take(self, marker: _MarkerKey, tp: tuple[str, int]) -> ErrorCode | object | None:
        """The outcome of a marker of ``tp`` this broker appended itself (returned once),
        :data:`_IN_FLIGHT` while it replicates, None when none is tracked."""
        outcomes = self._outcomes.get(marker)
        if outcomes is None or tp not in outcomes:
            return None
        code = outcomes[tp]
        if code is None:
            return _IN_FLIGHT
        del outcomes[tp]
        if not outcomes:
            del self._outcomes[marker]
        return code

    def track(self, marker: _MarkerKey, tp: tuple[str, int], replication: asyncio.Future[None]
              ) -> None:
        """A marker appended here replicates: its outcome is in once ``replication`` is done
        (the error the replica manager failed it with), and the coordinator is woken."""
        self._outcomes.setdefault(marker, {})[tp] = None

        def done(fut: asyncio.Future[None]) -> None:
            # Read first, even when nobody wants the outcome any more: a failure left unread
            # is reported as an exception never retrieved (found by the simulation).
            if fut.cancelled():
                code = ErrorCode.not_leader_or_follower
            else:
                exc = fut.exception()
                code = ErrorCode.none if exc is None else error_code_for(
                    exc if isinstance(exc, Exception) else RuntimeError(str(exc)),
                    context=f"marker for {tp[0]}-{tp[1]}",
                )
            outcomes = self._outcomes.get(marker)
            if outcomes is None or tp not in outcomes:
                return  # forgotten meanwhile (a partition of the topic was unloaded)
            outcomes[tp] = code
            if not self._wake(marker[0]):
                self._outcomes.pop(marker, None)

        replication.add_done_callback(done)

    async def _send(self, marker: _MarkerKey, leader: int, tps: list[tuple[str, int]]) -> None:
        producer_id, producer_epoch, commit, coordinator_epoch = marker
        by_topic: dict[str, list[int]] = {}
        for topic, partition in tps:
            by_topic.setdefault(topic, []).append(partition)
        v1 = write_txn_markers_v1
        body = v1.WriteTxnMarkersRequest(markers=(v1.WritableTxnMarker(
            producer_id=ProducerId(producer_id),
            producer_epoch=i16(producer_epoch),
            transaction_result=commit,
            topics=tuple(
                v1.WritableTxnMarkerTopic(
                    name=TopicName(topic), partition_indexes=tuple(i32(p) for p in parts)
                )
                for topic, parts in by_topic.items()
            ),
            coordinator_epoch=i32(coordinator_epoch),
        ),))
        codes: dict[tuple[str, int], ErrorCode] = {}
        try:
            response = await self._broker.inter_broker.send(leader, body)
            for result in response.markers:
                if result.producer_id != producer_id:
                    continue
                for topic in result.topics:
                    for p in topic.partitions:
                        codes[(topic.name, int(p.partition_index))] = ErrorCode(p.error_code)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            code = error_code_for(e, context=f"markers to broker {leader}")
            codes = dict.fromkeys(tps, code)
        outcomes = self._outcomes.setdefault(marker, {})
        for tp in tps:
            code = codes.get(tp, ErrorCode.unknown_server_error)
            outcomes[tp] = code
            if code is not ErrorCode.none:
                log.info(
                    "%s marker of producer %d for %s-%d on broker %d: %s",
                    "COMMIT" if commit else "ABORT", producer_id, tp[0], tp[1], leader, code.name,
                )
        if not self._wake(producer_id):
            # Nobody waits for these any more (the transaction completed, or its partition
            # moved to another coordinator): a later transaction must not take them for its own.
            self._outcomes.pop(marker, None)

    def clear(self) -> None:
        """Forget every outcome (a partition of the topic was unloaded: its transactions'
        markers are sent again by whichever coordinator finishes them)."""
        self._outcomes.clear()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
