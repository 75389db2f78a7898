"""Benchmark of the user-space drain: events/s from a synthetic source to a Parquet trace.

Runs the real pipeline (decode with stack symbolisation, spool, Parquet written on its
thread) on raw records from lktrace.collector.synthetic, stacks on unless --no-stacks.

    python bench/bench_drain.py [--events N] [--chunk N] [--no-stacks]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from lktrace.collector.record import Recording, prepare_output
from lktrace.collector.synthetic import SyntheticSource, kallsyms
from lktrace.trace import TraceMeta, read_meta


def _cpu() -> float:
    """CPU seconds of this process, all threads (wall time depends on the machine's load)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run(events: int, chunk: int, stacks: bool) -> dict[str, float]:
    """Drain ``events`` synthetic events to Parquet; returns timings and rates."""
    source = SyntheticSource(total=events, chunk=chunk, stacks=stacks)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.parquet"
        t0, cpu0 = time.perf_counter(), _cpu()
        rec = Recording(
            source,
            kallsyms(),
            TraceMeta(command="bench_drain"),
            prepare_output(out, False),
            out,
            force=False,
        )
        rec.drain.run(lambda: source.done, poll_ms=0)
        t1 = time.perf_counter()
        _meta, rows = rec.finish({})
        t2, cpu2 = time.perf_counter(), _cpu()
        assert rows == events and len(read_meta(out).stacks) == (4 if stacks else 0)
        size = out.stat().st_size
    return {
        "events": events,
        "drain_s": t1 - t0,
        "finish_s": t2 - t1,
        "total_s": t2 - t0,
        "rate": events / (t2 - t0),
        "cpu_s": cpu2 - cpu0,
        "cpu_rate": events / (cpu2 - cpu0),
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
        f"recording {r['drain_s']:.2f} s, finishing the file {r['finish_s']:.2f} s, "
        f"total {r['total_s']:.2f} s = {r['rate'] / 1e6:.2f} M events/s; "
        f"CPU {r['cpu_s']:.2f} s (all threads) = {r['cpu_rate'] / 1e6:.2f} M events/CPU-s, "
        f"{r['bytes_per_event']:.1f} bytes/event on disk"
    )


if __name__ == "__main__":
    main()
