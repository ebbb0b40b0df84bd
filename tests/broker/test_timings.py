"""The request-timing histograms: bucket arithmetic and percentiles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from odradek.broker.timings import BUCKETS, RequestTimings, bucket_bounds_us, bucket_of


@given(st.integers(min_value=0, max_value=(2**31 - 1) * 1000))
def test_a_duration_falls_within_its_bucket(ns: int) -> None:
    low, high = bucket_bounds_us(bucket_of(ns))
    assert low <= ns // 1000 < high


def test_buckets_are_contiguous_and_ordered() -> None:
    edges = [bucket_bounds_us(b) for b in range(BUCKETS)]
    assert edges[0] == (0, 1)
    for (_, high), (low, _) in zip(edges, edges[1:], strict=False):
        assert high == low
    # Four to a power of two: neighbours differ by at most a quarter of the lower bound.
    assert all(h - lo <= max(1, lo // 4) for lo, h in edges)


def test_longer_than_the_last_bucket_lands_in_it() -> None:
    assert bucket_of(10**15) == BUCKETS - 1


def test_percentiles_and_reset() -> None:
    t = RequestTimings({0: "Produce"})
    for us in range(1, 101):
        t.request_done(0, 0, us * 1000)
    total = t.snapshot(reset=True)["total"]["Produce"]
    assert total["n"] == 100
    # Upper bounds of the buckets holding the 50th and 99th values.
    assert 50 < total["p50_us"] <= 56
    assert 99 < total["p99_us"] <= 112
    assert total["max_us"] == pytest.approx(100.0)
    assert t.snapshot()["total"] == {}
