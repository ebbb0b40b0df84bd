"""Small facts shared by handlers."""

from __future__ import annotations

from odradek.errors import FencedLeaderEpochError, UnknownLeaderEpochError

__all__ = ["LEADER_EPOCH", "is_internal", "INTERNAL_TOPICS", "check_leader_epoch"]

# A single broker leads every partition from the start and never hands leadership over.
LEADER_EPOCH = 0

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


def is_internal(topic: str) -> bool:
    return topic in INTERNAL_TOPICS


def check_leader_epoch(current_leader_epoch: int) -> None:
    """Validate a client's idea of the leader epoch (KIP-320); -1 means "not known", no check."""
    if current_leader_epoch < 0 or current_leader_epoch == LEADER_EPOCH:
        return
    if current_leader_epoch < LEADER_EPOCH:
        raise FencedLeaderEpochError(f"leader epoch {current_leader_epoch} is stale")
    raise UnknownLeaderEpochError(f"leader epoch {current_leader_epoch} is not known yet")
