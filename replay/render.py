"""Print an :class:`Analysis` for people, the way lockdep and LKML reports read."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from lktrace.console import fmt_count, fmt_ns
from lktrace.replay.findings import ERROR_KINDS, Analysis, Anomaly, Deadlock, Inversion, Witness

COLUMN = 32  # width of the CPU0 column in the scenario table


def stamp(ts_ns: int) -> str:
    """A timestamp as ftrace prints it: seconds.microseconds."""
    return f"{ts_ns / 1e9:.6f}"


def print_stack(console: Console, title: str, frames: list[str], indent: str = "    ") -> None:
    console.print(f"{indent}{escape(title)}")
    if not frames:
        console.print(f"{indent}  [dim](no stack recorded)[/]")
    for frame in frames:
        console.print(f"{indent}  {escape(frame)}")


def render(a: Analysis, console: Console) -> None:
    """Header, then findings by severity: deadlocks, inversions, anomalies."""
    _header(a, console)
    for i, d in enumerate(a.deadlocks, 1):
        _deadlock(console, i, d)
    several = len(a.traces) > 1
    for i, inv in enumerate(a.inversions, 1):
        _inversion(console, f"INVERSION {i}", inv, several)
    for i, inv in enumerate(a.guarded, 1):
        _inversion(console, f"GUARDED {i}", inv, several)
    for an in a.anomalies:
        _anomaly(console, an)
    if not (a.deadlocks or a.inversions or a.guarded or a.anomalies):
        console.print("\n[green]No lock-order inversions or anomalies found.[/]")
    else:
        errors = sum(an.kind in ERROR_KINDS for an in a.anomalies)
        console.print(
            f"\n[bold]{len(a.deadlocks)} deadlock(s), {len(a.inversions)} inversion(s), "
            f"{len(a.guarded)} guarded cycle(s), {errors} error anomal(ies), "
            f"{len(a.anomalies) - errors} note(s)[/]"
        )


def _header(a: Analysis, console: Console) -> None:
    for t in a.traces:
        console.print(f"[bold]trace[/] {escape(t['file'])}")
        kernel = " ".join(p for p in (t["kernel"], t["kernel_version"]) if p) or "unknown"
        console.print(
            f"  kernel {escape(kernel)}, host {escape(t['host'] or 'unknown')}, "
            f"{fmt_count(t['events'])} events over {fmt_ns(t['span_ns'])}, "
            f"lost {fmt_count(t['lost_events'])}"
        )
    s = a.summary
    console.print(
        f"  {fmt_count(s['tasks'])} tasks, {fmt_count(s['locks'])} locks in "
        f"{fmt_count(s['classes'])} classes, {fmt_count(s['edges'])} ordering edges"
    )
    for note in a.notes:
        console.print(f"  [yellow]note:[/] {escape(note)}")


def _deadlock(console: Console, n: int, d: Deadlock) -> None:
    who = (
        "1 task waits for itself"
        if len(d.tasks) == 1
        else f"{len(d.tasks)} tasks wait for each other"
    )
    console.print(f"\n[bold red]DEADLOCK {n}[/] (happened): {who}")
    for t in d.tasks:
        w = t.waits_for
        console.print(
            f"  [bold]{escape(t.comm)}/{t.tid}[/] waits since {stamp(w.since_ns)} for "
            f"[bold]{escape(lock_label(w.lock_class, w.lock_name))}[/] at {escape(w.caller)}, "
            f"held by tid {t.waits_on_tid}"
        )
        for h in t.holds:
            console.print(
                f"    holds {escape(lock_label(h.lock_class, h.lock_name))} since "
                f"{stamp(h.since_ns)}, taken at {escape(h.caller)}"
            )
    for t in d.tasks:
        print_stack(console, f"{t.comm}/{t.tid} is waiting at:", t.waits_for.stack, "  ")


def lock_label(lock_class: str, lock_name: str) -> str:
    return lock_class if lock_class == lock_name else f"{lock_class} {lock_name}"


def times(n: int) -> str:
    return "once" if n == 1 else f"{fmt_count(n)} times"


def cycle_text(cycle: list[str], arrow: str = " -> ") -> str:
    """``A -> B -> A``: a cycle written out, back to its start."""
    return arrow.join([*cycle, cycle[0]])


def headline(inv: Inversion, arrow: str = " -> ") -> str:
    """An inversion's first line: the suspect ordering and how often each direction was seen."""
    s = inv.suspect
    if s is None:
        return cycle_text(inv.cycle, arrow)
    rule = arrow.join(s.against)
    steps = " along its paths" if len(s.against) > 2 else ""
    if s.clear:
        return (
            f"{s.src}{arrow}{s.dst} seen {times(s.count)}, against {rule} "
            f"seen {times(s.against_count)}{steps}"
        )
    return (
        f"{s.src}{arrow}{s.dst} seen {times(s.count)} and {rule} {times(s.against_count)}"
        f"{steps}: neither order is clearly the exception"
    )


