"""The inter-broker client's socket side (:mod:`odradek.broker.inter_broker`), against a real
server on loopback that answers with frames encoded by the protocol's own codec: an answer
dribbled in byte by byte, and one of several MiB (a replica fetch's size) in one write, arrive
whole; a connection the server drops mid-answer fails that request with BrokerUnreachable and
the next request opens a new connection; the follower's receive buffer is the one asked for."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import uuid
from typing import Any

import pytest
from kio.schema.fetch.v16 import request as fetch_req
from kio.schema.fetch.v16 import response as fetch_resp
from kio.schema.types import BrokerId
from kio.static.primitive import i8, i32, i32Timedelta, i64

from odradek.broker.inter_broker import BrokerUnreachable, InterBrokerClient, _rmem_max
from odradek.errors import ErrorCode
from odradek.protocol.messages import decode_request, encode_response, peek_preamble, request_schema
from odradek.protocol.replica_fetch import decode_replica_fetch_response
from staticview import StaticView, registered

TOPIC_ID = uuid.uuid4()


def _request() -> Any:
    return fetch_req.FetchRequest(
        cluster_id=None,
        replica_state=fetch_req.ReplicaState(replica_id=BrokerId(2), replica_epoch=i64(-1)),
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=0)),
        min_bytes=i32(1),
        max_bytes=i32(50 << 20),
        isolation_level=i8(0),
        session_id=i32(0),
        session_epoch=i32(-1),
        topics=(fetch_req.FetchTopic(topic_id=TOPIC_ID, partitions=(fetch_req.FetchPartition(
            partition=i32(0), current_leader_epoch=i32(0), fetch_offset=i64(0),
            last_fetched_epoch=i32(-1), log_start_offset=i64(0),
            partition_max_bytes=i32(50 << 20),
        ),)),),
        forgotten_topics_data=(),
        rack_id="",
    )


def _answer(records: bytes) -> Any:
    return fetch_resp.FetchResponse(
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        session_id=i32(0),
        responses=(fetch_resp.FetchableTopicResponse(topic_id=TOPIC_ID, partitions=(
            fetch_resp.PartitionData(
                partition_index=i32(0), error_code=ErrorCode.none, high_watermark=i64(7),
                last_stable_offset=i64(7), log_start_offset=i64(0),
                diverging_epoch=fetch_resp.EpochEndOffset(epoch=i32(-1), end_offset=i64(-1)),
                current_leader=fetch_resp.LeaderIdAndEpoch(
                    leader_id=BrokerId(-1), leader_epoch=i32(-1)),
                snapshot_id=fetch_resp.SnapshotId(end_offset=i64(-1), epoch=i32(-1)),
                aborted_transactions=None, preferred_read_replica=BrokerId(-1),
                records=records,
            ),
        )),),
        node_endpoints=(),
    )


class _Leader:
    """A server that answers each Fetch with the next of ``answers``: (records, how), ``how``
    being "whole" (one write), "dribble" (a byte per write), "chunks" (writes of 999 bytes),
    "cut" (half, then close) or "silent" (no answer, until the client closes)."""

    def __init__(self, answers: list[tuple[bytes, str]]) -> None:
        self.answers = answers
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                size = int.from_bytes(await reader.readexactly(4), "big")
                frame = await reader.readexactly(size)
                preamble = peek_preamble(frame)
                schema = request_schema(preamble.api_key, preamble.api_version)
                assert schema is not None
                decode_request(frame, preamble, schema)
                records, how = self.answers.pop(0)
                out = encode_response(1, preamble.correlation_id, _answer(records))
                if how == "dribble":
                    for i in range(len(out)):
                        writer.write(out[i : i + 1])
                        await writer.drain()
                        await asyncio.sleep(0)
                elif how == "chunks":
                    for i in range(0, len(out), 999):
                        writer.write(out[i : i + 999])
                        await writer.drain()
                        await asyncio.sleep(0)
                elif how == "silent":
                    await reader.read()  # no answer: until the client gives up and closes
                    break
                elif how == "cut":
                    writer.write(out[: len(out) // 2])
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _client(port: int, **kwargs: Any) -> InterBrokerClient:
    view = StaticView("c", 1, (registered(1, port=port),))
    return InterBrokerClient(view, 2, **kwargs)


def _records(response: Any) -> bytes:
    return bytes(response.responses[0].partitions[0].records)


def test_answers_arrive_whole_however_they_are_cut() -> None:
    big = os.urandom(6 << 20)  # larger than any single read, and than the receive buffer
    small = b"tiny records"

    async def scenario() -> None:
        leader = _Leader([(small, "dribble"), (big, "whole"), (b"", "whole"), (small, "whole")])
        port = await leader.start()
        client = _client(port, receive_buffer_bytes=1 << 20)
        try:
            assert _records(await client.send(1, _request())) == small
            assert _records(await client.send(1, _request())) == big
            assert _records(await client.send(1, _request())) == b""
            answer = await client.send(1, _request())
            assert _records(answer) == small
            assert int(answer.responses[0].partitions[0].high_watermark) == 7
            assert leader.connections == 1
        finally:
            await client.close()
            await leader.close()

    asyncio.run(scenario())


def test_a_held_answer_is_not_overwritten_by_the_next() -> None:
    """Large answers decoded without copying (the replica fetcher's decoder) are views of the
    frame's memory, which the reader reuses for the next large answer only once nothing holds
    a view of it: an answer kept while later ones arrive keeps its bytes."""
    bigs = [os.urandom(3 << 20) for _ in range(4)]

    async def scenario() -> None:
        leader = _Leader([(b, "chunks" if i % 2 else "whole") for i, b in enumerate(bigs)])
        port = await leader.start()
        client = _client(port)
        try:
            kept = await client.send(1, _request(), decode_replica_fetch_response)
            assert isinstance(kept.responses[0].partitions[0].records, memoryview)
            for b in bigs[1:]:
                answer = await client.send(1, _request(), decode_replica_fetch_response)
                assert _records(answer) == b
                del answer  # its memory may serve the next answer
            assert _records(kept) == bigs[0]
        finally:
            await client.close()
            await leader.close()

    asyncio.run(scenario())


def test_answers_around_the_small_read_buffer_arrive_whole() -> None:
    """Frames just under, at and just over what a connection reads before it knows a frame's
    size (64 KiB with the prefix), whole or in pieces."""
    # 78 bytes of prefix, header and fields around the records: 65458 of records is a frame
    # of exactly 64 KiB with its prefix.
    sizes = [65458 + d for d in (-300, -2, -1, 0, 1, 2, 300)]
    answers = [(os.urandom(n), how) for n in sizes for how in ("whole", "chunks")]
    expected = [records for records, _ in answers]

    async def scenario() -> None:
        leader = _Leader(list(answers))
        port = await leader.start()
        client = _client(port)
        try:
            for records in expected:
                assert _records(await client.send(1, _request())) == records
            assert leader.connections == 1
        finally:
            await client.close()
            await leader.close()

    asyncio.run(scenario())


def test_a_connection_dropped_mid_answer_fails_that_request_only() -> None:
    async def scenario() -> None:
        leader = _Leader([(os.urandom(1 << 20), "cut"), (b"after", "whole")])
        port = await leader.start()
        client = _client(port)
        try:
            with pytest.raises(BrokerUnreachable):
                await client.send(1, _request())
            assert _records(await client.send(1, _request())) == b"after"
            assert leader.connections == 2
        finally:
            await client.close()
            await leader.close()

    asyncio.run(scenario())


def test_an_unanswered_request_times_out_and_the_next_reconnects() -> None:
    async def scenario() -> None:
        leader = _Leader([(b"", "silent"), (b"after", "whole")])
        port = await leader.start()
        client = _client(port, request_timeout_ms=200)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(BrokerUnreachable, match="TimeoutError"):
                await client.send(1, _request())
            assert 0.15 < loop.time() - started < 5
            assert _records(await client.send(1, _request())) == b"after"
            assert leader.connections == 2
        finally:
            await client.close()
            await leader.close()

    asyncio.run(scenario())


def test_a_refused_connection_is_broker_unreachable() -> None:
    async def scenario() -> None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = _client(port, receive_buffer_bytes=1 << 20)
        try:
            with pytest.raises(BrokerUnreachable):
                await client.send(1, _request())
        finally:
            await client.close()

    asyncio.run(scenario())


def test_the_receive_buffer_is_the_one_asked_for() -> None:
    async def scenario() -> None:
        # More answers than asked for: the server keeps both connections open.
        leader = _Leader([(b"x", "whole")] * 4)
        port = await leader.start()
        asked = min(512 << 10, _rmem_max())  # beyond the kernel's cap it is not set at all
        sized, default = _client(port, receive_buffer_bytes=asked), _client(port)
        try:
            await sized.send(1, _request())
            await default.send(1, _request())
            got = {
                name: c._connections[1]._transport.get_extra_info("socket").getsockopt(  # type: ignore[union-attr]
                    socket.SOL_SOCKET, socket.SO_RCVBUF
                )
                for name, c in (("sized", sized), ("default", default))
            }
            # Linux doubles what is asked (for its bookkeeping); the system default is smaller.
            assert got["sized"] >= asked, got
            assert got["default"] != got["sized"], got
        finally:
            await sized.close()
            await default.close()
            await leader.close()

    asyncio.run(scenario())
