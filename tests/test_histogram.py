"""Time histograms: log-linear buckets, and counts per (class, kind, bucket)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lktrace.replay.histogram import bucket, time_histograms


def _bucket(v: int) -> int:
    """The bucket by its definition: exact below 32 ns, then 32 per power of two."""
    if v < 32:
        return max(v, 0)
    e = v.bit_length() - 1
    return 32 + (e - 5) * 32 + (v >> (e - 5)) - 32


def test_bucket_is_log_linear() -> None:
    powers = [1 << k for k in range(63)]
    edges = [*range(-3, 300), *powers, *(p - 1 for p in powers), *(p + 1 for p in powers)]
    rng = np.random.default_rng(3)
    values = [*edges, *rng.integers(0, 1 << 62, 2000).tolist(), 2**63 - 1]
    assert bucket(np.array(values, np.int64)).tolist() == [_bucket(v) for v in values]


@pytest.mark.parametrize("classes", [5, 10**6])  # a small box of keys, and a sparse one
def test_time_histograms_count_every_duration(classes: int) -> None:
    rng = np.random.default_rng(classes)
    n = 5000
    wait_cls, hold_cls = rng.integers(0, classes, n), rng.integers(0, classes, n // 2)
    wait, hold = rng.integers(0, 5000, n), rng.integers(0, 10**9, n // 2)
    got = time_histograms(wait_cls, wait, hold_cls, hold)
    rows = zip(*(got[c].tolist() for c in ("cls", "kind", "bucket", "n")), strict=True)
    want = Counter()
    for kind, cls, ns in ((0, wait_cls, wait), (1, hold_cls, hold)):
        want.update(
            (c, kind, _bucket(v)) for c, v in zip(*(cls.tolist(), ns.tolist()), strict=True)
        )
    assert {(c, k, b): m for c, k, b, m in rows} == dict(want)
    assert len(got["n"]) == len(want) and all(v.dtype == np.int64 for v in got.values())
