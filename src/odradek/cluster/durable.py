"""The single node's cluster store: the in-process store with a journal, so that topics and the
producer-id high-water mark survive a restart.

A single broker has no etcd; its metadata lives in a
:class:`~odradek.cluster.inprocess.InProcessStore` in the broker's process, and
:class:`DurableInProcessStore` journals every change of a key that belongs to no lease. Keys
under a lease (the broker's registration, the controller) are ephemeral, as in etcd after every
lease has run out: a restart does not bring them back.

On disk, ``<data dir>/__cluster_metadata/store.journal``: one line of JSON per revision,
``{"rev": R, "ops": [...]}``, each op ``{"put": key, "value": text}`` (``"b64"`` instead of
``"value"`` for a value that is not UTF-8) or ``{"delete": key}``. A line is appended and
fsynced before anyone learns of its revision (the writer, the watchers). Opening replays the
journal and rewrites it as one line holding every key (to a temporary file, fsynced, renamed
over the old one), so it does not grow across restarts. A crash in the middle of an append
leaves a torn last line, which opening drops: that revision was never acknowledged. A bad line
anywhere else is corruption and refuses to open.

:func:`open_single_node_store` also migrates a data dir written before this store existed
(``topics.json`` and ``producer-ids.json``, see :mod:`odradek.metadata.store`) in one
transaction, and puts the cluster id under ``cluster_id``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Any

from odradek.clock import Clock
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys
from odradek.cluster.model import PartitionState, TopicRecord
from odradek.cluster.producer_ids import encode_next
from odradek.cluster.store import EventType, Put, StoreUnavailable, TxnOp, absent, value_is
from odradek.metadata.store import legacy_next_producer_id, legacy_topics

__all__ = ["DurableInProcessStore", "CorruptJournalError", "JOURNAL", "open_single_node_store"]

log = logging.getLogger(__name__)

#: The journal's file name in its directory.
JOURNAL = "store.journal"


class CorruptJournalError(Exception):
    """A journal line other than the last does not parse."""


class DurableInProcessStore(InProcessStore):
    """An :class:`InProcessStore` whose keys outside leases are journalled in ``directory``.

    Owned by the event loop that uses it, as its base. Opening (the constructor) reads and
    rewrites the journal synchronously."""

    def __init__(
        self,
        directory: Path,
        clock: Clock | None = None,
        *,
        expiry_interval_s: float | None = None,
    ) -> None:
        super().__init__(clock, expiry_interval_s=expiry_interval_s)
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / JOURNAL
        self._durable: set[str] = set()
        self._replay()
        self._rewrite()
        # Unbuffered: a write that failed must not linger in a buffer that close() would flush.
        self._journal = open(self._path, "ab", buffering=0)  # noqa: SIM115 - the store's life
        #: Set when a journal write failed: the store then refuses every operation.
        self._failed: OSError | None = None

    # --- opening ------------------------------------------------------------------------------

    def _replay(self) -> None:
        if not self._path.exists():
            return
        lines = self._path.read_bytes().split(b"\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                revision = int(entry["rev"])
                ops = [_decode_op(op) for op in entry["ops"]]
            except (ValueError, KeyError, TypeError) as e:
                if all(not rest.strip() for rest in lines[number + 1 :]):
                    log.warning("%s: dropping a torn last entry (%r)", self._path, e)
                    break
                raise CorruptJournalError(f"{self._path}: line {number + 1} is corrupt: {e}") from e
            self._revision = max(self._revision + 1, revision)
            for key, value in ops:
                if value is not None:
                    self._put(key, value, 0)
                elif self._read(key, False, 0):
                    self._delete(key)
        # Only the present matters after a restart: drop the replayed history.
        self._events.clear()
        for key in list(self._history):
            last = self._history[key][-1]
            if last.version:
                self._history[key] = [last]
                self._durable.add(key)
            else:
                del self._history[key]
        self._sorted_keys[:] = sorted(self._history)
        self._compacted = self._revision

    def _rewrite(self) -> None:
        """The journal as one entry of every key (crash-safe: temporary file, fsync, rename)."""
        ops = [_encode_put(k, self._history[k][-1].value) for k in sorted(self._durable)]
        tmp = self._path.with_name(self._path.name + ".tmp")
        with open(tmp, "wb") as f:
            if ops:
                f.write(_line(self._revision, ops))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        _fsync_dir(self._path.parent)

    # --- persisting ---------------------------------------------------------------------------

    def _committed(self, revision: int) -> None:
        ops: list[dict[str, str]] = []
        for event in self._events_of(revision):
            key = event.kv.key
            if event.type is EventType.PUT and not event.kv.lease:
                ops.append(_encode_put(key, event.kv.value))
                self._durable.add(key)
            elif key in self._durable:
                # Deleted, or moved under a lease (ephemeral from now on).
                ops.append({"delete": key})
                self._durable.discard(key)
        if not ops:
            return
        size = os.fstat(self._journal.fileno()).st_size
        try:
            data = memoryview(_line(revision, ops))
            while data:
                data = data[self._journal.write(data) or 0 :]
            os.fsync(self._journal.fileno())
        except OSError as e:
            # Nobody learns of this revision (watchers are woken after this returns), and the
            # journal goes back to its last whole line, so a restart finds the store as it was
            # before it. Until then the store refuses everything: memory has a change the
            # disk does not.
            self._failed = e
            try:
                os.ftruncate(self._journal.fileno(), size)
            except OSError:
                pass  # a torn last line is dropped at the next start anyway
            log.error("%s: writing revision %d failed (%s); the metadata store refuses every "
                      "operation until the broker restarts", self._path, revision, e)
            raise StoreUnavailable(f"the metadata journal could not be written: {e}") from e

    def maybe_expire_leases(self) -> None:
        # Every operation starts here: the place to refuse them all once the journal failed.
        if self._failed is not None:
            raise StoreUnavailable(
                f"the metadata journal {self._path} could not be written ({self._failed}); "
                f"restart the broker once the disk is fixed"
            )
        super().maybe_expire_leases()

    async def close(self) -> None:
        await super().close()
        if not self._journal.closed:
            self._journal.close()


def _line(revision: int, ops: list[dict[str, str]]) -> bytes:
    return json.dumps({"rev": revision, "ops": ops}, separators=(",", ":")).encode() + b"\n"


def _encode_put(key: str, value: bytes) -> dict[str, str]:
    try:
        return {"put": key, "value": value.decode()}
    except UnicodeDecodeError:
        return {"put": key, "b64": base64.b64encode(value).decode()}


def _decode_op(op: dict[str, Any]) -> tuple[str, bytes | None]:
    if "delete" in op:
        return str(op["delete"]), None
    if "value" in op:
        return str(op["put"]), str(op["value"]).encode()
    return str(op["put"]), base64.b64decode(op["b64"], validate=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the single node's store ------------------------------------------------------------------


async def open_single_node_store(
    data_dir: Path,
    keys: ClusterKeys,
    *,
    node_id: int,
    cluster_id: str,
    clock: Clock | None = None,
) -> DurableInProcessStore:
    """The single node's store under ``data_dir/__cluster_metadata``, with the cluster id put
    and a data dir of the earlier format migrated (its topics, all on ``node_id``, and its
    producer-id high-water mark). Call inside the event loop that will own it."""
    store = DurableInProcessStore(data_dir / "__cluster_metadata", clock)
    try:
        await _maybe_migrate(store, data_dir, keys, node_id)
        # meta.properties stays the cluster id's home; the store carries it for the view.
        value = cluster_id.encode()
        await store.txn([value_is(keys.cluster_id, value)], [], [Put(keys.cluster_id, value)])
    except BaseException:
        await store.close()
        raise
    return store


async def _maybe_migrate(
    store: DurableInProcessStore, data_dir: Path, keys: ClusterKeys, node_id: int
) -> None:
    # The producer-id key is written by every migration and by the first block taken: present
    # means this data dir is already on the store.
    if await store.get(keys.producer_ids) is not None:
        return
    topics = legacy_topics(data_dir)
    next_pid = legacy_next_producer_id(data_dir)
    if not topics and next_pid is None:
        return
    ops: list[TxnOp] = []
    state = PartitionState(replicas=(node_id,), isr=(node_id,), leader=node_id).encode()
    for t in topics:
        record = TopicRecord(t.topic_id, t.partitions, dict(t.configs))
        ops.append(Put(keys.topic(t.name), record.encode()))
        ops.extend(Put(keys.partition(t.name, p), state) for p in range(t.partitions))
    ops.append(Put(keys.producer_ids, encode_next(next_pid or 0)))
    # One transaction, one journal line: a crash leaves all of it or none (and then migrates
    # again at the next start).
    await store.txn([absent(keys.producer_ids)], ops)
    log.info(
        "migrated %d topics and the producer-id mark (%d) into the cluster store",
        len(topics), next_pid or 0,
    )
