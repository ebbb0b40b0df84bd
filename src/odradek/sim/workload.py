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
  records each acknowledged commit; with ``fetch_rng``, every ``fetch_every`` rounds it reads
  the group's committed offsets back (FindCoordinator asked of a random broker, OffsetFetch)
  and records the answer. With ``read_committed`` it reads below the last stable
  offset and drops the aborted transactions' records (:func:`decode_committed`).
- :class:`TxnProducer`: a transactional producer; each transaction writes one record to every
  partition and commits or aborts.
- :class:`GroupMember`: a classic consumer-group member (JoinGroup, SyncGroup, Heartbeat,
  LeaveGroup) that holds the partitions it is assigned, leaves now and then and joins again.

Everything they do is recorded in the :class:`History` (virtual time, one dict per event).
Owned by the simulation's loop; each runs in its own :class:`~odradek.sim.loop.Incarnation`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import struct
from collections.abc import Sequence
from typing import Any

from kio.schema.add_partitions_to_txn.v3 import request as add_req
from kio.schema.create_topics.v7 import request as create_req
from kio.schema.end_txn.v3 import request as end_req
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_req
from kio.schema.find_coordinator.v4 import request as find_req
from kio.schema.heartbeat.v3 import request as heartbeat_req
from kio.schema.init_producer_id.v4 import request as init_req
from kio.schema.join_group.v5 import request as join_req
from kio.schema.leave_group.v3 import request as leave_req
from kio.schema.metadata.v12 import request as metadata_req
from kio.schema.offset_commit.v8 import request as commit_req
from kio.schema.offset_fetch.v8 import request as offset_fetch_req
from kio.schema.produce.v9 import request as produce_req
from kio.schema.sync_group.v3 import request as sync_req
from kio.schema.types import GroupId, ProducerId, TopicName, TransactionalId
from kio.static.primitive import Records, i8, i16, i32, i32Timedelta, i64

from odradek.errors import CorruptFrameError
from odradek.protocol.client import decode_response, encode_request
from odradek.protocol.records import (
    BATCH_HEADER_SIZE,
    CONTROL_ABORT,
    SimpleRecord,
    control_type,
    decode_records,
    encode_batch,
    read_batch_header,
)

__all__ = ["GroupMember", "History", "Producer", "Reader", "RequestFailed", "SimClient",
           "TxnProducer",
           "create_topic", "decode_committed", "decode_values", "fetch_committed"]

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


def decode_committed(records: bytes | None, aborted: Any) -> tuple[list[tuple[int, str]], int]:
    """What a read_committed consumer keeps of a Fetch answer: (offset, value) of every record
    not in an aborted transaction (``aborted``: the answer's aborted transactions, Kafka's
    consumer's filter: a transactional batch of a producer whose aborted transaction began at
    or before it is skipped, up to that producer's ABORT marker), and the offset after the last
    whole batch (-1: none), from which the next fetch goes on."""
    pending = sorted((int(a.first_offset), int(a.producer_id)) for a in aborted or ())
    aborted_now: set[int] = set()
    out: list[tuple[int, str]] = []
    data = bytes(records or b"")
    pos = 0
    end = -1
    while pos + BATCH_HEADER_SIZE <= len(data):
        header = read_batch_header(data, pos)
        if pos + header.size > len(data):
            break
        batch = data[pos : pos + header.size]
        pos += header.size
        end = header.next_offset
        if header.producer_id >= 0:
            while pending and pending[0][0] <= header.last_offset:
                aborted_now.add(pending.pop(0)[1])
        if header.is_control:
            for r in decode_records(batch):
                if control_type(r.key) == CONTROL_ABORT:
                    aborted_now.discard(header.producer_id)
            continue
        if header.is_transactional and header.producer_id in aborted_now:
            continue
        out.extend((r.offset, (r.value or b"").decode()) for r in decode_records(batch))
    return out, end


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


