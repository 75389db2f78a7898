"""Time the simulator: the ``scale`` scenario at 1 M and 10 M events, and the small scenarios.

Each scale run is a fresh process, so its wall time includes the import and
its peak RSS is its own.  Not a test: run it by hand,

    python bench/bench_sim.py [--sizes 1000000 10000000] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from lktrace.sim import SCENARIOS, simulate


def run_scale(events: int, path: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds, peak RSS (KiB) of ``lktrace simulate scale`` in its own process."""
    cmd = [sys.executable, "-m", "lktrace", "simulate", "scale", "-o", str(path)]
    start = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--events", str(events)], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path, help="keep the traces in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(f"{'scenario':<20} {'events':>12} {'seconds':>9} {'CPU s':>7} {'peak RSS':>10}")
        for events in args.sizes:
            path = out / f"scale-{events}.parquet"
            wall, cpu, rss = run_scale(events, path)
            print(
                f"{'scale':<20} {events:>12,} {wall:>9.2f} {cpu:>7.2f}"
                f" {rss / 1024:>7.0f} MB   ({path.stat().st_size / 2**20:.0f} MB file)"
            )
        for name in (n for n in SCENARIOS if n != "scale"):
            start = time.perf_counter()
            trace = simulate(name, out / f"{name}.parquet")
            wall = time.perf_counter() - start
            events = pq.ParquetFile(trace).metadata.num_rows
            print(f"{name:<20} {events:>12,} {wall:>9.3f}   (in process)")


if __name__ == "__main__":
    main()
