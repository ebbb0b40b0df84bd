"""CPU of a Produce request with and without reserving its blocks first (storage/preallocate.py).

A broker in this process (no sockets) takes the same Produce request (v10, one partition, one
uncompressed batch of ``--records`` records of ``--size`` bytes) through its dispatcher, in
blocks of ``--per-block`` requests, alternately with ``LogSegment.append``'s reservation and
with it replaced by a no-op (ABBA order); each request's bytes are first copied into the
reused receive map, as the socket would. CPU is the process's (every thread: the page-cache
trimmer's ``fdatasync`` and drop count too), the result the medians per request::

    python bench/preallocate_ab.py --records 950 --size 1024

``--min-bytes`` overrides :data:`~odradek.storage.preallocate.PREALLOCATE_MIN_BYTES`, to see
what the reservation would do for smaller batches. Alternating blocks in one process keeps
the machine's other load out of the comparison far better than two broker processes do.
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import statistics
import tempfile
import time

from produce_cpu import produce_frame

from odradek.broker.app import Broker
from odradek.broker.dispatcher import Dispatcher
from odradek.broker.runner import local_config
from odradek.protocol.records import SimpleRecord, encode_batch
from odradek.storage import segment

__all__ = ["main"]


def _no_reservation(fd: int, offset: int, length: int) -> bool:
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=950, help="records per request")
    ap.add_argument("--size", type=int, default=1024, help="bytes of each record's value")
    ap.add_argument("--blocks", type=int, default=40, help="blocks of requests, half each way")
    ap.add_argument("--per-block", type=int, default=30)
    ap.add_argument("--min-bytes", type=int, default=None,
                    help="reserve appends of at least this many bytes")
    args = ap.parse_args()
    if args.min_bytes is not None:
        segment.PREALLOCATE_MIN_BYTES = args.min_bytes  # type: ignore[misc]
    reserve = segment.reserve
    batch = encode_batch([SimpleRecord(os.urandom(args.size)) for _ in range(args.records)])
    cpu: dict[str, list[float]] = {"reserve": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="odradek-prealloc-ab-") as tmp:
        loop = asyncio.new_event_loop()
        broker = Broker(local_config(os.path.join(tmp, "data")))
        try:
            loop.run_until_complete(broker.start())
            loop.run_until_complete(broker.topics.create("t", num_partitions=1))
            dispatcher = Dispatcher(broker)
            frame = produce_frame("t", batch, 1, 1)[4:]
            received = mmap.mmap(-1, len(frame))
            view = memoryview(received)
            for block in range(args.blocks):
                name = ("reserve", "plain")[(block + block // 2) % 2]
                segment.reserve = reserve if name == "reserve" else _no_reservation
                start = time.process_time_ns()
                for _ in range(args.per_block):
                    received[:] = frame
                    dispatcher(view)
                cpu[name].append((time.process_time_ns() - start) / args.per_block / 1000)
            view.release()
        finally:
            segment.reserve = reserve
            loop.run_until_complete(broker.stop())
            loop.close()
    with_, without = statistics.median(cpu["reserve"]), statistics.median(cpu["plain"])
    print(f"{args.records} x {args.size} B records, {len(batch):,} B batches: CPU per Produce "
          f"request {with_:.0f} us with the reservation, {without:.0f} us without "
          f"({with_ / without:.3f}); medians of {args.blocks // 2} blocks of {args.per_block} each")


if __name__ == "__main__":
    main()
