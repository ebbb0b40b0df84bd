"""The simulation's clients: Kafka requests built with odradek's own codecs
(:mod:`odradek.protocol.client`, ``kio`` messages), sent over the simulated network.

- :class:`SimClient`: one connection per broker, one request at a time on each; a request that
  fails or times out closes its connection and raises :class:`RequestFailed`.
- :class:`Producer`: an idempotent ``acks=all`` producer. One batch of one record in flight at
  a time; a batch that fails for any reason is retried with the same producer id, epoch and
  sequence (idempotence makes that safe), after fresh metadata, until it is acknowledged or the
  workload ends. Values are unique (``p<producer>-<n>``).
- :class:`Reader`: a consumer that polls every partition from its leader, below the high
  watermark, and records what it saw; with a group, it commits its positions to the group
  coordinator (a simple consumer's commits: no member, generation -1) after every round, and
  records each acknowledged commit.

Everything they do is recorded in the :class:`History` (virtual time, one dict per event).
Owned by the simulation's loop; each runs in its own :class:`~odradek.sim.loop.Incarnation`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import struct
from typing import Any

from kio.schema.create_topics.v7 import request as create_req
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_req
from kio.schema.find_coordinator.v4 import request as find_req
from kio.schema.init_producer_id.v4 import request as init_req
from kio.schema.metadata.v12 import request as metadata_req
from kio.schema.offset_commit.v8 import request as commit_req
from kio.schema.offset_fetch.v8 import request as offset_fetch_req
from kio.schema.produce.v9 import request as produce_req
from kio.schema.types import GroupId, TopicName
from kio.static.primitive import Records, i8, i16, i32, i32Timedelta, i64

from odradek.errors import CorruptFrameError
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    SimpleRecord,
    decode_records,
    encode_batch,
    read_batch_header,
)

__all__ = ["History", "Producer", "Reader", "RequestFailed", "SimClient", "create_topic",
           "decode_values", "fetch_committed"]

_SIZE = struct.Struct(">i")
_TIMESTAMP = 1_767_225_600_000


class History:
    """The events of one run, in the order they happened, each stamped with virtual time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.events: list[dict[str, Any]] = []

    def record(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": round(self._loop.time(), 6), "kind": kind, **fields})

    def lines(self) -> list[str]:
        return [json.dumps(e, sort_keys=True) for e in self.events]


class RequestFailed(Exception):
    """The request got no answer (connection refused, reset, closed, or timed out)."""


class _Connection:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lock = asyncio.Lock()
        self.correlation = 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class SimClient:
    """Requests to brokers by address (see the module docstring)."""

    def __init__(self, client_id: str, *, timeout_s: float = 5.0) -> None:
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._connections: dict[tuple[str, int], _Connection] = {}

    async def request(self, address: tuple[str, int], body: Any) -> Any:
        conn = self._connections.get(address)
        if conn is None:
            conn = self._connections[address] = _Connection(address)
        try:
            return await asyncio.wait_for(self._request(conn, body), self.timeout_s)
        except (OSError, EOFError, TimeoutError, CorruptFrameError) as e:
            conn.close()
            self._connections.pop(address, None)
            raise RequestFailed(f"{address[0]}: {type(e).__name__}") from e
        except asyncio.CancelledError:
            conn.close()
            self._connections.pop(address, None)
            raise

    async def _request(self, conn: _Connection, body: Any) -> Any:
        async with conn.lock:
            if conn.writer is None:
                conn.reader, conn.writer = await asyncio.open_connection(*conn.address)
            assert conn.reader is not None
            conn.correlation += 1
            conn.writer.write(encode_request(body, conn.correlation, self.client_id))
            await conn.writer.drain()
            size = _SIZE.unpack(await conn.reader.readexactly(4))[0]
            frame = await conn.reader.readexactly(size)
            got, response = decode_response(
                frame, type(body).__api_key__, type(body).__version__
            )
            if got != conn.correlation:
                raise CorruptFrameError(f"answer to {got}, expected {conn.correlation}")
            return response

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


class _Metadata:
    """Leaders of one topic's partitions, as the last Metadata answer said."""

    def __init__(self, client: SimClient, bootstrap: list[tuple[str, int]], topic: str) -> None:
        self.client = client
        self.bootstrap = bootstrap
        self.topic = topic
        self.brokers: dict[int, tuple[str, int]] = {}
        self.leaders: dict[int, int] = {}
        self._next = 0

    async def refresh(self) -> bool:
        address = self.bootstrap[self._next % len(self.bootstrap)]
        self._next += 1
        body = metadata_req.MetadataRequest(
            topics=(metadata_req.MetadataRequestTopic(topic_id=None, name=TopicName(self.topic)),),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False,
        )
        try:
            answer = await self.client.request(address, body)
        except RequestFailed:
            return False
        self.brokers = {int(b.node_id): (b.host, int(b.port)) for b in answer.brokers}
        for t in answer.topics:
            if t.name == self.topic and t.error_code == ErrorCode.none:
                self.leaders = {int(p.partition_index): int(p.leader_id) for p in t.partitions}
                return True
        return False

    def leader(self, partition: int) -> tuple[int, tuple[str, int]] | None:
        node = self.leaders.get(partition, -1)
        address = self.brokers.get(node)
        return (node, address) if address is not None else None


async def create_topic(
    client: SimClient, bootstrap: list[tuple[str, int]], topic: str, partitions: int,
    replication_factor: int, history: History,
) -> None:
    """Create ``topic``, asking broker after broker until one says it exists."""
    attempt = 0
    while True:
        body = create_req.CreateTopicsRequest(
            topics=(create_req.CreatableTopic(
                name=TopicName(topic), num_partitions=i32(partitions),
                replication_factor=i16(replication_factor), assignments=(), configs=(),
            ),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=10)),
        )
        address = bootstrap[attempt % len(bootstrap)]
        attempt += 1
        try:
            answer = await client.request(address, body)
        except RequestFailed:
            await asyncio.sleep(0.5)
            continue
        code = answer.topics[0].error_code
        if code in (ErrorCode.none, ErrorCode.topic_already_exists):
            history.record("topic-created", topic=topic, partitions=partitions)
            return
        await asyncio.sleep(0.5)


