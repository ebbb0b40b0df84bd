"""The deadline of a topic admin request (CreateTopics, DeleteTopics, CreatePartitions).

Their ``timeout_ms`` is how long the client lets the broker work on the request; Kafka answers
every topic not done by then with REQUEST_TIMED_OUT, and so do we. A timeout of zero or less
sets no deadline in Kafka's controller; here it falls back to :data:`DEFAULT_TIMEOUT_S`, so that
no admin request waits for ever on a metadata store that does not answer. The deadline covers
the whole request: topics still waiting when it passes are answered at once.

A topic cut off mid-change may still complete (a later read shows it, or the controller finishes
a half-created topic), as in Kafka, where a timed-out request may still take effect.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from odradek.cluster.store import StoreUnavailable
from odradek.errors import RequestTimedOutError

__all__ = ["AdminDeadline", "DEFAULT_TIMEOUT_S"]

#: The bound when the request sets none: the image's own bound on seeing a write.
DEFAULT_TIMEOUT_S = 30.0


class AdminDeadline:
    """One request's deadline, fixed when the handler starts. Owned by that handler's task."""

    def __init__(self, timeout: datetime.timedelta) -> None:
        seconds = timeout.total_seconds()
        self._timeout_s = seconds if seconds > 0 else DEFAULT_TIMEOUT_S
        self._when = asyncio.get_running_loop().time() + self._timeout_s

    @asynccontextmanager
    async def bound(self, what: str) -> AsyncIterator[None]:
        """Run the body until the deadline; past it, or with the metadata store unreachable,
        raise RequestTimedOutError saying which."""
        try:
            async with asyncio.timeout_at(self._when) as scope:
                yield
        except TimeoutError:
            if not scope.expired():
                raise
            raise RequestTimedOutError(
                f"{what} did not complete within the request's timeout "
                f"({self._timeout_s * 1000:.0f} ms): the metadata store may be unreachable"
            ) from None
        except StoreUnavailable as e:
            raise RequestTimedOutError(
                f"{what} failed: the metadata store is unreachable ({e})"
            ) from e
