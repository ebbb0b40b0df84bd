"""Limits a broker derives from the resources of its process, so it refuses work it cannot
hold instead of falling over (as Redpanda does).

``max.broker.partitions`` (KIP-578's name): the most partitions this broker holds, counting
every topic, internal ones included. CreateTopics beyond it is refused with POLICY_VIOLATION,
CreatePartitions with INVALID_PARTITIONS, an automatically created topic with POLICY_VIOLATION in
the Metadata answer. When unset it is derived from memory: half of what the process may use
(the smallest of physical memory, the cgroup's ``memory.max`` and RLIMIT_AS / RLIMIT_DATA),
at :data:`MEMORY_PER_PARTITION` each. File descriptors do not enter into it: segment files are
held open only within ``log.max.open.files`` (see :mod:`odradek.storage.open_files`), so a
partition costs no descriptor of its own.

Pure functions of what the operating system reports; no state.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

__all__ = ["MEMORY_PER_PARTITION", "default_max_broker_partitions", "usable_memory_bytes"]

#: What one partition is budgeted: its log, segment and index objects, producer state and
#: loaded index entries, with room to spare (an idle partition measures about 6 KiB; a busy
#: one holds index arrays and producers).
MEMORY_PER_PARTITION = 256 * 1024
_SHARE_FOR_PARTITIONS = 0.5
_CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")


def usable_memory_bytes() -> int:
    """The most memory this process may use, as far as the system says."""
    candidates = []
    try:
        candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        pass
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _hard = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            candidates.append(soft)
    try:
        text = _CGROUP_MEMORY_MAX.read_text().strip()
        if text != "max":
            candidates.append(int(text))
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else 2**32


def default_max_broker_partitions() -> int:
    """``max.broker.partitions`` when it is not set (see the module docstring)."""
    return max(1, int(usable_memory_bytes() * _SHARE_FOR_PARTITIONS) // MEMORY_PER_PARTITION)
