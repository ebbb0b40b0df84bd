"""The image remembers for a while the brokers whose registration went: Metadata keeps listing
them a moment (never as leaders), so librdkafka does not retire the old leader's broker in the
same answer that names the new leader (it then lost the new leader until its next re-query)."""

from __future__ import annotations

import asyncio
import json

from odradek.broker.handlers.metadata import DEPARTED_BROKER_GRACE_S, _listed_brokers
from odradek.clock import ManualClock
from odradek.cluster.image import MetadataImage
from odradek.cluster.inprocess import InProcessStore
from odradek.cluster.membership import ClusterKeys


def test_a_departed_broker_is_listed_for_the_grace_and_not_once_back() -> None:
    async def scenario() -> None:
        store = InProcessStore(ManualClock(0))
        keys = ClusterKeys("departed")
        image = MetadataImage(store, keys)
        await image.start()

        def info(node: int) -> bytes:
            return json.dumps(
                {"node_id": node, "host": "127.0.0.1", "port": 9000 + node, "rack": None}
            ).encode()

        try:
            for node in (1, 2):
                put = await store.put(keys.broker(node), info(node))
            await image.wait_for_revision(put.revision, timeout_s=5)
            assert image.recently_departed(60) == ()
            gone = await store.delete(keys.broker(2))
            await image.wait_for_revision(gone.revision, timeout_s=5)
            assert [b.info.node_id for b in image.live_brokers()] == [1]
            assert [b.info.node_id for b in image.recently_departed(60)] == [2]
            assert image.recently_departed(0) == ()
            # What Metadata lists: the live ones and, for the grace, the departed one.
            assert [b.info.node_id for b in _listed_brokers(image)] == [1, 2]
            assert DEPARTED_BROKER_GRACE_S < 60
            back = await store.put(keys.broker(2), info(2))
            await image.wait_for_revision(back.revision, timeout_s=5)
            assert image.recently_departed(60) == ()
            assert [b.info.node_id for b in _listed_brokers(image)] == [1, 2]
        finally:
            await image.close()
            await store.close()

    asyncio.run(scenario())
