"""Benchmark what the per-finding drawings cost ``lktrace report``, as a ratio.

On a simulated scale trace with more inversions than the page draws cards
for: replay and analyse once, then render the page with each finding's
drawing and without (the baseline: the same page, figures left empty), in
this process, alternately, and print the medians and their ratio, the ratio
once the replay and analysis are counted in, and the page sizes.  Graphviz
is used when installed; with ``--no-dot`` the built-in layout is.

    python3 bench/bench_report.py [--events 1000000] [--inversions 60] [--runs 5] [--no-dot]
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext
from unittest import mock

from bench_analyze import scale_trace

from lktrace.replay import dot
from lktrace.replay.figures import Drawings
from lktrace.replay.report import build_page, render_html
from lktrace.sim import simulate
from lktrace.trace import read_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--inversions", type=int, default=60)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-dot", action="store_true", help="draw with the built-in layout")
    args = ap.parse_args()

    path = scale_trace(args.events).with_name(f"scale-{args.events}-{args.inversions}.parquet")
    if not path.exists():
        simulate("scale", path, seed=1, events=args.events, inversions=args.inversions)
    t = time.perf_counter()
    page = build_page([read_trace(path)], drop_tables=True)
    built = time.perf_counter() - t
    found = len(page.analysis.deadlocks) + len(page.analysis.inversions)
    print(f"{args.events:,} events, {found} deadlocks and inversions; replay {built:.2f} s")

    def bare(self, found, uids, width=0):
        return [""] * len(found)

    with_figures, without = [], []
    no_dot = mock.patch.object(dot.shutil, "which", lambda name: None)
    with no_dot if args.no_dot else nullcontext():
        for _ in range(args.runs):
            page.__dict__.pop("drawings", None)  # graphs are built again each run
            t = time.perf_counter()
            html = render_html(page)
            with_figures.append(time.perf_counter() - t)
            page.__dict__.pop("drawings", None)
            with mock.patch.object(Drawings, "findings", bare):
                t = time.perf_counter()
                plain = render_html(page)
                without.append(time.perf_counter() - t)
    a, b = statistics.median(with_figures), statistics.median(without)
    figures = html.count('<figure class="cycle">')
    print(
        f"render with {figures} figures {a:.3f} s, without {b:.3f} s: "
        f"ratio {a / b:.2f} ({args.runs} runs each, medians; "
        f"{'built-in layout' if args.no_dot else 'Graphviz'})"
    )
    print(
        f"replay and render: ratio {(built + a) / (built + b):.2f}; page "
        f"{len(html) / 1024:.0f} KiB with figures, {len(plain) / 1024:.0f} KiB without"
    )


if __name__ == "__main__":
    main()
