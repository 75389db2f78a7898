"""The ``lktrace`` command line: one sub-command per job, each a thin layer over a module."""

import glob
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lktrace.collector.errors import CollectorError
from lktrace.command_options import FILTERS, JUDGING, with_options
from lktrace.console import out
from lktrace.options import BUFFER_MB, AnalyzeFormat, Backend, DiffFormat, Scope
from lktrace.trace import TraceError, TraceMeta, read_meta, read_trace
from lktrace.version import writer

if TYPE_CHECKING:
    from lktrace.replay.analyze import Options

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Record kernel lock acquisitions with eBPF and find lock-order inversions offline.",
)

TraceArg = Annotated[Path, typer.Argument(help="A trace file (Parquet, format v1).")]
# The probe options ``record`` and ``watch`` share.
ScopeOpt = Annotated[
    Scope, typer.Option("--scope", help="pci: PCI paths and what they lock; all: every mutex.")
]
NoStacksOpt = Annotated[bool, typer.Option("--no-stacks", help="Skip kernel stacks.")]
PidOpt = Annotated[int | None, typer.Option("--pid", min=1, help="Only this process (tgid).")]
CommOpt = Annotated[str | None, typer.Option("--comm", help="Only tasks with this comm.")]
BackendOpt = Annotated[Backend, typer.Option("--backend", help="auto: fentry, else kprobes.")]
BufferOpt = Annotated[
    int,
    typer.Option(
        "--buffer-mb", min=BUFFER_MB[0], max=BUFFER_MB[2], help="Kernel event buffer (MiB)."
    ),
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(writer())
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version (the one every written file records) and exit.",
        ),
    ] = False,
) -> None:
    """Record kernel lock acquisitions with eBPF and find lock-order inversions offline."""


class UsageError(Exception):
    """Bad arguments that typer cannot catch by itself (exit code 2)."""


@app.command()
def info(trace: TraceArg) -> None:
    """Show a trace's metadata and event counts."""
    from lktrace.summary import print_info

    print_info(read_trace(trace))


