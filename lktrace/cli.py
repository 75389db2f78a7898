"""The ``lktrace`` command line: one sub-command per job, each a thin layer over a module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lktrace.collector.errors import CollectorError
from lktrace.console import err
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
    err.print(
        f"lktrace: wrote {path}: {rows:,} events, {len(meta.stacks):,} stacks, "
        f"{meta.lost_events:,} lost",
        markup=False,
    )
    if meta.lost_events:
        err.print(
            f"lktrace: warning: {meta.lost_events:,} events were lost (buffer full); "
            "orderings may be missing",
            markup=False,
        )


def main() -> None:
    """Entry point: runs the app, turning expected errors into one line and exit code 2."""
    try:
        app()
    except (TraceError, UsageError, CollectorError) as e:
        err.print(f"lktrace: {e}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
