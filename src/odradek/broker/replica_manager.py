"""The one owner of appends to partitions this broker leads.

Every write to a partition log — a client's produce, a coordinator's records in
``__consumer_offsets`` or ``__transaction_state``, a transaction marker — goes through
:meth:`ReplicaManager.append_as_leader`: it appends as leader in the current leader epoch, then
advances the high watermark and wakes the fetches waiting on the partition. With one broker the
in-sync replica set is the leader alone, so the high watermark follows the log end offset at
once; when replication arrives, this is the one place that waits for the ISR.

Owned by the broker's event loop; nothing here is thread-safe.
"""

from __future__ import annotations

from odradek.broker.delayed import AppendWatch
from odradek.broker.topics import TopicManager
from odradek.errors import FencedLeaderEpochError, UnknownLeaderEpochError
from odradek.storage.log import AppendOrigin, LogAppendInfo, PartitionLog

__all__ = ["LEADER_EPOCH", "ReplicaManager", "check_leader_epoch"]

# A single broker leads every partition from the start and never hands leadership over.
LEADER_EPOCH = 0


def check_leader_epoch(current_leader_epoch: int) -> None:
    """Validate a client's idea of the leader epoch (KIP-320); -1 means "not known", no check."""
    if current_leader_epoch < 0 or current_leader_epoch == LEADER_EPOCH:
        return
    if current_leader_epoch < LEADER_EPOCH:
        raise FencedLeaderEpochError(f"leader epoch {current_leader_epoch} is stale")
    raise UnknownLeaderEpochError(f"leader epoch {current_leader_epoch} is not known yet")


class ReplicaManager:
    """Appends as leader and moves the high watermark; see the module docs."""

    def __init__(self, topics: TopicManager, append_watch: AppendWatch) -> None:
        self._topics = topics
        self._append_watch = append_watch

    def leader_log(self, topic: str, partition: int) -> PartitionLog:
        """The log of a partition this broker leads (UNKNOWN_TOPIC_OR_PARTITION otherwise)."""
        return self._topics.log(topic, partition)

    def append_as_leader(
        self,
        topic: str,
        partition: int,
        records: bytes | bytearray | memoryview,
        *,
        origin: AppendOrigin = AppendOrigin.CLIENT,
    ) -> LogAppendInfo:
        """Append ``records`` (validated and given offsets by storage), then advance the high
        watermark over them and wake waiting fetches. A retried batch the log recognised as a
        duplicate changes nothing. Raises what :meth:`PartitionLog.append_as_leader` raises;
        nothing is written then."""
        plog = self._topics.log(topic, partition)
        info = plog.append_as_leader(records, leader_epoch=LEADER_EPOCH, origin=origin)
        if not info.duplicate:
            self._maybe_advance_high_watermark(topic, partition, plog)
        return info

    def _maybe_advance_high_watermark(self, topic: str, partition: int, plog: PartitionLog) -> None:
        # The ISR is the leader alone: everything appended is replicated.
        if plog.high_watermark < plog.log_end_offset:
            plog.update_high_watermark(plog.log_end_offset)
            self._append_watch.notify((topic, partition))
