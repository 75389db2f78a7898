"""Benchmark ``lktrace analyze`` end to end on simulated traces of 1 M and 10 M events.

For each size: simulate a scale trace (cached under bench/out/), run
``lktrace analyze --format json`` in a child process and report its wall time
and peak RSS. Once, at the largest size, also run a straightforward per-event
Python replay of the same file (the baseline the vectorised replayer must
beat) and print the ratio.

    python3 bench/bench_analyze.py [--sizes 1000000 10000000] [--no-baseline]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from lktrace.sim import simulate
from lktrace.trace import read_trace

OUT = Path(__file__).parent / "out"


def scale_trace(events: int) -> Path:
    """A cached scale-mode trace of ``events`` events."""
    path = OUT / f"scale-{events}.parquet"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        t = time.perf_counter()
        simulate("scale", path, seed=1, events=events)
        print(f"  simulated {events:,} events in {time.perf_counter() - t:.1f} s")
    return path


def run_analyze(path: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``lktrace analyze`` in a child process."""
    t = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "lktrace", "analyze", "--format", "json", str(path)],
        stdout=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(f"analyze failed on {path}")
    return wall, usage.ru_maxrss / 1024


def baseline(path: Path) -> tuple[float, int]:
    """A per-event Python replay: held stacks per task, class ordering edges.

    Does less than ``analyze`` (no instances, witnesses, cycles or anomalies),
    so the ratio understates the vectorised replayer's advantage.
    """
    t = time.perf_counter()
    table = read_trace(path).sorted()
    cols = [table[c].to_pylist() for c in ("tid", "event", "api", "lock_addr", "lock_class")]
    held: dict[int, list[tuple[int, str]]] = defaultdict(list)
    edges: dict[tuple[str, str], int] = {}
    for tid, event, api, addr, cls in zip(*cols, strict=True):
        mine = held[tid]
        if event == "attempt":
            if "trylock" not in api:
                for h_addr, h_cls in mine:
                    if h_addr != addr and h_cls != cls:
                        edges.setdefault((h_cls, cls), 0)
                        edges[(h_cls, cls)] += 1
        elif event == "acquired":
            mine.append((addr, cls))
        elif event == "released":
            for i in range(len(mine) - 1, -1, -1):
                if mine[i][0] == addr:
                    del mine[i]
                    break
    return time.perf_counter() - t, len(edges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    walls = {}
    for n in args.sizes:
        path = scale_trace(n)
        events = pq.ParquetFile(path).metadata.num_rows
        wall, rss = run_analyze(path)
        walls[n] = wall
        print(
            f"analyze {events:>12,} events: {wall:7.2f} s, peak RSS {rss:7.0f} MiB, "
            f"{events / wall / 1e6:.2f} M events/s"
        )
    if len(walls) > 1:
        small, large = min(walls), max(walls)
        print(
            f"scaling: {large:,} events took {walls[large] / walls[small]:.1f}x "
            f"the time of {small:,} ({large / small:.0f}x the events)"
        )
    if not args.no_baseline:
        n = max(args.sizes)
        base, edges = baseline(scale_trace(n))
        print(
            f"baseline per-event Python replay of {n:,} events: {base:.2f} s ({edges} edges); "
            f"analyze is {base / walls[n]:.1f}x faster end to end"
        )


if __name__ == "__main__":
    main()
