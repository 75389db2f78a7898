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
import json
import os
import subprocess
import sys
import tempfile
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


def run_analyze(path: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and class edges of ``lktrace analyze`` in a child process."""
    with tempfile.TemporaryFile("w+") as out:
        t = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "lktrace", "analyze", "--format", "json", str(path)], stdout=out
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) not in (0, 1):
            sys.exit(f"analyze failed on {path}")
        out.seek(0)
        edges = json.load(out)["summary"]["edges"]
    return wall, usage.ru_maxrss / 1024, edges


def baseline(path: Path) -> tuple[float, int]:
    """The replay core of ``analyze`` as a straightforward per-event Python loop.

    Per task, a stack of held locks (instance, class, where it was taken);
    per blocking attempt, an ordering edge from every other held lock at the
    class and the instance level, keeping each edge's first witness and its
    count; nested acquisitions (reentrancy depth) and the attempts still
    pending at the end.  No cycles, gates or output: less than ``analyze``
    does after the replay, so the ratio is a floor.
    """
    t = time.perf_counter()
    table = read_trace(path).sorted()
    names = ("tid", "event", "api", "lock_addr", "lock_class", "lock_name", "ts_ns", "stack_id")
    cols = [table[c].to_pylist() for c in names]
    held: dict[int, list[tuple[tuple[int, str], str, int | None]]] = defaultdict(list)
    class_edges: dict[tuple[str, str], list] = {}
    inst_edges: dict[tuple, list] = {}
    depth: dict[tuple[int, tuple[int, str]], int] = defaultdict(int)
    deepest: dict[tuple[int, tuple[int, str]], int] = {}
    pending: dict[int, tuple[int, tuple[int, str]]] = {}
    for tid, event, api, addr, cls, name, ts, stack in zip(*cols, strict=True):
        inst = (addr, name)
        mine = held[tid]
        if event == "attempt":
            pending[tid] = (ts, inst)
            if "trylock" in api or depth[(tid, inst)]:
                continue
            for h_inst, h_cls, h_stack in mine:
                if h_inst == inst:
                    continue
                witness = (tid, ts, stack, h_stack)
                for edges, key in (
                    (class_edges, (h_cls, cls) if h_cls != cls else None),
                    (inst_edges, (h_inst, inst)),
                ):
                    if key is None:
                        continue
                    if key in edges:
                        edges[key][1] += 1
                    else:
                        edges[key] = [witness, 1]
        elif event in ("acquired", "failed"):
            pending.pop(tid, None)
            if event == "acquired":
                mine.append((inst, cls, stack))
                d = depth[(tid, inst)] = depth[(tid, inst)] + 1
                if d > 1:
                    deepest[(tid, inst)] = max(d, deepest.get((tid, inst), 0))
        elif event == "released" and depth[(tid, inst)]:
            depth[(tid, inst)] -= 1
            for i in range(len(mine) - 1, -1, -1):
                if mine[i][0] == inst:
                    del mine[i]
                    break
    return time.perf_counter() - t, len(class_edges)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    walls: dict[int, float] = {}
    edges: dict[int, int] = {}
    for n in args.sizes:
        path = scale_trace(n)
        events = pq.ParquetFile(path).metadata.num_rows
        wall, rss, edges[n] = run_analyze(path)
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
        base, base_edges = baseline(scale_trace(n))
        agree = "as analyze found" if base_edges == edges[n] else f"analyze found {edges[n]:,}"
        print(
            f"baseline per-event Python replay of {n:,} events: {base:.2f} s, "
            f"{base_edges:,} class edges ({agree}); analyze is {base / walls[n]:.1f}x faster"
        )


if __name__ == "__main__":
    main()
