"""The broker-side share of the vsmock bench: odradek's request timings, per workload.

Each dump is what ``odradek serve`` prints on SIGUSR1 (:mod:`odradek.broker.timings`); the
dumps of one workload (one per round) are merged bucket by bucket before percentiles are read.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from odradek.broker.timings import BUCKETS, bucket_bounds_us

__all__ = ["report"]


def _merge(summaries: list[dict[str, Any]]) -> list[int]:
    counts = [0] * BUCKETS
    for s in summaries:
        for b, c in s.get("buckets", {}).items():
            counts[int(b)] += c
    return counts


def _pct(counts: list[int], q: float) -> float:
    n = sum(counts)
    if not n:
        return 0.0
    rank = max(1, int(q * n + 0.999999))
    seen = 0
    for b, c in enumerate(counts):
        seen += c
        if seen >= rank:
            return float(bucket_bounds_us(b)[1])
    return float(bucket_bounds_us(BUCKETS - 1)[1])


def _cell(summaries: list[dict[str, Any]]) -> str:
    counts = _merge(summaries)
    n = sum(counts)
    if not n:
        return "-"
    return f"{_pct(counts, 0.5):,.0f} / {_pct(counts, 0.99):,.0f} (n={n:,})"


def report(dumps: list[dict[str, Any]], name: str = "odradek") -> str:
    """A table: per workload, p50 / p99 in microseconds of each timed stage."""
    by_workload: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in dumps:
        by_workload[str(d["workload"])].append(d)
    lines = [
        f"{name}: broker-side timings, p50 / p99 in us (bucket upper bounds, within 19%), "
        "all rounds merged",
        "| workload | Produce: arrival -> appended | Produce: arrival -> response sent "
        "| Fetch: arrival -> response sent | Fetch: append -> woken | Fetch: append -> "
        "response sent |",
        "|---|---|---|---|---|---|",
    ]
    for workload, ds in by_workload.items():
        total = [d["total"] for d in ds]
        lines.append(
            f"| {workload} | {_cell([d['produce.appended'] for d in ds])} "
            f"| {_cell([t['Produce'] for t in total if 'Produce' in t])} "
            f"| {_cell([t['Fetch'] for t in total if 'Fetch' in t])} "
            f"| {_cell([d['fetch.woken'] for d in ds])} "
            f"| {_cell([d['fetch.sent'] for d in ds])} |"
        )
    return "\n".join(lines)