def decode_values(records: bytes | None) -> list[tuple[int, str, int]]:
    """(offset, value, leader epoch) of every record in ``records`` (whole batches)."""
    out: list[tuple[int, str, int]] = []
    data = bytes(records or b"")
    pos = 0
    while pos + BATCH_HEADER_SIZE <= len(data):
        header = read_batch_header(data, pos)
        if pos + header.size > len(data):
            break
        if not header.is_control:
            for r in decode_records(data[pos : pos + header.size]):
                out.append((r.offset, (r.value or b"").decode(), header.partition_leader_epoch))
        pos += header.size
    return out


class Producer:
    """An idempotent acks=all producer (see the module docstring)."""

    def __init__(self, name: str, client: SimClient, bootstrap: list[tuple[str, int]],
                 topic: str, partitions: int, history: History, *, interval_s: float) -> None:
        self.name = name
        self.client = client
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.interval_s = interval_s
        self.metadata = _Metadata(client, bootstrap, topic)
        self.producer_id = -1
        self.epoch = -1
        self.sequences = [0] * partitions
        self.acked = 0
        self.stopping = False

    async def _init(self) -> None:
        attempt = 0
        while not self.stopping:
            address = self.bootstrap[attempt % len(self.bootstrap)]
            attempt += 1
            body = init_req.InitProducerIdRequest(
                transactional_id=None, transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=60)),
            )
            try:
                answer = await self.client.request(address, body)
            except RequestFailed:
                await asyncio.sleep(0.2)
                continue
            if answer.error_code == ErrorCode.none:
                self.producer_id = int(answer.producer_id)
                self.epoch = int(answer.producer_epoch)
                self.history.record("producer-id", producer=self.name, pid=self.producer_id,
                                    epoch=self.epoch)
                return
            await asyncio.sleep(0.2)

    async def run(self) -> None:
        await self._init()
        n = 0
        while not self.stopping:
            partition = n % self.partitions
            value = f"{self.name}-{n}"
            await self._send(partition, value)
            n += 1
            await asyncio.sleep(self.interval_s)

    async def _send(self, partition: int, value: str) -> None:
        sequence = self.sequences[partition]
        batch = encode_batch(
            [SimpleRecord(value.encode(), timestamp=_TIMESTAMP)],
            producer_id=self.producer_id, producer_epoch=self.epoch, base_sequence=sequence,
        )
        self.history.record("send", producer=self.name, p=partition, value=value, seq=sequence)
        while not self.stopping:
            target = self.metadata.leader(partition)
            if target is None:
                await self.metadata.refresh()
                target = self.metadata.leader(partition)
                if target is None:
                    await asyncio.sleep(0.2)
                    continue
            body = produce_req.ProduceRequest(
                transactional_id=None, acks=i16(-1), timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                topic_data=(produce_req.TopicProduceData(name=TopicName(self.topic), partition_data=(
                    produce_req.PartitionProduceData(index=i32(partition), records=Records(batch)),
                )),),
            )
            try:
                answer = await self.client.request(target[1], body)
            except RequestFailed as e:
                self.history.record("send-failed", producer=self.name, p=partition,
                                    value=value, to=target[0], error=str(e))
                await self.metadata.refresh()
                await asyncio.sleep(0.1)
                continue
            result = answer.responses[0].partition_responses[0]
            if result.error_code == ErrorCode.none:
                self.history.record("ack", producer=self.name, p=partition, value=value,
                                    offset=int(result.base_offset), by=target[0])
                self.sequences[partition] = sequence + 1
                self.acked += 1
                return
            self.history.record("send-error", producer=self.name, p=partition, value=value,
                                to=target[0], error=result.error_code.name)
            if result.error_code in (ErrorCode.out_of_order_sequence_number,
                                     ErrorCode.unknown_producer_id,
                                     ErrorCode.invalid_producer_epoch):
                # Not retriable with this sequence: the producer is done (recorded; a fault
                # run should not bring it here while a broker keeps producer state).
                self.stopping = True
                return
            await self.metadata.refresh()
            await asyncio.sleep(0.1)


