"""A tiny blocking Kafka client over the ``kio`` codecs, for the admin APIs librdkafka does not
offer (ListTransactions, DescribeTransactions, DescribeProducers, WriteTxnMarkers).

No ApiVersions negotiation: every API is spoken in one fixed version (:data:`VERSIONS`), chosen
so that any Kafka 3.0+ broker (KIP-664) and odradek understand it. A :class:`Cluster` owns its
connections, opens them on demand (to the bootstrap servers, or to a broker by node id as the
metadata names it) and closes them in :meth:`Cluster.close`. Everything runs on the calling
thread; a broker that cannot be reached, or does not answer within the time-out, is a
:class:`~odradek.cli._common.CliError`.
"""

from __future__ import annotations

import datetime
import io
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

from kio.serial import entity_reader, entity_writer

from odradek.cli._common import CliError
from odradek.errors import ErrorCode
from odradek.protocol.build import build
from odradek.protocol.client import decode_response
from odradek.protocol.messages import request_schema, response_schema
from odradek.protocol.varint import MAX_VARINT32_BYTES, read_uvarint

__all__ = [
    "read_describe_transactions",
    "DescribeTransactionsAnswer",
    "METADATA",
    "FIND_COORDINATOR",
    "WRITE_TXN_MARKERS",
    "DESCRIBE_PRODUCERS",
    "DESCRIBE_TRANSACTIONS",
    "LIST_TRANSACTIONS",
    "VERSIONS",
    "Cluster",
    "Connection",
    "request_module",
]

METADATA = 3
FIND_COORDINATOR = 10
WRITE_TXN_MARKERS = 27
DESCRIBE_PRODUCERS = 61
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66

#: The version each API is spoken in.
VERSIONS: dict[int, int] = {
    METADATA: 9,
    FIND_COORDINATOR: 3,
    WRITE_TXN_MARKERS: 1,
    DESCRIBE_PRODUCERS: 0,
    DESCRIBE_TRANSACTIONS: 0,
    LIST_TRANSACTIONS: 0,
    43: 2,  # ElectLeaders (cli/_reassign.py)
    45: 0,  # AlterPartitionReassignments
    46: 0,  # ListPartitionReassignments
}

_SIZE = struct.Struct(">i")
#: Larger answers than this are taken as a stream that is not Kafka's.
_MAX_RESPONSE = 100 * 1024 * 1024


