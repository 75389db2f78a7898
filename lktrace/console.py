"""Terminal output shared by the commands: rich consoles and human-readable units."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def fmt_ns(ns: int | float) -> str:
    """A duration in the largest unit that keeps it above 1 (``1.50 s``, ``320 us``)."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{int(ns)} ns"


def fmt_count(n: int) -> str:
    """A count with thousands separators."""
    return f"{n:,}"
