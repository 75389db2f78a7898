"""Benchmark of the user-space drain: events/s from a synthetic source to a Parquet trace.

Runs the real pipeline (decode with stack symbolisation, spool, final Parquet) on raw
records from lktrace.collector.synthetic, stacks on unless --no-stacks.

    python bench/bench_drain.py [--events N] [--chunk N] [--no-stacks]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lktrace.collector.pipeline import Drain
from lktrace.collector.record import finish
from lktrace.collector.spool import SpoolWriter
from lktrace.collector.synthetic import SyntheticSource, kallsyms
from lktrace.trace import TraceMeta, read_meta


def run(events: int, chunk: int, stacks: bool) -> dict[str, float]:
    """Drain ``events`` synthetic events to Parquet; returns timings and rates."""
    source = SyntheticSource(total=events, chunk=chunk, stacks=stacks)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.parquet"
        work = Path(tmp) / "bench.parquet.spool"
        work.mkdir()
        t0 = time.perf_counter()
        spool = SpoolWriter(work, TraceMeta(command="bench_drain"))
        drain = Drain(source, spool, kallsyms(), interval=0.5)
        drain.run(lambda: source.done, poll_ms=0)
        spool.close()
        t1 = time.perf_counter()
        _meta, rows = finish(work, out, force=False)
        t2 = time.perf_counter()
        assert rows == events and len(read_meta(out).stacks) == (4 if stacks else 0)
        size = out.stat().st_size
    return {
        "events": events,
        "drain_s": t1 - t0,
        "parquet_s": t2 - t1,
        "total_s": t2 - t0,
        "rate": events / (t2 - t0),
        "bytes_per_event": size / events,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--chunk", type=int, default=65_536, help="records per poll")
    ap.add_argument("--no-stacks", action="store_true")
    args = ap.parse_args()
    r = run(args.events, args.chunk, not args.no_stacks)
    print(
        f"{r['events']:,} events, stacks {'off' if args.no_stacks else 'on'}: "
        f"drain+spool {r['drain_s']:.2f} s, Parquet {r['parquet_s']:.2f} s, "
        f"total {r['total_s']:.2f} s = {r['rate'] / 1e6:.2f} M events/s, "
        f"{r['bytes_per_event']:.1f} bytes/event on disk"
    )


if __name__ == "__main__":
    main()
