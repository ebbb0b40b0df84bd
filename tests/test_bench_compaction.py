"""bench/compaction.py measures the cleaner's peak memory in a child process: the figure must be
the child's own, not inherited from the process that started it (Linux carries a process's peak
RSS across exec into ``ru_maxrss``; the benchmark's parent writes the log first, and
``bench/run.py`` runs other benchmarks before)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A parent that writes a small log, holds (and frees) 256 MiB, then runs the benchmark's
# cleaning child the way bench_clean does; it prints its own peak and the child's result.
_PARENT = textwrap.dedent("""
    import json, resource, subprocess, sys
    from pathlib import Path
    from bench.compaction import write_log

    directory = Path(sys.argv[1])
    write_log(directory, 2 << 20, 1000, segment_bytes=512 << 10)
    big = bytearray(256 << 20)
    big[::4096] = b"\\x01" * len(big[::4096])  # resident, not just reserved
    del big
    child = subprocess.run(
        [sys.executable, "-m", "bench.compaction", "--clean-only", str(directory),
         "--segment", "512k", "--dedupe", "1m"],
        check=True, capture_output=True, text=True,
    ).stdout
    print(json.dumps({"parent_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "child": json.loads(child.strip().splitlines()[-1])}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cleaner_peak_memory_is_the_childs_own(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PARENT, str(tmp_path / "bench-0")],
        cwd=REPO, check=True, capture_output=True, text=True, timeout=100,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["parent_peak"] >= 256 << 20  # the parent really held it
    child = r["child"]
    assert child["passes"] >= 1 and child["bytes_written"] > 0
    # A 1 MiB offset map, 512 KiB reads and small batches: a few MiB at most, far below what
    # the parent once held (ru_maxrss reported ~220 MiB here).
    assert child["peak_memory_bytes"] < 32 << 20