async def _find_coordinator(
    client: SimClient, bootstrap: list[tuple[str, int]], group: str, attempt: int
) -> tuple[str, int] | None:
    """The group coordinator's address, asking ``bootstrap[attempt]``; None when unknown."""
    body = find_req.FindCoordinatorRequest(key_type=i8(0), coordinator_keys=(group,))
    try:
        answer = await client.request(bootstrap[attempt % len(bootstrap)], body)
    except RequestFailed:
        return None
    found = answer.coordinators[0]
    if found.error_code != ErrorCode.none:
        return None
    return (found.host, int(found.port))


async def fetch_committed(
    client: SimClient, bootstrap: list[tuple[str, int]], group: str, topic: str,
    partitions: int, *, attempts: int = 100,
) -> dict[int, int] | None:
    """``group``'s committed offsets of ``topic`` (-1: none), or None if no coordinator
    answered within ``attempts``."""
    for attempt in range(attempts):
        address = await _find_coordinator(client, bootstrap, group, attempt)
        if address is not None:
            body = offset_fetch_req.OffsetFetchRequest(groups=(
                offset_fetch_req.OffsetFetchRequestGroup(group_id=GroupId(group), topics=(
                    offset_fetch_req.OffsetFetchRequestTopics(
                        name=TopicName(topic),
                        partition_indexes=tuple(i32(p) for p in range(partitions)),
                    ),
                )),
            ))
            try:
                answer = await client.request(address, body)
            except RequestFailed:
                answer = None
            if answer is not None and answer.groups[0].error_code == ErrorCode.none:
                parts = [p for t in answer.groups[0].topics for p in t.partitions]
                if all(p.error_code == ErrorCode.none for p in parts):
                    return {int(p.partition_index): int(p.committed_offset) for p in parts}
        await asyncio.sleep(0.2)
    return None