def expand_traces(paths: list[Path]) -> list[Path]:
    """Trace files named by ``paths``; a folder stands for the ``*.parquet`` files in it, a
    glob pattern (``runs/*/trace.parquet``, quoted against the shell) for the files it matches."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.parquet"))
            if not found:
                raise UsageError(f"{p}: no *.parquet trace files in this folder")
            files += found
        elif not p.exists() and any(c in str(p) for c in "*?["):
            found = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not found:
                raise UsageError(f"{p}: no file matches this pattern")
            files += found
        else:
            files.append(p)
    return files


WorkersOpt = Annotated[
    int,
    typer.Option("--workers", "-j", help="Processes replaying traces at once (0: one per CPU)."),
]
DaskOpt = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Replay on a Dask cluster: a scheduler address (tcp://host:8786) or 'local'.",
    ),
]


def replay_files(files: list[Path], opts, workers: int, dask: str | None):
    """The replay state of ``files`` (traces or summaries), with a progress line on a terminal."""
    import pyarrow.parquet as pq

    from lktrace.progress import Meter
    from lktrace.replay.fleet import default_workers, order_state

    for p in files:  # a bad file fails at once, before any work
        read_meta(p)
    rows = {p: pq.ParquetFile(p).metadata.num_rows for p in files}
    n = workers or default_workers(len(files))
    meter = Meter(sum(rows.values()), len(files))
    parallel = bool(dask) or (n > 1 and len(files) > 1)

    def done(path: Path) -> None:
        if parallel:
            meter.rows(rows[path])
        meter.file_done(path)

    try:
        progress = None if parallel else meter.rows
        return order_state(files, opts, workers=n, dask=dask, progress=progress, done=done)
    finally:
        meter.close()


@app.command()
@with_options(*JUDGING)
def analyze(
    traces: Annotated[list[Path], typer.Argument(help="Trace files or folders of them.")],
    fmt: Annotated[AnalyzeFormat, typer.Option("--format", "-f", help="Output.")] = AnalyzeFormat[
        "text"
    ],
    workers: WorkersOpt = 0,
    dask: DaskOpt = None,
    *,
    opts: "Options",
) -> None:
    """Find lock-order inversions, deadlocks and reentrancy anomalies (exit 1 if any).

    Takes traces and lock-order summaries (lktrace summarize), mixed freely."""
    from lktrace.replay.analyze import analysis
    from lktrace.replay.render import render

    state = replay_files(expand_traces(traces), opts, workers, dask)
    if fmt.value == "dot":
        from lktrace.replay.dot import state_dot

        text, result = state_dot(state, opts)
        typer.echo(text, nl=False)
        raise typer.Exit(1 if result.problems else 0)
    result = analysis(state, opts)
    if fmt.value == "json":
        typer.echo(json.dumps({"writer": writer(), **result.to_dict()}, indent=2))
    else:
        render(result, out)
    raise typer.Exit(1 if result.problems else 0)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def record(
    output: Annotated[Path, typer.Option("-o", "--output", help="Trace file to write.")] = Path(
        "lktrace.parquet"
    ),
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.1, help="Stop after this many seconds.")
    ] = None,
    scope: ScopeOpt = Scope["pci"],
    no_stacks: NoStacksOpt = False,
    pid: PidOpt = None,
    comm: CommOpt = None,
    backend: BackendOpt = Backend["auto"],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing trace.")] = False,
    buffer_mb: BufferOpt = BUFFER_MB[1],
    command: Annotated[
        list[str] | None, typer.Argument(help="-- COMMAND ...: record while it runs.")
    ] = None,
) -> None:
    """Record mutex acquisitions of the running kernel (root; needs bcc)."""
    from lktrace.collector.record import RecordRequest
    from lktrace.collector.record import record as run

    req = RecordRequest(
        output=output,
        duration=duration,
        scope=scope.value,
        stacks=not no_stacks,
        pid=pid,
        comm=comm,
        backend=backend.value,
        force=force,
        buffer_mb=buffer_mb,
        command=list(command or []),
        argv=["lktrace", *sys.argv[1:]],
    )
    meta, rows = run(req)
    _report(output, meta, rows)


@app.command()
def watch(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where dumps go (deadlock-*, snapshot-*).")
    ] = Path("."),
    keep: Annotated[str, typer.Option("--keep", help="Seconds of events kept in memory.")] = (
        "120s"
    ),
    max_mb: Annotated[
        int, typer.Option("--max-mb", min=8, max=1 << 20, help="Memory bound of the ring (MiB).")
    ] = 256,
    stuck: Annotated[
        str, typer.Option("--stuck", help="A lock attempt pending this long is stuck.")
    ] = "10s",
    stuck_hard: Annotated[
        str, typer.Option("--stuck-hard", help="Report a long wait (not a deadlock) past this.")
    ] = "120s",
    scope: ScopeOpt = Scope["pci"],
    no_stacks: NoStacksOpt = False,
    pid: PidOpt = None,
    comm: CommOpt = None,
    backend: BackendOpt = Backend["auto"],
    buffer_mb: BufferOpt = BUFFER_MB[1],
    print_unit: Annotated[
        bool, typer.Option("--print-unit", help="Print the systemd unit and exit.")
    ] = False,
) -> None:
    """Keep the last minutes in memory; write the evidence when a deadlock happens (root)."""
    from lktrace.collector.watch import WatchRequest, parse_duration, unit_text
    from lktrace.collector.watch import watch as run

    if print_unit:
        typer.echo(unit_text(), nl=False)
        return
    try:
        times = {k: parse_duration(v) for k, v in
                 (("--keep", keep), ("--stuck", stuck), ("--stuck-hard", stuck_hard))}  # fmt: skip
    except ValueError as e:
        raise UsageError(str(e)) from e
    for name, value in times.items():
        if value <= 0:
            raise UsageError(f"{name} must be positive")
    if times["--stuck-hard"] < times["--stuck"]:
        raise UsageError("--stuck-hard must not be shorter than --stuck")
    run(
        WatchRequest(
            dir=directory,
            keep_s=times["--keep"],
            max_mb=max_mb,
            stuck_s=times["--stuck"],
            stuck_hard_s=times["--stuck-hard"],
            scope=scope.value,
            stacks=not no_stacks,
            pid=pid,
            comm=comm,
            backend=backend.value,
            buffer_mb=buffer_mb,
            argv=["lktrace", *sys.argv[1:]],
        )
    )


@app.command()
def recover(
    spool: Annotated[Path, typer.Argument(help="The .spool directory a recording left.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Trace to write (default: beside it).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing trace.")] = False,
) -> None:
    """Turn the spool of a recording that was killed into a trace file."""
    from lktrace.collector.record import recover as run

    meta, rows, out = run(spool, output, force)
    _report(out, meta, rows)


def _report(path: Path, meta: TraceMeta, rows: int) -> None:
    print(
        f"lktrace: wrote {path}: {rows:,} events, {len(meta.stacks):,} stacks, "
        f"{meta.lost_events:,} lost",
        file=sys.stderr,
    )
    if meta.lost_events:
        hint = (
            "; --scope all on a busy machine records more than can be drained: "
            "narrow it with --pid/--comm, or use --scope pci"
            if meta.extra.get("scope") == "all"
            else ""
        )
        print(
            f"lktrace: warning: {meta.lost_events:,} events were lost (buffer full); "
            f"orderings may be missing{hint}",
            file=sys.stderr,
        )


@app.command()
@with_options(*JUDGING)
def report(
    traces: Annotated[list[Path], typer.Argument(help="Trace files or folders of them.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
    *,
    opts: "Options",
) -> None:
    """Write one self-contained HTML page: header, lock graph, findings with timelines."""
    from lktrace.replay.report import build_page, render_html, write_html

    traces_in = (read_trace(p) for p in expand_traces(traces))
    page = build_page(traces_in, opts, drop_tables=True)
    path = write_html(output, render_html(page))
    a = page.analysis
    out.print(
        f"wrote {path} ({path.stat().st_size // 1024} KiB): {len(a.deadlocks)} deadlock(s), "
        f"{len(a.inversions)} inversion(s), {len(a.anomalies)} anomal(ies)"
    )


@app.command()
@with_options(*FILTERS)
def export(
    trace: TraceArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    perfetto: Annotated[
        bool, typer.Option("--perfetto", help="Chrome JSON trace events (ui.perfetto.dev).")
    ] = False,
    *,
    opts: "Options",
) -> None:
    """Convert a trace for another viewer."""
    if not perfetto:
        raise UsageError("choose an export format: --perfetto")
    from lktrace.replay.perfetto import export_perfetto

    n = export_perfetto(read_trace(trace), output, drop_table=True, filters=opts)
    out.print(f"wrote {output}: {n:,} trace events")


@app.command()
@with_options(*JUDGING[1:])  # both graph levels, always
def diff(
    old: Annotated[Path, typer.Argument(help="The old trace (or a folder of traces).")],
    new: Annotated[Path, typer.Argument(help="The new trace (or a folder of traces).")],
    fmt: Annotated[DiffFormat, typer.Option("--format", "-f", help="Output.")] = DiffFormat["text"],
    max_listed: Annotated[
        int, typer.Option(min=0, help="Text: entries shown per section (0: all).")
    ] = 50,
    workers: WorkersOpt = 0,
    dask: DaskOpt = None,
    *,
    opts: "Options",
) -> None:
    """Compare lock behaviour between two kernels: better, worse or same (exit 1 if worse).

    Both sides are replayed with the same filters, at both graph levels; each is a trace,
    a lock-order summary, a folder or a glob of them."""
    from lktrace.replay.diff import compare, side_pair, sides
    from lktrace.replay.render_diff import render_diff

    files = [expand_traces([side]) for side in (old, new)]
    for p in files[1]:  # a bad new file fails before the old side is analysed
        read_meta(p)
    if fmt.value == "html":  # the pages draw timelines: they need the events
        inputs = [(read_trace(p) for p in side) for side in files]
        a, b = sides(*inputs, opts, drop_tables=True, keep_states=True)
    else:
        a, b = side_pair(lambda side: replay_files(side, opts, workers, dask), files, opts)
    result = compare(a, b)
    if fmt.value == "html":
        from lktrace.replay.report import Page, diff_lines, render_diff_html

        pages = Page(a.state, a.analysis, str(old)), Page(b.state, b.analysis, str(new))
        typer.echo(render_diff_html(*pages, diff_lines(result)), nl=False)
    elif fmt.value == "json":
        result.write_json(sys.stdout, writer=writer())
        sys.stdout.flush()
    else:
        render_diff(result, out, max_listed)
    raise typer.Exit(1 if result.verdict == "worse" else 0)


@app.command()
@with_options(*FILTERS)
def summarize(
    trace: TraceArg,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Summary to write (default: TRACE.order.parquet)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    *,
    opts: "Options",
) -> None:
    """Write a trace's lock-order summary: what analyze and diff need, a fraction of the size."""
    from lktrace.orderfile import filters_dict, is_summary, write_summary

    if is_summary(trace):
        raise UsageError(f"{trace}: already a lock-order summary")
    output = output or trace.with_name(trace.name.removesuffix(".parquet") + ".order.parquet")
    if output.exists() and not force:
        raise UsageError(f"{output}: exists (--force to overwrite)")
    state = replay_files([trace], opts, 1, None)
    write_summary(output, state.order, filters_dict(opts))
    size, was = output.stat().st_size, trace.stat().st_size
    out.print(
        f"wrote {output}: {state.order.size('orderings'):,} orderings, "
        f"{size / 2**20:.2f} MiB ({was / max(size, 1):.0f}x smaller than the trace)",
        markup=False,
    )


