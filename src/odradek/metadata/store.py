"""Durable cluster metadata for a single broker: topics and their ids, partition counts and configs;
the cluster id; the producer-id allocation high-water mark.

The store is the seam where a replicated deployment will put etcd: everything the broker needs to
agree on with other brokers goes through :class:`MetadataStore`, nothing else keeps it.

Owned by the broker's event-loop thread. On disk (in the data dir):

- ``meta.properties`` — Kafka's text format: ``version=1``, ``cluster.id=…``, ``node.id=…``.
- ``__cluster_metadata/topics.json`` — ``{"version": 1, "topics": [{"name", "topic_id",
  "partitions", "configs"}]}``.
- ``__cluster_metadata/producer-ids.json`` — ``{"next_producer_id": N}``; ids are handed out in
  blocks, and the end of the current block is persisted before any id of it is used, so a crash
  never hands an id out twice.

Every write goes to a temporary file that is fsynced and renamed over the old one, so a crash
leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    "TopicMetadata",
    "MetadataStore",
    "new_cluster_id",
    "legacy_topics",
    "legacy_next_producer_id",
]

PRODUCER_ID_BLOCK = 1000


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
    """Topics, cluster id and producer-id allocation, persisted under ``data_dir``."""

    def __init__(self, data_dir: Path, node_id: int, cluster_id: str | None = None) -> None:
        self._dir = data_dir / "__cluster_metadata"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._meta_path = data_dir / "meta.properties"
        self._topics_path = self._dir / "topics.json"
        self._pid_path = self._dir / "producer-ids.json"
        self.node_id = node_id
        self.cluster_id = self._load_cluster_id(cluster_id)
        self._topics: dict[str, TopicMetadata] = {}
        self._by_id: dict[uuid.UUID, TopicMetadata] = {}
        self._load_topics()
        self._next_pid, self._pid_block_end = self._load_producer_ids()

    # -- cluster id -----------------------------------------------------------------------------

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
            _write_atomically(
                self._meta_path,
                f"version=1\ncluster.id={cluster_id}\nnode.id={self.node_id}\n",
            )
        return cluster_id

    # -- topics ---------------------------------------------------------------------------------

    def _load_topics(self) -> None:
        if not self._topics_path.exists():
            return
        doc = json.loads(self._topics_path.read_text(encoding="utf-8"))
        for t in doc["topics"]:
            meta = TopicMetadata(
                name=t["name"],
                topic_id=uuid.UUID(t["topic_id"]),
                partitions=int(t["partitions"]),
                configs=dict(t.get("configs", {})),
            )
            self._topics[meta.name] = meta
            self._by_id[meta.topic_id] = meta

    def _save_topics(self) -> None:
        doc = {
            "version": 1,
            "topics": [
                {
                    "name": t.name,
                    "topic_id": str(t.topic_id),
                    "partitions": t.partitions,
                    "configs": dict(t.configs),
                }
                for t in sorted(self._topics.values(), key=lambda t: t.name)
            ],
        }
        _write_atomically(self._topics_path, json.dumps(doc, indent=1))

    def topics(self) -> Iterator[TopicMetadata]:
        return iter(list(self._topics.values()))

    def topic(self, name: str) -> TopicMetadata | None:
        return self._topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        return self._by_id.get(topic_id)

    def put_topic(self, meta: TopicMetadata) -> None:
        old = self._topics.get(meta.name)
        if old is not None:
            self._by_id.pop(old.topic_id, None)
        self._topics[meta.name] = meta
        self._by_id[meta.topic_id] = meta
        self._save_topics()

    def update_topic(self, name: str, **changes: object) -> TopicMetadata:
        meta = replace(self._topics[name], **changes)  # type: ignore[arg-type]
        self.put_topic(meta)
        return meta

    def remove_topic(self, name: str) -> None:
        meta = self._topics.pop(name)
        self._by_id.pop(meta.topic_id, None)
        self._save_topics()

    # -- producer ids ---------------------------------------------------------------------------

    def _load_producer_ids(self) -> tuple[int, int]:
        if self._pid_path.exists():
            doc = json.loads(self._pid_path.read_text(encoding="utf-8"))
            start = int(doc["next_producer_id"])
        else:
            start = 0
        # Whatever was handed out before a restart lies below the persisted block end.
        return start, start

    def allocate_producer_id(self) -> int:
        if self._next_pid >= self._pid_block_end:
            self._pid_block_end = self._next_pid + PRODUCER_ID_BLOCK
            _write_atomically(
                self._pid_path, json.dumps({"next_producer_id": self._pid_block_end})
            )
        pid = self._next_pid
        self._next_pid += 1
        return pid


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