#: Answers after which a transactional request is sent again to a coordinator found again.
_COORDINATOR_MOVED = frozenset({
    ErrorCode.not_coordinator, ErrorCode.coordinator_not_available,
})
#: Answers after which it is sent again as is, a little later.
_TRY_AGAIN = frozenset({
    ErrorCode.coordinator_load_in_progress, ErrorCode.concurrent_transactions,
    ErrorCode.request_timed_out,
})
#: Answers that end this producer id and epoch: the producer starts again with InitProducerId
#: (which aborts whatever transaction it left open).
_FENCED = frozenset({
    ErrorCode.invalid_producer_epoch, ErrorCode.producer_fenced, ErrorCode.invalid_txn_state,
    ErrorCode.unknown_producer_id, ErrorCode.out_of_order_sequence_number,
    ErrorCode.invalid_producer_id_mapping, ErrorCode.transactional_id_not_found,
})


class TxnProducer:
    """A transactional producer: each transaction writes one record to every partition of
    ``topic`` and then commits, or aborts (with probability ``abort_probability``, drawn from
    ``rng``); values are ``<name>-t<n>-p<partition>``. A batch is retried with its sequence
    until acknowledged, as the idempotent producer does; a transaction whose batch cannot be
    written is aborted, and the producer takes a new epoch (InitProducerId); an EndTxn whose answer is lost is sent again; a fenced producer id or
    epoch (the coordinator aborted the transaction after its timeout, say) is replaced by
    InitProducerId. Recorded: ``txn-begin``, ``txn-send`` and ``txn-ack`` per record,
    ``txn-end`` (the decision sent) and ``txn-end-ack`` (``committed``: the decision
    acknowledged) or ``txn-end-unknown`` (the producer does not know what became of it)."""

    def __init__(self, name: str, client: SimClient, bootstrap: list[tuple[str, int]],
                 topic: str, partitions: int, history: History, rng: Any, *,
                 interval_s: float, abort_probability: float = 0.25,
                 timeout_s: float = 10.0) -> None:
        self.name = name
        self.transactional_id = f"sim-{name}"
        self.client = client
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.rng = rng
        self.interval_s = interval_s
        self.abort_probability = abort_probability
        self.timeout_s = timeout_s
        self.metadata = _Metadata(client, bootstrap, topic)
        self.producer_id = -1
        self.epoch = -1
        self.sequences = [0] * partitions
        self.committed = 0
        self.aborted = 0
        self.stopping = False
        self._coordinator: tuple[str, int] | None = None
        self._attempt = 0

    async def _to_coordinator(self, body: Any) -> Any:
        """``body`` answered by the transaction coordinator, asking again (after finding it
        again) until some coordinator answers without a coordinator error."""
        while True:
            if self._coordinator is None:
                self._attempt += 1
                self._coordinator = await _find_coordinator(
                    self.client, self.bootstrap, self.transactional_id, self._attempt,
                    key_type=1,
                )
                if self._coordinator is None:
                    await asyncio.sleep(0.2)
                    continue
            try:
                answer = await self.client.request(self._coordinator, body)
            except RequestFailed:
                self._coordinator = None
                await asyncio.sleep(0.1)
                continue
            code = _error_of(answer)
            if code in _COORDINATOR_MOVED:
                self._coordinator = None
                await asyncio.sleep(0.1)
                continue
            if code in _TRY_AGAIN:
                await asyncio.sleep(0.1)
                continue
            return answer

    async def _init(self) -> None:
        body = init_req.InitProducerIdRequest(
            transactional_id=TransactionalId(self.transactional_id),
            transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=self.timeout_s)),
        )
        while True:
            answer = await self._to_coordinator(body)
            if answer.error_code == ErrorCode.none:
                self.producer_id = int(answer.producer_id)
                self.epoch = int(answer.producer_epoch)
                self.sequences = [0] * self.partitions
                self.history.record("producer-id", producer=self.name, pid=self.producer_id,
                                    epoch=self.epoch)
                return
            await asyncio.sleep(0.2)

    async def run(self) -> None:
        await self._init()
        n = 0
        while not self.stopping:
            if not await self._transaction(f"{self.name}-t{n}"):
                await self._init()
            n += 1
            await asyncio.sleep(self.interval_s)

    async def _transaction(self, txn: str) -> bool:
        """One transaction, to its end; False when the producer must be initialised again."""
        commit = self.rng.random() >= self.abort_probability
        self.history.record("txn-begin", txn=txn, pid=self.producer_id, epoch=self.epoch)
        answer = await self._to_coordinator(add_req.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=TransactionalId(self.transactional_id),
            v3_and_below_producer_id=ProducerId(self.producer_id),
            v3_and_below_producer_epoch=i16(self.epoch),
            v3_and_below_topics=(add_req.AddPartitionsToTxnTopic(
                name=TopicName(self.topic),
                partitions=tuple(i32(p) for p in range(self.partitions)),
            ),),
        ))
        errors = {r.partition_error_code for t in answer.results_by_topic_v3_and_below
                  for r in t.results_by_partition} - {ErrorCode.none}
        if errors:
            # Nothing was written: the transaction ends here (fenced: a new epoch first).
            self.history.record("txn-end-unknown", txn=txn,
                                error=sorted(e.name for e in errors))
            return not errors & _FENCED
        unresolved = False
        for partition in range(self.partitions):
            if not await self._send(txn, partition):
                # A batch whose fate is unknown holds its sequence: the next batch with that
                # sequence would be taken for it (a duplicate, answered with its offset). As
                # Kafka's producer does (KIP-360), abort, then a new epoch.
                commit = False
                unresolved = True
                break
        self.history.record("txn-end", txn=txn, commit=commit)
        answer = await self._to_coordinator(end_req.EndTxnRequest(
            transactional_id=TransactionalId(self.transactional_id),
            producer_id=ProducerId(self.producer_id), producer_epoch=i16(self.epoch),
            committed=commit,
        ))
        if answer.error_code == ErrorCode.none:
            self.history.record("txn-end-ack", txn=txn, committed=commit)
            if commit:
                self.committed += 1
            else:
                self.aborted += 1
            return not unresolved
        self.history.record("txn-end-unknown", txn=txn, error=answer.error_code.name)
        return False

    async def _send(self, txn: str, partition: int) -> bool:
        """The transaction's record to ``partition``, until acknowledged (True) or until it
        cannot be (False: the transaction must abort)."""
        value = f"{txn}-p{partition}"
        sequence = self.sequences[partition]
        batch = encode_batch(
            [SimpleRecord(value.encode(), timestamp=_TIMESTAMP)],
            producer_id=self.producer_id, producer_epoch=self.epoch, base_sequence=sequence,
            is_transactional=True,
        )
        self.history.record("txn-send", txn=txn, p=partition, value=value, seq=sequence)
        for _attempt in range(50):
            target = self.metadata.leader(partition)
            if target is None:
                await self.metadata.refresh()
                target = self.metadata.leader(partition)
                if target is None:
                    await asyncio.sleep(0.2)
                    continue
            body = produce_req.ProduceRequest(
                transactional_id=TransactionalId(self.transactional_id), acks=i16(-1),
                timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                topic_data=(produce_req.TopicProduceData(name=TopicName(self.topic), partition_data=(
                    produce_req.PartitionProduceData(index=i32(partition), records=Records(batch)),
                )),),
            )
            try:
                answer = await self.client.request(target[1], body)
            except RequestFailed:
                await self.metadata.refresh()
                await asyncio.sleep(0.1)
                continue
            result = answer.responses[0].partition_responses[0]
            if result.error_code == ErrorCode.none:
                self.history.record("txn-ack", txn=txn, p=partition, value=value,
                                    offset=int(result.base_offset), by=target[0])
                self.sequences[partition] = sequence + 1
                return True
            self.history.record("txn-send-error", txn=txn, p=partition, to=target[0],
                                error=result.error_code.name)
            if result.error_code in _FENCED:
                return False
            await self.metadata.refresh()
            await asyncio.sleep(0.1)
        return False


