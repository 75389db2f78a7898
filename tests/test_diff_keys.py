"""lktrace diff at scale: integer keys both sides share, listings made as read, JSON streamed."""

from __future__ import annotations

import io
import json
from enum import IntEnum
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from lktrace.jsontext import dumps
from lktrace.replay.analyze import Options, analysis
from lktrace.replay.diff import compare, side_pair, sides
from lktrace.replay.fleet import order_state
from lktrace.replay.histogram import bucket_value, class_times
from lktrace.replay.keys import Vocab, member, rows_in, unpack
from lktrace.replay.side import Side
from lktrace.sim import simulate
from lktrace.trace import read_trace

LAB = Path(__file__).parent / "data" / "lab"
#: The same workload recorded on successive kernels.
KERNEL_PAIRS = [
    (LAB / a / f"{w}.parquet", LAB / b / f"{w}.parquet")
    for w, kernels in (
        (
            "igb-walk",
            (
                "6.1.0-57-amd64",
                "6.12.117+deb12-amd64",
                "6.16.12+deb13-amd64",
                "6.18.15+deb13-amd64",
                "7.2.13+deb14-amd64",
            ),
        ),
        ("rootport-remove-then-numvfs", ("6.1.0-56-amd64", "6.12.117+deb12-amd64")),
    )
    for a, b in pairwise(kernels)
]


@pytest.fixture(scope="module")
def scale_pair(tmp_path_factory) -> tuple[Path, Path]:
    """Two scale runs of one shape, seeded apart: thousands of orderings in one only."""
    d = tmp_path_factory.mktemp("scale")
    return tuple(
        simulate("scale", d / f"s{seed}.parquet", seed=seed, events=40_000, inversions=2)
        for seed in (1, 2)
    )


def keyed(paths: tuple[Path, Path], opts: Options | None = None) -> tuple[Side, Side]:
    """Both sides of a diff from their lock-order states, as ``lktrace diff`` makes them."""
    opts = opts or Options()
    return side_pair(lambda p: order_state([p], opts), paths, opts)


class Small(IntEnum):
    ONE = 1


