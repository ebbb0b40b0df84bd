"""Coordinator writes made after a request's synchronous part wait for replication too: one
broker whose view (tests/staticview.py) gives ``__consumer_offsets-0`` a follower, played by the
test with raw replica fetches."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.find_coordinator.v4 import request as find_req
from kio.schema.join_group.v5 import request as join_req
from kio.schema.list_offsets.v8 import request as list_req
from kio.schema.offset_commit.v8 import request as offset_commit_req
from kio.schema.offset_fetch.v7 import request as offset_fetch_req
from kio.schema.sync_group.v3 import request as sync_req
from rawclient import RawClient

from odradek.broker.runner import BrokerThread, local_config
from odradek.cluster.model import PartitionState
from staticview import reassigned, registered
from waiting import wait as _wait

pytestmark = pytest.mark.integration


def _no_answer_within(client: RawClient, seconds: float) -> bool:
    client.sock.settimeout(seconds)
    try:
        client.sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    finally:
        client.sock.settimeout(10)
    return False


def _replica_fetch(bootstrap: str, offset: int) -> Any:
    """Replica 99's fetch of ``__consumer_offsets-0`` from ``offset``."""
    body = fetch_v12.FetchRequest(
        replica_id=99, max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=1 << 20,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=(fetch_v12.FetchTopic(topic="__consumer_offsets", partitions=(
            fetch_v12.FetchPartition(
                partition=0, current_leader_epoch=-1, fetch_offset=offset,
                last_fetched_epoch=-1, log_start_offset=0, partition_max_bytes=1 << 20,
            ),
        )),),
        forgotten_topics_data=(), rack_id="",
    )
    with RawClient(bootstrap) as c:
        return c.request(body).responses[0].partitions[0]


def _join(group: str, member_id: str) -> join_req.JoinGroupRequest:
    return join_req.JoinGroupRequest(
        group_id=group, session_timeout=datetime.timedelta(seconds=30),
        rebalance_timeout=datetime.timedelta(seconds=30), member_id=member_id,
        group_instance_id=None, protocol_type="consumer",
        protocols=(join_req.JoinGroupRequestProtocol(name="range", metadata=b"m"),),
    )


def _sync(group: str, generation: int, member_id: str,
          assignments: tuple[sync_req.SyncGroupRequestAssignment, ...] = ()) -> Any:
    return sync_req.SyncGroupRequest(
        group_id=group, generation_id=generation, member_id=member_id,
        group_instance_id=None, assignments=assignments,
    )


def _member(client: RawClient, group: str) -> str:
    first = client.request(_join(group, ""))
    assert first.error_code == ErrorCode.member_id_required
    return first.member_id


def test_a_waiting_members_sync_group_is_answered_once_the_assignment_is_replicated(
    tmp_path: Path,
) -> None:
    """The follower member of a classic group waits in SyncGroup for the leader's assignment;
    that assignment is stored by the leader's request, and the follower's answer (completed by
    the write, outside its own request) comes only once a replica has fetched it."""
    config = local_config(tmp_path / "data", offsets_topic_num_partitions="1",
                          group_initial_rebalance_delay_ms="0")
    with BrokerThread(config) as broker:
        bootstrap = broker.bootstrap
        b = broker.broker
        with RawClient(bootstrap) as c:
            c.request(find_req.FindCoordinatorRequest(key_type=0, coordinator_keys=("g",)))
        _wait(lambda: b.cluster.topic("__consumer_offsets") is not None, "__consumer_offsets")
        me = b.node_id
        b.cluster = reassigned(b.cluster, {("__consumer_offsets", 0): PartitionState(
            (me, 99), (me, 99), me, leader_epoch=0, partition_epoch=1,
        )}, extra_brokers=[registered(99)])
        plog = _wait(lambda: b.topics.log("__consumer_offsets", 0), "the log")
        _replica_fetch(bootstrap, plog.log_end_offset)  # the follower is caught up
        a, f = RawClient(bootstrap), RawClient(bootstrap)
        try:
            a_id = _member(a, "g")
            joined = a.request(_join("g", a_id))
            assert (joined.error_code, joined.leader) == (ErrorCode.none, a_id)
            start = plog.log_end_offset
            a.send(_sync("g", joined.generation_id, a_id, (
                sync_req.SyncGroupRequestAssignment(member_id=a_id, assignment=b"a1"),
            )))
            _wait(lambda: plog.log_end_offset > start, "the assignment to be written")
            _replica_fetch(bootstrap, plog.log_end_offset)
            assert a.receive(14, 3).error_code == ErrorCode.none

            # A second member: both join generation 2, the follower waits in SyncGroup.
            f_id = _member(f, "g")
            f.send(_join("g", f_id))
            assert _no_answer_within(f, 0.3)
            a.send(_join("g", a_id))
            a_joined, f_joined = a.receive(11, 5), f.receive(11, 5)
            assert a_joined.leader == a_id and f_joined.error_code == ErrorCode.none
            generation = a_joined.generation_id
            f.send(_sync("g", generation, f_id))
            assert _no_answer_within(f, 0.3)
            start = plog.log_end_offset
            a.send(_sync("g", generation, a_id, (
                sync_req.SyncGroupRequestAssignment(member_id=a_id, assignment=b"a2"),
                sync_req.SyncGroupRequestAssignment(member_id=f_id, assignment=b"f2"),
            )))
            _wait(lambda: plog.log_end_offset > start, "the assignment to be written")
            # Written, not replicated: neither member is answered.
            assert _no_answer_within(f, 0.5)
            assert _no_answer_within(a, 0.1)
            _replica_fetch(bootstrap, start)
            _replica_fetch(bootstrap, plog.log_end_offset)
            f_synced, a_synced = f.receive(14, 3), a.receive(14, 3)
            assert (f_synced.error_code, f_synced.assignment) == (ErrorCode.none, b"f2")
            assert (a_synced.error_code, a_synced.assignment) == (ErrorCode.none, b"a2")
        finally:
            a.close()
            f.close()


