"""The follower's fetcher manager and its truncation rule.

- :func:`truncation_offset` against a model of KIP-279: random leader and follower logs that
  share a prefix and then diverge (each epoch has one leader, so no epoch is in both divergent
  tails), the follower fetching with its last epoch and truncating on each diverging epoch the
  leader answers, until it fetches: it ends up with the leader's log, and never cuts into the
  common prefix.
- :class:`ReplicaFetcherManager` over a real image of an in-process store: which partitions it
  fetches from whom as the partition states and registered brokers change (becoming leader,
  another leader, a new epoch, a leader gone and back, no longer a replica, topic deleted).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from odradek.broker.handlers import fetch as fetch_handler
from odradek.broker.replica_fetcher import (
    QUICK_RETRY_MS,
    FetcherConfig,
    ReplicaFetcherManager,
    move_to_end,
    truncation_offset,
)
from odradek.clock import ManualClock
from odradek.cluster.image import MetadataImage
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys
from odradek.cluster.model import NO_LEADER, PartitionState, TopicRecord
from odradek.cluster.store import Delete, Put
from odradek.errors import ErrorCode
from odradek.protocol.messages import (
    decode_request,
    encode_response,
    peek_preamble,
    request_schema,
)
from odradek.storage.log import PartitionLog
from odradek.storage.log_config import LogConfig

# -- the truncation rule against a model --------------------------------------------------------


def _end_offset_for(log: list[int], epoch: int, current: int = -1) -> tuple[int, int]:
    """Kafka's LeaderEpochFileCache.endOffsetFor over a log given as the epoch of each offset;
    ``current``: a leader's epoch, recorded at its log end (as on becoming leader)."""
    starts: dict[int, int] = {}
    for offset, e in enumerate(log):
        starts.setdefault(e, offset)
    if current >= 0:
        starts.setdefault(current, len(log))
    epochs = sorted(starts)
    if epoch < 0 or not epochs:
        return -1, -1
    if epoch == epochs[-1]:
        return epoch, len(log)
    higher = [e for e in epochs if e > epoch]
    if not higher:
        return -1, -1
    lower = [e for e in epochs if e <= epoch]
    return (lower[-1] if lower else epoch), starts[higher[0]]


def _diverging(
    leader: list[int], current: int, fetch_offset: int, last_epoch: int
) -> tuple[int, int] | None:
    """The leader's answer (KIP-279): the diverging epoch and its end, or None (a prefix)."""
    if last_epoch < 0:
        return None
    epoch, end = _end_offset_for(leader, last_epoch, current)
    if epoch < last_epoch or end < fetch_offset:
        return epoch, end
    return None


def _histories(rng: random.Random) -> tuple[list[int], list[int], int, int]:
    epoch = 0
    common: list[int] = []
    for _ in range(rng.randrange(4)):
        common += [epoch] * rng.randrange(1, 4)
        epoch += rng.randrange(1, 3)
    # The tails: each epoch belongs to one of them; the one continuing the prefix's last epoch
    # (its leader appended more) is at most one of them.
    tails: list[list[int]] = [[], []]
    last = common[-1] if common else -1
    who_continues = rng.randrange(3)
    if common and who_continues < 2:
        tails[who_continues] += [last] * rng.randrange(1, 3)
    for _ in range(rng.randrange(5)):
        side = rng.randrange(2)
        tails[side] += [epoch] * rng.randrange(1, 4)
        epoch += rng.randrange(1, 3)
    follower, leader = common + tails[0], common + tails[1]
    # The leader leads the newest epoch, recorded at its log end when it became leader.
    current = max(follower + leader, default=-1) + 1
    return follower, leader, current, len(common)


