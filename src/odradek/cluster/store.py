"""The cluster-metadata seam: one interface with etcd v3's semantics, two implementations.

``ClusterStore`` is what the broker will see of the metadata store, whether it is etcd
(:class:`odradek.cluster.etcd.EtcdStore`) or the single node's in-process store
(:class:`odradek.cluster.inprocess.InProcessStore`), so one code path serves both.

The semantics are etcd's, stated here so that both implementations can be tested against them
(``tests/cluster/test_store_conformance.py``):

- **Revisions.** The store has one revision counter, global over all keys. An empty store is at
  revision 1; every write (put, a delete that deletes something, a transaction that writes) makes
  exactly one new revision, whatever the number of keys it changes. Every key carries its
  ``create_revision`` (the revision that created it since it last did not exist), its
  ``mod_revision`` (last change) and its ``version`` (changes since creation, 1 on creation). A
  deleted key has none of these; re-creating it starts again at version 1.
- **Reads** may ask for a past revision; one older than the compaction point raises
  :class:`RevisionCompacted`, one newer than the current revision :class:`FutureRevision`.
- **Transactions** compare, then run the ``success`` or the ``failure`` operations, atomically,
  in one revision. A compare on an absent key compares against zeros (so
  ``create_revision == 0`` means "absent"), except a value compare, which is false.
- **Leases** are granted with a TTL in whole seconds (etcd may raise it to its minimum) and live
  until the TTL passes without a keep-alive, or until revoked. Keys put under a lease are deleted,
  all in one revision, when it ends. A put names its lease; a put without one detaches the key.
- **Watches** deliver the events of a key or a prefix from a start revision (0: from the next
  write on), in revision order, each revision's events together. A start revision older than the
  compaction point raises :class:`RevisionCompacted` from the iterator; the caller re-reads the
  range and watches again from the revision it read at.

Keys are ``str`` (stored as UTF-8); values are ``bytes``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ClusterStore",
    "KeyValue",
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "TxnResult",
    "Lease",
    "LeaseTimeToLive",
    "EventType",
    "WatchEvent",
    "CompareTarget",
    "CompareOp",
    "Compare",
    "Get",
    "Put",
    "Delete",
    "TxnOp",
    "value_is",
    "version_is",
    "create_revision_is",
    "mod_revision_is",
    "absent",
    "prefix_end",
    "ClusterStoreError",
    "StoreUnavailable",
    "OutcomeUnknown",
    "RevisionCompacted",
    "FutureRevision",
    "LeaseNotFound",
]


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key as the store holds it. ``lease`` is 0 when the key belongs to no lease."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The keys read (in key order) and the store's revision the read saw."""

    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """``deleted`` keys; ``revision`` is the store's revision after the delete (unchanged when
    nothing was deleted)."""

    revision: int
    deleted: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, the store's revision after it, and one result per operation run."""

    succeeded: bool
    revision: int
    responses: tuple[RangeResult | PutResult | DeleteResult, ...]


@dataclass(frozen=True, slots=True)
class Lease:
    """A granted lease: its id and the TTL (seconds) the store actually granted."""

    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLive:
    """What the store says of a live lease: ``ttl``, the whole seconds left (rounded down, as
    etcd does: 0 when less than a second is left, and while a lease that ran out waits for the
    store to end it); ``granted_ttl``, its TTL; ``term``, the term of the store's lease keeper
    (etcd's raft term): where it changed, every lease's deadline may have been pushed back (a new
    etcd leader restarts each lease's TTL)."""

    ttl: int
    granted_ttl: int
    term: int


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. For a DELETE, ``kv`` has the key and the deleting revision as
    ``mod_revision``; its value is empty and its other revisions 0, as etcd reports them."""

    type: EventType
    kv: KeyValue

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


# --- transactions -----------------------------------------------------------------------------


class CompareTarget(enum.Enum):
    VALUE = "VALUE"
    VERSION = "VERSION"
    CREATE = "CREATE"
    MOD = "MOD"
    LEASE = "LEASE"


class CompareOp(enum.Enum):
    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    GREATER = "GREATER"
    LESS = "LESS"


@dataclass(frozen=True, slots=True)
class Compare:
    """``<target of key> <op> operand``; ``operand`` is bytes for VALUE, an int otherwise."""

    key: str
    target: CompareTarget
    op: CompareOp
    operand: bytes | int


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    prefix: bool = False


TxnOp = Get | Put | Delete


def value_is(key: str, value: bytes) -> Compare:
    return Compare(key, CompareTarget.VALUE, CompareOp.EQUAL, value)


def version_is(key: str, version: int) -> Compare:
    return Compare(key, CompareTarget.VERSION, CompareOp.EQUAL, version)


def create_revision_is(key: str, revision: int) -> Compare:
    """The fencing compare: the key is still the one created at ``revision``."""
    return Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, revision)


def mod_revision_is(key: str, revision: int) -> Compare:
    """The compare-and-swap compare: nobody changed the key since ``revision``."""
    return Compare(key, CompareTarget.MOD, CompareOp.EQUAL, revision)


def absent(key: str) -> Compare:
    return Compare(key, CompareTarget.CREATE, CompareOp.EQUAL, 0)


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for a prefix: the prefix with its last byte below 0xff incremented (and
    what follows it dropped); ``b"\\0"`` (every key) when there is no such byte."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


# --- errors -----------------------------------------------------------------------------------


class ClusterStoreError(Exception):
    """Base of every error the metadata store raises."""


class StoreUnavailable(ClusterStoreError):
    """The store could not be reached; the operation did not happen."""


class OutcomeUnknown(StoreUnavailable):
    """A write was sent but its answer was lost: it may or may not have happened. Re-read and
    recognise your own write (a value or lease of yours, a revision past the one you read)."""


class RevisionCompacted(ClusterStoreError):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; the oldest readable revision is {compact_revision}")
        self.compact_revision = compact_revision


class FutureRevision(ClusterStoreError):
    pass


class LeaseNotFound(ClusterStoreError):
    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} not found (expired or revoked)")
        self.lease_id = lease_id


# --- the interface ----------------------------------------------------------------------------


class ClusterStore(Protocol):
    """etcd v3's key-value, lease and watch API (see the module docstring for the semantics).

    Implementations are owned by one event loop; every method must be called from it."""

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None: ...

    async def range(
        self, key: str, *, prefix: bool = False, revision: int = 0, limit: int = 0
    ) -> RangeResult:
        """The key, or every key starting with ``key`` when ``prefix``; at ``revision`` when it
        is not 0; at most ``limit`` keys when it is not 0."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> PutResult: ...

    async def delete(self, key: str, *, prefix: bool = False) -> DeleteResult: ...

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[TxnOp] = (),
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult: ...

    async def grant(self, ttl: int) -> Lease: ...

    async def keep_alive(self, lease_id: int) -> int:
        """Renew the lease once; returns its TTL. Raises :class:`LeaseNotFound` when it ended."""
        ...

    async def revoke(self, lease_id: int) -> None:
        """End the lease now, deleting its keys. Raises :class:`LeaseNotFound` when it ended."""
        ...

    async def time_to_live(self, lease_id: int) -> LeaseTimeToLive:
        """How long the lease has left. Raises :class:`LeaseNotFound` when it ended."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget the history before ``revision`` (reads and watches from before it fail)."""
        ...

    def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events from ``start_revision`` on, forever; close the iterator (``aclose``) to stop.
        Raises :class:`RevisionCompacted` when ``start_revision`` is compacted."""
        ...

    async def close(self) -> None: ...