def longer_cycles(inv: Inversion) -> str:
    """How many more cycles the suspect closes, or "" when none."""
    more = len(inv.cycles) - 1
    if more <= 0:
        return ""
    stopped = " (--max-cycles stopped the count)" if inv.cycles_cut else ""
    return (
        f"{'at least ' if stopped else ''}{more} more cycle(s) through the same ordering{stopped}"
    )


def _inversion(console: Console, title: str, inv: Inversion, several: bool) -> None:
    tags = [inv.level]
    if inv.deadlocked:
        tags.append("[red]deadlocked[/]")
    if inv.same_task:
        tags.append("one task only")
    if not inv.same_instances:
        tags.append("seen only across different instances")
    style = "bold green" if inv.gate else "bold red"
    console.print(f"\n[{style}]{title}[/]: {escape(headline(inv))}  ({', '.join(tags)})")
    seen = ", ".join(fmt_count(n) for n in inv.counts)
    console.print(
        f"  cycle: {escape(cycle_text(inv.cycle))}" + (f"  (seen {seen})" if seen else "")
    )
    more = longer_cycles(inv)
    if more:
        console.print(f"  {escape(more)}, listed by --format json")
    if inv.gate:
        console.print(
            f"  every edge was taken holding [bold]{escape(inv.gate)}[/]: cannot deadlock"
        )
    tasks = ", ".join(f"{t['comm']}/{t['tid']}" for t in inv.tasks)
    console.print(f"  tasks: {escape(tasks)}")
    if len(inv.edges) == 2:
        _scenario(console, inv.edges)
    for i, w in enumerate(inv.edges):
        print_witness(console, w, several)
        others = inv.paths[i][1:] if i < len(inv.paths) else []
        if others:
            console.print("    the same edge on other paths:")
        for o in others:
            console.print(
                f"      {escape(o.comm)}/{o.tid}: {escape(o.src_name)} at {escape(o.held_caller)}"
                f", then {escape(o.dst_name)} at {escape(o.caller)}"
            )


def scenario_rows(edges: list[Witness]) -> list[tuple[str, str]]:
    """Lockdep's "possible unsafe locking scenario" for an AB-BA pair: (CPU0, CPU1) lines."""
    first, second = edges
    a = f"lock({lock_label(first.src_class, first.src_name)});"
    b = f"lock({lock_label(second.src_class, second.src_name)});"
    return [(a, ""), ("", b), ("", a), (b, "")]


def _scenario(console: Console, edges: list[Witness]) -> None:
    first, second = edges
    lines = scenario_rows(edges)
    console.print("\n  Possible unsafe locking scenario:\n")
    console.print(f"        {'CPU0':<{COLUMN}}CPU1")
    console.print(f"        {'----':<{COLUMN}}----")
    for left, right in lines:
        console.print(escape(f"   {left:<{COLUMN + 5}}{right}".rstrip()))
    console.print("\n   *** DEADLOCK ***\n")
    console.print(
        f"  CPU0 is {escape(first.comm)}/{first.tid} ({escape(first.held_caller)} then "
        f"{escape(first.caller)}), CPU1 is {escape(second.comm)}/{second.tid} "
        f"({escape(second.held_caller)} then {escape(second.caller)})"
    )


def print_witness(console: Console, w: Witness, several: bool) -> None:
    console.print(
        f"\n  [bold]{escape(w.src)} -> {escape(w.dst)}[/]: {escape(w.comm)}/{w.tid} at "
        f"{stamp(w.ts_ns)}" + (f" [dim]({escape(w.file)})[/]" if several else "")
    )
    print_stack(console, f"attempted {lock_label(w.dst_class, w.dst_name)} at:", w.stack)
    print_stack(
        console, f"while holding {lock_label(w.src_class, w.src_name)}, taken at:", w.held_stack
    )


def _anomaly(console: Console, an: Anomaly) -> None:
    style = "bold red" if an.kind in ERROR_KINDS else "bold yellow"
    console.print(
        f"\n[{style}]{an.kind.upper()}[/]: {escape(an.comm)}/{an.tid} on "
        f"[bold]{escape(lock_label(an.lock_class, an.lock_name))}[/] at {stamp(an.ts_ns)}: "
        f"{escape(an.detail)}"
    )
    print_stack(console, "at:", an.stack)
