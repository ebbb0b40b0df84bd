"""Requests from this broker to other brokers of the cluster, over the Kafka protocol.

The transaction coordinator sends WriteTxnMarkers to the leaders of the partitions of a
transaction it does not lead (:mod:`odradek.broker.transactions`). A destination is a node id,
looked up in the broker's :class:`~odradek.cluster.model.MetadataView` at each request, so a
broker that re-registered at another address is reached there. One connection per destination,
opened on first use and kept; requests on it are sent one at a time (each waits for its
response), which is all the coordinator's few requests need. A connection that fails or times
out (``request.timeout.ms``) is closed; the next request opens a new one, and the caller
decides whether to retry.

Frames are built and read by :mod:`odradek.protocol.client`; only the socket is here.

Owned by the broker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import TYPE_CHECKING, Any

from odradek.errors import CorruptFrameError, ErrorCode, KafkaError
from odradek.protocol.client import decode_response, encode_request

if TYPE_CHECKING:
    from odradek.cluster.model import MetadataView

__all__ = ["BrokerUnreachable", "INTER_BROKER_CLIENT_PREFIX", "InterBrokerClient"]

log = logging.getLogger("odradek.broker.inter_broker")

#: The client id of a broker's requests is this and its node id.
INTER_BROKER_CLIENT_PREFIX = "odradek-broker-"
_SIZE = struct.Struct(">i")
#: A response larger than this is not one the coordinator's requests get: the stream is off.
_MAX_RESPONSE_BYTES = 100 << 20
#: asyncio's default stream limit.
_READ_LIMIT = 64 << 10


class BrokerUnreachable(KafkaError):
    """The destination is not registered, or the connection to it failed or timed out."""

    code = ErrorCode.network_exception


class _Connection:
    """One TCP connection to one broker; requests one at a time (``_lock``)."""

    def __init__(self, node_id: int, address: tuple[str, int], read_limit: int) -> None:
        self.node_id = node_id
        self.address = address
        self._read_limit = read_limit
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._correlation = 0
        self._closed = False

    async def request(self, body: Any, client_id: str) -> Any:
        async with self._lock:
            if self._closed:
                # Dropped while this request waited for the lock: a new socket here would be
                # one nobody closes.
                raise EOFError(f"connection to broker {self.node_id} was dropped")
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(
                    *self.address, limit=self._read_limit
                )
            assert self._reader is not None
            self._correlation += 1
            correlation = self._correlation
            self._writer.write(encode_request(body, correlation, client_id))
            await self._writer.drain()
            size = _SIZE.unpack(await self._reader.readexactly(4))[0]
            if not 0 <= size <= _MAX_RESPONSE_BYTES:
                raise CorruptFrameError(f"response of {size} bytes from broker {self.node_id}")
            frame = await self._reader.readexactly(size)
            got, response = decode_response(frame, type(body).__api_key__, type(body).__version__)
            if got != correlation:
                raise CorruptFrameError(
                    f"broker {self.node_id} answered request {got}, expected {correlation}"
                )
            return response

    def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


class InterBrokerClient:
    """Sends requests to other brokers by node id; see the module docs."""

    def __init__(
        self,
        cluster: MetadataView,
        node_id: int,
        *,
        request_timeout_ms: int = 30_000,
        read_limit: int = _READ_LIMIT,
    ) -> None:
        """``read_limit``: the stream's buffer limit (reading pauses at twice it); a replica
        fetcher raises it to its response size, so a large answer streams in without the
        socket being paused and resumed every 128 KiB."""
        self._cluster = cluster
        self._read_limit = read_limit
        self._client_id = f"{INTER_BROKER_CLIENT_PREFIX}{node_id}"
        self._timeout_s = request_timeout_ms / 1000
        self._connections: dict[int, _Connection] = {}
        self._closed = False

    async def send(self, node_id: int, body: Any) -> Any:
        """``body``'s response from broker ``node_id``. Raises :class:`BrokerUnreachable` (the
        connection is dropped) when the broker is not registered, or the request failed or
        timed out."""
        if self._closed:
            raise BrokerUnreachable("the broker is shutting down")
        broker = self._cluster.broker(node_id)
        if broker is None:
            raise BrokerUnreachable(f"broker {node_id} is not registered")
        address = (broker.info.host, broker.info.port)
        conn = self._connections.get(node_id)
        if conn is None or conn.address != address:
            if conn is not None:
                conn.close()
            conn = self._connections[node_id] = _Connection(node_id, address, self._read_limit)
        try:
            return await asyncio.wait_for(conn.request(body, self._client_id), self._timeout_s)
        except (OSError, EOFError, TimeoutError, CorruptFrameError) as e:
            # asyncio.IncompleteReadError is an EOFError: the broker closed the connection.
            conn.close()
            if self._connections.get(node_id) is conn:
                del self._connections[node_id]
            log.info("request to broker %d at %s:%d failed: %r", node_id, *address, e)
            raise BrokerUnreachable(f"broker {node_id} at {address[0]}:{address[1]}: {e!r}") from e
        except asyncio.CancelledError:
            # Cut off mid-request: what the stream holds next is not the next request's answer.
            conn.close()
            if self._connections.get(node_id) is conn:
                del self._connections[node_id]
            raise

    async def close(self) -> None:
        self._closed = True
        for conn in self._connections.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()
