"""Properties and worked examples of the KIP-848 server-side assignors."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.coordinator.group.assignors import (
    ASSIGNORS,
    Assignment,
    MemberSubscription,
    RangeAssignor,
    UniformAssignor,
    UnsupportedAssignorError,
    get_assignor,
)
from odradek.errors import KafkaError

T = [uuid.UUID(int=i + 1) for i in range(8)]
MISSING = uuid.UUID(int=999)  # subscribed to, but not in the topics mapping
uniform = UniformAssignor()
range_ = RangeAssignor()


def member(
    member_id: str,
    topics: Sequence[uuid.UUID],
    current: Mapping[uuid.UUID, Sequence[int]] | None = None,
) -> MemberSubscription:
    return MemberSubscription(
        member_id=member_id,
        rack_id=None,
        subscribed_topic_ids=frozenset(topics),
        current={t: frozenset(ps) for t, ps in (current or {}).items()},
    )


def with_current(
    members: Sequence[MemberSubscription], result: Mapping[str, Assignment]
) -> list[MemberSubscription]:
    return [
        MemberSubscription(m.member_id, m.rack_id, m.subscribed_topic_ids, result[m.member_id])
        for m in members
    ]


def owners(result: Mapping[str, Assignment]) -> dict[tuple[uuid.UUID, int], str]:
    found: dict[tuple[uuid.UUID, int], str] = {}
    for member_id, assignment in result.items():
        for topic_id, partitions in assignment.items():
            for p in partitions:
                assert (topic_id, p) not in found, f"{topic_id}-{p} assigned twice"
                found[(topic_id, p)] = member_id
    return found


def size(assignment: Assignment) -> int:
    return sum(len(ps) for ps in assignment.values())


def check_valid(
    members: Sequence[MemberSubscription],
    topics: Mapping[uuid.UUID, int],
    result: Mapping[str, Assignment],
) -> dict[tuple[uuid.UUID, int], str]:
    """Coverage, exclusivity, subscription respect, one entry per member, no empty sets."""
    by_id = {m.member_id: m for m in members}
    assert set(result) == set(by_id)
    found = owners(result)
    for member_id, assignment in result.items():
        for topic_id, partitions in assignment.items():
            assert partitions, "empty partition sets are left out"
            assert topic_id in by_id[member_id].subscribed_topic_ids
            assert all(0 <= p < topics[topic_id] for p in partitions)
    subscribed = set().union(*(m.subscribed_topic_ids for m in members)) if members else set()
    expected = {(t, p) for t in subscribed if t in topics for p in range(topics[t])}
    assert set(found) == expected
    return found


# --- strategies -------------------------------------------------------------------------------


@st.composite
def groups(
    draw: st.DrawFn, homogeneous: bool = False, max_members: int = 8
) -> tuple[list[MemberSubscription], dict[uuid.UUID, int]]:
    """Members with random (possibly stale, invalid or overlapping) current assignments."""
    n_topics = draw(st.integers(1, 5))
    topics = {T[i]: draw(st.integers(0, 12)) for i in range(n_topics)}
    universe = [*topics, MISSING]
    ids = draw(
        st.lists(
            st.text("abcdefgh", min_size=1, max_size=3),
            min_size=1,
            max_size=max_members,
            unique=True,
        )
    )
    shared = draw(st.sets(st.sampled_from(universe), min_size=1))
    members = []
    for member_id in ids:
        subs = shared if homogeneous else draw(st.sets(st.sampled_from(universe)))
        current = draw(
            st.dictionaries(
                st.sampled_from(universe),
                st.frozensets(st.integers(0, 14), max_size=6),
                max_size=3,
            )
        )
        members.append(member(member_id, sorted(subs), current))
    return members, topics


def clean(
    members: Sequence[MemberSubscription], topics: Mapping[uuid.UUID, int]
) -> list[MemberSubscription]:
    """The same members with the current assignment the uniform assignor would give them."""
    fresh = [member(m.member_id, sorted(m.subscribed_topic_ids)) for m in members]
    return with_current(fresh, uniform.assign(fresh, topics))


BOTH = pytest.mark.parametrize("assignor", [uniform, range_], ids=["uniform", "range"])


# --- properties of both assignors -------------------------------------------------------------


@BOTH
@given(group=groups())
def test_valid_assignment(
    assignor: UniformAssignor | RangeAssignor,
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    members, topics = group
    check_valid(members, topics, assignor.assign(members, topics))


@BOTH
@given(group=groups(), data=st.data())
def test_deterministic_under_member_order(
    assignor: UniformAssignor | RangeAssignor,
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
    data: st.DataObject,
) -> None:
    members, topics = group
    shuffled = data.draw(st.permutations(members))
    assert assignor.assign(shuffled, topics) == assignor.assign(members, topics)


@BOTH
@given(group=groups())
def test_stable_when_nothing_changes(
    assignor: UniformAssignor | RangeAssignor,
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    members, topics = group
    first = assignor.assign(members, topics)
    assert assignor.assign(with_current(members, first), topics) == first


@BOTH
def test_no_members_and_no_topics(assignor: UniformAssignor | RangeAssignor) -> None:
    assert assignor.assign([], {T[0]: 3}) == {}
    a, b = member("a", [MISSING]), member("b", [])
    assert assignor.assign([a, b], {T[0]: 3}) == {"a": {}, "b": {}}


# --- uniform ----------------------------------------------------------------------------------


@given(group=groups(homogeneous=True))
def test_uniform_homogeneous_is_balanced(
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    members, topics = group
    result = uniform.assign(members, topics)
    sizes = [size(a) for a in result.values()]
    assert max(sizes) - min(sizes) <= 1


@given(group=groups())
def test_uniform_heterogeneous_has_no_balancing_move(
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    """Kafka's notion of balanced: no partition can go from its owner to another subscriber
    of its topic that has at least two partitions fewer."""
    members, topics = group
    result = uniform.assign(members, topics)
    found = check_valid(members, topics, result)
    sizes = {m: size(a) for m, a in result.items()}
    for (topic_id, _), owner in found.items():
        for m in members:
            if topic_id in m.subscribed_topic_ids:
                assert sizes[m.member_id] + 1 >= sizes[owner]


@given(group=groups(homogeneous=True), data=st.data())
def test_uniform_members_that_stay_keep_everything_when_one_leaves(
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
    data: st.DataObject,
) -> None:
    members, topics = group
    before = clean(members, topics)
    leaving = data.draw(st.sampled_from(before))
    staying = [m for m in before if m is not leaving]
    after = uniform.assign(staying, topics)
    for m in staying:
        for topic_id, partitions in m.current.items():
            assert partitions <= after[m.member_id].get(topic_id, frozenset())


@given(group=groups(homogeneous=True))
def test_uniform_join_moves_only_what_the_new_member_gets(
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    members, topics = group
    before = clean(members, topics)
    old_owners = owners({m.member_id: dict(m.current) for m in before})
    joined = member("zzzz", sorted(before[0].subscribed_topic_ids))
    after = uniform.assign([*before, joined], topics)
    new_owners = owners(after)
    moved = {tp for tp, owner in new_owners.items() if old_owners.get(tp) != owner}
    assert len(moved) == size(after["zzzz"])
    sizes = [size(a) for a in after.values()]
    assert max(sizes) - min(sizes) <= 1


@given(group=groups())
def test_uniform_keeps_valid_current_partitions_when_already_balanced(
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    """Starting from a balanced assignment, re-subscribing nobody moves nothing."""
    members, topics = group
    before = clean(members, topics)
    after = uniform.assign(before, topics)
    assert after == {m.member_id: dict(m.current) for m in before}


def test_uniform_examples() -> None:
    topics = {T[0]: 3, T[1]: 3}
    a, b = member("a", [T[0], T[1]]), member("b", [T[0], T[1]])
    result = uniform.assign([a, b], topics)
    assert sorted(size(x) for x in result.values()) == [3, 3]

    # A member keeps nothing of a topic it no longer subscribes to, and the partition
    # numbers it holds beyond a topic's count are dropped.
    a = member("a", [T[0]], {T[1]: [0, 1, 2], T[0]: [0, 7]})
    b = member("b", [T[1]])
    result = uniform.assign([a, b], topics)
    assert result == {"a": {T[0]: frozenset({0, 1, 2})}, "b": {T[1]: frozenset({0, 1, 2})}}

    # Two members claiming one partition: the first by id keeps it.
    a = member("a", [T[0]], {T[0]: [0]})
    b = member("b", [T[0]], {T[0]: [0, 1]})
    result = uniform.assign([b, a], {T[0]: 2})
    assert result == {"a": {T[0]: frozenset({0})}, "b": {T[0]: frozenset({1})}}


def test_uniform_heterogeneous_example() -> None:
    # c alone subscribes to T2 (6 partitions): it gets them all; T1's 4 go to a and b evenly
    # rather than to c.
    topics = {T[0]: 4, T[1]: 6}
    a, b, c = member("a", [T[0]]), member("b", [T[0]]), member("c", [T[0], T[1]])
    result = uniform.assign([a, b, c], topics)
    assert result["c"] == {T[1]: frozenset(range(6))}
    assert size(result["a"]) == size(result["b"]) == 2


def test_uniform_heterogeneous_rebalances_away_from_overloaded_member() -> None:
    # a holds all of T1 and T2; b joins subscribed to T1 only: b takes half of the group's
    # partitions, all from T1, as that is all it may have.
    topics = {T[0]: 4, T[1]: 4}
    a = member("a", [T[0], T[1]], {T[0]: range(4), T[1]: range(4)})
    b = member("b", [T[0]])
    result = uniform.assign([a, b], topics)
    assert result["b"] == {T[0]: frozenset(range(4))}
    assert result["a"] == {T[1]: frozenset(range(4))}


# --- range ------------------------------------------------------------------------------------


def test_range_contiguous_ranges_with_extras_first() -> None:
    members = [member(x, [T[0]]) for x in "cab"]
    result = range_.assign(members, {T[0]: 7})
    assert result == {
        "a": {T[0]: frozenset({0, 1, 2})},
        "b": {T[0]: frozenset({3, 4})},
        "c": {T[0]: frozenset({5, 6})},
    }


def test_range_more_members_than_partitions() -> None:
    members = [member(x, [T[0]]) for x in "abc"]
    result = range_.assign(members, {T[0]: 2})
    assert result == {"a": {T[0]: frozenset({0})}, "b": {T[0]: frozenset({1})}, "c": {}}


def test_range_co_partitioned_topics() -> None:
    members = [member(x, [T[0], T[1]]) for x in "ab"]
    result = range_.assign(members, {T[0]: 3, T[1]: 3})
    assert result == {
        "a": {T[0]: frozenset({0, 1}), T[1]: frozenset({0, 1})},
        "b": {T[0]: frozenset({2}), T[1]: frozenset({2})},
    }


def test_range_heterogeneous_subscriptions_are_per_topic() -> None:
    a, b, c = member("a", [T[0]]), member("b", [T[0], T[1]]), member("c", [T[1], MISSING])
    result = range_.assign([a, b, c], {T[0]: 3, T[1]: 4})
    assert result == {
        "a": {T[0]: frozenset({0, 1})},
        "b": {T[0]: frozenset({2}), T[1]: frozenset({0, 1})},
        "c": {T[1]: frozenset({2, 3})},
    }


def test_range_sticky_when_a_member_joins() -> None:
    # Plain range would give a:0 b:1 c:2; the sticky one lets a and b keep their lowest
    # current partition and gives c the partition freed.
    a = member("a", [T[0]], {T[0]: [0, 1]})
    b = member("b", [T[0]], {T[0]: [2]})
    c = member("c", [T[0]])
    result = range_.assign([a, b, c], {T[0]: 3})
    assert result == {
        "a": {T[0]: frozenset({0})},
        "b": {T[0]: frozenset({2})},
        "c": {T[0]: frozenset({1})},
    }


def test_range_sticky_keeps_an_extra_while_extras_last() -> None:
    # 5 partitions, 2 members: quota 2, one extra. b holds three, so b keeps the extra and a,
    # though first by id, gets just the quota.
    a = member("a", [T[0]], {T[0]: [4]})
    b = member("b", [T[0]], {T[0]: [0, 1, 2]})
    result = range_.assign([a, b], {T[0]: 5})
    assert result == {"a": {T[0]: frozenset({3, 4})}, "b": {T[0]: frozenset({0, 1, 2})}}


def test_range_sticky_when_a_member_leaves() -> None:
    a = member("a", [T[0]], {T[0]: [0, 1]})
    c = member("c", [T[0]], {T[0]: [4, 5]})  # b, which held 2 and 3, left
    result = range_.assign([a, c], {T[0]: 6})
    assert result == {"a": {T[0]: frozenset({0, 1, 2})}, "c": {T[0]: frozenset({3, 4, 5})}}


@given(
    ids=st.lists(st.text("abcdef", min_size=1, max_size=3), min_size=1, max_size=8, unique=True),
    n_topics=st.integers(1, 4),
    count=st.integers(0, 20),
)
def test_range_cold_start_is_kafka_range(ids: list[str], n_topics: int, count: int) -> None:
    topics = {T[i]: count for i in range(n_topics)}
    members = [member(x, list(topics)) for x in ids]
    result = range_.assign(members, topics)
    quota, extras = divmod(count, len(ids))
    start = 0
    for i, member_id in enumerate(sorted(ids)):
        n = quota + (1 if i < extras else 0)
        expected = {t: frozenset(range(start, start + n)) for t in topics} if n else {}
        assert result[member_id] == expected  # same partitions of every topic: co-partitioned
        start += n


@given(group=groups())
def test_range_per_topic_balance(
    group: tuple[list[MemberSubscription], dict[uuid.UUID, int]],
) -> None:
    members, topics = group
    result = range_.assign(members, topics)
    for topic_id, count in topics.items():
        subs = [m.member_id for m in members if topic_id in m.subscribed_topic_ids]
        if not subs:
            continue
        got = [len(result[m].get(topic_id, ())) for m in subs]
        assert max(got) - min(got) <= 1
        assert sum(got) == count


# --- registry ---------------------------------------------------------------------------------


def test_registry() -> None:
    assert set(ASSIGNORS) == {"uniform", "range"}
    for name, assignor in ASSIGNORS.items():
        assert assignor.name == name
        assert get_assignor(name) is assignor
    with pytest.raises(UnsupportedAssignorError) as info:
        get_assignor("sticky")
    assert isinstance(info.value, KafkaError)


# --- scale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignor", [uniform, range_], ids=["uniform", "range"])
@pytest.mark.parametrize("n_members,n_partitions", [(50, 100), (1000, 10_000)])
def test_large_groups_run(
    assignor: UniformAssignor | RangeAssignor, n_members: int, n_partitions: int
) -> None:
    topics = {uuid.UUID(int=i + 1): n_partitions // 10 for i in range(10)}
    members = [member(f"m{i:04}", list(topics)) for i in range(n_members)]
    first = assignor.assign(members, topics)
    # Then one member leaves and another joins, with the first result as current.
    moved = [*with_current(members[1:], first), member("new", list(topics))]
    second = assignor.assign(moved, topics)
    assert len(owners(second)) == n_partitions
    # A heterogeneous group of the same size: every member on half the topics.
    odd = list(topics)[1::2]
    mixed = [
        member(m.member_id, odd if i % 2 else list(topics), m.current) for i, m in enumerate(moved)
    ]
    assert len(owners(assignor.assign(mixed, topics))) == n_partitions
