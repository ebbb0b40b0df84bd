"""Broker-side request latency: fixed-bucket histograms, cheap enough to be always on.

What is timed (``time.perf_counter_ns``, a monotonic clock; these are durations, never dates):

- ``total``, per API key: from a request's arrival (the read that completed its frame) to its
  response being handed to the socket (Kafka's TotalTimeMs, less the client's send time). A
  request read while an earlier one on its connection was being answered counts its wait too.
- ``produce.appended``: arrival to the end of the Produce handler's appends (validated, given
  offsets and written to the segment file): the local part of ``total`` for Produce.
- ``fetch.woken``: for a Fetch that waited for data, from the append that woke it to the fetch
  running again; ``fetch.sent``: from that append to the response handed to the socket. Both
  answer "how long does a record wait in the broker before a waiting consumer gets it".
- replication (issue 13), on a leader, for each batch produced with ``acks=all`` to a partition
  with several replicas: ``replication.fetched``, from its append to the first follower's fetch
  past it (the follower has it); ``replication.committed``, from its append to the high
  watermark passing it (what acks=all waits for). On a follower: ``replica_fetch.rtt``, from a
  replica Fetch handed to the connection to its answer; ``replica_fetch.applied``, from that
  answer to its records appended and the next Fetch ready to go.

A histogram is 4 buckets per power of two of microseconds (bucket bounds within 19% of each
other) up to about 35 minutes, plus a count and a sum: recording is a few integer operations and
one list increment, with nothing allocated per request. ``odradek serve`` prints
:meth:`RequestTimings.snapshot` as one JSON line on SIGUSR1 and starts the histograms afresh
(the bench reads it after each workload).

Owned by the broker's event loop, like the connections and handlers that record into it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["BUCKETS", "RequestTimings", "bucket_bounds_us", "bucket_of"]

_SUB = 2  # log2 of the sub-buckets per power of two
#: Buckets per histogram: enough for 2**31 us (about 35 minutes).
BUCKETS = (32 << _SUB)

now_ns = time.perf_counter_ns


def bucket_of(duration_ns: int) -> int:
    """The bucket of a duration: exact below 4 us, then four per power of two."""
    us = duration_ns // 1000
    if us < (1 << _SUB):
        return us if us > 0 else 0
    shift = us.bit_length() - 1 - _SUB
    b = ((shift + 1) << _SUB) + ((us >> shift) & ((1 << _SUB) - 1))
    return b if b < BUCKETS else BUCKETS - 1


def bucket_bounds_us(b: int) -> tuple[int, int]:
    """[low, high) of bucket ``b`` in microseconds."""
    if b < (1 << _SUB):
        return b, b + 1
    shift = (b >> _SUB) - 1
    low = ((1 << _SUB) + (b & ((1 << _SUB) - 1))) << shift
    return low, low + (1 << shift)


class _Histogram:
    __slots__ = ("counts", "n", "total_ns", "max_ns")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.n = 0
        self.total_ns = 0
        self.max_ns = 0

    def record(self, duration_ns: int) -> None:
        self.counts[bucket_of(duration_ns)] += 1
        self.n += 1
        self.total_ns += duration_ns
        if duration_ns > self.max_ns:
            self.max_ns = duration_ns

    def percentile_us(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (0 when empty)."""
        if not self.n:
            return 0.0
        rank = max(1, int(q * self.n + 0.999999))
        seen = 0
        for b, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return float(bucket_bounds_us(b)[1])
        return self.max_ns / 1000

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean_us": round(self.total_ns / self.n / 1000, 1) if self.n else 0.0,
            "p50_us": self.percentile_us(0.5),
            "p90_us": self.percentile_us(0.9),
            "p99_us": self.percentile_us(0.99),
            "max_us": round(self.max_ns / 1000, 1),
            "buckets": {str(b): c for b, c in enumerate(self.counts) if c},
        }


class RequestTimings:
    """The broker's request-latency histograms (see the module docs)."""

    #: The clock of every timing here (monotonic nanoseconds).
    now_ns = staticmethod(now_ns)

    def __init__(self, api_names: Mapping[int, str] | None = None) -> None:
        self._names = dict(api_names or {})
        self._total: dict[int, _Histogram] = {}
        self.produce_appended = _Histogram()
        self.fetch_woken = _Histogram()
        self.fetch_sent = _Histogram()
        self.replication_fetched = _Histogram()
        self.replication_committed = _Histogram()
        self.replica_fetch_rtt = _Histogram()
        self.replica_fetch_applied = _Histogram()
        #: Arrival of the request being handled now (set by the connection before each
        #: dispatch, so that a synchronous handler can time its own stages against it).
        self.arrival_ns = 0
        # Long-polling fetches that were woken by an append: their task -> the append's time.
        self._woken: dict[asyncio.Future[Any], int] = {}
        self._since_ns = now_ns()

    def request_done(self, api_key: int, arrival_ns: int, sent_ns: int) -> None:
        h = self._total.get(api_key)
        if h is None:
            h = self._total[api_key] = _Histogram()
        h.record(sent_ns - arrival_ns)

    def appended(self) -> None:
        """The Produce being handled has written its batches."""
        self.produce_appended.record(now_ns() - self.arrival_ns)

    def fetch_woken_by(self, appended_ns: int) -> None:
        """A waiting fetch runs again, woken by an append at ``appended_ns``."""
        self.fetch_woken.record(now_ns() - appended_ns)
        task = asyncio.current_task()
        if task is not None:
            self._woken[task] = appended_ns

    def response_sent(self, task: asyncio.Future[Any], sent_ns: int) -> None:
        """The response of the request ``task`` answered has been handed to the socket."""
        appended_ns = self._woken.pop(task, None)
        if appended_ns is not None:
            self.fetch_sent.record(sent_ns - appended_ns)

    def forget(self, task: asyncio.Future[Any]) -> None:
        """The request ``task`` answered will not be sent (its connection went)."""
        self._woken.pop(task, None)

    def snapshot(self, *, reset: bool = False) -> dict[str, Any]:
        """Summaries of every histogram since the last reset; ``reset`` starts them afresh."""
        names = self._names
        out: dict[str, Any] = {
            "seconds": round((now_ns() - self._since_ns) / 1e9, 3),
            "total": {names.get(k, str(k)): h.summary() for k, h in sorted(self._total.items())},
            "produce.appended": self.produce_appended.summary(),
            "fetch.woken": self.fetch_woken.summary(),
            "fetch.sent": self.fetch_sent.summary(),
            "replication.fetched": self.replication_fetched.summary(),
            "replication.committed": self.replication_committed.summary(),
            "replica_fetch.rtt": self.replica_fetch_rtt.summary(),
            "replica_fetch.applied": self.replica_fetch_applied.summary(),
        }
        if reset:
            self._total.clear()
            self.produce_appended = _Histogram()
            self.fetch_woken = _Histogram()
            self.fetch_sent = _Histogram()
            self.replication_fetched = _Histogram()
            self.replication_committed = _Histogram()
            self.replica_fetch_rtt = _Histogram()
            self.replica_fetch_applied = _Histogram()
            self._since_ns = now_ns()
        return out