@pytest.mark.parametrize("seed", range(300))
def test_truncation_converges_to_the_leader_log(seed: int) -> None:
    rng = random.Random(seed)
    follower, leader, current, common = _histories(rng)
    for _round in range(20):
        last_epoch = follower[-1] if follower else -1
        answer = _diverging(leader, current, len(follower), last_epoch)
        if answer is None:
            follower += leader[len(follower):]
            break
        epoch, end = answer
        offset = truncation_offset(len(follower), epoch, end, _end_offset_for(follower, epoch))
        assert offset >= common, (follower, leader, answer)
        assert offset < len(follower) or end < 0, (follower, leader, answer)
        del follower[offset:]
    assert follower == leader


def test_truncation_offset_cases() -> None:
    # Same epoch on both sides: the smaller end.
    assert truncation_offset(10, 3, 7, (3, 9)) == 7
    assert truncation_offset(10, 3, 9, (3, 7)) == 7
    # The follower lacks the leader's epoch: the end of its own largest smaller one.
    assert truncation_offset(10, 4, 8, (2, 6)) == 6
    # The follower knows no epoch that old: the leader's end.
    assert truncation_offset(10, 1, 4, (-1, -1)) == 4
    # Never past the log end; an undefined answer cuts nothing.
    assert truncation_offset(5, 3, 7, (3, 9)) == 5
    assert truncation_offset(5, -1, -1, (-1, -1)) == 5


# -- the manager over a real image ----------------------------------------------------------------


class _World:
    """An in-process store with its image, a fetcher manager for broker 1 over real logs, and
    helpers to write partition states and broker registrations as the controller would."""

    def __init__(self, tmp: Path, backoff_ms: int = 50) -> None:
        self.tmp = tmp
        self.keys = ClusterKeys(prefix="/f")
        self.store = InProcessStore(ManualClock())
        self.image = MetadataImage(self.store, self.keys)
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self.manager = ReplicaFetcherManager(
            FetcherConfig(node_id=1, backoff_ms=backoff_ms), self.image, self.log, lambda: 7
        )

    def log(self, topic: str, partition: int) -> PartitionLog:
        key = (topic, partition)
        if key not in self.logs:
            self.logs[key] = PartitionLog.open(
                self.tmp / f"{topic}-{partition}", topic, partition, LogConfig(),
                ManualClock(), recover=False,
            )
        return self.logs[key]

    async def put(self, *ops: Put | Delete) -> None:
        result = await self.store.txn([], list(ops))
        await self.image.wait_for_revision(result.revision)

    def broker(self, node: int, port: int = 9) -> Put:
        # By default a port nobody listens on: fetches fail and back off.
        value = json.dumps({"node_id": node, "host": "127.0.0.1", "port": port, "rack": None})
        return Put(self.keys.broker(node), value.encode())

    def topic(self, name: str, partitions: int, topic_id: uuid.UUID) -> Put:
        return Put(self.keys.topic(name), TopicRecord(topic_id, partitions).encode())

    def state(self, name: str, p: int, replicas: tuple[int, ...], leader: int, epoch: int) -> Put:
        s = PartitionState(replicas, replicas, leader, epoch, epoch)
        return Put(self.keys.partition(name, p), s.encode())

    async def close(self) -> None:
        await self.manager.stop()
        await self.image.close()
        for plog in self.logs.values():
            plog.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Callable[..., _World]]:
    made: list[_World] = []

    def make(backoff_ms: int = 50) -> _World:
        made.append(_World(tmp_path, backoff_ms))
        return made[-1]

    yield make


