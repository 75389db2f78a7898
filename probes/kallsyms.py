"""The kernel's symbol table from /proc/kallsyms: name lookups and vectorised symbolisation.

An address is named only inside the kernel's text (``_stext``.. ``_etext``) or a loaded
module (/proc/modules), and less than :data:`MAX_OFFSET` past its symbol; anything else,
such as a BPF program or trampoline when ``net.core.bpf_jit_kallsyms`` is off, stays a
bare ``0x…`` instead of borrowing the name of whatever symbol precedes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KALLSYMS = Path("/proc/kallsyms")
MODULES = Path("/proc/modules")
#: No kernel function is this long: an address further past a symbol is not in it
#: (since v6.4 a module's /proc/modules size also counts data kept elsewhere).
MAX_OFFSET = 1 << 16
_TEXT_TYPES = frozenset("tTwW")


class Kallsyms:
    """Symbols of one kernel: text symbols sorted by address, plus data symbol addresses."""

    def __init__(self, lines: list[str], modules: Sequence[str] = ()) -> None:
        rows = [p for p in map(str.split, lines) if len(p) >= 3]
        addr = np.array([int(p[0], 16) for p in rows], dtype=np.uint64)
        kind = np.array([p[1] for p in rows], dtype="U1")
        every = [p[2] for p in rows]
        builtin = np.array([len(p) == 3 for p in rows], dtype=bool)
        text = np.isin(kind, list(_TEXT_TYPES))
        at = np.flatnonzero(text)
        names = [every[i] for i in at.tolist()]
        # by address, then name: of aliases (e.g. _stext and the first function) the
        # last one names the address, and it is the same on every run
        order = np.lexsort((np.array(names), addr[at]))
        self.addrs = addr[at][order]
        self.names = [names[i] for i in order.tolist()]
        #: Built-in (non-module) text symbols and how many times each name occurs.
        self.functions = Counter(every[i] for i in np.flatnonzero(text & builtin).tolist())
        #: Built-in data symbols (all of them only with CONFIG_KALLSYMS_ALL), first wins.
        self.data: dict[str, int] = {}
        for i in np.flatnonzero(~text & builtin).tolist():
            self.data.setdefault(every[i], int(addr[i]))
        self.zeroed = bool(len(self.addrs)) and not self.addrs.any()
        start, end = (self._addr_of(name) for name in ("_stext", "_etext"))
        ranges = [
            (int(p[5], 16), int(p[5], 16) + int(p[1]))
            for p in map(str.split, modules)
            if len(p) >= 6 and p[5].startswith("0x")
        ]
        if start is not None and end is not None:
            ranges.append((start, end))
        ranges.sort()
        self._starts = np.array([a for a, _ in ranges], dtype=np.uint64)
        self._ends = np.array([b for _, b in ranges], dtype=np.uint64)

    def _addr_of(self, name: str) -> int | None:
        """Address of the text symbol ``name`` (the first by address), if any."""
        try:
            return int(self.addrs[self.names.index(name)])
        except ValueError:
            return None

    @classmethod
    def load(cls, path: Path = KALLSYMS, modules: Path = MODULES) -> Kallsyms:
        mods = modules.read_text().splitlines() if modules.exists() else []
        return cls(path.read_text().splitlines(), mods)

    def _known(self, addrs: np.ndarray) -> np.ndarray:
        """Which addresses lie in kernel or module text (all, when that is unknown)."""
        if not len(self._starts):
            return np.ones(len(addrs), dtype=bool)
        i = np.searchsorted(self._starts, addrs, side="right").astype(np.int64) - 1
        return (i >= 0) & (addrs < self._ends[np.maximum(i, 0)])

    def has(self, name: str) -> bool:
        """Whether ``name`` is a built-in function, exactly once (so attachable by name)."""
        return self.functions.get(name, 0) == 1

    def symbolize(self, addrs: Sequence[int] | np.ndarray) -> list[str]:
        """``function+0xoff`` for each address (``0x…`` when below the first symbol)."""
        addrs = np.array(addrs, dtype=np.uint64)  # from ints: no float detour
        idx = np.searchsorted(self.addrs, addrs, side="right").astype(np.int64) - 1
        idx[~self._known(addrs)] = -1
        if len(self.addrs):
            starts = self.addrs[np.maximum(idx, 0)]
            idx[addrs - starts >= MAX_OFFSET] = -1
            starts = starts.tolist()
        else:
            starts = []
        out = []
        for a, i, start in zip(addrs.tolist(), idx.tolist(), starts, strict=False):
            if i < 0 or self.zeroed:
                out.append(f"0x{a:x}")
            else:
                out.append(f"{self.names[i]}+0x{a - start:x}")
        return out
