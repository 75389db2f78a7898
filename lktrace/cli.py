"""The ``lktrace`` command line: one sub-command per job, each a thin layer over a module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lktrace.console import err
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


def main() -> None:
    """Entry point: runs the app, turning expected errors into one line and exit code 2."""
    try:
        app()
    except (TraceError, UsageError) as e:
        err.print(f"lktrace: {e}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
