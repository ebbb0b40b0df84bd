"""Names of the internal topics, defined once for every layer."""

from __future__ import annotations

__all__ = ["INTERNAL_TOPICS", "OFFSETS_TOPIC", "TRANSACTION_STATE_TOPIC", "is_internal"]

#: Committed offsets and group state (the group coordinator's log).
OFFSETS_TOPIC = "__consumer_offsets"
#: Transactional ids and transaction states (the transaction coordinator's log).
TRANSACTION_STATE_TOPIC = "__transaction_state"

INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})


def is_internal(topic: str) -> bool:
    return topic in INTERNAL_TOPICS