def _commit(offset: int) -> offset_commit_req.OffsetCommitRequest:
    return offset_commit_req.OffsetCommitRequest(
        group_id="g", generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
        topics=(offset_commit_req.OffsetCommitRequestTopic(name="t", partitions=(
            offset_commit_req.OffsetCommitRequestPartition(
                partition_index=0, committed_offset=offset, committed_leader_epoch=-1,
                committed_metadata=None,
            ),
        )),),
    )


def _committed(bootstrap: str) -> tuple[int, int]:
    """(error, committed offset of t-0) as OffsetFetch answers."""
    with RawClient(bootstrap) as c:
        body = c.request(offset_fetch_req.OffsetFetchRequest(
            group_id="g", topics=(offset_fetch_req.OffsetFetchRequestTopic(
                name="t", partition_indexes=(0,)),), require_stable=False,
        ))
    if body.error_code != ErrorCode.none:
        return body.error_code, -1
    return body.error_code, body.topics[0].partitions[0].committed_offset


def test_a_commit_that_fails_to_replicate_is_refused_and_reverted(tmp_path: Path) -> None:
    """An offset commit appended but never replicated (the ISR shrinks below
    ``min.insync.replicas`` while it waits) is answered COORDINATOR_NOT_AVAILABLE, as Kafka's
    group coordinator maps NOT_ENOUGH_REPLICAS(_AFTER_APPEND), and the coordinator's state goes
    back to what is replicated: OffsetFetch shows the previous commit, not the refused one."""
    config = local_config(tmp_path / "data", offsets_topic_num_partitions="1",
                          min_insync_replicas="2")
    with BrokerThread(config) as broker:
        bootstrap = broker.bootstrap
        b = broker.broker
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("t", 1, 1)])["t"].result(15)
        with RawClient(bootstrap) as c:
            c.request(find_req.FindCoordinatorRequest(key_type=0, coordinator_keys=("g",)))
        _wait(lambda: b.cluster.topic("__consumer_offsets") is not None, "__consumer_offsets")
        me = b.node_id

        def view(isr: tuple[int, ...], epoch: int) -> None:
            b.cluster = reassigned(b.cluster, {("__consumer_offsets", 0): PartitionState(
                (me, 99), isr, me, leader_epoch=0, partition_epoch=epoch,
            )}, extra_brokers=[registered(99)])

        view((me, 99), 1)
        plog = _wait(lambda: b.topics.log("__consumer_offsets", 0), "the log")
        _wait(lambda: _committed(bootstrap)[0] == ErrorCode.none, "the coordinator to load")
        _replica_fetch(bootstrap, plog.log_end_offset)
        with RawClient(bootstrap) as c:
            start = plog.log_end_offset
            c.send(_commit(5))
            _wait(lambda: plog.log_end_offset > start, "the commit to be written")
            _replica_fetch(bootstrap, plog.log_end_offset)
            assert c.receive(8, 8).topics[0].partitions[0].error_code == ErrorCode.none
            assert _committed(bootstrap) == (ErrorCode.none, 5)

            start = plog.log_end_offset
            c.send(_commit(9))
            _wait(lambda: plog.log_end_offset > start, "the commit to be written")
            assert _no_answer_within(c, 0.3)
            # The follower drops out of the ISR; the leader learns it at its next request of
            # the partition.
            view((me,), 2)
            with RawClient(bootstrap) as other:
                other.request(list_req.ListOffsetsRequest(replica_id=-1, isolation_level=0,
                    topics=(list_req.ListOffsetsTopic(name="__consumer_offsets", partitions=(
                        list_req.ListOffsetsPartition(partition_index=0, timestamp=-1),)),)))
            refused = c.receive(8, 8).topics[0].partitions[0]
        assert refused.error_code == ErrorCode.coordinator_not_available
        assert plog.high_watermark == start  # the record of 9 is in the log, not replicated
        got = _wait(lambda: (r := _committed(bootstrap))[0] == ErrorCode.none and r,
                    "the coordinator to reload")
        assert got == (ErrorCode.none, 5)


