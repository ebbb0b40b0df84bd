"""Broker CPU per Fetch request, in process: odradek trees interleaved, no sockets.

The consume workloads of ``bench/vsmock.py`` pass most of their time in the client, and on a
shared machine their rounds drift by tens of percent; this measures what a change to the fetch
path changes: the time the broker's dispatcher takes to answer the Fetch requests of one
consume pass (v16, what librdkafka 2.x sends: one partition, ``partition_max_bytes`` 1 MiB, so
every answer is a file slice), decoding, reading and encoding included, sending not. Each
target runs in a process of its own (``odradek`` imported from its source tree) with a broker
on a background thread; the dispatcher is called on that broker's event loop. A round reports
the fastest of 30 runs of 200 requests (the least disturbed by other processes on the
machine); rounds alternate the targets::

    python bench/fetch_cpu.py new=src base=/tmp/base/src --rounds 4

ApiVersions (v3) and Metadata (v12, the one topic) are timed the same way: the other requests
of a pass (a consumer sends three of each), and a control for a change to the fetch path only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["main"]

_HERE = Path(__file__).resolve().parent


def _frame(key: int, version: int, body: Any) -> bytes:
    from kio.serial import entity_writer

    from odradek.protocol.messages import request_schema

    schema = request_schema(key, version)
    assert schema is not None
    header = schema.__header_schema__
    out = io.BytesIO()
    entity_writer(header)(out, header(request_api_key=key, request_api_version=version,
                                      correlation_id=7, client_id="rdkafka"))
    entity_writer(schema)(out, body)
    return out.getvalue()  # without the size prefix, as the connection hands frames over


def _fetch_frame(topic_id: uuid.UUID, offset: int) -> bytes:
    from odradek.protocol.messages import request_schema

    schema = request_schema(1, 16)
    assert schema is not None
    m = sys.modules[schema.__module__]
    body = schema(
        replica_state=m.ReplicaState(replica_id=-1, replica_epoch=-1),
        max_wait=datetime.timedelta(milliseconds=500), min_bytes=1, max_bytes=52428800,
        isolation_level=0, session_id=0, session_epoch=-1,
        topics=(m.FetchTopic(topic_id=topic_id, partitions=(m.FetchPartition(
            partition=0, current_leader_epoch=-1, fetch_offset=offset, last_fetched_epoch=-1,
            log_start_offset=-1, partition_max_bytes=1 << 20),)),),
        forgotten_topics_data=(), rack_id="",
    )
    return _frame(1, 16, body)


def _api_versions_frame() -> bytes:
    from odradek.protocol.messages import request_schema

    schema = request_schema(18, 3)
    assert schema is not None
    return _frame(18, 3, schema(client_software_name="confluent-kafka-python",
                                client_software_version="2.16.1"))


def _metadata_frame(topic: str) -> bytes:
    from odradek.protocol.messages import request_schema

    schema = request_schema(3, 12)
    assert schema is not None
    m = sys.modules[schema.__module__]
    return _frame(3, 12, schema(
        topics=(m.MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=topic),),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False,
    ))


def _best_us(call: Any, frames: list[memoryview]) -> float:
    for i in range(300):
        call(frames[i % len(frames)])
    best = float("inf")
    for _ in range(30):
        t0 = time.perf_counter()
        for i in range(200):
            call(frames[i % len(frames)])
        best = min(best, (time.perf_counter() - t0) / 200)
    return best * 1e6


def _measure(size: int, window: int) -> dict[str, float]:
    """In the child: a broker, a partition of ``window`` records of ``size`` bytes in 1 MB
    batches, then the timings."""
    sys.path.insert(0, str(_HERE))
    from confluent_kafka.admin import AdminClient, NewTopic
    from vsmock import produce

    from odradek.broker.connection import _release
    from odradek.broker.dispatcher import Dispatcher
    from odradek.broker.runner import BrokerThread, local_config

    with tempfile.TemporaryDirectory(prefix="odradek-fetch-cpu-") as tmp:
        with BrokerThread(local_config(tmp)) as bt:
            broker = bt.broker
            admin = AdminClient({"bootstrap.servers": bt.bootstrap})
            admin.create_topics([NewTopic("t", 1, 1)])["t"].result(30)
            produce(bt.bootstrap, "t", size, window, "1")
            log = broker.replicas.leader_log("t", 0, -1)
            topic = broker.cluster.topic("t")
            assert topic is not None
            topic_id = topic.topic_id
            offsets, offset = [], 0
            while offset < window:  # the offsets one consume pass fetches from
                offsets.append(offset)
                info = log.fetch(offset, max_bytes=1 << 20, max_inline_bytes=0)
                offset = getattr(info.records, "next_offset", window)
                _release_records(info.records)
            fetches = [memoryview(bytearray(_fetch_frame(topic_id, o))) for o in offsets]
            versions = [memoryview(bytearray(_api_versions_frame()))]
            metadata = [memoryview(bytearray(_metadata_frame("t")))]
            dispatch = Dispatcher(broker)

            async def run() -> dict[str, float]:
                return {
                    "fetch_us": _best_us(lambda f: _release(dispatch(f)), fetches),
                    "api_versions_us": _best_us(dispatch, versions),
                    "metadata_us": _best_us(dispatch, metadata),
                    "fetches": len(fetches),
                }

            return asyncio.run_coroutine_threadsafe(run(), bt._loop).result(300)


def _release_records(records: Any) -> None:
    close = getattr(records, "close", None)
    if close is not None:
        close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", metavar="NAME=SRC")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024, help="record size in bytes")
    ap.add_argument("--window", type=int, default=4000, help="records one pass reads")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_measure(args.size, args.window)), flush=True)
        return
    if not args.targets:
        raise SystemExit("name at least one target: NAME=SRC")
    results: dict[str, list[dict[str, float]]] = {}
    specs = [t.partition("=")[::2] for t in args.targets]
    for r in range(args.rounds):
        for name, src in specs[r % len(specs):] + specs[: r % len(specs)]:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
            out = subprocess.run(
                [sys.executable, __file__, "--child", "--size", str(args.size),
                 "--window", str(args.window)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
            results.setdefault(name, []).append(json.loads(out.strip().splitlines()[-1]))
    ref = specs[-1][0]
    ref_fetch = min(x["fetch_us"] for x in results[ref])
    print(f"\nFetch v16 dispatch, {args.window} records of {args.size} B in 1 MB slices "
          f"({int(results[ref][0]['fetches'])} fetches a pass); best of each round, "
          f"{args.rounds} interleaved rounds")
    print(f"| target | Fetch us (min) | median of rounds | / {ref} | ApiVersions us (min) "
          "| Metadata us (min) |")
    print("|---|---|---|---|---|---|")
    for name, _src in specs:
        rs = results[name]
        best = min(x["fetch_us"] for x in rs)
        print(f"| {name} | {best:.1f} | {statistics.median(x['fetch_us'] for x in rs):.1f} "
              f"| {best / ref_fetch:.2f} | {min(x['api_versions_us'] for x in rs):.1f} "
              f"| {min(x.get('metadata_us', float('nan')) for x in rs):.1f} |")


if __name__ == "__main__":
    main()