def request_module(api_key: int) -> ModuleType:
    """The kio module of ``api_key``'s request classes in its :data:`VERSIONS` version."""
    schema = request_schema(api_key, VERSIONS[api_key])
    assert schema is not None
    return sys.modules[schema.__module__]


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Connection:
    """One TCP connection to one broker; requests are sent and answered one at a time."""

    def __init__(self, address: str, connect_timeout: float, request_timeout: float,
                 client_id: str) -> None:
        self.address = address
        self._client_id = client_id
        self._correlation_id = 0
        try:
            self._sock = socket.create_connection(_split(address), timeout=connect_timeout)
        except OSError as e:
            raise CliError(f"cannot reach broker at {address} ({_reason(e)})") from None
        self._sock.settimeout(request_timeout)

    def close(self) -> None:
        self._sock.close()

    def request(self, body: Any, decode: Callable[[bytes, int], Any] | None = None) -> Any:
        """Send ``body`` (a kio request entity) and return the decoded response body
        (``decode(answer, offset)`` instead of the kio codec when given)."""
        schema = type(body)
        self._correlation_id += 1
        header_cls = schema.__header_schema__
        buf = io.BytesIO()
        buf.write(b"\0\0\0\0")
        entity_writer(header_cls)(buf, header_cls(
            request_api_key=schema.__api_key__,
            request_api_version=schema.__version__,
            correlation_id=self._correlation_id,
            client_id=self._client_id,
        ))
        entity_writer(schema)(buf, body)
        frame = buf.getbuffer()
        _SIZE.pack_into(frame, 0, len(frame) - 4)
        try:
            self._sock.sendall(frame)
            (size,) = _SIZE.unpack(self._exactly(4))
            if not 0 <= size <= _MAX_RESPONSE:
                raise CliError(f"broker at {self.address} sent a malformed answer")
            answer = self._exactly(size)
        except TimeoutError:
            raise CliError(f"broker at {self.address} did not answer in time") from None
        except OSError as e:
            raise CliError(f"lost the connection to {self.address} ({_reason(e)})") from None
        try:
            if decode is None:  # checked, and tagged fields kio does not know left out
                correlation_id, decoded = decode_response(
                    answer, schema.__api_key__, schema.__version__
                )
            else:
                response = response_schema(schema.__api_key__, schema.__version__)
                header, n = entity_reader(response.__header_schema__)(answer, 0)
                correlation_id, decoded = header.correlation_id, decode(answer, n)
        except Exception as e:  # whatever a garbled answer makes the codec raise
            raise CliError(f"broker at {self.address} sent a malformed answer ({e})") from None
        if correlation_id != self._correlation_id:
            raise CliError(f"broker at {self.address} answered another request")
        return decoded

    def _exactly(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self._sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def _reason(e: OSError) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return e.strerror or str(e) or type(e).__name__


class Cluster:
    """The brokers behind a bootstrap list (``host:port,...``)."""

    def __init__(self, bootstrap: str, *, connect_timeout: float, request_timeout: float,
                 client_id: str = "odradek-cli") -> None:
        self._addresses = [a.strip() for a in bootstrap.split(",") if a.strip()]
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._client_id = client_id
        self._bootstrap: Connection | None = None
        self._by_address: dict[str, Connection] = {}
        self._brokers: dict[int, str] | None = None

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._by_address.values():
            conn.close()
        self._by_address.clear()
        self._bootstrap = None

    def _open(self, address: str) -> Connection:
        conn = self._by_address.get(address)
        if conn is None:
            conn = Connection(address, self._connect_timeout, self._request_timeout,
                              self._client_id)
            self._by_address[address] = conn
        return conn

    def any_broker(self) -> Connection:
        """A connection to the first bootstrap server that accepts one."""
        if self._bootstrap is None:
            failure: CliError | None = None
            for address in self._addresses:
                try:
                    self._bootstrap = self._open(address)
                    break
                except CliError as e:
                    failure = e
            else:
                assert failure is not None
                raise failure
        return self._bootstrap

    def metadata(self, topics: list[str] | None = None) -> Any:
        """A Metadata answer for ``topics`` (None: every topic); remembers the brokers."""
        m = request_module(METADATA)
        request = build(
            m.MetadataRequest,
            topics=None if topics is None else tuple(m.MetadataRequestTopic(name=t) for t in topics),
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        )
        answer = self.any_broker().request(request)
        self._brokers = {b.node_id: f"{b.host}:{b.port}" for b in answer.brokers}
        return answer

    def brokers(self) -> dict[int, str]:
        """Node id -> ``host:port`` of every broker in the cluster."""
        if self._brokers is None:
            self.metadata([])
        assert self._brokers is not None
        return dict(self._brokers)

    def broker(self, node_id: int) -> Connection:
        address = self.brokers().get(node_id)
        if address is None:
            raise CliError(f"broker {node_id} is not in the cluster's metadata")
        return self._open(address)

    def connect(self, host: str, port: int) -> Connection:
        return self._open(f"{host}:{port}")



# -- DescribeTransactions v0, decoded by hand ------------------------------------------------------
# kio refuses the negative start time (-1) Kafka sends for a transactional id with no transaction
# open, so this response is read here; the field names are kio's.


@dataclass(frozen=True, slots=True)
class TxnTopic:
    topic: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TxnState:
    error_code: ErrorCode
    transactional_id: str
    transaction_state: str
    transaction_timeout: datetime.timedelta
    transaction_start_time: datetime.datetime | None  # None when no transaction is open
    producer_id: int
    producer_epoch: int
    topics: tuple[TxnTopic, ...]


@dataclass(frozen=True, slots=True)
class DescribeTransactionsAnswer:
    transaction_states: tuple[TxnState, ...]


class _Reader:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def fixed(self, fmt: str) -> Any:
        st = struct.Struct(">" + fmt)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def uvarint(self) -> int:
        value, self.pos = read_uvarint(self.buf, self.pos, MAX_VARINT32_BYTES)
        return value

    def string(self) -> str:
        n = self.uvarint() - 1
        if n < 0:
            raise ValueError("null string")
        text = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return text

    def count(self) -> int:
        return max(self.uvarint() - 1, 0)

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


def read_describe_transactions(buf: bytes, pos: int) -> DescribeTransactionsAnswer:
    r = _Reader(buf, pos)
    r.fixed("i")  # throttle time
    states = []
    for _ in range(r.count()):
        code = ErrorCode(r.fixed("h"))
        txn_id = r.string()
        state = r.string()
        timeout = datetime.timedelta(milliseconds=r.fixed("i"))
        start = r.fixed("q")
        producer_id = r.fixed("q")
        epoch = r.fixed("h")
        topics = []
        for _ in range(r.count()):
            name = r.string()
            partitions = tuple(r.fixed("i") for _ in range(r.count()))
            r.skip_tags()
            topics.append(TxnTopic(name, partitions))
        r.skip_tags()
        states.append(
            TxnState(
                code, txn_id, state, timeout,
                None if start < 0
                else datetime.datetime.fromtimestamp(start / 1000, datetime.UTC),
                producer_id, epoch, tuple(topics),
            )
        )
    r.skip_tags()
    return DescribeTransactionsAnswer(tuple(states))
