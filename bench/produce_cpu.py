"""Broker CPU per Produce request: odradek trees interleaved, driven by a raw-socket client.

The vsmock produce workloads measure records per second of a Python load generator that
shares two cores with the broker, and on a busy machine their rounds differ by a factor of two
from one another. This bench measures what a change to the produce path changes: the CPU the
broker's process uses per request. A raw-socket client sends Produce requests built once in
advance (v10, what librdkafka sends: one partition, one uncompressed batch of ``--records``
records of ``--size`` bytes, ``--in-flight`` requests pipelined), so that the client costs
little and every target gets the same bytes; rounds alternate the order of the targets::

    python bench/produce_cpu.py new=src base=/tmp/base/src --records 3000 --size 100

``--acks 1,-1`` measures each target with both (a topic each, the runs interleaved too): one
row per target and acks, the ratio against the last target with the same acks -- on a
partition with one replica acks=all is answered as soon as the append is done, so the two
should cost the same.

A target is ``name=SRC`` (``odradek serve`` from the source tree SRC, first on PYTHONPATH).
The last target is the reference of the ratio column. CPU comes from ``/proc`` in clock ticks
(10 ms), so a round needs enough requests (``--requests``) to use a good many of them.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import socket
import statistics
import struct
import sys
import tempfile
from pathlib import Path

from kio.serial import entity_writer
from vsmock import Target, start_odradek

from odradek.protocol.messages import request_schema
from odradek.protocol.records import SimpleRecord, encode_batch

__all__ = ["main"]

_VERSION = 10  # librdkafka 2.x's Produce version


def produce_frame(topic: str, records: bytes, acks: int, correlation_id: int) -> bytes:
    """A size-prefixed Produce request of one partition (0) holding ``records``."""
    schema = request_schema(0, _VERSION)
    assert schema is not None
    mod = sys.modules[schema.__module__]
    body = schema(
        transactional_id=None,
        acks=acks,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(mod.TopicProduceData(
            name=topic, partition_data=(mod.PartitionProduceData(index=0, records=records),),
        ),),
    )
    out = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(out, header(
        request_api_key=0, request_api_version=_VERSION, correlation_id=correlation_id,
        client_id="produce-cpu",
    ))
    entity_writer(schema)(out, body)
    payload = out.getvalue()
    return struct.pack(">i", len(payload)) + payload


def _receive(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise SystemExit("the broker closed the connection")
        data += chunk
    return bytes(data)


def send_all(bootstrap: str, frames: list[bytes], in_flight: int) -> None:
    """Send ``frames`` with up to ``in_flight`` unanswered; read every response."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = answered = 0
        while answered < len(frames):
            while sent < len(frames) and sent - answered < in_flight:
                sock.sendall(frames[sent])
                sent += 1
            (size,) = struct.unpack(">i", _receive(sock, 4))
            response = _receive(sock, size)
            # No error anywhere: the response's error codes are not parsed, but a refused
            # batch would not take the broker the same CPU.
            if len(response) < 8:
                raise SystemExit(f"a short response: {response!r}")
            answered += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", metavar="NAME=SRC")
    ap.add_argument("--records", type=int, default=3000, help="records per request")
    ap.add_argument("--size", type=int, default=100, help="bytes of each record's value")
    ap.add_argument("--requests", type=int, default=300, help="requests per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--acks", type=_acks_list, default=(1,),
                    help="1, -1 (all) or both, comma-separated: each is a run of its own")
    ap.add_argument("--in-flight", type=int, default=5)
    args = ap.parse_args()
    acks_list: tuple[int, ...] = args.acks
    payload = os.urandom(args.size)
    batch = encode_batch([SimpleRecord(payload) for _ in range(args.records)])
    # (target name, acks) -> CPU seconds per request of each round.
    cpu: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="odradek-produce-cpu-") as tmp:
        targets: list[Target] = []
        frames: dict[tuple[str, int], list[bytes]] = {}
        try:
            for spec in args.targets:
                name, _, src = spec.partition("=")
                t = start_odradek(str(Path(tmp) / name), name, src or None)
                targets.append(t)
                for acks in acks_list:
                    topic = t.topic(f"cpu{acks}")
                    cpu[name, acks] = []
                    # Warm-up: codecs, the first segment's files.
                    send_all(t.bootstrap, [produce_frame(topic, batch, acks, i)
                                           for i in range(20)], args.in_flight)
                    frames[name, acks] = [produce_frame(topic, batch, acks, i)
                                          for i in range(args.requests)]
            runs = [(t, acks) for t in targets for acks in acks_list]
            for r in range(args.rounds):
                # Rotated every other round, and reversed every other: a run may pay for
                # what its predecessor on the same broker left behind (the page-cache
                # trimmer's write-back, say), so no run always follows the same one.
                k = (r // 2) % len(runs)
                order = runs[k:] + runs[:k]
                if r % 2:
                    order.reverse()
                for t, acks in order:
                    c0 = t.cpu_seconds()
                    send_all(t.bootstrap, frames[t.name, acks], args.in_flight)
                    cpu[t.name, acks].append((t.cpu_seconds() - c0) / args.requests)
        finally:
            for t in targets:
                t.stop()
    ref_name = targets[-1].name
    print(f"\nbroker CPU per Produce request (v{_VERSION}, {args.records} x {args.size} B, "
          f"{args.in_flight} in flight), medians of {args.rounds} interleaved rounds of "
          f"{args.requests}")
    print(f"| target | acks | us per request | / {ref_name} | rounds (us) |")
    print("|---|---|---|---|---|")
    for t in targets:
        for acks in acks_list:
            values = cpu[t.name, acks]
            med = statistics.median(values)
            ref = statistics.median(cpu[ref_name, acks])
            print(f"| {t.name} | {'all' if acks == -1 else acks} | {med * 1e6:,.0f} | "
                  f"{med / ref:.2f} | " + " ".join(f"{v * 1e6:.0f}" for v in sorted(values))
                  + " |")


def _acks_list(text: str) -> tuple[int, ...]:
    """``--acks``: one or more of 1 and -1 (``all``); acks=0 has no responses to pace the
    client by."""
    values = []
    for word in text.split(","):
        word = word.strip()
        acks = -1 if word == "all" else int(word)
        if acks not in (-1, 1):
            raise argparse.ArgumentTypeError(f"acks must be 1 or -1 (all), not {word!r}")
        if acks not in values:
            values.append(acks)
    return tuple(values)


if __name__ == "__main__":
    main()
