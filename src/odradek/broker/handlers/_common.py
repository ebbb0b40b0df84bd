"""Small facts shared by handlers."""

from __future__ import annotations

__all__ = ["LEADER_EPOCH", "is_internal", "INTERNAL_TOPICS"]

# A single broker leads every partition from the start and never hands leadership over.
LEADER_EPOCH = 0

INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


def is_internal(topic: str) -> bool:
    return topic in INTERNAL_TOPICS
