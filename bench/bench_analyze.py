"""Benchmark ``lktrace analyze`` against a bare column read and a per-event Python loop.

Simulated ``scale`` shapes of 10 M events (cached under bench/out/):

- ``today``: the scenario's defaults (64 tasks, 512 locks, nesting 1-4,
  2 inversions): about 0.1 M distinct class edges;
- ``issue``: a busy ``--scope all`` recording as issue 12 describes it (512
  tasks, 2,000 locks, nesting 1-3, one inversion): about 1.2 M class edges;
- ``repeat`` (``--summaries`` only): a workload that runs the same paths again
  and again (64 tasks, 64 locks, nesting 1-4, 2 inversions): 18 k orderings.

Each is timed, in child processes (so peak RSS is each one's own, process
start and imports included), three ways in the same run (the read and
analyze ``--runs`` times, taking turns, their fastest compared: a fresh
gigabyte's page faults cost this VM from 0.2 to 2.5 s of system time):

- ``read``: pyarrow reading the 13 columns of format v1 (strings as dictionaries);
- ``analyze``: ``lktrace analyze --format json``;
- ``loop``: a per-event Python loop computing only the class edges (the floor
  of what any replay must do), which must find the edges analyze reports.

``--summaries`` instead runs ``lktrace summarize`` on each shape's trace (all
three unless ``--shapes``) and the lab's, then ``lktrace analyze`` on each
summary and on its trace: time, peak RSS, and how much smaller the summary is.

Memory: ``--big 100000000`` also analyses one trace of that many events
(issue shape) and ``--diff`` diffs 10 M traces (issue shape: seed 1 with
itself, and seeds 1 and 2, which differ in 0.7 M orderings), reporting time
and peak RSS; ``--baseline PYTHON`` runs the same diffs first with another
tree's interpreter (say a checkout of main), for a before/after in one run.

    python3 bench/bench_analyze.py [--shapes today issue] [--events 10000000] [--no-loop] [--runs 3]
                                   [--big 100000000] [--diff [--baseline PYTHON]] [--summaries]
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

OUT = Path(__file__).parent / "out"

#: Parameters of ``write_scale`` per shape.
SHAPES = {
    "today": {"tasks": 64, "locks": 512, "inversions": 2},
    "issue": {"tasks": 512, "locks": 2000, "inversions": 1, "depth_p": (0.1, 0.3, 0.6)},
    "repeat": {"tasks": 64, "locks": 64, "inversions": 2},
}
#: The shapes timed against the read and the loop.
TIMED = ("today", "issue")


def scale_trace(shape: str, events: int, seed: int = 1) -> Path:
    """A cached scale trace of ``shape`` with ``events`` events."""
    from lktrace.sim.scale import write_scale

    path = OUT / f"scale-{shape}-{events}-{seed}.parquet"
    if not path.exists():
        OUT.mkdir(exist_ok=True)
        t = time.perf_counter()
        part = path.with_suffix(".part")
        write_scale(part, seed, f"bench {shape}", events=events, **SHAPES[shape])
        part.rename(path)
        print(f"  simulated {shape} {events:,} events in {time.perf_counter() - t:.1f} s")
    return path


def child(argv: list[str], head: int = -1, cwd: str | None = None) -> tuple[float, float, str]:
    """Run ``argv`` (in ``cwd``); wall seconds, peak RSS (MiB) and stdout (its first ``head``
    characters)."""
    with tempfile.TemporaryFile("w+") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) not in (0, 1):
            sys.exit(f"failed: {' '.join(argv)}")
        out.seek(0)
        return wall, usage.ru_maxrss / 1024, out.read(head)


def bare_read(path: Path) -> None:
    """Read the 13 columns of a trace as pyarrow does at best (strings as dictionaries)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lktrace.trace import COLUMNS, SCHEMA

    strings = [c for c in COLUMNS if pa.types.is_dictionary(SCHEMA.field(c).type)]
    table = pq.read_table(path, columns=list(COLUMNS), read_dictionary=strings)
    print(table.num_rows)


