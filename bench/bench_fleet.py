"""A fleet of runs: one lock-order inversion that only their merged orders show.

Simulates ``--runs`` scale traces (``--events`` each, seeded differently;
every third takes two locks in the reverse of the order the others take
them: ``scale``'s ``one_way``), then replays all of them three ways and
times each (the per-run Orders, merged as they come in, as ``analyze``
does): in this process (1 worker), on 2 local worker processes, and on a
Dask LocalCluster of 2 worker processes; then the analysis of the merged
Order.  Each way must give the same JSON; no run alone has an inversion
(checked apart, untimed), and the merged analysis has exactly one.

    python3 bench/bench_fleet.py [--runs 1000] [--events 100000] [--skip-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from lktrace.replay.analyze import Options, analysis
from lktrace.replay.fleet import merged, order_of, orders
from lktrace.replay.orderstate import OrderState
from lktrace.sim.scale import write_scale

OUT = Path(__file__).parent / "out"


def runs(n: int, events: int) -> list[Path]:
    """``n`` cached runs of ``events`` events; run ``i`` takes the pair reversed when i % 3 == 2.

    Run ``i`` is the same in every fleet of that many events: a small fleet's runs are
    the first of a bigger one's."""
    d = OUT / f"fleet-{events}"
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"run{i:05d}.parquet" for i in range(n)]
    t = time.perf_counter()
    made = 0
    for i, p in enumerate(paths):
        if not p.exists():
            part = p.with_suffix(".part")
            way = -1 if i % 3 == 2 else 1
            write_scale(part, i, "bench fleet", events=events, tasks=32, locks=256,
                        inversions=0, one_way=way)  # fmt: skip
            part.rename(p)
            made += 1
    if made:
        print(f"simulated {made} runs in {time.perf_counter() - t:.1f} s")
    return paths


def inverted_alone(path: Path) -> bool:
    """Whether the run at ``path`` has an inversion of its own."""
    opts = Options()
    return bool(analysis(OrderState(order_of(str(path), opts), opts), opts).inversions)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    paths = runs(args.runs, args.events)
    opts = Options()
    print(
        f"{args.runs} runs x {args.events:,} events; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    ways = [("1 worker (this process)", 1, None), ("2 local workers", 2, None)]
    if not args.skip_dask:
        ways.append(("Dask LocalCluster, 2 workers", 2, "local"))
    results = {}
    for label, workers, dask in ways:
        t = time.perf_counter()
        order = merged(orders(paths, opts, workers, dask))
        took = time.perf_counter() - t
        t = time.perf_counter()
        found = analysis(OrderState(order, opts), opts)
        results[label] = json.dumps(found.to_dict(), sort_keys=True)
        inv = [(i.cycle, i.level, len(i.tasks)) for i in found.inversions]
        del order, found  # the next way starts from nothing
        rate = args.runs * args.events / took / 1e6
        print(
            f"  {label:30} {took:7.1f} s  {rate:5.2f} M events/s; analysis "
            f"{time.perf_counter() - t:5.1f} s; client peak RSS so far {peak_mib():,.0f} MiB",
            flush=True,
        )
    print(f"  load average {os.getloadavg()[0]:.1f}")
    with ProcessPoolExecutor(2) as pool:
        alone = sum(pool.map(inverted_alone, paths, chunksize=16))
    same = len(set(results.values())) == 1
    print(f"  runs with an inversion of their own: {alone} of {len(paths)}")
    print(
        f"  merged: {len(inv)} inversion(s): "
        + "; ".join(
            " <-> ".join(cycle) + f" ({level}, {tasks} tasks)" for cycle, level, tasks in inv
        )
    )
    print(f"  the same JSON every way: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
