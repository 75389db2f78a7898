"""Wait and hold time histograms: log-linear buckets, so quantiles merge across traces.

A duration below 32 ns is its own bucket; above, each power of two is cut
into 32 buckets, so a bucket's middle is within 1.6 % of every value in it.
Histograms of slices, traces and runs add up; quantiles are read off them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lktrace.replay.arrays import reduce_counts
from lktrace.replay.holds import Holds

_SUB = 5  # 2**5 buckets per power of two: values within 1.6 %


def bucket(ns: np.ndarray) -> np.ndarray:
    """Log-linear histogram bucket of non-negative durations (exact below 32 ns)."""
    v = np.maximum(ns, 0).astype(np.int64)
    big = v >= 1 << _SUB
    e = np.zeros(len(v), np.int64)
    e[big] = np.floor(np.log2(v[big])).astype(np.int64)
    # log2 may round up just below a power of two
    over = big & ((v >> np.maximum(e, 0)) == 0)
    e[over] -= 1
    shift = np.maximum(e - _SUB, 0)
    mant = (v >> shift) - (1 << _SUB)
    return np.where(big, (1 << _SUB) + (e - _SUB) * (1 << _SUB) + mant, v)


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
    cls = np.r_[wait_cls, hold_cls].astype(np.int64)
    kind = np.r_[np.zeros(len(wait), np.int64), np.ones(len(hold), np.int64)]
    frag = {"cls": cls, "kind": kind, "bucket": bucket(np.r_[wait, hold]), "n": np.ones(len(cls))}
    return reduce_counts(frag, ("cls", "kind", "bucket"))


def hold_histograms(h: Holds, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Time histograms of the holds in ``mask``: waits of all, hold times of the released."""
    done = mask & h.released
    return time_histograms(
        h.cls[mask],
        h.acquired_ts[mask] - h.attempt_ts[mask],
        h.cls[done],
        h.released_ts[done] - h.acquired_ts[done],
    )


def _quantile(buckets: np.ndarray, n: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile ``q`` of a histogram, as pandas computes it on values."""
    order = np.argsort(buckets)
    b, c = buckets[order], np.cumsum(n[order])
    rank = q * (c[-1] - 1)
    lo, hi = int(np.floor(rank)), int(np.ceil(rank))
    x = bucket_value(b[np.searchsorted(c, [lo, hi], side="right")])
    return float(x[0] + (x[1] - x[0]) * (rank - lo))


def class_times(hist: dict[str, np.ndarray], cls_key: list[str]) -> pd.DataFrame:
    """Per class key: acquisitions, wait and hold time median and p99 (ns; NaN if none)."""
    key = np.asarray(cls_key, object)[hist["cls"]] if len(hist["cls"]) else np.zeros(0, object)
    df = pd.DataFrame({"k": key, "kind": hist["kind"], "b": hist["bucket"], "n": hist["n"]})
    rows = {}
    for k, g in df.groupby("k", sort=True):
        row = {"count": int(g["n"][g["kind"] == 0].sum())}
        for kind, what in ((0, "wait"), (1, "hold")):
            part = g[g["kind"] == kind]
            for q in (0.5, 0.99):
                row[f"{what}_p{round(q * 100)}"] = (
                    _quantile(part["b"].to_numpy(), part["n"].to_numpy(), q)
                    if len(part)
                    else np.nan
                )
        rows[k] = row
    cols = ["count", "wait_p50", "wait_p99", "hold_p50", "hold_p99"]
    out = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    out.index.name = "lock_class"
    return out
