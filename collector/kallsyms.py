"""The kernel's symbol table from /proc/kallsyms: name lookups and vectorised symbolisation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

KALLSYMS = Path("/proc/kallsyms")
_TEXT_TYPES = frozenset("tTwW")


class Kallsyms:
    """Symbols of one kernel: text symbols sorted by address, plus data symbol addresses."""

    def __init__(self, lines: list[str]) -> None:
        text: list[tuple[int, str]] = []
        self.data: dict[str, int] = {}
        builtin = Counter()
        for line in lines:
            parts = line.split()
            if len(parts) < 3:
                continue
            addr, kind, name = int(parts[0], 16), parts[1], parts[2]
            if kind in _TEXT_TYPES:
                text.append((addr, name))
                if len(parts) == 3:
                    builtin[name] += 1
            elif len(parts) == 3:
                self.data.setdefault(name, addr)
        text.sort()
        self.addrs = np.array([a for a, _ in text], dtype=np.uint64)
        self.names = [n for _, n in text]
        #: Built-in (non-module) text symbols and how many times each name occurs.
        self.functions = builtin
        self.zeroed = bool(len(self.addrs)) and not self.addrs.any()

    @classmethod
    def load(cls, path: Path = KALLSYMS) -> Kallsyms:
        return cls(path.read_text().splitlines())

    def has(self, name: str) -> bool:
        """Whether ``name`` is a built-in function, exactly once (so attachable by name)."""
        return self.functions.get(name, 0) == 1

    def symbolize(self, addrs: np.ndarray) -> list[str]:
        """``function+0xoff`` for each address (``0x…`` when below the first symbol)."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        idx = np.searchsorted(self.addrs, addrs, side="right").astype(np.int64) - 1
        out = []
        for a, i in zip(addrs.tolist(), idx.tolist(), strict=True):
            if i < 0 or self.zeroed:
                out.append(f"0x{a:x}")
            else:
                out.append(f"{self.names[i]}+0x{a - int(self.addrs[i]):x}")
        return out