def class_edge_loop(path: Path) -> None:
    """The class edges of a trace, by a plain per-event Python loop over its sorted rows.

    Per task a list of held (instance, class); per blocking attempt on a lock
    the task does not hold yet, an edge from the class of every other held
    lock; trylocks add none; a release drops the latest hold of its lock.
    """
    from lktrace.trace import read_trace

    table = read_trace(path).sorted()
    names = ("tid", "event", "api", "lock_addr", "lock_name", "lock_class")
    cols = [table[c].to_pylist() for c in names]
    del table
    held: dict[int, list[tuple[tuple[int, str], str]]] = defaultdict(list)
    depth: dict[tuple[int, tuple[int, str]], int] = defaultdict(int)
    edges: set[tuple[str, str]] = set()
    for tid, event, api, addr, name, cls in zip(*cols, strict=True):
        inst = (addr, name)
        if event == "attempt":
            if "trylock" in api or depth[(tid, inst)]:
                continue
            for h_inst, h_cls in held[tid]:
                if h_inst != inst and h_cls != cls:
                    edges.add((h_cls, cls))
        elif event == "acquired":
            held[tid].append((inst, cls))
            depth[(tid, inst)] += 1
        elif event == "released" and depth[(tid, inst)]:
            depth[(tid, inst)] -= 1
            mine = held[tid]
            for i in range(len(mine) - 1, -1, -1):
                if mine[i][0] == inst:
                    del mine[i]
                    break
    print(len(edges))


def best_of(runs: int, *argvs: list[str]) -> list[tuple[float, float, float, str]]:
    """Each of ``argvs`` run ``runs`` times, taking turns: per argv, the fastest and slowest
    wall seconds, the highest peak RSS, and the output of its last run."""
    got: list[list[tuple[float, float, str]]] = [[] for _ in argvs]
    for _ in range(runs):
        for argv, runs_of in zip(argvs, got, strict=True):
            runs_of.append(child(argv))
    return [
        (min(r[0] for r in g), max(r[0] for r in g), max(r[1] for r in g), g[-1][2]) for g in got
    ]


def measure(shape: str, events: int, loop: bool, runs: int) -> None:
    path = scale_trace(shape, events)
    me = [sys.executable, __file__]
    (read_s, read_hi, read_mb, _), (an_s, an_hi, an_mb, text) = best_of(
        runs,
        [*me, "--child", "read", str(path)],
        [sys.executable, "-m", "lktrace", "analyze", "-f", "json", str(path)],
    )
    summary = json.loads(text)["summary"]
    print(
        f"{shape:6} {events:>11,} events, {summary['edges']:>9,} class edges "
        f"({path.stat().st_size / 2**20:.0f} MiB on disk); best (slowest) of {runs}\n"
        f"  bare read   {read_s:7.2f} s ({read_hi:.2f}) {read_mb:6.0f} MiB\n"
        f"  analyze     {an_s:7.2f} s ({an_hi:.2f}) {an_mb:6.0f} MiB   "
        f"{an_s / read_s:.2f}x the read"
    )
    if loop:
        lp_s, lp_mb, text = child([*me, "--child", "loop", str(path)])
        same = "same edges" if int(text) == summary["edges"] else f"{int(text):,} edges: DIFFERENT"
        print(
            f"  class loop  {lp_s:7.2f} s {lp_mb:6.0f} MiB   analyze is {lp_s / an_s:.1f}x "
            f"faster ({same})"
        )


