"""The transaction runtime's tracking of its own markers (``_RemoteMarkers.track``): a marker's
replication that fails after its outcome was forgotten is still read, not left to the loop's
"exception was never retrieved" (found by the deterministic simulation, seed 1017 of the first
transactional workload: the partition's leadership moved while the marker replicated)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

from odradek.broker.transactions import _RemoteMarkers
from odradek.errors import NotLeaderOrFollowerError


def test_a_forgotten_markers_failed_replication_is_still_read() -> None:
    unretrieved: list[dict[str, Any]] = []

    async def main() -> list[int]:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: unretrieved.append(context)
        )
        woken: list[int] = []
        markers = _RemoteMarkers(cast(Any, None), lambda pid: woken.append(pid) is None)
        marker = (7, 0, True, 0)
        replication: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        markers.track(marker, ("t", 0), replication)
        markers.clear()  # a partition of the topic was unloaded: every outcome forgotten
        replication.set_exception(NotLeaderOrFollowerError("t-0: now led by 3"))
        await asyncio.sleep(0)  # the done callback runs
        del replication
        gc.collect()
        assert markers.take(marker, ("t", 0)) is None  # forgotten it stays
        return woken

    assert asyncio.run(main()) == []  # nobody is woken for a forgotten marker
    assert unretrieved == []