def _error_of(answer: Any) -> Any:
    """The error of a transactional answer: its top-level code, or AddPartitionsToTxn's first
    partition error that is a coordinator's (those apply to the whole request)."""
    code = getattr(answer, "error_code", None)
    if code is not None:
        return code
    for t in getattr(answer, "results_by_topic_v3_and_below", ()):
        for r in t.results_by_partition:
            if r.partition_error_code in _COORDINATOR_MOVED | _TRY_AGAIN:
                return r.partition_error_code
    return ErrorCode.none


async def _find_coordinator(
    client: SimClient, bootstrap: list[tuple[str, int]], group: str, attempt: int,
    key_type: int = 0,
) -> tuple[str, int] | None:
    """The coordinator's address of ``group`` (``key_type`` 1: of that transactional id),
    asking ``bootstrap[attempt]``; None when unknown."""
    body = find_req.FindCoordinatorRequest(key_type=i8(key_type), coordinator_keys=(group,))
    try:
        answer = await client.request(bootstrap[attempt % len(bootstrap)], body)
    except RequestFailed:
        return None
    found = answer.coordinators[0]
    if found.error_code != ErrorCode.none:
        return None
    return (found.host, int(found.port))


def _offset_fetch_request(group: str, topic: str, partitions: Sequence[int]) -> Any:
    return offset_fetch_req.OffsetFetchRequest(groups=(
        offset_fetch_req.OffsetFetchRequestGroup(group_id=GroupId(group), topics=(
            offset_fetch_req.OffsetFetchRequestTopics(
                name=TopicName(topic), partition_indexes=tuple(i32(p) for p in partitions),
            ),
        )),
    ))


