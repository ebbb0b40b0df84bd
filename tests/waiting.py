"""Awaiting a condition from a test's thread, by polling (for conditions no event announces)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait(
    condition: Callable[[], Any], what: str, timeout: float = 30.0,
    error: type[Exception] = AssertionError,
) -> Any:
    """Poll ``condition`` every 50 ms until it returns something true, and return that; raise
    ``error`` (failing the test) naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
