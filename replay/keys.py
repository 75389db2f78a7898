"""Integer keys for matching the two sides of ``lktrace diff``.

Both sides intern their lock keys (:func:`~lktrace.replay.identity.lock_key`)
and call paths into one :class:`Vocab` each, shared by the sides, so that a
lock or a path has the same code in both traces.  Two codes pack into one
int64 (:func:`pack`: an edge, or a lock and a call path), and sorted arrays
of them are matched by binary search (:func:`member`, :func:`rows_in`): no
Python object per ordering.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lktrace.replay.arrays import run_starts


class Vocab:
    """Values (lock keys, call paths) interned to codes that both sides share."""

    def __init__(self) -> None:
        self.values: list = []
        self._codes: dict[Hashable, int] = {}

    def __len__(self) -> int:
        return len(self.values)

    def codes(self, values: Iterable[Hashable]) -> np.ndarray:
        """The codes of ``values``, interning the new ones."""
        out = []
        for v in values:
            code = self._codes.get(v)
            if code is None:
                code = self._codes[v] = len(self.values)
                self.values.append(v)
            out.append(code)
        return np.asarray(out, np.int64)

    def code(self, value: Hashable) -> int:
        """The code of ``value``; -1 when neither side has it."""
        return self._codes.get(value, -1)

    def ranks(self) -> np.ndarray:
        """Per code, the rank of its value in sorted order (codes then sort as values do)."""
        order = sorted(range(len(self.values)), key=self.values.__getitem__)
        out = np.empty(len(order), np.int64)
        out[order] = np.arange(len(order))
        return out


def pack(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Two codes below 2**31 (from and to lock, lock and call path) as one int64, ordered as
    the pairs are."""
    return np.asarray(hi, np.int64) << 31 | np.asarray(lo, np.int64)


def unpack(packed: np.ndarray | int) -> tuple:
    """The two codes of :func:`pack`."""
    return packed >> 31, packed & (1 << 31) - 1


def member(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in the sorted array ``among`` (binary search: faster
    than hashing for millions of rows)."""
    if not len(among):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(among, values), len(among) - 1)
    return among[at] == values


def rows_in(rows: tuple[np.ndarray, np.ndarray], among: tuple[np.ndarray, np.ndarray]):
    """Whether each (major, minor) row of ``rows`` is one of the rows ``among``, which are
    sorted by (major, minor); minors are codes."""
    major, minor = among
    if not len(major):
        return np.zeros(len(rows[0]), bool)
    starts = run_starts(major)
    majors = major[starts]
    width = max(int(minor.max()), int(rows[1].max(initial=0))) + 1
    rank = np.repeat(np.arange(len(starts), dtype=np.int64), np.diff(np.r_[starts, len(major)]))
    at = np.searchsorted(majors, rows[0])
    found = majors[np.minimum(at, len(majors) - 1)] == rows[0]
    return found & member(at * width + rows[1], rank * width + minor)


@dataclass
class Vocabs:
    """The vocabularies the two sides of a diff share: lock keys and call paths."""

    locks: Vocab = field(default_factory=Vocab)
    paths: Vocab = field(default_factory=Vocab)
