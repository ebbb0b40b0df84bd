"""A run's history: every operation, fault and observation as one JSON object per line.

Each event has ``t`` (seconds since the epoch, wall clock, so events from threads and from the
brokers' logs line up), ``f`` (what: ``send``, ``txn``, ``poll``, ``read``, ``replica``,
``state``, ``fault``, ``meta``) and ``type`` (``invoke``, ``ok``, ``fail``, ``info`` as in
Jepsen: ``fail`` means it certainly did not happen, ``info`` that it may have). The fields per
kind are listed in docs/CHAOS.md; :mod:`chaos.checker` reads them.

:class:`History` is shared by every worker thread of a run (appends are serialised by its lock)
and owned by the run that opened it. Lines are flushed as they are written, so a run that is
killed leaves a history that loads up to its last whole line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["History", "Event", "load_history"]

Event = dict[str, Any]


class History:
    """Appends events to ``path`` (created, or truncated) and keeps them in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def record(self, f: str, type_: str = "info", **fields: Any) -> Event:
        event: Event = {"t": round(time.time(), 6), "f": f, "type": type_, **fields}
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self.events.append(event)
            if not self._file.closed:
                self._file.write(line + "\n")
                self._file.flush()
        return event

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load_history(path: Path) -> list[Event]:
    """The events of a saved history; a torn last line (a killed run) is ignored."""
    return list(_events(path.read_text(encoding="utf-8").splitlines()))


def _events(lines: Iterable[str]) -> Iterator[Event]:
    for line in lines:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            return
