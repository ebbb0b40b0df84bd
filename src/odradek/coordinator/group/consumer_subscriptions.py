"""KIP-848 subscriptions: topic names and regular expressions resolved against the topics that
exist. Pure: the topics are given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from odradek.coordinator.group.consumer_model import ConsumerGroupMember
from odradek.coordinator.group.context import TopicInfo
from odradek.coordinator.group.records import TopicMetadata
from odradek.errors import InvalidRegularExpressionError
from odradek.topic_names import INTERNAL_TOPICS

__all__ = ["SubscriptionResolver", "compile_regex"]

# Kafka's internal topics are never matched by a regex subscription.
_NEVER_MATCHED = INTERNAL_TOPICS | {"__share_group_state"}


class SubscriptionResolver:
    """Resolves members' subscriptions (names and regexes) against one view of the topics."""

    def __init__(self, topics: Mapping[str, TopicInfo]) -> None:
        self._topics = topics
        self._regex_matches: dict[str, frozenset[str]] = {}

    def regex_topics(self, regex: str) -> frozenset[str]:
        matches = self._regex_matches.get(regex)
        if matches is None:
            try:
                pattern = compile_regex(regex)
            except InvalidRegularExpressionError:
                matches = frozenset()  # was validated when stored; be safe on replayed state
            else:
                matches = frozenset(
                    name
                    for name in self._topics
                    if name not in _NEVER_MATCHED and pattern.fullmatch(name)
                )
            self._regex_matches[regex] = matches
        return matches

    def member_topics(self, member: ConsumerGroupMember) -> frozenset[str]:
        names = frozenset(member.subscribed_topic_names)
        if member.subscribed_topic_regex:
            names |= self.regex_topics(member.subscribed_topic_regex)
        return names

    def subscription_metadata(
        self, members: Iterable[ConsumerGroupMember]
    ) -> dict[str, TopicMetadata]:
        """Metadata of every existing topic some member subscribes to."""
        names: set[str] = set()
        for m in members:
            names |= self.member_topics(m)
        out: dict[str, TopicMetadata] = {}
        for name in names:
            info = self._topics.get(name)
            if info is not None:
                out[name] = TopicMetadata(info.topic_id, info.name, info.partitions)
        return out


def compile_regex(regex: str) -> re.Pattern[str]:
    # Kafka uses RE2/J; Python's re agrees on the common syntax (classes, alternation,
    # repetition, anchors) and rejects what neither accepts.
    try:
        return re.compile(regex)
    except (re.error, RecursionError, OverflowError) as e:
        raise InvalidRegularExpressionError(
            f"SubscribedTopicRegex `{regex}` is not a valid regular expression: {e}."
        ) from e