class Reader:
    """Polls every partition from its leader (read_uncommitted, below the high watermark);
    with ``group``, commits its positions after every round."""

    def __init__(self, client: SimClient, bootstrap: list[tuple[str, int]], topic: str,
                 partitions: int, history: History, *, interval_s: float,
                 group: str | None = None) -> None:
        self.client = client
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.interval_s = interval_s
        self.group = group
        self.metadata = _Metadata(client, bootstrap, topic)
        self.positions = [0] * partitions
        self.stopping = False
        self._coordinator: tuple[str, int] | None = None
        self._attempt = 0
        self._committed = [0] * partitions

    async def run(self) -> None:
        while not self.stopping:
            for partition in range(self.partitions):
                await self.poll(partition)
            if self.group is not None and self.positions != self._committed:
                await self.commit()
            await asyncio.sleep(self.interval_s)

    async def commit(self) -> None:
        """Commit the current positions once (an error or no answer is recorded, not retried:
        the next round commits again)."""
        assert self.group is not None
        if self._coordinator is None:
            self._attempt += 1
            self._coordinator = await _find_coordinator(
                self.client, self.bootstrap, self.group, self._attempt
            )
            if self._coordinator is None:
                return
        offsets = list(self.positions)
        body = commit_req.OffsetCommitRequest(
            group_id=GroupId(self.group), generation_id_or_member_epoch=i32(-1), member_id="",
            topics=(commit_req.OffsetCommitRequestTopic(name=TopicName(self.topic), partitions=tuple(
                commit_req.OffsetCommitRequestPartition(
                    partition_index=i32(p), committed_offset=i64(o), committed_metadata=""
                ) for p, o in enumerate(offsets)
            )),),
        )
        self.history.record("commit", offsets=offsets)
        try:
            answer = await self.client.request(self._coordinator, body)
        except RequestFailed as e:
            self.history.record("commit-failed", error=str(e))
            self._coordinator = None
            return
        errors = sorted({p.error_code.name for t in answer.topics for p in t.partitions
                         if p.error_code != ErrorCode.none})
        if errors:
            self.history.record("commit-error", errors=errors)
            self._coordinator = None
            return
        self.history.record("commit-ack", offsets=offsets, by=self._coordinator[0])
        self._committed = offsets

    async def poll(self, partition: int, *, record: bool = True) -> Any:
        """One Fetch of ``partition`` from its position; the partition's answer or None."""
        target = self.metadata.leader(partition)
        if target is None:
            await self.metadata.refresh()
            return None
        body = fetch_req.FetchRequest(
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=100)), min_bytes=i32(1),
            topics=(fetch_req.FetchTopic(topic=TopicName(self.topic), partitions=(
                fetch_req.FetchPartition(partition=i32(partition),
                                         fetch_offset=i64(self.positions[partition]),
                                         partition_max_bytes=i32(1 << 20)),
            )),),
            forgotten_topics_data=(),
        )
        try:
            answer = await self.client.request(target[1], body)
        except RequestFailed:
            await self.metadata.refresh()
            return None
        result = answer.responses[0].partitions[0]
        if result.error_code != ErrorCode.none:
            await self.metadata.refresh()
            return None
        records = decode_values(result.records)
        records = [r for r in records if r[0] >= self.positions[partition]]
        if records:
            if record:
                self.history.record("read", p=partition, by=target[0],
                                    records=[[o, v] for o, v, _ in records])
            self.positions[partition] = records[-1][0] + 1
        return result
