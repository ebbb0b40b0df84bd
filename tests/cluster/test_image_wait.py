"""A writer waiting for its own write to reach the image gives up with a retriable
REQUEST_TIMED_OUT when the image does not get there (its watch cut off from the store), and
still returns at once for what it has seen."""

from __future__ import annotations

import asyncio

import pytest

from odradek.clock import ManualClock
from odradek.cluster.image import MetadataImage
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys
from odradek.errors import ErrorCode, RequestTimedOutError


def test_waiting_for_a_revision_the_image_never_shows_times_out() -> None:
    async def scenario() -> None:
        store = InProcessStore(ManualClock(0))
        keys = ClusterKeys("wait")
        image = MetadataImage(store, keys)
        await image.start()
        try:
            put = await store.put(keys.cluster_id, b"c")
            await image.wait_for_revision(put.revision, timeout_s=5)
            assert image.cluster_id == "c"
            with pytest.raises(RequestTimedOutError) as caught:
                await image.wait_for_revision(put.revision + 1000, timeout_s=0.05)
            assert caught.value.code == ErrorCode.request_timed_out
            # The abandoned wait does not disturb later ones.
            later = await store.put(keys.cluster_id, b"d")
            await image.wait_for_revision(later.revision, timeout_s=5)
            assert image.cluster_id == "d"
        finally:
            await image.close()
            await store.close()

    asyncio.run(scenario())
