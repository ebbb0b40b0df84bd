"""Ending a helper task from the task that owns it, without losing the owner's cancellation.

``task.cancel()`` followed by ``with contextlib.suppress(asyncio.CancelledError): await task``
suppresses two different cancellations alike: the helper's own (wanted) and one of the *owner*
arriving while it waits (not wanted: the owner then goes on as if nothing had asked it to stop,
and whoever cancelled it and waits for it to end may wait for ever). :func:`cancel_and_wait`
waits with :func:`asyncio.wait`, which raises the owner's cancellation and never the helper's.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and return once it has ended. Its own cancellation is not raised, the
    caller's (arriving meanwhile) is; an exception ``task`` ended with is raised, as
    ``await task`` would."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        failure = task.exception()
        if failure is not None:
            raise failure
