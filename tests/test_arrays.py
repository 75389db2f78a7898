"""The array helpers give what numpy's slower equivalents give."""

from __future__ import annotations

import numpy as np
import pytest

from lktrace.replay.arrays import group_rows, sort_rows, sorted_codes, stable_argsort


def _columns(rng: np.random.Generator, n: int, kinds: str) -> list[np.ndarray]:
    make = {
        "s": lambda: rng.integers(-3, 4, n),  # few values, negative too: many ties
        "b": lambda: rng.integers(0, 2, n) * 2**62,  # two values 62 bits apart
        "w": lambda: rng.integers(-(2**62), 2**62, n),  # the full width: ranked first
        "t": lambda: rng.integers(0, 10**12, n),  # nanosecond timestamps
        # both extremes: a range wider than int64
        "x": lambda: rng.choice(np.array([-(2**63), 2**63 - 1]), n),
    }
    return [make[k]() for k in kinds]


@pytest.mark.parametrize("kinds", ["s", "w", "ss", "st", "bs", "wt", "sbw", "tst", "wwt", "xs"])
def test_sort_rows_is_lexsort(kinds: str) -> None:
    rng = np.random.default_rng(len(kinds) * 7 + ord(kinds[0]))
    for n in (0, 1, 2, 17, 1000, 30_000):
        cols = _columns(rng, n, kinds)
        assert np.array_equal(sort_rows(*cols), np.lexsort(cols[::-1])), (kinds, n)


def test_sort_rows_keeps_ties_in_place() -> None:
    key = np.array([3, 1, 3, 1, 2, 3, 1])
    assert sort_rows(key).tolist() == [1, 3, 6, 4, 0, 2, 5]


def test_group_rows() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 5, 500), rng.integers(0, 2**40, 500) % 7
    codes, first = group_rows(a, b)
    rows = list(zip(a.tolist(), b.tolist(), strict=True))
    seen: dict[tuple[int, int], int] = {}
    expect = [seen.setdefault(r, len(seen)) for r in rows]
    assert codes.tolist() == expect
    assert [rows[i] for i in first] == list(seen)


@pytest.mark.parametrize("bits", [3, 16, 17, 33, 62])
def test_stable_argsort_is_numpy_stable_sort(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for n in (0, 1, 1000, 50_000):
        key = rng.integers(0, 1 << bits, n)
        key[: n // 3] = key[n // 3 : 2 * (n // 3)]  # ties, kept in place
        got = stable_argsort(key, 1 << bits)
        assert np.array_equal(got, np.argsort(key, kind="stable")), (bits, n)


@pytest.mark.parametrize("top", [50, 10**12])  # keys dense in their range, and sparse
def test_sorted_codes_is_numpy_unique(top: int) -> None:
    rng = np.random.default_rng(top % 97)
    for n in (0, 1, 5000):
        key = rng.integers(0, top, n)
        got = sorted_codes(key)
        want = np.unique(key, return_inverse=True)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), (top, n)