def test_manager_follows_leadership(world: Callable[[], _World]) -> None:
    async def scenario() -> None:
        w = world()
        tid = uuid.uuid4()
        await w.image.start()
        await w.put(w.broker(2), w.broker(3), w.topic("t", 3, tid),
                    w.state("t", 0, (2, 1, 3), 2, 0),
                    w.state("t", 1, (1, 2, 3), 1, 0),
                    w.state("t", 2, (2, 3), 2, 0))
        m = w.manager
        m.start()
        # Partition 0 is followed from 2; 1 is led here; 2 is not held here.
        assert m.following() == {("t", 0): 2}
        assert m.fetch_state("t", 0) == (2, 0, False)

        # Another leader: moved to that leader's fetcher, in the new epoch.
        await w.put(w.state("t", 0, (2, 1, 3), 3, 1))
        assert m.fetch_state("t", 0) == (3, 1, False)
        # A new epoch of the same leader: the new epoch is fetched with.
        await w.put(w.state("t", 0, (2, 1, 3), 3, 2))
        assert m.fetch_state("t", 0) == (3, 2, False)
        # This broker becomes leader: it stops fetching in the step the image shows it.
        await w.put(w.state("t", 0, (2, 1, 3), 1, 3))
        assert m.following() == {}
        # And a follower again of 2; partition 1 now led by 3.
        await w.put(w.state("t", 0, (2, 1, 3), 2, 4), w.state("t", 1, (1, 2, 3), 3, 1))
        assert m.following() == {("t", 0): 2, ("t", 1): 3}

        # The leader's registration goes: nothing to fetch from it until it is back.
        await w.put(Delete(w.keys.broker(2)))
        assert m.following() == {("t", 1): 3}
        await w.put(w.broker(2))
        assert m.following() == {("t", 0): 2, ("t", 1): 3}
        # No leader at all.
        await w.put(w.state("t", 1, (1, 2, 3), NO_LEADER, 2))
        assert m.following() == {("t", 0): 2}
        # No longer a replica.
        await w.put(w.state("t", 0, (2, 3), 2, 5))
        assert m.following() == {}
        await w.put(w.state("t", 0, (2, 1, 3), 2, 6))
        assert m.following() == {("t", 0): 2}
        # The topic deleted.
        await w.put(Delete(w.keys.topic("t")))
        assert m.following() == {}
        await w.close()

    asyncio.run(scenario())


def test_unreachable_leader_is_retried_with_backoff(world: Callable[[], _World]) -> None:
    """A leader that refuses connections: the partition stays assigned (retried after the
    backoff) and nothing is appended; the fetcher goes when its last partition does."""

    async def scenario() -> None:
        w = world()
        await w.image.start()
        await w.put(w.broker(2), w.topic("u", 1, uuid.uuid4()), w.state("u", 0, (2, 1), 2, 0))
        w.manager.start()
        await asyncio.sleep(0.3)  # several backoffs of 50 ms: still assigned
        assert w.manager.following() == {("u", 0): 2}
        assert w.log("u", 0).log_end_offset == 0
        await w.put(w.state("u", 0, (2, 1), 1, 1))
        assert w.manager.following() == {}
        await w.close()

    asyncio.run(scenario())