def memory(big: int | None, diff: bool, baseline: str | None) -> None:
    """Time and peak RSS of analyze on a ``big`` trace, and of diff on two 10 M traces (and
    with ``baseline``, another tree's Python, the same diffs by that tree first)."""
    if big:
        path = scale_trace("issue", big)
        wall, rss, text = child(
            [sys.executable, "-m", "lktrace", "analyze", "-f", "json", str(path)]
        )
        edges = json.loads(text)["summary"]["edges"]
        print(
            f"analyze {big:,} events ({edges:,} class edges): {wall:.1f} s, peak RSS {rss:.0f} MiB"
        )
    if diff:
        a, b = scale_trace("issue", 10_000_000, 1), scale_trace("issue", 10_000_000, 2)
        pythons = {"baseline": baseline} if baseline else {}
        for what, pair in (("with itself", (a, a)), ("seeds 1 and 2", (a, b))):
            paths = [str(p.resolve()) for p in pair]
            for tree, python in {**pythons, "this tree": sys.executable}.items():
                cmd = [python, "-m", "lktrace", "diff", "-f", "json", *paths]
                # away from this tree: ``-m`` would import the lktrace/ in the working directory
                wall, rss, text = child(cmd, head=1 << 20, cwd=tempfile.gettempdir())
                listed = sum(_diff_head(text, "summary").values())
                verdict = _diff_head(text, "verdict")
                print(f"diff {what} ({tree}): {wall:.1f} s, peak RSS {rss:.0f} MiB, "
                      f"verdict {verdict}, {listed:,} changes listed")  # fmt: skip


def _diff_head(text: str, key: str):
    """One top-level value near the start of a diff's JSON (its listings may be gigabytes)."""
    marker = f'\n  "{key}": '
    return json.JSONDecoder().raw_decode(text, text.index(marker) + len(marker))[0]


def summaries(shapes: list[str], events: int) -> None:
    """``lktrace summarize`` on each shape's trace and the lab's, then ``analyze`` on each
    summary and its trace: time, RSS, sizes."""
    lab = sorted((Path(__file__).parent.parent / "tests" / "data" / "lab").glob("*/*.parquet"))
    traces = [scale_trace(shape, events) for shape in shapes] + lab
    lk = [sys.executable, "-m", "lktrace"]
    with tempfile.TemporaryDirectory() as d:
        for path in traces:
            out = Path(d) / "t.order.parquet"
            wall, rss, _ = child([*lk, "summarize", "--force", str(path), "-o", str(out)])
            an_s, an_mb, text = child([*lk, "analyze", "-f", "json", str(out)])
            tr_s, tr_mb, _ = child([*lk, "analyze", "-f", "json", str(path)])
            edges = json.loads(text)["summary"]["edges"]
            size, was = out.stat().st_size, path.stat().st_size
            print(
                f"{path.parent.name}/{path.name}: {was / 2**20:.2f} -> {size / 2**20:.3f} MiB "
                f"({was / size:.1f}x smaller); summarize {wall:.1f} s, {rss:.0f} MiB; "
                f"analyze the summary {an_s:.1f} s, {an_mb:.0f} MiB ({edges:,} class edges), "
                f"the trace {tr_s:.1f} s, {tr_mb:.0f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--no-loop", action="store_true", help="skip the per-event loop")
    parser.add_argument("--runs", type=int, default=3, help="read and analyze, taking turns")
    parser.add_argument("--big", type=int, help="also analyse one trace of this many events")
    parser.add_argument("--diff", action="store_true", help="also diff two 10 M traces")
    parser.add_argument(
        "--baseline", metavar="PYTHON", help="--diff: first with this Python (another tree's)"
    )
    parser.add_argument("--summaries", action="store_true", help="only: summary sizes")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "TRACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job, path = args.child
        {"read": bare_read, "loop": class_edge_loop}[job](Path(path))
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.summaries:
        summaries(args.shapes or list(SHAPES), args.events)
        return
    for shape in args.shapes or TIMED:
        measure(shape, args.events, not args.no_loop, args.runs)
    memory(args.big, args.diff, args.baseline)


if __name__ == "__main__":
    main()
