"""The options analyze, report, diff and export share, defined once.

:func:`with_options` adds them to a command's signature, so typer shows and
checks them like the command's own, and hands the command one
:class:`~lktrace.replay.analyze.Options` instead; every command that takes
an option thus takes it with the same name, bounds, help and default.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from lktrace.options import MAX_CYCLES, MAX_DEPTH, Level

#: The options analyze, report, diff and export share: (annotation, default) by name.
SHARED = {
    "level": (Annotated[Level, typer.Option(help="Ordering graph level.")], Level["both"]),
    "max_depth": (
        Annotated[
            int, typer.Option(min=1, help="Nesting depth above which reentrancy is an error.")
        ],
        MAX_DEPTH,
    ),
    "max_cycles": (
        Annotated[
            int, typer.Option(min=1, help="Cycles counted, and inversions shown, per graph.")
        ],
        MAX_CYCLES,
    ),
    "lock_class": (
        Annotated[
            list[str] | None, typer.Option("--class", help="Only findings on this lock class.")
        ],
        None,
    ),
    "comm": (Annotated[list[str] | None, typer.Option(help="Only these tasks (comm).")], None),
    "tid": (Annotated[list[int] | None, typer.Option(min=0, help="Only these tasks (tid).")], None),
    "since": (
        Annotated[
            float | None, typer.Option(min=0, help="Skip events before this many seconds in.")
        ],
        None,
    ),
    "until": (
        Annotated[float | None, typer.Option(min=0, help="Skip events from this many seconds in.")],
        None,
    ),
}
FILTERS = ("comm", "tid", "since", "until")
JUDGING = ("level", "max_depth", "max_cycles", "lock_class", *FILTERS)


def with_options(*names: str) -> Callable[[Callable], Callable]:
    """Give a command the :data:`SHARED` options ``names``; it receives them as one
    ``opts`` (:class:`~lktrace.replay.analyze.Options`), the others at their defaults."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.name != "opts"]
        added = [
            inspect.Parameter(
                n, inspect.Parameter.KEYWORD_ONLY, default=SHARED[n][1], annotation=SHARED[n][0]
            )
            for n in names
        ]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names}
            return fn(*args, opts=_options(**given), **kwargs)

        command.__signature__ = sig.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return command

    return decorate


def _options(
    level: Level = Level["both"],
    max_depth: int = MAX_DEPTH,
    max_cycles: int = MAX_CYCLES,
    lock_class: list[str] | None = None,
    comm: list[str] | None = None,
    tid: list[int] | None = None,
    since: float | None = None,
    until: float | None = None,
):
    """What a command replays and how it judges it, from its options."""
    from lktrace.replay.analyze import Options

    return Options(
        level=level.value,
        max_depth=max_depth,
        max_cycles=max_cycles,
        classes=set(lock_class or ()),
        comms=set(comm or ()),
        tids=set(tid or ()),
        since_s=since,
        until_s=until,
    )