def test_a_coordinator_taking_over_loads_up_to_the_log_end_and_keeps_it_through_a_revert(
    tmp_path: Path,
) -> None:
    """A broker that becomes leader of ``__consumer_offsets-0`` again holds a commit its high
    watermark does not cover (written under its previous epoch, the follower never fetched it).
    As Kafka's loaders, it loads up to the log end at once: OffsetFetch answers that commit
    while the follower in the ISR has not fetched (it used to answer
    COORDINATOR_LOAD_IN_PROGRESS until the high watermark reached the log end). A later commit
    that fails to replicate reverts the partition to its replicated log, but keeps what the log
    held when the leadership began: the commit of the earlier epoch stays."""
    config = local_config(tmp_path / "data", offsets_topic_num_partitions="1",
                          min_insync_replicas="2")
    with BrokerThread(config) as broker:
        bootstrap = broker.bootstrap
        b = broker.broker
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("t", 1, 1)])["t"].result(15)
        with RawClient(bootstrap) as c:
            c.request(find_req.FindCoordinatorRequest(key_type=0, coordinator_keys=("g",)))
        _wait(lambda: b.cluster.topic("__consumer_offsets") is not None, "__consumer_offsets")
        me = b.node_id

        def view(leader: int, isr: tuple[int, ...], leader_epoch: int, epoch: int) -> None:
            b.cluster = reassigned(b.cluster, {("__consumer_offsets", 0): PartitionState(
                (me, 99), isr, leader, leader_epoch=leader_epoch, partition_epoch=epoch,
            )}, extra_brokers=[registered(99)])
            # What the image's listener does for a change of the topic.
            broker._loop.call_soon_threadsafe(b.groups.maybe_follow_leadership)

        view(me, (me, 99), 0, 1)
        plog = _wait(lambda: b.topics.log("__consumer_offsets", 0), "the log")
        _wait(lambda: _committed(bootstrap)[0] == ErrorCode.none, "the coordinator to load")
        _replica_fetch(bootstrap, plog.log_end_offset)
        with RawClient(bootstrap) as c:
            start = plog.log_end_offset
            c.send(_commit(5))
            _wait(lambda: plog.log_end_offset > start, "the commit to be written")
            _replica_fetch(bootstrap, plog.log_end_offset)
            assert c.receive(8, 8).topics[0].partitions[0].error_code == ErrorCode.none
        with RawClient(bootstrap) as c:
            start = plog.log_end_offset
            c.send(_commit(9))
            _wait(lambda: plog.log_end_offset > start, "the commit to be written")
            assert _no_answer_within(c, 0.2)
            # Leadership moves to 99 and back before the follower fetches the commit of 9.
            view(99, (me, 99), 1, 2)
            _wait(lambda: _committed(bootstrap)[0] == ErrorCode.not_coordinator,
                  "the coordinator to unload")
        end = plog.log_end_offset
        view(me, (me, 99), 2, 3)
        got = _wait(lambda: (r := _committed(bootstrap))[0] != ErrorCode.not_coordinator and r,
                    "the coordinator to load again", timeout=10)
        assert got == (ErrorCode.none, 9)
        assert plog.high_watermark < end  # loaded without waiting for the follower

        # A commit written but not replicated: the ISR shrinks below its minimum meanwhile.
        with RawClient(bootstrap) as c:
            start = plog.log_end_offset
            c.send(_commit(11))
            _wait(lambda: plog.log_end_offset > start, "the commit to be written")
            view(me, (me,), 2, 4)
            with RawClient(bootstrap) as other:
                other.request(list_req.ListOffsetsRequest(replica_id=-1, isolation_level=0,
                    topics=(list_req.ListOffsetsTopic(name="__consumer_offsets", partitions=(
                        list_req.ListOffsetsPartition(partition_index=0, timestamp=-1),)),)))
            refused = c.receive(8, 8).topics[0].partitions[0]
        assert refused.error_code == ErrorCode.coordinator_not_available
        got = _wait(lambda: (r := _committed(bootstrap))[0] == ErrorCode.none and r,
                    "the coordinator to reload")
        assert got == (ErrorCode.none, 9)  # the earlier epoch's commit stays, 11 is reverted
