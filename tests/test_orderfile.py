"""Summary format v2: an Order goes through the file exactly, and other versions are refused."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_same_order

from lktrace import orderfile
from lktrace.orderfile import SUMMARY_KEY, read_summary, write_summary
from lktrace.replay.order import TABLES, Order
from lktrace.replay.reduce import summarize_trace
from lktrace.sim import simulate

LAB = sorted(Path(__file__).parent.joinpath("data", "lab").glob("*/*.parquet"))


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> dict[str, Order]:
    d = tmp_path_factory.mktemp("traces")
    out = {p.parent.name + "/" + p.stem: summarize_trace(p) for p in LAB[:3]}
    for name in ("stock-deadlock", "patched"):  # pending attempts, open holds, nesting
        out[name] = summarize_trace(simulate(name, d / f"{name}.parquet", seed=2))
    # ordering_tasks, gates and other-task witnesses in numbers
    big = simulate("scale", d / "scale.parquet", seed=4, events=100_000, tasks=16, locks=40)
    out["scale"] = summarize_trace(big)
    return out


@pytest.mark.parametrize("group", [orderfile.GROUP_ROWS, 1000])
def test_summaries_round_trip_exactly(orders, tmp_path, monkeypatch, group):
    """Also in row groups of 1,000 records: kinds spread over groups and share them."""
    monkeypatch.setattr(orderfile, "GROUP_ROWS", group)
    for order in orders.values():
        path = write_summary(tmp_path / "s.order.parquet", order, {"comms": ["x"]})
        again, filters = read_summary(path)
        assert filters == {"comms": ["x"]}
        assert_same_order(order, again)
    assert pq.ParquetFile(path).metadata.num_row_groups > (10 if group == 1000 else 0)  # scale's
    assert orders["scale"].size("ordering_tasks") > 5000
    assert (orders["scale"]["orderings"]["other_task"] >= 0).any()
    assert orders["stock-deadlock"].size("pending") and orders["patched"].size("nesting")


def test_values_no_summary_has_round_trip_too(orders, tmp_path):
    """The relative columns are exact for any values: unsorted, negative, inconsistent."""
    scale = orders["scale"]
    rng = np.random.default_rng(1)
    tables = {
        t: {
            c: rng.integers(-1 if ref else -(1 << 40), top, scale.size(t))
            for c, ref in cols.items()
            for top in [max(scale.size(ref), 1) if ref in TABLES else 1 << 40]
        }
        for t, cols in TABLES.items()
    }
    order = replace(scale, tables=tables)
    path = write_summary(tmp_path / "odd.order.parquet", order, {})
    assert_same_order(order, read_summary(path)[0])


def test_orders_pickle_exactly(orders):
    """As workers send them back: narrowed on the way, int64 again on arrival."""
    for order in orders.values():
        blob = pickle.dumps(order)
        assert_same_order(order, pickle.loads(blob))
    assert len(blob) < sum(v.nbytes for cols in order.tables.values() for v in cols.values()) / 2


def lktrace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lktrace", *args], capture_output=True, text=True)


@pytest.mark.parametrize("version", ["1", "3"])
def test_other_versions_refused_in_one_line(orders, tmp_path, version):
    path = write_summary(tmp_path / "s.order.parquet", orders["patched"], {})
    table = pq.read_table(path)
    kv = {**pq.ParquetFile(path).metadata.metadata, SUMMARY_KEY.encode(): version.encode()}
    pq.write_table(table.replace_schema_metadata(kv), path)
    proc = lktrace("analyze", str(path))
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr == (
        f"lktrace: {path}: summary format version '{version}' is not supported "
        "(this lktrace reads 2): summarize the trace again\n"
    )
