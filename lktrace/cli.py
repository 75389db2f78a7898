"""The ``lktrace`` command line: one sub-command per job, each a thin layer over a module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lktrace.console import err, out
from lktrace.trace import TraceError, read_trace

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
    given = {"events": events, "tasks": tasks, "locks": locks, "inversions": inversions}
    params = {k: v for k, v in given.items() if v is not None}
    try:
        path = run(scenario, output, seed, **params)
    except SimError as e:
        raise UsageError(str(e)) from e
    out.print(f"wrote {path}", markup=False)


def main() -> None:
    """Entry point: runs the app, turning expected errors into one line and exit code 2."""
    try:
        app()
    except (TraceError, UsageError) as e:
        err.print(f"lktrace: {e}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
