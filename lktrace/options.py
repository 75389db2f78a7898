"""The values options take, and their defaults, shared by the command line and the library.

Each set of choices is an enum, which typer shows in ``--help`` and checks
by itself; the modules that act on them take their values from here, so a
choice is spelled in one place.  Nothing here imports more than the
standard library: ``lktrace --help`` stays quick.
"""

from __future__ import annotations

from enum import Enum


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    return Enum(name, [(v, v) for v in values], type=str)


#: Ordering graph levels: lock classes (lockdep's view), lock instances, or both.
Level = _choices("Level", ("class", "instance", "both"))
AnalyzeFormat = _choices("AnalyzeFormat", ("text", "json", "dot"))
DiffFormat = _choices("DiffFormat", ("text", "json", "html"))
#: What ``record`` follows: PCI paths and what they lock, or every mutex.
Scope = _choices("Scope", ("pci", "all"))
#: How ``record`` attaches: ``auto`` tries fentry, then kprobes.
Backend = _choices("Backend", ("auto", "fentry", "kprobe", "tracepoint"))

MAX_DEPTH = 2  # nesting depth above which reentrancy is an error
MAX_CYCLES = 200  # elementary cycles counted per graph, and findings shown per graph
BUFFER_MB = (1, 16, 4096)  # record --buffer-mb: least, default, most


def values(choices: type[Enum]) -> tuple[str, ...]:
    """The values of a set of choices, in order."""
    return tuple(c.value for c in choices)