def test_a_leader_behind_on_the_change_is_asked_again_soon(world: Callable[..., _World]) -> None:
    """A leader that answers UNKNOWN_LEADER_EPOCH (its image has not shown the epoch the
    follower fetches in yet, as right after a failover) is asked again after 20 ms, then 40,
    80...: not after a whole replica.fetch.backoff.ms (1 s here)."""
    asked: list[float] = []

    async def leader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                frame = await reader.readexactly(size)
                preamble = peek_preamble(frame)
                schema = request_schema(preamble.api_key, preamble.api_version)
                assert preamble.api_key == fetch_handler.KEY and schema is not None
                request = decode_request(frame, preamble, schema)
                asked.append(loop.time())
                body = fetch_handler.error_response(request, ErrorCode.unknown_leader_epoch)
                writer.write(encode_response(fetch_handler.KEY, preamble.correlation_id, body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(leader, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        w = world(backoff_ms=1000)
        await w.image.start()
        await w.put(w.broker(2, port), w.topic("q", 1, uuid.uuid4()),
                    w.state("q", 0, (2, 1), 2, 3))
        w.manager.start()
        await asyncio.sleep(0.6)
        gaps = [b - a for a, b in zip(asked, asked[1:], strict=False)]
        # 20, 40, 80, 160 ms (and the next at 320): four or five asks within 0.6 s (one with
        # a 1 s backoff), the gaps growing.
        assert len(asked) >= 4, gaps
        assert QUICK_RETRY_MS / 1000 * 0.9 <= gaps[0] < 0.5, gaps
        assert gaps[-1] > gaps[0], gaps
        await w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_served_partitions_go_last_in_the_next_fetch() -> None:
    """The leader fills a Fetch answer in request order up to its byte limit: partitions just
    served move behind the others (in the order served), so none starves behind busy ones."""
    partitions = {("t", p): f"state-{p}" for p in range(5)}
    move_to_end(partitions, [("t", 0), ("t", 2), ("gone", 9)])
    assert list(partitions) == [("t", 1), ("t", 3), ("t", 4), ("t", 0), ("t", 2)]
    assert partitions[("t", 0)] == "state-0"
    # Served in turn while the limit cuts every answer after two partitions: all are served.
    seen: list[int] = []
    for _ in range(5):
        answered = list(partitions)[:2]
        seen.extend(p for _, p in answered)
        move_to_end(partitions, answered)
    assert set(seen) == set(range(5))


def _fetch_v16_answer(correlation_id: int, topic_id: uuid.UUID,
                      partitions: list[tuple[int, int, bytes | None]]) -> bytes:
    """A Fetch v16 answer written by hand (kio writes no error code it does not know): per
    partition (index, error code, records), high watermark 1, no aborted transactions."""
    import struct

    out = bytearray(struct.pack(">i", correlation_id)) + b"\0"  # header, no tags
    out += struct.pack(">ihi", 0, 0, 0)  # throttle, error code, session id
    out += b"\x02" + topic_id.bytes + bytes([len(partitions) + 1])
    for index, code, records in partitions:
        out += struct.pack(">ihqqq", index, code, 1, 1, 0)
        out += b"\0"  # aborted transactions: null
        out += struct.pack(">i", -1)  # preferred read replica
        if records is None:
            out += b"\0"
        else:
            assert len(records) + 1 < 128
            out += bytes([len(records) + 1]) + records
        out += b"\0"  # the partition's tags
    out += b"\0\0"  # the topic's tags, the body's
    return struct.pack(">i", len(out)) + bytes(out)


def test_an_error_code_the_follower_does_not_know_fails_that_partition_only(
    world: Callable[..., _World], caplog: pytest.LogCaptureFixture
) -> None:
    """Review (session 9): an error code the follower does not know (a newer leader's) is
    UNKNOWN_SERVER_ERROR for its partition, as Kafka's Errors.forCode reads it; the other
    partitions of the answer are applied. Failed with the zero-copy decoder: ErrorCode(9999)
    raised ValueError out of the fetch ("unexpected error"), so partition 1's records were never
    appended (the kio decoder before it refused the whole answer: never appended either)."""
    from odradek.protocol.records import SimpleRecord, encode_batch

    tid = uuid.uuid4()
    batch = encode_batch([SimpleRecord(b"v", b"k", timestamp=1)], partition_leader_epoch=0)
    answered: list[int] = []

    async def leader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                frame = await reader.readexactly(size)
                preamble = peek_preamble(frame)
                first = not answered
                answered.append(preamble.correlation_id)
                writer.write(_fetch_v16_answer(preamble.correlation_id, tid, [
                    (0, 9999, None), (1, 0, batch if first else None),
                ]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(leader, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        w = world(backoff_ms=50)
        await w.image.start()
        await w.put(w.broker(2, port), w.topic("z", 2, tid),
                    w.state("z", 0, (2, 1), 2, 0), w.state("z", 1, (2, 1), 2, 0))
        w.manager.start()
        async with asyncio.timeout(5):
            while w.log("z", 1).log_end_offset == 0:
                await asyncio.sleep(0.01)
        assert w.log("z", 0).log_end_offset == 0
        await w.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]
