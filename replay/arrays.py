"""Grouping on integer columns with numpy and pandas' hash tables: no Python loop per row."""

from __future__ import annotations

import numpy as np
import pandas as pd


def group_rows(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group ids of the rows of integer columns (by hashing) and each group's first row.

    Columns hold non-negative values; when they fit 63 bits together they are
    packed into one key and hashed once.
    """
    bits = [int(c.max()).bit_length() if len(c) else 0 for c in cols]
    if sum(bits) <= 63:
        key = cols[0].astype(np.int64)
        for c, b in zip(cols[1:], bits[1:], strict=True):
            key = key << b | c.astype(np.int64)
        codes = pd.factorize(key)[0].astype(np.int64)
    else:
        codes = pd.factorize(cols[0])[0].astype(np.int64)
        for c in cols[1:]:
            codes = pd.factorize(codes << 32 | c.astype(np.int64))[0].astype(np.int64)
    n = int(codes.max()) + 1 if len(codes) else 0
    first = np.empty(n, np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return codes, first


def unique_rows(*cols: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct rows of integer columns, in order of first appearance."""
    _, first = group_rows(*cols)
    return tuple(c[first] for c in cols)


def argmin_per(codes: np.ndarray, n: int, ts: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Per group, the position of the smallest (ts, task); -1 where every ts is the maximum."""
    big = np.iinfo(np.int64).max
    low = np.full(n, big)
    np.minimum.at(low, codes, ts)
    at = (ts == low[codes]) & (ts < big)
    best = np.full(n, big)
    np.minimum.at(best, codes[at], task[at])
    pos = np.full(n, -1, np.int64)
    hit = np.flatnonzero(at & (task == best[codes]))
    pos[codes[hit[::-1]]] = hit[::-1]
    return pos


def reduce_counts(frag: dict[str, np.ndarray], by: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Sum ``n`` over equal ``by`` columns."""
    if not len(frag["n"]):
        return frag
    codes, first = group_rows(*(frag[c] for c in by))
    n = np.bincount(codes, weights=frag["n"], minlength=len(first)).astype(np.int64)
    return {**{c: frag[c][first] for c in by}, "n": n}


def run_starts(*cols: np.ndarray) -> np.ndarray:
    """Where each run of equal rows begins, in columns sorted by those rows."""
    same = np.ones(len(cols[0]), bool)  # as the row before
    same[:1] = False
    for c in cols:
        same[1:] &= c[1:] == c[:-1]
    return np.flatnonzero(~same)
