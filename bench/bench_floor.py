"""How close to the bare read a replay can come: a compiled class-edge pass as the floor.

Issue 12 asks for ``lktrace analyze`` at most 1.5x the bare 13-column read.
This puts a number on what that leaves: the class edges of a trace (the least
any replay must compute, the same rules as bench_analyze's per-event loop)
by one per-event loop compiled with numba, timed in child processes next to
the bare read and analyze, in the same run:

- ``read``: pyarrow reading the 13 columns (bench_analyze's ``read``);
- ``compiled``: the columns the class edges need, read and coded, sorted by
  task, then the loop (cold: compiled into an empty cache; warm: from it);
- ``analyze``: ``lktrace analyze --format json``.

numba is not a dependency of lktrace; run the compiled child with an
interpreter that has it (say a venv with ``pip install numba pyarrow pandas``):

    python3 bench/bench_floor.py [--shapes issue today] [--numba-python PYTHON]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

EVENTS = ("attempt", "acquired", "failed", "released")


def compiled_edges(path: Path) -> None:
    """Print the class edges of the trace at ``path`` and the seconds each step took."""
    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from numba import njit

    @njit(cache=True, nogil=True)
    def edges(task, event, inst, cls, trylock, n_task):
        # per task: the (instance, class) it holds, in order (a lock held twice is there twice)
        held_i = np.zeros((n_task, 64), np.int64)
        held_c = np.zeros((n_task, 64), np.int64)
        n_held = np.zeros(n_task, np.int64)
        slots = 1 << 22
        keys = np.full(slots, -1, np.int64)
        found = 0
        for i in range(len(task)):
            t, e, lk = task[i], event[i], inst[i]
            top = -1  # the latest hold of lk, if the task holds it
            for j in range(n_held[t] - 1, -1, -1):
                if held_i[t, j] == lk:
                    top = j
                    break
            if e == 0 and not trylock[i] and top < 0:
                for j in range(n_held[t]):
                    if held_c[t, j] != cls[i]:
                        k = held_c[t, j] << 32 | cls[i]
                        h = (k * 0x9E3779B97F4A7C15) & (slots - 1)
                        while keys[h] != k and keys[h] != -1:
                            h = (h + 1) & (slots - 1)
                        if keys[h] == -1:
                            keys[h] = k
                            found += 1
            elif e == 1:
                held_i[t, n_held[t]] = lk
                held_c[t, n_held[t]] = cls[i]
                n_held[t] += 1
            elif e == 3 and top >= 0:
                n_held[t] -= 1
                for m in range(top, n_held[t]):
                    held_i[t, m], held_c[t, m] = held_i[t, m + 1], held_c[t, m + 1]
        return found

    t1 = time.perf_counter()
    strings = ["event", "api", "lock_name", "lock_class"]
    cols = ["tid", "ts_ns", "seq", "lock_addr", *strings]
    table = pq.read_table(path, columns=cols, read_dictionary=strings)
    t2 = time.perf_counter()

    def codes(name: str) -> tuple[np.ndarray, list[str]]:
        col = table[name].unify_dictionaries()
        idx = np.concatenate([c.indices.to_numpy() for c in col.chunks])
        return idx, col.chunk(0).dictionary.to_pylist()

    ev_idx, ev_values = codes("event")
    event = np.array([EVENTS.index(v) for v in ev_values], np.int8)[ev_idx]
    api_idx, api_values = codes("api")
    trylock = np.array(["trylock" in v for v in api_values])[api_idx]
    name, _ = codes("lock_name")
    cls, _ = codes("lock_class")
    addr = pd.factorize(table["lock_addr"].to_numpy())[0]
    inst = pd.factorize(addr * (int(name.max()) + 1) + name)  # an instance: (address, name)
    task, tids = pd.factorize(table["tid"].to_numpy())
    ts, seq = table["ts_ns"].to_numpy(), table["seq"].to_numpy()
    if len(tids) < 1 << 16 and (ts[1:] >= ts[:-1]).all():  # in time order: by task, radix
        order = np.argsort(task.astype(np.uint16), kind="stable")
    else:
        order = np.lexsort((seq, ts, task))
    t3 = time.perf_counter()
    sorted_cols = (task, event, inst[0], cls.astype(np.int64), trylock)
    found = edges(*(c[order] for c in sorted_cols), len(tids))
    t4 = time.perf_counter()
    steps = {"import": t1 - t0, "read": t2 - t1, "code+sort": t3 - t2, "loop": t4 - t3}
    print(json.dumps({"edges": found, "steps": steps}))


def measure(shape: str, events: int, numba_python: str) -> None:
    from bench_analyze import best_of, child, scale_trace

    path = scale_trace(shape, events)
    bench = str(Path(__file__).parent / "bench_analyze.py")
    (read_s, read_hi, read_mb, _), (an_s, an_hi, _, text) = best_of(
        3,
        [sys.executable, bench, "--child", "read", str(path)],
        [sys.executable, "-m", "lktrace", "analyze", "-f", "json", str(path)],
    )
    want = json.loads(text)["summary"]["edges"]
    print(f"{shape:6} {events:,} events, {want:,} class edges; read, analyze: best (slowest) of 3")
    print(f"  bare read        {read_s:6.2f} s {read_mb:6.0f} MiB  ({read_hi:.2f})")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NUMBA_CACHE_DIR"] = cache
        for run in ("cold", "warm", "warm"):
            wall, mb, text = child([numba_python, __file__, "--child", str(path)])
            got = json.loads(text)
            same = "same edges" if got["edges"] == want else f"{got['edges']:,}: DIFFERENT"
            steps = ", ".join(f"{k} {v:.2f}" for k, v in got["steps"].items())
            print(
                f"  compiled {run}    {wall:6.2f} s {mb:6.0f} MiB  {wall / read_s:.2f}x the read"
                f"  ({steps}; {same})"
            )
    print(f"  analyze          {an_s:6.2f} s          {an_s / read_s:.2f}x the read  ({an_hi:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["issue", "today"])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--numba-python", default=sys.executable, help="a Python with numba")
    parser.add_argument("--child", metavar="TRACE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        compiled_edges(Path(args.child))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for shape in args.shapes:
        measure(shape, args.events, args.numba_python)


if __name__ == "__main__":
    main()
