"""The one owner of appends to partitions this broker leads, and of the leadership checks.

Who leads a partition, and in which leader epoch, is the broker's
:class:`~odradek.cluster.model.MetadataView` (``services.cluster``). Every request that must be
served by the leader -- produce, client fetches, ListOffsets, OffsetForLeaderEpoch,
DeleteRecords -- takes its log from :meth:`ReplicaManager.leader_log`, which answers as Kafka's
``Partition.localLogWithEpochOrThrow`` does: UNKNOWN_TOPIC_OR_PARTITION for a partition the view
does not know, NOT_LEADER_OR_FOLLOWER for one this broker does not hold, FENCED_LEADER_EPOCH /
UNKNOWN_LEADER_EPOCH for a client's older / newer leader epoch (KIP-320), NOT_LEADER_OR_FOLLOWER
for one another broker leads.

Every write to a partition log -- a client's produce, a coordinator's records in
``__consumer_offsets`` or ``__transaction_state``, a transaction marker -- goes through
:meth:`ReplicaManager.append_as_leader`: it appends in the view's leader epoch (the log's epoch
cache starts a newer epoch at the log end offset with that append), then advances the high
watermark and wakes the fetches waiting on the partition. With one replica the in-sync replica
set is the leader alone, so the high watermark follows the log end offset at once; when
replication arrives, this is the one place that waits for the ISR. A broker marked
``fenced`` (its registration's lease may have expired) appends nothing.

Owned by the broker's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from odradek.errors import (
    FencedLeaderEpochError,
    NotLeaderOrFollowerError,
    UnknownLeaderEpochError,
    UnknownTopicOrPartitionError,
)
from odradek.storage.log import AppendOrigin, LogAppendInfo, PartitionLog

if TYPE_CHECKING:
    from odradek.broker.services import BrokerServices
    from odradek.cluster.model import PartitionState

__all__ = [
    "ReplicaManager",
    "check_leader_epoch",
    "end_offset_for_epoch",
    "epoch_for_offset",
]


def check_leader_epoch(current_leader_epoch: int, leader_epoch: int) -> None:
    """Validate a client's idea of the leader epoch against the partition's (KIP-320); -1 means
    "not known", no check."""
    if current_leader_epoch < 0 or current_leader_epoch == leader_epoch:
        return
    if current_leader_epoch < leader_epoch:
        raise FencedLeaderEpochError(
            f"leader epoch {current_leader_epoch} is older than the current {leader_epoch}"
        )
    raise UnknownLeaderEpochError(
        f"leader epoch {current_leader_epoch} is newer than the current {leader_epoch}"
    )


def end_offset_for_epoch(log: PartitionLog, epoch: int, leader_epoch: int) -> tuple[int, int]:
    """OffsetForLeaderEpoch's answer (epoch, end offset) for ``epoch`` on the leader of
    ``leader_epoch``. Kafka records a new leader epoch at the log end offset when the broker
    becomes leader; here the log records it with the epoch's first append, so until then the
    answer is computed as if it were recorded (no file is written on a read)."""
    latest = log.leader_epoch
    if leader_epoch <= latest or epoch < 0:
        return log.end_offset_for_epoch(epoch)
    end = log.log_end_offset
    if epoch == leader_epoch:
        return epoch, end
    if epoch > leader_epoch:
        return -1, -1
    if latest < 0:  # older than every epoch the log knows: it ends where the first starts
        return epoch, end
    if epoch >= latest:  # the latest recorded epoch ends where the current one starts
        return latest, end
    return log.end_offset_for_epoch(epoch)


def epoch_for_offset(log: PartitionLog, offset: int, leader_epoch: int) -> int:
    """The leader epoch of ``offset`` (ListOffsets' earliest), counting the current epoch as
    started at the log end offset when no append has recorded it yet."""
    if leader_epoch > log.leader_epoch and offset >= log.log_end_offset:
        return leader_epoch
    return log.epoch_for_offset(offset)


class ReplicaManager:
    """Leadership checks and appends as leader; see the module docs. Reads the view, the node
    id and ``fenced`` from the broker at every call, so a view replaced meanwhile (the cluster
    image) is used at once."""

    def __init__(self, broker: BrokerServices) -> None:
        self._broker = broker

    def leader_state(
        self, topic: str, partition: int, current_leader_epoch: int = -1
    ) -> PartitionState:
        """The state of a partition this broker leads, checked as the module docs say."""
        broker = self._broker
        state = broker.cluster.partition(topic, partition)
        if state is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        node_id = broker.node_id
        if node_id not in state.replicas:
            raise NotLeaderOrFollowerError(
                f"broker {node_id} holds no replica of {topic}-{partition}"
            )
        check_leader_epoch(current_leader_epoch, state.leader_epoch)
        if state.leader != node_id:
            raise NotLeaderOrFollowerError(
                f"broker {node_id} is not the leader of {topic}-{partition} "
                f"(leader {state.leader}, epoch {state.leader_epoch})"
            )
        return state

    def leader_log(self, topic: str, partition: int, current_leader_epoch: int = -1) -> PartitionLog:
        """The log of a partition this broker leads (errors as :meth:`leader_state`)."""
        self.leader_state(topic, partition, current_leader_epoch)
        return self._broker.topics.log(topic, partition)

    def leader_log_and_epoch(
        self, topic: str, partition: int, current_leader_epoch: int = -1
    ) -> tuple[PartitionLog, int]:
        """:meth:`leader_log` and the partition's leader epoch."""
        state = self.leader_state(topic, partition, current_leader_epoch)
        return self._broker.topics.log(topic, partition), state.leader_epoch

    def check_writable(self, topic: str, partition: int) -> PartitionState:
        """The state of a partition this broker may append to: it leads it and is not
        fenced."""
        if self._broker.fenced:
            raise NotLeaderOrFollowerError(
                f"broker {self._broker.node_id} is fenced: its registration may have expired"
            )
        return self.leader_state(topic, partition)

    def append_as_leader(
        self,
        topic: str,
        partition: int,
        records: bytes | bytearray | memoryview,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        """Append ``records`` (validated and given offsets by storage) in the partition's leader
        epoch, then advance the high watermark over them and wake waiting fetches. A retried
        batch the log recognised as a duplicate changes nothing. Raises what
        :meth:`check_writable` and :meth:`PartitionLog.append_as_leader` raise; nothing is
        written then."""
        state = self.check_writable(topic, partition)
        plog = self._broker.topics.log(topic, partition)
        info = plog.append_as_leader(records, leader_epoch=state.leader_epoch, origin=origin)
        if not info.duplicate:
            self._maybe_advance_high_watermark(topic, partition, plog)
        return info

    def _maybe_advance_high_watermark(self, topic: str, partition: int, plog: PartitionLog) -> None:
        # The ISR is the leader alone: everything appended is replicated.
        if plog.high_watermark < plog.log_end_offset:
            plog.update_high_watermark(plog.log_end_offset)
            self._broker.append_watch.notify((topic, partition))
