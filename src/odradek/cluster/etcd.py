""":class:`ClusterStore` over etcd v3's JSON gateway (grpc-gateway), with aiohttp.

The gateway maps each gRPC call to ``POST <endpoint>/v3/<service>/<method>`` with the request
message as JSON: bytes fields (keys, values) in base64, 64-bit integers as decimal strings,
fields at their default value left out of answers (``succeeded`` is absent when false, a
revision 0 absent). etcd 3.4 (Debian's ``etcd-server``) serves these paths under ``/v3/`` (and
the older ``/v3beta/``); 3.3 and older only ``/v3beta/``, so 3.4 is the oldest supported.
Streaming calls (``/v3/watch``, ``/v3/lease/keepalive``) answer with one JSON object per line,
each wrapped as ``{"result": …}`` or ``{"error": …}``.
Errors come back as ``{"error": "<etcdserver message>", "code": <gRPC status>}``; they are
mapped to the typed errors of :mod:`odradek.cluster.store` by their message, which is stable
in etcd (``rpctypes``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import aiohttp

from odradek.cluster.store import (
    ClusterStoreError,
    Compare,
    CompareTarget,
    Delete,
    DeleteResult,
    EventType,
    FutureRevision,
    Get,
    KeyValue,
    Lease,
    LeaseNotFound,
    LeaseTimeToLive,
    OutcomeUnknown,
    Put,
    PutResult,
    RangeResult,
    RevisionCompacted,
    StoreUnavailable,
    TxnOp,
    TxnResult,
    WatchEvent,
    prefix_end,
)

__all__ = ["EtcdStore"]

log = logging.getLogger(__name__)

_API = "/v3"
_GRPC_UNAVAILABLE = 14
# etcd's answers for a request it refused before proposing it (so it did not happen).
_NOT_SERVING = ("etcdserver: no leader", "etcdserver: not capable", "etcdserver: server stopped")
# How long a watch waits before reconnecting to an endpoint that failed, doubling up to the cap.
_WATCH_BACKOFF_S = 0.05
_WATCH_BACKOFF_MAX_S = 1.0


class EtcdStore:
    """A :class:`~odradek.cluster.store.ClusterStore` on an etcd cluster.

    Owned by the event loop that creates it (its one ``aiohttp.ClientSession`` is bound to that
    loop); :meth:`close` it there. ``endpoints`` are client URLs (``http://host:2379``); a call
    goes to the endpoint that last answered and fails over to the others, in order, when it
    cannot connect. A read that loses its answer is retried on the next endpoint; a write that
    loses its answer raises :class:`~odradek.cluster.store.OutcomeUnknown` instead, since it may
    have happened. Watches reconnect on their own and resume after the last revision they
    delivered, for as long as the iterator is open.
    """

    def __init__(self, endpoints: Sequence[str], *, request_timeout_s: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self._endpoints = [e.rstrip("/") for e in endpoints]
        self._current = 0
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)
        # A watch stream is idle for as long as nothing changes: only connecting is bounded.
        self._watch_timeout = aiohttp.ClientTimeout(
            total=None, connect=request_timeout_s, sock_read=None
        )
        self._session = aiohttp.ClientSession()

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    # --- requests -----------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any], *, write: bool) -> dict[str, Any]:
        """POST ``body`` to the first endpoint that answers; the answer's JSON, or a typed error."""
        failures: list[str] = []
        for attempt in range(len(self._endpoints)):
            index = (self._current + attempt) % len(self._endpoints)
            url = self._endpoints[index] + _API + path
            try:
                async with self._session.post(url, json=body, timeout=self._timeout) as response:
                    text = await response.text()
            except aiohttp.ClientConnectorError as e:
                failures.append(f"{self._endpoints[index]}: {e.os_error or e}")
                continue
            except (TimeoutError, aiohttp.ClientError) as e:
                if write:
                    raise OutcomeUnknown(
                        f"etcd {self._endpoints[index]} did not answer {path}: {e!r}; "
                        "the write may or may not have happened"
                    ) from e
                failures.append(f"{self._endpoints[index]}: {e!r}")
                continue
            try:
                answer = _answer(path, response.status, text)
            except OutcomeUnknown:
                if write:
                    raise
                failures.append(f"{self._endpoints[index]}: no answer in time")
                continue
            except StoreUnavailable as e:
                # The member is up but cannot serve (no leader, not started): the request was
                # not applied, so another member may take it.
                failures.append(f"{self._endpoints[index]}: {e}")
                continue
            self._current = index
            return answer
        raise StoreUnavailable(f"etcd is unreachable ({'; '.join(failures)})")

    # --- reads --------------------------------------------------------------------------------

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        result = await self.range(key, revision=revision)
        return result.kvs[0] if result.kvs else None

    async def range(
        self, key: str, *, prefix: bool = False, revision: int = 0, limit: int = 0
    ) -> RangeResult:
        body = _range_request(key, prefix)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        return _range_result(await self._call("/kv/range", body, write=False))

    # --- writes -------------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult:
        try:
            answer = await self._call("/kv/put", _put_request(key, value, lease), write=True)
        except LeaseNotFound:
            raise LeaseNotFound(lease) from None
        return PutResult(_revision(answer))

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteResult:
        answer = await self._call("/kv/deleterange", _range_request(key, prefix), write=True)
        return DeleteResult(_revision(answer), int(answer.get("deleted", 0)))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        body = {
            "compare": [_compare(c) for c in compare],
            "success": [_op(op) for op in success],
            "failure": [_op(op) for op in failure],
        }
        writes = any(not isinstance(op, Get) for op in (*success, *failure))
        answer = await self._call("/kv/txn", body, write=writes)
        responses: list[RangeResult | PutResult | DeleteResult] = []
        for item in answer.get("responses", ()):
            if "response_range" in item:
                responses.append(_range_result(item["response_range"]))
            elif "response_put" in item:
                responses.append(PutResult(_revision(item["response_put"])))
            else:
                deleted = item.get("response_delete_range", {})
                responses.append(DeleteResult(_revision(deleted), int(deleted.get("deleted", 0))))
        return TxnResult(bool(answer.get("succeeded", False)), _revision(answer), tuple(responses))

    # --- leases -------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        answer = await self._call("/lease/grant", {"TTL": str(ttl)}, write=True)
        return Lease(int(answer["ID"]), int(answer["TTL"]))

    async def keep_alive(self, lease_id: int) -> int:
        # A keep-alive is idempotent, so a lost answer is simply retried elsewhere.
        answer = await self._call("/lease/keepalive", {"ID": str(lease_id)}, write=False)
        ttl = int(answer.get("result", answer).get("TTL", 0))
        if ttl <= 0:
            raise LeaseNotFound(lease_id)  # etcd answers an ended lease with no TTL
        return ttl

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._call("/lease/revoke", {"ID": str(lease_id)}, write=True)
        except LeaseNotFound:
            raise LeaseNotFound(lease_id) from None

    async def time_to_live(self, lease_id: int) -> LeaseTimeToLive:
        answer = await self._call("/lease/timetolive", {"ID": str(lease_id)}, write=False)
        ttl = int(answer.get("TTL", 0))
        if ttl < 0:
            raise LeaseNotFound(lease_id)  # etcd answers an ended lease with TTL -1
        term = int(answer.get("header", {}).get("raft_term", 0))
        return LeaseTimeToLive(ttl, int(answer.get("grantedTTL", 0)), term)

    async def compact(self, revision: int) -> None:
        await self._call("/kv/compaction", {"revision": str(revision)}, write=True)

    # --- watches ------------------------------------------------------------------------------

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncGenerator[WatchEvent, None]:
        return self._watch(key, prefix, start_revision)

    async def _watch(
        self, key: str, prefix: bool, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        if not start_revision:
            # Pin "from now" to a revision, so that a reconnect before the first event does not
            # skip the writes made while it was away.
            start_revision = (await self.range(key, limit=1)).revision + 1
        next_revision = start_revision
        backoff = _WATCH_BACKOFF_S
        warned = False
        while True:
            index = self._current
            request = _range_request(key, prefix)
            request["start_revision"] = str(next_revision)
            url = self._endpoints[index] + _API + "/watch"
            try:
                async with self._session.post(
                    url, json={"create_request": request}, timeout=self._watch_timeout
                ) as response:
                    if response.status != 200:
                        _answer("/watch", response.status, await response.text())
                    async for message in _json_lines(response.content):
                        if "error" in message:
                            raise _error("/watch", message["error"])
                        result = message.get("result", {})
                        compacted = int(result.get("compact_revision", 0))
                        if compacted:
                            raise RevisionCompacted(compacted)
                        if result.get("canceled"):
                            raise ClusterStoreError(
                                f"etcd cancelled the watch on {key!r}: "
                                f"{result.get('cancel_reason', 'no reason given')}"
                            )
                        events = [_event(e) for e in result.get("events", ())]
                        if events:
                            backoff, warned = _WATCH_BACKOFF_S, False
                        for event in events:
                            yield event
                        if events:
                            next_revision = events[-1].revision + 1
            except (TimeoutError, aiohttp.ClientError, StoreUnavailable) as e:
                if not warned:
                    log.warning(
                        "watch on %r lost etcd %s (%r); resuming from revision %d",
                        key,
                        self._endpoints[index],
                        e,
                        next_revision,
                    )
                    warned = True
            # The stream ended or failed: try the next endpoint, after a pause.
            self._current = (index + 1) % len(self._endpoints)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _WATCH_BACKOFF_MAX_S)

    async def close(self) -> None:
        await self._session.close()


async def _json_lines(stream: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The objects of a newline-delimited JSON stream. Read in chunks rather than by
    ``readline``, whose line limit a watch answer with many events can pass."""
    buffer = bytearray()
    async for chunk in stream.iter_any():
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                yield json.loads(line)


# --- JSON codec -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _range_request(key: str, prefix: bool) -> dict[str, Any]:
    raw = key.encode()
    body: dict[str, Any] = {"key": _b64(raw)}
    if prefix:
        body["range_end"] = _b64(prefix_end(raw))
    return body


def _put_request(key: str, value: bytes, lease: int) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key.encode()), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return body


_COMPARE_FIELDS = {
    CompareTarget.VALUE: "value",
    CompareTarget.VERSION: "version",
    CompareTarget.CREATE: "create_revision",
    CompareTarget.MOD: "mod_revision",
    CompareTarget.LEASE: "lease",
}


def _compare(c: Compare) -> dict[str, Any]:
    operand = _b64(c.operand) if isinstance(c.operand, bytes) else str(c.operand)
    return {
        "key": _b64(c.key.encode()),
        "target": c.target.value,
        "result": c.op.value,
        _COMPARE_FIELDS[c.target]: operand,
    }


def _op(op: TxnOp) -> dict[str, Any]:
    if isinstance(op, Get):
        return {"request_range": _range_request(op.key, op.prefix)}
    if isinstance(op, Put):
        return {"request_put": _put_request(op.key, op.value, op.lease)}
    if isinstance(op, Delete):
        return {"request_delete_range": _range_request(op.key, op.prefix)}
    raise TypeError(f"not a transaction operation: {op!r}")


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw.get("key")).decode(),
        value=_unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


def _event(raw: dict[str, Any]) -> WatchEvent:
    kind = EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT
    return WatchEvent(kind, _kv(raw["kv"]))


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


def _range_result(answer: dict[str, Any]) -> RangeResult:
    return RangeResult(tuple(_kv(kv) for kv in answer.get("kvs", ())), _revision(answer))


def _answer(path: str, status: int, text: str) -> dict[str, Any]:
    try:
        answer = json.loads(text)
    except ValueError:
        raise ClusterStoreError(
            f"etcd answered {path} with HTTP {status}: {text[:200]!r}"
        ) from None
    if not isinstance(answer, dict):
        raise ClusterStoreError(f"etcd answered {path} with {text[:200]!r}")
    if "error" in answer:
        raise _error(path, answer)
    if status != 200:
        raise ClusterStoreError(f"etcd answered {path} with HTTP {status}: {text[:200]!r}")
    return answer


def _error(path: str, error: Any) -> ClusterStoreError:
    """The typed error for an error answer: a unary call's whole answer (``error``, ``message``,
    ``code``) or a stream's ``error`` object (``message``, ``grpc_code``)."""
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("error") or error)
        code = error.get("code", error.get("grpc_code"))
    else:
        message, code = str(error), None
    if "required revision has been compacted" in message:
        # The gateway's message does not carry the compaction point; report it as unknown.
        return RevisionCompacted(0)
    if "required revision is a future revision" in message:
        return FutureRevision(message)
    if "requested lease not found" in message:
        return LeaseNotFound(0)
    if any(m in message for m in _NOT_SERVING):
        return StoreUnavailable(f"etcd cannot serve {path}: {message}")
    if code == _GRPC_UNAVAILABLE:
        # etcd's other "unavailable" answers (a request timed out, the leader changed) come
        # after the request was proposed: it may still be applied.
        return OutcomeUnknown(f"etcd did not complete {path}: {message}")
    return ClusterStoreError(f"etcd refused {path}: {message}")
