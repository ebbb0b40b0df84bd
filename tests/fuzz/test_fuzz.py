"""The short, seeded form of the fuzz run (``fuzzer.py``); ``make fuzz`` runs a million frames.

``FUZZ_FRAMES`` and ``FUZZ_SEED`` change the size and the seed; a failure names the batch, and a
traceback comes with the frames (hex) sent on the connection that caused it, so that it can be
replayed.
"""

from __future__ import annotations

import os

import pytest
from fuzzer import FuzzSettings, run

pytestmark = pytest.mark.integration

# About a minute on a loaded two-core machine.
FRAMES = int(os.environ.get("FUZZ_FRAMES", "40000"))
BATCH = 4_000
RSS_CAP_MB = 400


@pytest.mark.timeout(900)
def test_broker_survives_mutated_client_frames() -> None:
    report = run(FuzzSettings(frames=FRAMES, seed=int(os.environ.get("FUZZ_SEED", "1")),
                              batch=BATCH, rss_cap_mb=RSS_CAP_MB))
    summary = report.summary()
    print(summary)
    assert not report.failures, "\n\n".join(report.failures)
    counts = report.counts
    assert counts.sent == FRAMES
    # Every batch was followed by a real client's round trip.
    assert report.health_checks == -(-FRAMES // BATCH)
    assert report.exit_code == 0
    assert 0 < report.max_rss_mb < RSS_CAP_MB
    # The corpus reached what the fuzz test is for, topic creation included.
    for api in ("CreateTopics", "CreatePartitions", "Produce", "Fetch", "JoinGroup", "Metadata"):
        assert counts.by_api[api] > 0, api
    assert counts.answered > 0 and counts.closed > 0
