"""The single node's durable in-process store: what survives a restart, what a crash leaves, and
the migration of a data dir of the earlier format."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from odradek.clock import ManualClock
from odradek.cluster.durable import (
    JOURNAL,
    CorruptJournalError,
    DurableInProcessStore,
    open_single_node_store,
)
from odradek.cluster.image import MetadataImage
from odradek.cluster.membership import ClusterKeys
from odradek.cluster.model import PartitionState, TopicRecord
from odradek.cluster.producer_ids import allocate_block
from odradek.cluster.store import Put, absent


def _reopen(directory: Path) -> DurableInProcessStore:
    return DurableInProcessStore(directory, ManualClock())


def test_keys_outside_leases_survive_a_restart(tmp_path: Path) -> None:
    async def first_life() -> None:
        store = _reopen(tmp_path)
        await store.put("/a", b"1")
        await store.put("/b", b"\xff\x00")  # not UTF-8
        await store.txn([absent("/c")], [Put("/c", b"3"), Put("/d", b"4")])
        await store.delete("/d")
        lease = await store.grant(60)
        await store.put("/leased", b"x", lease=lease.id)
        await store.put("/a", b"2", lease=lease.id)  # moved under a lease: ephemeral now
        await store.close()

    async def second_life() -> int:
        store = _reopen(tmp_path)
        found = {kv.key: kv.value for kv in (await store.range("/", prefix=True)).kvs}
        assert found == {"/b": b"\xff\x00", "/c": b"3"}
        result = await store.put("/e", b"5")
        await store.close()
        return result.revision

    asyncio.run(first_life())
    revision = asyncio.run(second_life())
    # Revisions go on from where they were, and the journal was rewritten as one entry.
    assert revision > 5
    lines = (tmp_path / JOURNAL).read_bytes().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["ops"] == [{"put": "/e", "value": "5"}]


def test_a_torn_last_entry_is_dropped_and_a_corrupt_one_refused(tmp_path: Path) -> None:
    async def write() -> None:
        store = _reopen(tmp_path)
        await store.put("/a", b"1")
        await store.put("/b", b"2")
        await store.close()

    asyncio.run(write())
    journal = tmp_path / JOURNAL
    journal.write_bytes(journal.read_bytes() + b'{"rev": 9, "ops": [{"put": "/c", "val')

    async def read() -> dict[str, bytes]:
        store = _reopen(tmp_path)
        found = {kv.key: kv.value for kv in (await store.range("/", prefix=True)).kvs}
        await store.close()
        return found

    assert asyncio.run(read()) == {"/a": b"1", "/b": b"2"}
    journal.write_bytes(b"not json\n" + journal.read_bytes())
    with pytest.raises(CorruptJournalError):
        _reopen(tmp_path)


def test_an_old_data_dir_is_migrated_once(tmp_path: Path) -> None:
    meta = tmp_path / "__cluster_metadata"
    meta.mkdir()
    topic_id = uuid.uuid4()
    (meta / "topics.json").write_text(json.dumps({"version": 1, "topics": [
        {"name": "orders", "topic_id": str(topic_id), "partitions": 3,
         "configs": {"retention.ms": "5"}},
    ]}))
    (meta / "producer-ids.json").write_text(json.dumps({"next_producer_id": 4000}))
    keys = ClusterKeys()

    async def life(migrated_already: bool) -> list[int]:
        store = await open_single_node_store(tmp_path, keys, node_id=7, cluster_id="cid")
        image = MetadataImage(store, keys)
        await image.start()
        try:
            assert image.cluster_id == "cid"
            orders = image.topic("orders")
            assert orders is not None and orders.topic_id == topic_id
            assert orders.configs == ({} if migrated_already else {"retention.ms": "5"})
            assert orders.partitions == (PartitionState((7,), (7,), 7),) * 3
            if not migrated_already:
                # A change after the migration stays: the migration does not run again.
                record = TopicRecord(topic_id, 3, {})
                await store.put(keys.topic("orders"), record.encode())
            block = await allocate_block(store, keys, 1000)
            return list(block[:1])
        finally:
            await image.close()
            await store.close()

    assert asyncio.run(life(False)) == [4000]
    assert asyncio.run(life(True)) == [5000]  # never an id handed out before


_FULL_DISK = """
import asyncio, os, resource, signal, sys
from pathlib import Path
from odradek.clock import ManualClock
from odradek.cluster.durable import JOURNAL, DurableInProcessStore
from odradek.cluster.store import StoreUnavailable

async def main(directory: Path) -> None:
    store = DurableInProcessStore(directory, ManualClock())
    await store.put("/kept", b"before")
    # The journal may not grow any more: the next write fails as on a full disk (EFBIG).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    size = (directory / JOURNAL).stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8, resource.RLIM_INFINITY))
    try:
        await store.put("/lost", b"x" * 100)
    except StoreUnavailable:
        print("refused")
    try:
        await store.get("/kept")
    except StoreUnavailable:
        print("refuses everything")
    await store.close()

asyncio.run(main(Path(sys.argv[1])))
"""


def test_a_journal_write_that_fails_is_refused_and_leaves_the_journal_whole(
    tmp_path: Path,
) -> None:
    """A real write failure (the file-size limit standing in for a full disk, in a child process
    so nothing else is limited): the write is refused, every later operation too, and the next
    start finds the store as it was before the failed write."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["refused", "refuses everything"]

    async def reopened() -> None:
        store = _reopen(tmp_path)
        try:
            kept = await store.get("/kept")
            assert kept is not None and kept.value == b"before"
            assert await store.get("/lost") is None
        finally:
            await store.close()

    asyncio.run(reopened())
