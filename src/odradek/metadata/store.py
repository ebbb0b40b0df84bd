"""What a broker keeps of its own in its data dir: the cluster id (``meta.properties``), and the
reading of the metadata files of the format before the cluster store.

Topics, partition states and the producer-id mark live in the cluster store
(:mod:`odradek.cluster`): for a single node the durable in-process store under
``__cluster_metadata/``, which migrates the older files once (:mod:`odradek.cluster.durable`).

On disk (in the data dir):

- ``meta.properties`` — Kafka's text format: ``version=1``, ``cluster.id=…``, ``node.id=…``;
  written to a temporary file that is fsynced and renamed, so a crash leaves the old or the new.
- read for migration only: ``__cluster_metadata/topics.json`` — ``{"version": 1, "topics":
  [{"name", "topic_id", "partitions", "configs"}]}``, and ``__cluster_metadata/producer-ids.json``
  — ``{"next_producer_id": N}`` (the end of the last block taken).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "TopicMetadata",
    "MetadataStore",
    "new_cluster_id",
    "legacy_topics",
    "legacy_next_producer_id",
]


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


def new_cluster_id() -> str:
    """A 22-character URL-safe base64 UUID, as Kafka's ``kafka-storage random-uuid`` prints."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class MetadataStore:
    """The cluster id and node id of the broker whose data dir this is. Owned by the broker's
    event loop."""

    def __init__(self, data_dir: Path, node_id: int, cluster_id: str | None = None) -> None:
        self._meta_path = data_dir / "meta.properties"
        self.node_id = node_id
        self.cluster_id = self._load_cluster_id(cluster_id)

    def _load_cluster_id(self, configured: str | None) -> str:
        props: dict[str, str] = {}
        if self._meta_path.exists():
            for line in self._meta_path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    props[k.strip()] = v.strip()
        existing = props.get("cluster.id")
        if existing and configured and existing != configured:
            raise ValueError(
                f"data dir belongs to cluster {existing!r}, but cluster id {configured!r} was given"
            )
        cluster_id = existing or configured or new_cluster_id()
        if not existing:
            self._meta_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(
                self._meta_path,
                f"version=1\ncluster.id={cluster_id}\nnode.id={self.node_id}\n",
            )
        return cluster_id


def legacy_topics(data_dir: Path) -> list[TopicMetadata]:
    """The topics of ``__cluster_metadata/topics.json`` (none when it is absent)."""
    path = data_dir / "__cluster_metadata" / "topics.json"
    if not path.exists():
        return []
    doc = json.loads(path.read_text(encoding="utf-8"))
    return [
        TopicMetadata(
            name=t["name"],
            topic_id=uuid.UUID(t["topic_id"]),
            partitions=int(t["partitions"]),
            configs=dict(t.get("configs", {})),
        )
        for t in doc["topics"]
    ]


def legacy_next_producer_id(data_dir: Path) -> int | None:
    """The first producer id no block of ``producer-ids.json`` covered, or None."""
    path = data_dir / "__cluster_metadata" / "producer-ids.json"
    if not path.exists():
        return None
    return int(json.loads(path.read_text(encoding="utf-8"))["next_producer_id"])