def _offsets_of(answer: Any) -> dict[int, int] | None:
    """The committed offsets of an OffsetFetch answer (-1: none), or None when the group or any
    partition has an error."""
    if answer.groups[0].error_code != ErrorCode.none:
        return None
    parts = [p for t in answer.groups[0].topics for p in t.partitions]
    if not all(p.error_code == ErrorCode.none for p in parts):
        return None
    return {int(p.partition_index): int(p.committed_offset) for p in parts}


async def fetch_committed(
    client: SimClient, bootstrap: list[tuple[str, int]], group: str, topic: str,
    partitions: int, *, attempts: int = 100,
) -> dict[int, int] | None:
    """``group``'s committed offsets of ``topic`` (-1: none), or None if no coordinator
    answered within ``attempts``."""
    for attempt in range(attempts):
        address = await _find_coordinator(client, bootstrap, group, attempt)
        if address is not None:
            try:
                answer = await client.request(
                    address, _offset_fetch_request(group, topic, range(partitions))
                )
            except RequestFailed:
                answer = None
            offsets = None if answer is None else _offsets_of(answer)
            if offsets is not None:
                return offsets
        await asyncio.sleep(0.2)
    return None


async def read_offsets(
    client: SimClient, bootstrap: list[tuple[str, int]], group: str, topic: str,
    partitions: list[int], history: History, rng: Any, fetch: str,
) -> dict[int, int] | None:
    """``group``'s committed offsets of ``partitions`` read once, as a consumer does when it
    (re)starts or is assigned partitions: FindCoordinator asked of a broker ``rng`` picks
    (librdkafka asks any broker it is connected to), then OffsetFetch from the coordinator it
    names; None when either fails. Recorded: ``offset-fetch`` when the OffsetFetch is sent
    (``fetch``: its name, unique in the run), then ``offset-fetched`` (``partitions`` and their
    ``offsets``, -1: none) or ``offset-fetch-failed``; the checker compares the answer with the
    commits acknowledged before it was sent (``stale-commit-read``)."""
    asked = rng.randrange(len(bootstrap))
    coordinator = await _find_coordinator(client, bootstrap, group, asked)
    if coordinator is None:
        return None
    history.record("offset-fetch", group=group, fetch=fetch, asked=bootstrap[asked][0],
                   to=coordinator[0])
    try:
        answer = await client.request(coordinator, _offset_fetch_request(group, topic, partitions))
    except RequestFailed as e:
        history.record("offset-fetch-failed", group=group, fetch=fetch, error=str(e))
        return None
    offsets = _offsets_of(answer)
    if offsets is None:
        errors = sorted({answer.groups[0].error_code.name} | {
            p.error_code.name for t in answer.groups[0].topics for p in t.partitions
        } - {"none"})
        history.record("offset-fetch-failed", group=group, fetch=fetch, error=",".join(errors))
        return None
    history.record("offset-fetched", group=group, fetch=fetch, by=coordinator[0],
                   partitions=partitions, offsets=[offsets.get(p, -1) for p in partitions])
    return offsets


