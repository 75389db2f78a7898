"""The ``lktrace`` command line: one sub-command per job, each a thin layer over a module."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lktrace.collector.errors import CollectorError
from lktrace.console import out
from lktrace.trace import TraceError, TraceMeta, read_trace

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Record kernel lock acquisitions with eBPF and find lock-order inversions offline.",
)

TraceArg = Annotated[Path, typer.Argument(help="A trace file (Parquet, format v1).")]


class UsageError(Exception):
    """Bad arguments that typer cannot catch by itself (exit code 2)."""


@app.command()
def info(trace: TraceArg) -> None:
    """Show a trace's metadata and event counts."""
    from lktrace.summary import print_info

    print_info(read_trace(trace))


def expand_traces(paths: list[Path]) -> list[Path]:
    """Trace files named by ``paths``; a folder stands for the ``*.parquet`` files in it."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.parquet"))
            if not found:
                raise UsageError(f"{p}: no *.parquet trace files in this folder")
            files += found
        else:
            files.append(p)
    return files


@app.command()
def analyze(
    traces: Annotated[list[Path], typer.Argument(help="Trace files or folders of them.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, json or dot.")] = "text",
    level: Annotated[str, typer.Option(help="Graph level: class, instance or both.")] = "both",
    max_depth: Annotated[int, typer.Option(help="Nesting depth above which it's an error.")] = 2,
    max_cycles: Annotated[int, typer.Option(help="Stop listing cycles after this many.")] = 1000,
    lock_class: Annotated[
        list[str] | None, typer.Option("--class", help="Only findings on this lock class.")
    ] = None,
    comm: Annotated[list[str] | None, typer.Option(help="Only these tasks (comm).")] = None,
    tid: Annotated[list[int] | None, typer.Option(help="Only these tasks (tid).")] = None,
    since: Annotated[
        float | None, typer.Option(help="Skip events before this many seconds in.")
    ] = None,
    until: Annotated[
        float | None, typer.Option(help="Skip events from this many seconds in.")
    ] = None,
) -> None:
    """Find lock-order inversions, deadlocks and reentrancy anomalies (exit 1 if any)."""
    from lktrace.replay.analyze import LEVELS, Options
    from lktrace.replay.analyze import analyze as run
    from lktrace.replay.render import render

    if level not in LEVELS:
        raise UsageError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in ("text", "json"):
        raise UsageError(f"--format must be text or json, not {fmt!r}")
    opts = Options(
        level=level,
        max_depth=max_depth,
        max_cycles=max_cycles,
        classes=set(lock_class or ()),
        comms=set(comm or ()),
        tids=set(tid or ()),
        since_s=since,
        until_s=until,
    )
    result = run([read_trace(p) for p in expand_traces(traces)], opts)
    if fmt == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2))
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
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="pci: PCI paths and what they lock; all: every mutex.")
    ] = "pci",
    no_stacks: Annotated[bool, typer.Option("--no-stacks", help="Skip kernel stacks.")] = False,
    pid: Annotated[int | None, typer.Option("--pid", help="Only this process (tgid).")] = None,
    comm: Annotated[str | None, typer.Option("--comm", help="Only tasks with this comm.")] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto, fentry, kprobe or tracepoint.")
    ] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing trace.")] = False,
    command: Annotated[
        list[str] | None, typer.Argument(help="-- COMMAND ...: record while it runs.")
    ] = None,
) -> None:
    """Record mutex acquisitions of the running kernel (root; needs bcc)."""
    from lktrace.collector.record import BACKENDS, RecordRequest
    from lktrace.collector.record import record as run

    if scope not in ("pci", "all"):
        raise UsageError(f"--scope must be pci or all, not {scope!r}")
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    req = RecordRequest(
        output=output,
        duration=duration,
        scope=scope,
        stacks=not no_stacks,
        pid=pid,
        comm=comm,
        backend=backend,
        force=force,
        command=list(command or []),
        argv=["lktrace", *sys.argv[1:]],
    )
    meta, rows = run(req)
    _report(output, meta, rows)


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
        print(
            f"lktrace: warning: {meta.lost_events:,} events were lost (buffer full); "
            "orderings may be missing",
            file=sys.stderr,
        )


def main() -> None:
    """Entry point: runs the app, turning expected errors into one line and exit code 2."""
    try:
        app()
    except (TraceError, UsageError, CollectorError) as e:
        print(f"lktrace: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
