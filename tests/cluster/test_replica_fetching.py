"""The follower's fetcher between two brokers in one process on a real etcd.

A follower far behind a leader whose log start moved past it (DeleteRecords, inside a batch):
OFFSET_OUT_OF_RANGE carries the leader's log start, the follower empties its log to start there,
its first append then starts below that (the batch holding the leader's log start) and restarts
the log at the batch, as Kafka's Partition does; it ends with the leader's batches, its log
start follows the leader's, and it rejoins the ISR.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

from odradek.broker.app import Broker
from odradek.broker.runner import local_config
from odradek.cluster.store import StoreUnavailable
from odradek.protocol.records import SimpleRecord, encode_batch
from odradek.storage.log import PartitionLog
from odradek.testing.etcd import EtcdProcess

_prefixes = itertools.count()


async def _until(check: Any, what: str, timeout_s: float = 20.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _batches(plog: PartitionLog) -> bytes:
    return bytes(plog.read(plog.log_start_offset, max_bytes=1 << 20).records)


def test_a_follower_behind_the_leader_log_start_restarts_there(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/fetching-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "replica_fetch_backoff_ms": "100",
    }
    one_config = local_config(tmp_path / "one", node_id="1", **props)
    two_config = local_config(tmp_path / "two", node_id="2", **props)

    async def scenario() -> None:
        async with Broker(one_config) as one:
            async with Broker(two_config) as two:
                await _until(lambda: one.cluster.broker(2) is not None, "broker two's registration")
                await one.topics.create("t", assignments={0: [1, 2]})
                await _until(lambda: two.replica_fetchers.following() == {("t", 0): 1},
                             "broker two to follow t-0")
            # Broker two is gone: once the controller takes it out of the ISR, the leader's
            # high watermark follows its log alone.
            await _until(lambda: one.cluster.partition("t", 0).isr == (1,), "the ISR to shrink")
            for i in range(5):  # batches [0,1] [2,3] ... [8,9]
                one.replicas.append_as_leader(
                    "t", 0, encode_batch([SimpleRecord(b"%d" % i)] * 2)
                )
            leader_log = one.topics.log("t", 0)
            await _until(lambda: leader_log.high_watermark == 10, "the high watermark")
            leader_log.delete_records_before(7)  # inside the batch [6, 7]

            async with Broker(two_config) as two:
                follower_log = two.topics.log("t", 0)
                await _until(lambda: follower_log.log_end_offset == 10, "the follower's catch-up")
                # It holds the leader's batches from the one holding its log start.
                assert _batches(follower_log) == _batches(leader_log)
                await _until(lambda: follower_log.log_start_offset == 7, "the log start")
                await _until(lambda: one.cluster.partition("t", 0).isr == (1, 2),
                             "the ISR to grow")
                await _until(lambda: follower_log.high_watermark == 10, "the high watermark")

    asyncio.run(scenario())


def test_a_follower_in_controlled_shutdown_does_not_rejoin_the_isr(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    """KIP-841: the controller takes a broker in controlled shutdown out of the ISRs; its
    fetches, which go on until it stops, must not bring it back in (the leader would otherwise
    flap it in and out, and it could stop as an ISR member)."""
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/fetching-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "replica_fetch_backoff_ms": "100",
    }
    one_config = local_config(tmp_path / "one", node_id="1", **props)
    two_config = local_config(tmp_path / "two", node_id="2", **props)

    async def scenario() -> None:
        async with Broker(one_config) as one:
            async with Broker(two_config) as two:
                await _until(lambda: one.cluster.broker(2) is not None, "broker two's registration")
                await one.topics.create("t", assignments={0: [1, 2]})
                await _until(lambda: two.replica_fetchers.following() == {("t", 0): 1},
                             "broker two to follow t-0")
                await _until(lambda: one.cluster.partition("t", 0).isr == (1, 2), "ISR [1, 2]")
                member = two.cluster_member
                assert member is not None
                assert await member.controlled_shutdown(two.cluster, 10.0)
                await _until(lambda: one.cluster.partition("t", 0).isr == (1,),
                             "the leader's image to show broker two out of the ISR")
                seen: list[tuple[int, ...]] = []
                one.cluster.add_topics_listener(
                    lambda _c: seen.append(one.cluster.partition("t", 0).isr)
                )
                # Broker two, still up, catches up with the leader's log.
                for i in range(3):
                    one.replicas.append_as_leader("t", 0, encode_batch([SimpleRecord(b"%d" % i)]))
                leader_log = one.topics.log("t", 0)
                lp = one.replicas._leaders[("t", 0)]
                await _until(
                    lambda: lp.followers[2].log_end_offset == leader_log.log_end_offset == 3
                    and not one.replicas._tasks,
                    "broker two's fetch at the leader's end, and any ISR change it caused",
                )
                assert lp.isr == (1,) and lp.pending_isr is None
                assert all(2 not in isr for isr in seen), seen

    asyncio.run(scenario())


def test_an_expansion_whose_outcome_is_unknown_still_holds_the_high_watermark(
    shared_etcd: EtcdProcess, tmp_path: Path
) -> None:
    """The store took the leader's ISR expansion but the leader got an error instead of the
    answer (etcd failing over: the write's outcome lost, then the re-read failed). The new
    member may be in the ISR the controller elects from, so -- as Kafka's leader keeps an
    expansion pending until it has an answer -- the high watermark must not pass it meanwhile:
    else an acknowledged record could be missing from a member that may become leader."""
    props = {
        "etcd_endpoints": shared_etcd.endpoint,
        "etcd_prefix": f"/fetching-{next(_prefixes)}-{uuid.uuid4().hex[:6]}",
        "broker_session_timeout_ms": "2000",
        "replica_fetch_backoff_ms": "100",
    }
    one_config = local_config(tmp_path / "one", node_id="1", **props)
    two_config = local_config(tmp_path / "two", node_id="2", **props)

    async def scenario() -> None:
        async with Broker(one_config) as one:
            async with Broker(two_config) as two:
                await _until(lambda: one.cluster.broker(2) is not None, "broker two's registration")
                await one.topics.create("t", assignments={0: [1, 2]})
                await _until(lambda: two.replica_fetchers.following() == {("t", 0): 1},
                             "broker two to follow t-0")
            await _until(lambda: one.cluster.partition("t", 0).isr == (1,), "the ISR to shrink")
            leader_log = one.topics.log("t", 0)
            one.replicas.append_as_leader("t", 0, encode_batch([SimpleRecord(b"a")]))
            real_alter = one.replicas._alter
            assert real_alter is not None
            frozen: list[int] = []

            async def alter_answer_lost(*args: Any, **kwargs: Any) -> Any:
                if frozen:
                    return await real_alter(*args, **kwargs)
                # Broker two fetches no more.
                await two.replica_fetchers.stop()
                frozen.append(one.replicas._leaders[("t", 0)].followers[2].log_end_offset)
                await real_alter(*args, **kwargs)  # made in the store
                # A producer's record arrives before the leader learns the outcome.
                one.replicas.append_as_leader("t", 0, encode_batch([SimpleRecord(b"b")]))
                raise StoreUnavailable("the answer was lost and the re-read failed")

            one.replicas._alter = alter_answer_lost
            async with Broker(two_config) as two:
                await _until(lambda: bool(frozen) and not one.replicas._tasks,
                             "the expansion attempt")
                await _until(lambda: one.cluster.partition("t", 0).isr == (1, 2),
                             "the leader's image to show broker two in the ISR")
                assert frozen == [1]
                assert leader_log.log_end_offset == 2
                assert leader_log.high_watermark == 1

    asyncio.run(scenario())
