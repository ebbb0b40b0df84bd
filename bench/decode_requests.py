"""Time of ``protocol.messages.decode_request`` (precheck walk + kio decode) per request, source
trees interleaved in separate processes::

    python bench/decode_requests.py --baseline-src /tmp/base/src --rounds 5

Requests, built once with kio: ApiVersions v3, Metadata v12 naming 10 topics, Fetch v12 of one
partition and of 10 topics x 10 partitions (what a consumer sends), the same Fetch from a
follower with a cluster id (a known tagged field); each round times every request in the current
tree (``src`` next to this file) and the baseline, alternating which goes first. Also
``protocol.client.decode_response`` (what a broker uses on another's answers) of a Metadata v12
answer (10 topics x 10 partitions) and a Fetch v12 answer (10 partitions of 1 KB). Reported: the
median over rounds of the best of 5 runs, in microseconds of CPU per decode
(``time.process_time``, as the machine may be busy), and the ratio new / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import datetime, json, struct, sys, time, uuid
from kio.schema.api_versions.v3 import request as av
from kio.schema.fetch.v12 import request as fv
from kio.schema.metadata.v12 import request as mv
from odradek.protocol.messages import decode_request, encode_entity, peek_preamble, request_schema

def frame(body):
    s = type(body)
    return struct.pack(">hhih", s.__api_key__, s.__version__, 1, 5) + b"bench\x00" + encode_entity(body)

def fetch(topics, partitions, **kw):
    return fv.FetchRequest(max_wait=datetime.timedelta(milliseconds=500), min_bytes=1,
        forgotten_topics_data=(), topics=tuple(fv.FetchTopic(topic=f"topic-{t}", partitions=tuple(
            fv.FetchPartition(partition=p, fetch_offset=1000 + p, partition_max_bytes=1 << 20)
            for p in range(partitions))) for t in range(topics)), **kw)

frames = {
    "api_versions_v3": frame(av.ApiVersionsRequest(client_software_name="b",
                                                   client_software_version="1")),
    "metadata_v12_10_topics": frame(mv.MetadataRequest(topics=tuple(
        mv.MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=f"topic-{i}") for i in range(10)),
        allow_auto_topic_creation=False, include_topic_authorized_operations=False)),
    "fetch_v12_1_partition": frame(fetch(1, 1)),
    "fetch_v12_100_partitions": frame(fetch(10, 10)),
    "fetch_v12_follower_cluster_id": frame(fetch(1, 1, cluster_id="cluster", replica_id=2)),
}
from kio.schema.fetch.v12 import response as fr
from kio.schema.metadata.v12 import response as mr
from odradek.protocol.client import decode_response
from odradek.protocol.messages import encode_response
from kio.schema.errors import ErrorCode
none = ErrorCode.none

def answer(body):
    return encode_response(type(body).__api_key__, 1, body)[4:]

zero = datetime.timedelta(0)
responses = {
    "answer_metadata_v12_10_topics": (3, 12, answer(mr.MetadataResponse(
        throttle_time=zero, cluster_id="c", controller_id=1,
        brokers=(mr.MetadataResponseBroker(node_id=1, host="h", port=9092, rack=None),),
        topics=tuple(mr.MetadataResponseTopic(error_code=none, name=f"topic-{t}",
            topic_id=uuid.UUID(int=t + 1), is_internal=False,
            topic_authorized_operations=-2147483648,
            partitions=tuple(mr.MetadataResponsePartition(error_code=none, partition_index=p,
                leader_id=1, leader_epoch=0, replica_nodes=(1,), isr_nodes=(1,),
                offline_replicas=()) for p in range(10))) for t in range(10))))),
    "answer_fetch_v12_10_partitions_1k": (1, 12, answer(fr.FetchResponse(
        throttle_time=zero, error_code=none, session_id=0,
        responses=(fr.FetchableTopicResponse(topic="t", partitions=tuple(fr.PartitionData(
            partition_index=p, error_code=none, high_watermark=10, last_stable_offset=10,
            log_start_offset=0, aborted_transactions=None, preferred_read_replica=-1,
            records=bytes(1024)) for p in range(10))),)))),
}
out = {}
for name, (key, version, data) in responses.items():
    best = None
    for _ in range(5):
        t = time.process_time()
        for _ in range(1000):
            decode_response(data, key, version)
        e = (time.process_time() - t) / 1000
        best = e if best is None or e < best else best
    out[name] = best * 1e6
for name, data in frames.items():
    pre = peek_preamble(data)
    schema = request_schema(pre.api_key, pre.api_version)
    n = 2000
    best = None
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            decode_request(data, pre, schema)
        e = (time.process_time() - t) / n
        best = e if best is None or e < best else best
    out[name] = best * 1e6
print(json.dumps(out))
"""


def run(src: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-src", required=True, metavar="DIR")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    new_src = str(Path(__file__).resolve().parents[1] / "src")
    results: dict[str, dict[str, list[float]]] = {"new": {}, "base": {}}
    for r in range(args.rounds):
        order = [("new", new_src), ("base", args.baseline_src)]
        for label, src in order if r % 2 == 0 else order[::-1]:
            for name, us in run(src).items():
                results[label].setdefault(name, []).append(us)
    print(f"{'request':32} {'base us':>9} {'new us':>9} {'new/base':>9}")
    for name, base in results["base"].items():
        b, n = statistics.median(base), statistics.median(results["new"][name])
        print(f"{name:32} {b:9.2f} {n:9.2f} {n / b:9.3f}")


if __name__ == "__main__":
    main()