@app.command()
def simulate(
    scenario: Annotated[
        str | None, typer.Argument(help="Scenario name; see --list.", show_default=False)
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Trace file to write.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the interleaving.")] = 0,
    events: Annotated[int | None, typer.Option(help="scale: number of events.")] = None,
    tasks: Annotated[int | None, typer.Option(help="scale: number of tasks.")] = None,
    locks: Annotated[int | None, typer.Option(help="scale: number of locks.")] = None,
    inversions: Annotated[
        int | None, typer.Option(help="scale: lock pairs also taken in reverse order.")
    ] = None,
    spread: Annotated[
        int | None, typer.Option(help="scale: rank distance between a reversed pair's locks.")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
) -> None:
    """Write a simulated trace of a kernel scenario (no kernel needed)."""
    from lktrace.sim import SCENARIOS, SimError
    from lktrace.sim import simulate as run

    if list_:
        for s in SCENARIOS.values():
            out.print(f"[bold]{s.name:20}[/] {s.description}", soft_wrap=True)
        return
    if scenario is None or output is None:
        raise UsageError("simulate needs a SCENARIO and -o FILE (or --list)")
    given = {
        "events": events,
        "tasks": tasks,
        "locks": locks,
        "inversions": inversions,
        "spread": spread,
    }
    params = {k: v for k, v in given.items() if v is not None}
    try:
        path = run(scenario, output, seed, **params)
    except SimError as e:
        raise UsageError(str(e)) from e
    out.print(f"wrote {path}", markup=False)


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="Simulated scenario; see simulate --list.")] = (
        "stock-deadlock"
    ),
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Keep the trace in this file.")
    ] = None,
    real: Annotated[
        bool, typer.Option("--real", help="Show a deadlock recorded on a real kernel instead.")
    ] = False,
) -> None:
    """Simulate the SR-IOV AB-BA race and analyse it: the newcomer's first command."""
    from lktrace.demo import run_demo, run_real_demo
    from lktrace.sim import SCENARIOS

    if real:
        run_real_demo(out)
        return
    if scenario not in SCENARIOS or scenario == "scale":
        raise UsageError(f"unknown demo scenario {scenario!r}; see 'lktrace simulate --list'")
    run_demo(out, scenario, output)


#: The usage errors typer finds itself (bad choice, out of bounds, no such option), under
#: whichever name this typer's click has for them.
_CHECKED = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Entry point: runs the app, turning expected errors into one line and exit code 2."""
    try:
        # prog_name: also under python -m, in usage lines and completion scripts
        code = app(prog_name="lktrace", standalone_mode=False)
    except _CHECKED as e:
        message = e.format_message()
        # a command given no arguments answers with its help, which is not an error line
        print(message if "\n" in message else f"lktrace: {message}", file=sys.stderr)
        sys.exit(e.exit_code)
    except (TraceError, UsageError, CollectorError) as e:
        print(f"lktrace: {e}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
