"""Wait and hold time histograms: log-linear buckets, so quantiles merge across traces.

A duration below 32 ns is its own bucket; above, each power of two is cut
into 32 buckets, so a bucket's middle is within 1.6 % of every value in it.
Histograms of slices, traces and runs add up; quantiles are read off them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lktrace.replay.arrays import group_rows, run_starts, sort_rows
from lktrace.replay.holds import Holds

_SUB = 5  # 2**5 buckets per power of two: values within 1.6 %


def bucket(ns: np.ndarray) -> np.ndarray:
    """Log-linear histogram bucket of non-negative durations (exact below 32 ns).

    With ``e`` the value's highest bit and ``s = max(e - 5, 0)`` the bits cut
    off, the bucket is ``32 s + (v >> s)``: ``v`` itself below 64, then 32 per
    power of two.  ``e`` is read off the float64 exponent, no logarithm.
    """
    v = np.maximum(ns, 0).astype(np.int64)
    s = (v.astype(np.float64).view(np.int64) >> 52) - (1023 + _SUB)
    np.maximum(s, 0, out=s)
    # a value just below a power of two may round up to it as a float
    s -= (s > 0) & ((v >> s) < 1 << _SUB)
    top = v >> s
    s <<= _SUB
    s += top
    return s


def bucket_value(b: np.ndarray) -> np.ndarray:
    """The middle of each bucket (float ns)."""
    b = np.asarray(b, np.int64)
    big = b >= 1 << _SUB
    e = (b - (1 << _SUB)) // (1 << _SUB)
    mant = (b - (1 << _SUB)) % (1 << _SUB)
    low = ((1 << _SUB) + mant) << np.maximum(e, 0)
    width = np.left_shift(1, np.maximum(e, 0))
    return np.where(big, low + (width - 1) / 2, b).astype(float)


def time_histograms(
    wait_cls: np.ndarray, wait: np.ndarray, hold_cls: np.ndarray, hold: np.ndarray
) -> dict[str, np.ndarray]:
    """Histograms (class, kind 0 wait / 1 hold, bucket, n) of waits and holds."""
    parts = [_counts(wait_cls, bucket(wait)), _counts(hold_cls, bucket(hold))]
    kind = [np.full(len(p[0]), k, np.int64) for k, p in enumerate(parts)]
    cls, b, n = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return {"cls": cls, "kind": np.concatenate(kind), "bucket": b, "n": n}


def _counts(cls: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (class, bucket) rows and how many of each.

    Counted with one ``bincount`` over the (class, bucket) box when it is no
    bigger than about twice the rows, else grouped by hashing.
    """
    cls = cls.astype(np.int64)
    if not len(b):
        return cls, b, b
    c0, b0 = int(cls.min()), int(b.min())
    width = int(b.max()) - b0 + 1
    size = (int(cls.max()) - c0 + 1) * width
    if size <= 2 * len(b) + (1 << 16):
        n = np.bincount((cls - c0) * width + (b - b0), minlength=size)
        at = np.flatnonzero(n)
        return at // width + c0, at % width + b0, n[at]
    codes, first = group_rows(cls, b)
    return cls[first], b[first], np.bincount(codes, minlength=len(first))


def hold_histograms(h: Holds, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Time histograms of the holds in ``mask``: waits of all, hold times of the released."""
    done = mask & h.released
    return time_histograms(
        h.cls[mask],
        h.acquired_ts[mask] - h.attempt_ts[mask],
        h.cls[done],
        h.released_ts[done] - h.acquired_ts[done],
    )


def _quantiles(group: np.ndarray, b: np.ndarray, n: np.ndarray, q: float, groups: int):
    """Per group (of ``groups``): the linear-interpolated quantile ``q`` of the histogram
    rows (bucket ``b``, count ``n``) in it, as pandas computes it on values; NaN for a
    group without rows."""
    out = np.full(groups, np.nan)
    if not len(group):
        return out
    order = sort_rows(group, b)
    group, b, c = group[order], b[order], np.cumsum(n[order])
    starts = run_starts(group)
    ends = np.r_[starts[1:], len(group)] - 1
    base = np.r_[0, c[ends[:-1]]]  # rows of the groups before
    rank = q * (c[ends] - base - 1)
    lo, hi = np.floor(rank).astype(np.int64), np.ceil(rank).astype(np.int64)
    x0, x1 = (bucket_value(b[np.searchsorted(c, base + k, side="right")]) for k in (lo, hi))
    out[group[starts]] = x0 + (x1 - x0) * (rank - lo)
    return out


def class_times(hist: dict[str, np.ndarray], cls_key: list[str]) -> pd.DataFrame:
    """Per class key: acquisitions, wait and hold time median and p99 (ns; NaN if none)."""
    keys, code = np.unique(np.asarray(cls_key, object), return_inverse=True)
    group = code.ravel()[hist["cls"]] if len(hist["cls"]) else np.zeros(0, np.int64)
    kind, b, n = hist["kind"], hist["bucket"], hist["n"]
    wait = kind == 0
    cols = {"count": np.bincount(group[wait], weights=n[wait], minlength=len(keys))}
    for k, what in ((0, "wait"), (1, "hold")):
        rows = kind == k
        for q in (0.5, 0.99):
            cols[f"{what}_p{round(q * 100)}"] = _quantiles(
                group[rows], b[rows], n[rows], q, len(keys)
            )
    seen = np.unique(group)
    out = pd.DataFrame({c: v[seen] for c, v in cols.items()}, index=keys[seen])
    out["count"] = out["count"].astype(np.int64)
    out.index.name = "lock_class"
    return out