class Reader:
    """Polls every partition from its leader (read_uncommitted, below the high watermark; with
    ``read_committed``, below the last stable offset, without the aborted transactions' records,
    recorded as ``record_as``); with ``group``, commits its positions after every round, and
    with ``fetch_rng`` reads them back every ``fetch_every`` rounds (:meth:`fetch_offsets`)."""

    def __init__(self, client: SimClient, bootstrap: list[tuple[str, int]], topic: str,
                 partitions: int, history: History, *, interval_s: float,
                 group: str | None = None, read_committed: bool = False,
                 record_as: str = "read", fetch_rng: Any = None, fetch_every: int = 3
                 ) -> None:
        self.client = client
        self.fetch_rng = fetch_rng
        self.fetch_every = fetch_every
        self._rounds = 0
        self._fetches = 0
        self.read_committed = read_committed
        self.record_as = record_as
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
            self._rounds += 1
            if (self.group is not None and self.fetch_rng is not None
                    and self._rounds % self.fetch_every == 0):
                await self.fetch_offsets()
            await asyncio.sleep(self.interval_s)

    async def fetch_offsets(self) -> None:
        """Read the group's committed offsets once (:func:`read_offsets`)."""
        assert self.group is not None and self.fetch_rng is not None
        self._fetches += 1
        await read_offsets(self.client, self.bootstrap, self.group, self.topic,
                           list(range(self.partitions)), self.history, self.fetch_rng,
                           f"{self.client.client_id}-{self._fetches}")

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
        self.history.record("commit", group=self.group, offsets=offsets)
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
        self.history.record("commit-ack", group=self.group, offsets=offsets,
                            by=self._coordinator[0])
        self._committed = offsets

    async def poll(self, partition: int, *, record: bool = True) -> Any:
        """One Fetch of ``partition`` from its position; the partition's answer or None."""
        target = self.metadata.leader(partition)
        if target is None:
            await self.metadata.refresh()
            return None
        body = fetch_req.FetchRequest(
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=100)), min_bytes=i32(1),
            isolation_level=i8(1 if self.read_committed else 0),
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
        if self.read_committed:
            kept, end = decode_committed(result.records, result.aborted_transactions)
            kept = [r for r in kept if r[0] >= self.positions[partition]]
            if kept and record:
                self.history.record(self.record_as, p=partition, by=target[0],
                                    records=[[o, v] for o, v in kept])
            # Past the aborted batches and the markers too, as a consumer's position goes.
            self.positions[partition] = max(self.positions[partition], end)
            return result
        records = decode_values(result.records)
        records = [r for r in records if r[0] >= self.positions[partition]]
        if records:
            if record:
                self.history.record(self.record_as, p=partition, by=target[0],
                                    records=[[o, v] for o, v, _ in records])
            self.positions[partition] = records[-1][0] + 1
        return result


#: Answers after which a group member finds its coordinator again.
_GROUP_MOVED = frozenset({
    ErrorCode.not_coordinator, ErrorCode.coordinator_not_available,
    ErrorCode.coordinator_load_in_progress,
})