VALUES = [
    {},
    [],
    (),
    "",
    'é \u2028 \n \t \x00 "quoted" \\',
    0,
    -7,
    10**30,
    1.5,
    float("nan"),
    float("inf"),
    True,
    False,
    None,
    Small.ONE,
    {"a": {}, "b": [], "c": [[]], "d": [{}]},
    {1: "int key", None: "none key", 2.5: "float key"},
    ["a", "b", "a"],
    ("a", ("b", "c"), ["d"]),
    [1, "x", None, True, 2.0, {"k": ["v", 1]}],
    {"nested": {"deeper": {"list": ["s", 1, [2, [3, {}]]]}}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_writes_what_json_dumps_writes(value):
    for doc in (value, {"k": value}, [value, value], {"a": [{"b": value}]}):
        assert dumps(doc) == json.dumps(doc, indent=2)
        assert dumps(doc, "    ") == json.dumps(doc, indent=2).replace("\n", "\n    ")


def test_dumps_on_real_documents():
    opts = Options()
    for old, new in KERNEL_PAIRS[:2]:
        doc = analysis(order_state([old], opts), opts).to_dict()
        assert dumps(doc) == json.dumps(doc, indent=2)
        doc = compare(*keyed((old, new))).to_dict()
        assert dumps(doc) == json.dumps(doc, indent=2)


@pytest.mark.parametrize("pair", KERNEL_PAIRS, ids=lambda p: f"{p[0].parent.name}/{p[0].stem}")
def test_streamed_json_is_the_document(pair):
    d = compare(*keyed(pair))
    out = io.StringIO()
    d.write_json(out, writer="w")
    assert out.getvalue() == json.dumps({"writer": "w", **d.to_dict()}, indent=2) + "\n"


def test_streamed_json_with_thousands_of_changes(scale_pair):
    d = compare(*keyed(scale_pair))
    assert len(d.edges_added) > 1000 and len(d.edges_removed) > 1000
    out = io.StringIO()
    d.write_json(out)
    assert out.getvalue() == json.dumps(d.to_dict(), indent=2) + "\n"


def test_listings_read_as_sequences(scale_pair):
    d = compare(*keyed(scale_pair))
    listed = d.edges_added
    whole = list(listed)  # a chunk at a time
    assert len(whole) == len(listed) > 4096
    assert [listed[i] for i in (0, 1, -1, 4096)] == [whole[0], whole[1], whole[-1], whole[4096]]
    assert list(listed[10:20]) == whole[10:20] and list(listed[::-500]) == whole[::-500]
    with pytest.raises(IndexError):
        listed[len(listed)]
    assert not d.not_exercised and list(d.not_exercised) == []


def test_listings_are_the_set_differences(scale_pair):
    """What compare finds with arrays, found again with Python sets of the decoded keys."""
    a, b = keyed(scale_pair)
    d = compare(a, b)

    def decoded(side: Side) -> tuple[set, set, set, set]:
        locks, paths = side.vocabs.locks.values, side.vocabs.paths.values
        every, listed, edges, taken = set(), set(), set(), set()
        for level, o in side.orderings.items():
            src, dst = unpack(o.edge)
            for s, t, p, on in zip(src, dst, o.path, o.listed, strict=True):
                key = (level, locks[s], locks[t], paths[p])
                every.add(key)
                edges.add(key[:3])
                if on:
                    listed.add(key)
            lock, path = unpack(side.taken[level])
            taken |= {(level, locks[k], paths[p]) for k, p in zip(lock, path, strict=True)}
        return every, listed, edges, taken

    old, new = decoded(a), decoded(b)
    for changes, mine, other in (
        ([*d.edges_added, *d.paths_added, *d.new_coverage], new, old),
        ([*d.edges_removed, *d.paths_removed, *d.not_exercised], old, new),
    ):
        want = mine[1] - other[0]
        got = [(c.level, c.src, c.dst, c.path) for c in changes]
        assert sorted(got) == sorted(want) and len(got) == len(want) > 1000
        for c in changes:
            assert c.edge_in_both == ((c.level, c.src, c.dst) in other[2])
            assert c.exercised == ((c.level, c.src, c.path) in other[3])
    for section in (d.edges_added, d.paths_removed):
        keys = [(c.level, c.src, c.dst, c.path) for c in section]
        assert keys == sorted(keys)


def test_summaries_and_traces_give_the_same_diff(scale_pair):
    opts = Options()
    positional = compare(*sides(*([read_trace(p)] for p in scale_pair), opts))
    assert compare(*keyed(scale_pair, opts)).to_dict() == positional.to_dict()


def test_class_filter_keeps_orderings_on_the_class(scale_pair):
    every = compare(*keyed(scale_pair))
    cls = every.edges_added[0].witness.dst_class
    d = compare(*keyed(scale_pair, Options(classes={cls})))
    want = [c for c in every.edges_added if cls in (c.witness.src_class, c.witness.dst_class)]
    assert [c.to_dict() for c in d.edges_added] == [c.to_dict() for c in want] != []


def test_sides_let_their_states_go_and_share_their_keys(scale_pair):
    a, b = keyed(scale_pair)
    assert a.state is None and b.state is None and a.vocabs is b.vocabs
    kept = sides(*([read_trace(p)] for p in scale_pair), keep_states=True)
    assert all(s.state is not None for s in kept)
    opts = Options()
    apart = [Side(order_state([p], opts), opts) for p in scale_pair]
    with pytest.raises(ValueError, match="share"):
        compare(*apart)


def test_membership_and_ranks_match_python():
    rng = np.random.default_rng(7)
    among = np.unique(rng.integers(0, 5000, 3000))
    values = rng.integers(-10, 5010, 4000)
    assert member(values, among).tolist() == [v in set(among.tolist()) for v in values.tolist()]
    assert not member(values, among[:0]).any()
    major, minor = rng.integers(0, 50, 2000), rng.integers(0, 40, 2000)
    order = np.lexsort((minor, major))
    rows = rng.integers(0, 55, 1000), rng.integers(0, 45, 1000)
    pairs = set(zip(major.tolist(), minor.tolist(), strict=True))
    got = rows_in(rows, (major[order], minor[order]))
    want = [(x, y) in pairs for x, y in zip(*(r.tolist() for r in rows), strict=True)]
    assert got.tolist() == want
    vocab = Vocab()
    assert vocab.codes(["pear", "apple", "fig", "apple"]).tolist() == [0, 1, 2, 1]
    assert vocab.code("fig") == 2 and vocab.code("kiwi") == -1
    vocab = Vocab()  # call paths rank as tuples sort
    vocab.codes([("b", "a"), ("a", "z"), ("a",), ("a", "b", "c")])
    ranks = vocab.ranks()
    assert sorted(vocab.values, key=lambda v: ranks[vocab.code(v)]) == sorted(vocab.values)


def test_class_times_are_quantiles_of_the_histograms(scale_pair):
    opts = Options()
    state = order_state([scale_pair[0]], opts)
    hist = state.timing()
    keys = [c.split("@")[0] for c in state.events.classes]  # several classes share a key
    got = class_times(hist, keys)
    assert list(got.index) == sorted(set(np.asarray(keys)[hist["cls"]].tolist()))
    for key, row in got.iterrows():
        mine = np.asarray(keys)[hist["cls"]] == key
        assert row["count"] == hist["n"][mine & (hist["kind"] == 0)].sum()
        for kind, what in ((0, "wait"), (1, "hold")):
            at = mine & (hist["kind"] == kind)
            values = np.repeat(bucket_value(hist["bucket"][at]), hist["n"][at])
            for q in (0.5, 0.99):
                want = np.quantile(values, q) if len(values) else np.nan
                assert row[f"{what}_p{round(q * 100)}"] == pytest.approx(want, nan_ok=True)
