"""Server-side assignors of KIP-848 consumer groups: ``uniform`` and ``range``.

The consumer-group state machine calls :meth:`Assignor.assign` to compute a group's target
assignment whenever the group epoch moves. Assignors are pure: no I/O, no clock, no state kept
between calls, and the result depends only on the *set* of members (never on their order).

Shared contract of both assignors:

- every partition of a topic that exists and that at least one member subscribes to goes to
  exactly one member subscribed to it; nothing goes to a member not subscribed to its topic;
- subscribed topic ids missing from ``topics`` (deleted, or not yet created) are ignored;
- the result has an entry for every member, possibly ``{}``; a topic of which a member gets no
  partitions is left out of its entry rather than mapped to an empty set;
- ``current`` is the member's previous target and is used only for stickiness: partitions in it
  that are not (or no longer) valid — unsubscribed or missing topic, partition number beyond
  the topic's count, or also held by a member whose id sorts first — are dropped.

Member ids must be unique within one call. ``rack_id`` is accepted but not used: like Apache
Kafka's built-in server-side assignors of 3.8, neither assignor is rack aware.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from odradek.errors import UnsupportedAssignorError

__all__ = [
    "Assignment",
    "MemberSubscription",
    "Assignor",
    "UniformAssignor",
    "RangeAssignor",
    "ASSIGNORS",
    "UnsupportedAssignorError",
    "get_assignor",
]

Assignment = dict[uuid.UUID, frozenset[int]]
"""Topic id -> partition numbers of that topic."""

_TopicPartition = tuple[uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """What an assignor knows of one member: its subscription and its current target."""

    member_id: str
    rack_id: str | None
    subscribed_topic_ids: frozenset[uuid.UUID]
    current: Mapping[uuid.UUID, frozenset[int]]


class Assignor(Protocol):
    """A server-side assignor (``group.consumer.assignors``), selected by :attr:`name`."""

    name: str

    def assign(
        self, members: Sequence[MemberSubscription], topics: Mapping[uuid.UUID, int]
    ) -> dict[str, Assignment]:
        """Return the target assignment of every member; ``topics`` maps every existing topic
        id to its partition count."""
        ...


def _topic_order(topic_id: uuid.UUID) -> int:
    # UUIDs order by their int; sorting on it directly is much cheaper than UUID.__lt__.
    return topic_id.int


@dataclass(frozen=True, slots=True)
class _TopicClass:
    """Existing topics that have exactly the same subscribers."""

    member_ids: tuple[str, ...]  # sorted
    topic_ids: list[uuid.UUID]  # sorted


def _topic_classes(
    ordered: Sequence[MemberSubscription], topics: Mapping[uuid.UUID, int]
) -> tuple[list[_TopicClass], dict[uuid.UUID, int]]:
    """Group the subscribed, existing, non-empty topics by their subscriber sets.

    ``ordered`` is sorted by member id. Work is proportional to the distinct subscriptions, not
    to members x topics, so a large group sharing one subscription to many topics stays cheap.
    Returns the classes, ordered by their first topic id, and every such topic's class index.
    """
    by_subscription: dict[frozenset[uuid.UUID], list[str]] = {}
    for member in ordered:
        by_subscription.setdefault(member.subscribed_topic_ids, []).append(member.member_id)
    distinct = list(by_subscription.values())
    keys: dict[uuid.UUID, list[int]] = {}
    for index, subscription in enumerate(by_subscription):
        for topic_id in subscription:
            if topics.get(topic_id, 0) > 0:
                keys.setdefault(topic_id, []).append(index)
    grouped: dict[tuple[int, ...], list[uuid.UUID]] = {}
    for topic_id in sorted(keys, key=_topic_order):
        grouped.setdefault(tuple(keys[topic_id]), []).append(topic_id)
    classes: list[_TopicClass] = []
    topic_class: dict[uuid.UUID, int] = {}
    for key, topic_ids in grouped.items():
        if len(key) == 1:
            member_ids = tuple(distinct[key[0]])
        else:
            member_ids = tuple(sorted(m for index in key for m in distinct[index]))
        for topic_id in topic_ids:
            topic_class[topic_id] = len(classes)
        classes.append(_TopicClass(member_ids, topic_ids))
    return classes, topic_class


def _valid_current(
    member: MemberSubscription, topic_class: Mapping[uuid.UUID, int]
) -> list[tuple[uuid.UUID, frozenset[int]]]:
    """The member's current partitions of topics it still subscribes to and that still exist,
    by topic id (partition numbers are not checked here)."""
    return [
        (topic_id, member.current[topic_id])
        for topic_id in sorted(member.current, key=_topic_order)
        if topic_id in topic_class and topic_id in member.subscribed_topic_ids
    ]


class UniformAssignor:
    """Spreads all partitions of all subscribed topics evenly over the members.

    Balance comes first, then stickiness. With homogeneous subscriptions the members' partition
    counts differ by at most one. With heterogeneous subscriptions the result is balanced in
    Kafka's sense: no partition can be moved from its owner to another member subscribed to its
    topic that has at least two partitions fewer. Within that, every member keeps as much of its
    current target as it can: a partition only moves when balance requires it, always from the
    most loaded member, so a member joining or leaving moves the fewest partitions.

    Topics with identical subscriber sets are handled as one class; the cost is about
    O((P + M) log M) for P partitions and M members per class, plus the rebalancing moves.
    """

    name = "uniform"

    def assign(
        self, members: Sequence[MemberSubscription], topics: Mapping[uuid.UUID, int]
    ) -> dict[str, Assignment]:
        ordered = sorted(members, key=lambda m: m.member_id)
        member_ids = [m.member_id for m in ordered]
        # Any partition of a class may go to any of the class's subscribers, so classes are the
        # unit of balancing.
        classes, topic_class = _topic_classes(ordered, topics)
        member_classes: dict[str, list[int]] = {m: [] for m in member_ids}
        for index, cls in enumerate(classes):
            for member_id in cls.member_ids:
                member_classes[member_id].append(index)

        # held[member][class] is a stack: kept partitions first, then newly given ones, so
        # rebalancing takes newly given partitions away before kept ones.
        held: dict[str, dict[int, list[_TopicPartition]]] = {m: {} for m in member_ids}
        counts: dict[str, int] = dict.fromkeys(member_ids, 0)
        taken: set[_TopicPartition] = set()
        for member in ordered:
            stacks = held[member.member_id]
            for topic_id, partitions in _valid_current(member, topic_class):
                count = topics[topic_id]
                stack = stacks.setdefault(topic_class[topic_id], [])
                for partition in sorted(partitions):
                    tp = (topic_id, partition)
                    if 0 <= partition < count and tp not in taken:
                        taken.add(tp)
                        stack.append(tp)
            counts[member.member_id] = sum(len(s) for s in stacks.values())

        # Hand out the unowned partitions, most constrained classes (fewest subscribers, then
        # most partitions per subscriber) first, each to the least loaded subscriber.
        def class_order(index: int) -> tuple[int, float, int]:
            total = sum(topics[t] for t in classes[index].topic_ids)
            subscribers = len(classes[index].member_ids)
            return (subscribers, -total / subscribers, index)

        for index in sorted(range(len(classes)), key=class_order):
            heap = [(counts[m], m) for m in classes[index].member_ids]
            heapq.heapify(heap)
            for topic_id in classes[index].topic_ids:
                for partition in range(topics[topic_id]):
                    tp = (topic_id, partition)
                    if tp in taken:
                        continue
                    count, member_id = heapq.heappop(heap)
                    held[member_id].setdefault(index, []).append(tp)
                    counts[member_id] = count + 1
                    heapq.heappush(heap, (count + 1, member_id))

        self._balance(member_ids, [c.member_ids for c in classes], member_classes, held, counts)

        result: dict[str, Assignment] = {}
        for member_id in member_ids:
            per_topic: dict[uuid.UUID, list[int]] = {}
            for stack in held[member_id].values():
                for topic_id, partition in stack:
                    per_topic.setdefault(topic_id, []).append(partition)
            result[member_id] = {t: frozenset(ps) for t, ps in per_topic.items()}
        return result

    @staticmethod
    def _balance(
        member_ids: list[str],
        class_members: list[tuple[str, ...]],
        member_classes: dict[str, list[int]],
        held: dict[str, dict[int, list[_TopicPartition]]],
        counts: dict[str, int],
    ) -> None:
        """Move single partitions to subscribers at least two lower until no such move is
        left. Each move lowers the sum of squared counts, so this ends."""
        # One lazy min-heap per class: an entry is stale when its count is not the member's.
        heaps = [[(counts[m], m) for m in members] for members in class_members]
        for heap in heaps:
            heapq.heapify(heap)

        def least_loaded(index: int) -> tuple[int, str]:
            heap = heaps[index]
            while heap[0][0] != counts[heap[0][1]]:
                heapq.heappop(heap)
            return heap[0]

        def set_count(member_id: str, count: int) -> None:
            counts[member_id] = count
            for index in member_classes[member_id]:
                heapq.heappush(heaps[index], (count, member_id))

        # Always take from the most loaded member that can give, so a partition moves only
        # when the final balance needs it (no chains of moves through middle members). A
        # member that cannot give may be able to once others gave, hence the outer loop.
        changed = True
        while changed:
            changed = False
            loaded = [(-counts[m], m) for m in member_ids]
            heapq.heapify(loaded)
            while loaded:
                negative, owner = heapq.heappop(loaded)
                if -negative != counts[owner]:
                    continue
                best: tuple[int, int, str] | None = None  # (count, class, member) to receive
                for index, stack in held[owner].items():
                    if stack:
                        low_count, low = least_loaded(index)
                        if best is None or (low_count, index) < best[:2]:
                            best = (low_count, index, low)
                if best is None or best[0] + 1 >= counts[owner]:
                    continue
                low_count, index, low = best
                held[low].setdefault(index, []).append(held[owner][index].pop())
                set_count(owner, counts[owner] - 1)
                set_count(low, low_count + 1)
                heapq.heappush(loaded, (-counts[owner], owner))
                heapq.heappush(loaded, (-counts[low], low))
                changed = True


class RangeAssignor:
    """Kafka's range assignment per topic, made sticky as Kafka 3.8's server-side one is.

    For each topic, its subscribers sorted by member id share the partitions: each gets
    ``count // n`` and the first ``count % n`` one more, as contiguous ranges when nobody holds
    anything. So with co-partitioned topics (equal counts, equal subscribers) the same member
    gets partition p of each. Stickiness: a member first keeps the lowest of its current
    partitions of the topic up to the minimum quota, plus one more if it held more than the
    quota and an extra slot is still free; the rest are handed out in ascending order to the
    members still short, in member-id order.
    """

    name = "range"

    def assign(
        self, members: Sequence[MemberSubscription], topics: Mapping[uuid.UUID, int]
    ) -> dict[str, Assignment]:
        ordered = sorted(members, key=lambda m: m.member_id)
        classes, topic_class = _topic_classes(ordered, topics)
        holders: dict[uuid.UUID, list[tuple[str, frozenset[int]]]] = {}
        for member in ordered:
            for topic_id, partitions in _valid_current(member, topic_class):
                holders.setdefault(topic_id, []).append((member.member_id, partitions))

        held: dict[str, dict[uuid.UUID, list[int]]] = {m.member_id: {} for m in ordered}
        for cls in classes:
            for topic_id in cls.topic_ids:
                self._assign_topic(
                    topic_id, topics[topic_id], cls.member_ids, holders.get(topic_id, []), held
                )
        return {
            member_id: {t: frozenset(ps) for t, ps in per_topic.items() if ps}
            for member_id, per_topic in held.items()
        }

    @staticmethod
    def _assign_topic(
        topic_id: uuid.UUID,
        count: int,
        subscribers: Sequence[str],
        holders: Sequence[tuple[str, frozenset[int]]],
        held: dict[str, dict[uuid.UUID, list[int]]],
    ) -> None:
        """Share one topic among its subscribers (sorted by id); ``holders`` are those of them
        with current partitions of it, in id order."""
        quota, extras = divmod(count, len(subscribers))
        kept: set[int] = set()
        full: set[str] = set()  # kept the quota plus an extra: gets nothing more
        for member_id, partitions in holders:
            current = sorted(p for p in partitions if 0 <= p < count and p not in kept)
            # Someone holding more than the quota keeps one extra while extras last.
            if len(current) > quota and extras > 0:
                extras -= 1
                keep = current[: quota + 1]
                full.add(member_id)
            else:
                keep = current[:quota]
            kept.update(keep)
            held[member_id][topic_id] = keep
        free = [p for p in range(count) if p not in kept]
        position = 0
        for member_id in subscribers:
            # Once all is handed out the rest get nothing; stopping here keeps a topic with few
            # partitions and many subscribers cheap.
            if position == len(free):
                break
            if member_id in full:
                continue
            got = held[member_id].setdefault(topic_id, [])
            missing = quota - len(got)
            if extras > 0:
                extras -= 1
                missing += 1
            got.extend(free[position : position + missing])
            position += missing


ASSIGNORS: Mapping[str, Assignor] = {"uniform": UniformAssignor(), "range": RangeAssignor()}
"""The server-side assignors odradek offers, by name."""


def get_assignor(name: str) -> Assignor:
    """Return the assignor called ``name``; raise :class:`UnsupportedAssignorError` if none."""
    try:
        return ASSIGNORS[name]
    except KeyError:
        raise UnsupportedAssignorError(f"unsupported assignor {name!r}") from None