class GroupMember:
    """A member of a classic consumer group (protocol type ``consumer``, one protocol):
    JoinGroup (again with the member id the coordinator asks it to use), SyncGroup (the leader
    deals the topic's partitions out round-robin over the sorted member ids; an assignment is
    the partition numbers, comma-separated), Heartbeat every second until a rebalance or an
    error sends it to join again, and now and then (``rng``) LeaveGroup, a pause and a new
    join. Recorded: ``member-joined`` (generation, leader, members) and ``member-assigned``
    (generation, partitions, and the join's leader and members) per member, ``member-left``."""

    def __init__(self, name: str, client: SimClient, bootstrap: list[tuple[str, int]],
                 group: str, partitions: int, history: History, rng: Any, *,
                 topic: str | None = None, counters: list[int] | None = None,
                 fetch_rng: Any = None) -> None:
        self.name = name
        self.topic = topic
        self.counters = counters
        self.fetch_rng = fetch_rng
        self._fetches = 0
        self.client = client
        self.bootstrap = bootstrap
        self.group = group
        self.partitions = partitions
        self.history = history
        self.rng = rng
        self.member_id = ""
        self.stopping = False
        self._coordinator: tuple[str, int] | None = None
        self._attempt = 0
        self.generations = 0

    async def _ask(self, body: Any) -> Any | None:
        """``body`` answered by the group coordinator, or None (no answer, or a coordinator
        error: found again next time)."""
        if self._coordinator is None:
            self._attempt += 1
            self._coordinator = await _find_coordinator(
                self.client, self.bootstrap, self.group, self._attempt
            )
            if self._coordinator is None:
                await asyncio.sleep(0.2)
                return None
        try:
            answer = await self.client.request(self._coordinator, body)
        except RequestFailed:
            self._coordinator = None
            await asyncio.sleep(0.2)
            return None
        if answer.error_code in _GROUP_MOVED:
            self._coordinator = None
            await asyncio.sleep(0.2)
            return None
        return answer

    async def run(self) -> None:
        while not self.stopping:
            joined = await self._join()
            if joined is None:
                continue
            generation, assignment = joined
            if assignment is None:
                continue
            committing = (self.topic is not None and self.counters is not None
                          and self.fetch_rng is not None and bool(assignment))
            if committing:
                # Where a consumer would start its partitions from.
                assert self.topic is not None
                self._fetches += 1
                await read_offsets(self.client, self.bootstrap, self.group, self.topic,
                                   assignment, self.history, self.fetch_rng,
                                   f"{self.name}-{self._fetches}")
            beats = self.rng.randrange(2, 12)
            while not self.stopping and beats > 0:
                await asyncio.sleep(1.0)
                beats -= 1
                answer = await self._ask(heartbeat_req.HeartbeatRequest(
                    group_id=GroupId(self.group), generation_id=i32(generation),
                    member_id=self.member_id, group_instance_id=None,
                ))
                if answer is None or answer.error_code != ErrorCode.none:
                    if answer is not None and answer.error_code in (
                        ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id,
                    ):
                        self.member_id = ""
                    break
                if committing:
                    await self._commit(generation, assignment)
            else:
                if not self.stopping:
                    await self._leave()
                    await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        if self.member_id:
            await self._leave()

    async def _commit(self, generation: int, partitions: list[int]) -> None:
        """Commit the next offset of each of ``partitions`` in ``generation``: the members'
        shared ``counters`` give every commit of a partition, whoever sends it, a higher offset
        than any sent before (a consumer's position, as far as the coordinator can tell: it
        never looks at the log), so what was committed only moves forward. Recorded as the
        reader's commits are, with ``partitions``; an error or no answer is not retried."""
        assert self.counters is not None and self.topic is not None
        offsets = []
        for p in partitions:
            self.counters[p] += 1
            offsets.append(self.counters[p])
        body = commit_req.OffsetCommitRequest(
            group_id=GroupId(self.group), generation_id_or_member_epoch=i32(generation),
            member_id=self.member_id,
            topics=(commit_req.OffsetCommitRequestTopic(name=TopicName(self.topic), partitions=tuple(
                commit_req.OffsetCommitRequestPartition(
                    partition_index=i32(p), committed_offset=i64(o), committed_metadata=""
                ) for p, o in zip(partitions, offsets, strict=True)
            )),),
        )
        self.history.record("commit", group=self.group, member=self.name, partitions=partitions,
                            offsets=offsets, generation=generation)
        if self._coordinator is None:
            self._attempt += 1
            self._coordinator = await _find_coordinator(
                self.client, self.bootstrap, self.group, self._attempt
            )
            if self._coordinator is None:
                self.history.record("commit-failed", group=self.group, member=self.name,
                                    error="no coordinator")
                return
        coordinator = self._coordinator
        try:
            answer = await self.client.request(coordinator, body)
        except RequestFailed as e:
            self.history.record("commit-failed", group=self.group, member=self.name,
                                error=str(e))
            self._coordinator = None
            return
        codes = {p.error_code for t in answer.topics for p in t.partitions}
        if codes != {ErrorCode.none}:
            self.history.record("commit-error", group=self.group, member=self.name,
                                errors=sorted(c.name for c in codes - {ErrorCode.none}))
            if codes & _GROUP_MOVED:
                self._coordinator = None
            return
        self.history.record("commit-ack", group=self.group, member=self.name,
                            partitions=partitions, offsets=offsets, by=coordinator[0])

    async def _leave(self) -> None:
        answer = await self._ask(leave_req.LeaveGroupRequest(
            group_id=GroupId(self.group),
            members=(leave_req.MemberIdentity(member_id=self.member_id, group_instance_id=None),),
        ))
        self.history.record("member-left", member=self.name,
                            error=None if answer is None else answer.error_code.name)
        self.member_id = ""

    async def _join(self) -> tuple[int, list[int] | None] | None:
        answer = await self._ask(join_req.JoinGroupRequest(
            group_id=GroupId(self.group),
            session_timeout=i32Timedelta.parse(datetime.timedelta(seconds=6)),
            rebalance_timeout=i32Timedelta.parse(datetime.timedelta(seconds=3)),
            member_id=self.member_id, group_instance_id=None, protocol_type="consumer",
            protocols=(join_req.JoinGroupRequestProtocol(name="range", metadata=b"sim"),),
        ))
        if answer is None:
            return None
        if answer.error_code == ErrorCode.member_id_required:
            self.member_id = answer.member_id
            return None
        if answer.error_code != ErrorCode.none:
            if answer.error_code in (ErrorCode.unknown_member_id, ErrorCode.fenced_instance_id):
                self.member_id = ""
            await asyncio.sleep(0.2)
            return None
        self.member_id = answer.member_id
        generation = int(answer.generation_id)
        members = sorted(m.member_id for m in answer.members)
        self.history.record("member-joined", member=self.name, generation=generation,
                            leader=answer.leader, me=self.member_id,
                            members=members if answer.leader == self.member_id else None)
        assignments: tuple[sync_req.SyncGroupRequestAssignment, ...] = ()
        if answer.leader == self.member_id:
            dealt: dict[str, list[int]] = {m: [] for m in members}
            for p in range(self.partitions):
                dealt[members[p % len(members)]].append(p)
            assignments = tuple(
                sync_req.SyncGroupRequestAssignment(
                    member_id=m, assignment=",".join(map(str, ps)).encode()
                ) for m, ps in dealt.items()
            )
        synced = await self._ask(sync_req.SyncGroupRequest(
            group_id=GroupId(self.group), generation_id=i32(generation),
            member_id=self.member_id, group_instance_id=None, assignments=assignments,
        ))
        if synced is None or synced.error_code != ErrorCode.none:
            if synced is not None and synced.error_code == ErrorCode.unknown_member_id:
                self.member_id = ""
            return generation, None
        mine = [int(x) for x in bytes(synced.assignment).decode().split(",") if x]
        self.generations += 1
        self.history.record("member-assigned", member=self.name, me=self.member_id,
                            generation=generation, partitions=mine, leader=answer.leader,
                            members=members if answer.leader == self.member_id else None)
        return generation, mine
