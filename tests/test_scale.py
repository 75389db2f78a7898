"""The slice-by-slice replay, lock-order summaries and the fleet give the positional replay's
findings: on the lab's real traces, on simulated ones, merged, and split across workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_same_order
from typer.testing import CliRunner

from lktrace.cli import app
from lktrace.orderfile import read_summary, write_summary
from lktrace.replay.analyze import Options, analysis
from lktrace.replay.diff import compare, side_pair, sides
from lktrace.replay.fleet import merged, order_state, split_tasks
from lktrace.replay.order import merge
from lktrace.replay.orderstate import OrderState
from lktrace.replay.reduce import summarize_trace
from lktrace.replay.state import replay
from lktrace.sim import simulate
from lktrace.trace import read_trace
from lktrace.version import writer

LAB = sorted(Path(__file__).parent.joinpath("data", "lab").glob("*/*.parquet"))
SCENARIOS = ("stock-deadlock", "stock-sequential", "stock-selfdeadlock", "patched")


@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> dict[str, Path]:
    """The kernel scenarios, and a scale trace cut into many small, jumbled row groups."""
    d = tmp_path_factory.mktemp("sims")
    out = {s: simulate(s, d / f"{s}.parquet", seed=3) for s in SCENARIOS}
    whole = simulate("scale", d / "scale-whole.parquet", seed=5, events=60_000, inversions=2)
    table = pq.read_table(whole)
    # rows a little out of time order, as per-CPU buffers give them
    rng = np.random.default_rng(0)
    order = np.argsort(np.arange(table.num_rows) + rng.integers(0, 40, table.num_rows))
    pq.write_table(
        table.take(order).replace_schema_metadata(pq.ParquetFile(whole).metadata.metadata),
        d / "scale.parquet",
        row_group_size=4096,
    )
    out["scale"] = d / "scale.parquet"
    return out


def positional(paths, opts: Options) -> dict:
    return analysis(replay([read_trace(p) for p in paths], opts), opts).to_dict()


def from_orders(paths, opts: Options) -> dict:
    return analysis(
        OrderState(merge([summarize_trace(p, opts) for p in paths]), opts), opts
    ).to_dict()


@pytest.mark.parametrize("path", LAB, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_real_traces_same_findings(path):
    opts = Options()
    assert from_orders([path], opts) == positional([path], opts)


@pytest.mark.parametrize("name", [*SCENARIOS, "scale"])
def test_simulated_same_findings(sims, name):
    for opts in (Options(), Options(level="instance", max_depth=1)):
        assert from_orders([sims[name]], opts) == positional([sims[name]], opts)


def test_slices_carry_open_holds(sims):
    """A trace read in 15 slices replays as it does whole: same edges, counts, witnesses."""
    opts = Options()
    assert pq.ParquetFile(sims["scale"]).metadata.num_row_groups >= 15
    found = from_orders([sims["scale"]], opts)
    assert found["summary"]["edges"] > 1000 and len(found["inversions"]) == 2


def test_merged_traces_same_findings(sims):
    paths = [sims["stock-sequential"], sims["stock-selfdeadlock"], *LAB[:2]]
    opts = Options()
    assert from_orders(paths, opts) == positional(paths, opts)


def test_filters_same_findings(sims):
    opts = Options(comms={"bash"}, since_s=0.0001)
    path = sims["stock-deadlock"]
    assert from_orders([path], opts) == positional([path], opts)


def test_summary_round_trip(sims, tmp_path):
    for name in (*SCENARIOS, "scale"):
        order = summarize_trace(sims[name])
        path = write_summary(tmp_path / f"{name}.order.parquet", order, {})
        assert pq.ParquetFile(path).metadata.metadata[b"lktrace:writer"] == writer().encode()
        again, _ = read_summary(path)
        opts = Options()
        want = analysis(OrderState(order, opts), opts).to_dict()
        assert analysis(OrderState(again, opts), opts).to_dict() == want


def test_merged_in_batches_is_one_merge(sims, monkeypatch):
    """The fleet merges Orders a batch at a time as they come in: the same Order."""
    monkeypatch.setattr("lktrace.replay.fleet.BATCH", 2)
    found = [summarize_trace(p) for p in [*(sims[s] for s in SCENARIOS), *LAB[:3]]]
    assert_same_order(merged(found), merge(found))
    assert merged(found[:1]) is found[0]


def test_diff_on_orders_matches_positional(sims):
    opts = Options()
    old, new = [sims["stock-sequential"], sims["stock-selfdeadlock"]], [sims["patched"]]
    a = compare(*sides([read_trace(p) for p in old], [read_trace(p) for p in new], opts))
    b = compare(*side_pair(lambda side: order_state(side, opts), (old, new), opts))
    assert b.to_dict() == a.to_dict() and b.verdict == "better"


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_cli_summaries_and_traces_mixed(sims, tmp_path):
    code, text = run_cli(
        "summarize", str(sims["stock-selfdeadlock"]), "-o", str(tmp_path / "s.order.parquet")
    )
    assert code == 0 and "orderings" in text
    for name in ("stock-sequential", "patched"):
        shutil.copy(sims[name], tmp_path / f"{name}.parquet")
    traces = [sims["stock-sequential"], sims["patched"], sims["stock-selfdeadlock"]]
    code_t, want = run_cli("analyze", "-f", "json", *map(str, traces))
    mixed = [
        tmp_path / "stock-sequential.parquet",
        tmp_path / "patched.parquet",
        tmp_path / "s.order.parquet",
    ]
    code_m, got = run_cli("analyze", "-f", "json", *map(str, mixed))
    assert code_t == code_m == 1
    a, b = json.loads(want), json.loads(got)
    for doc in (a, b):  # the copies live elsewhere: compare what was found, not where
        doc.pop("trace")
        for inv in doc["inversions"] + doc["guarded"]:
            for w in [*inv["edges"], *(x for ws in inv["paths"] for x in ws)]:
                w["file"] = Path(w["file"]).name
        for an in doc["anomalies"]:
            an["file"] = Path(an["file"]).name
    assert a == b
    code, text = run_cli(
        "diff", "-f", "json", str(tmp_path / "s.order.parquet"), str(sims["patched"])
    )
    assert code in (0, 1) and json.loads(text)["verdict"] in ("better", "same", "worse")


def test_cli_summary_refuses_other_filters(sims, tmp_path):
    out = tmp_path / "d.order.parquet"
    assert run_cli("summarize", str(sims["stock-deadlock"]), "-o", str(out))[0] == 0
    result = CliRunner().invoke(app, ["analyze", "--comm", "bash", str(out)])
    assert result.exit_code == 2 or isinstance(result.exception, Exception)


def fleet(tmp_path: Path, n: int) -> Path:
    """``n`` small runs, half of them taking a lock order the other half reverses."""
    d = tmp_path / "runs"
    d.mkdir()
    for i in range(n):
        simulate("stock-sequential" if i % 2 else "patched", d / f"run{i:03d}.parquet", seed=i)
    return d


def test_fleet_workers_same_json(tmp_path):
    runs = fleet(tmp_path, 16)
    assert {len(t) for t in split_tasks(sorted(map(str, runs.iterdir())), 2)} == {2}  # 2 a task
    one = run_cli("analyze", "-f", "json", "--workers", "1", str(runs))
    two = run_cli("analyze", "-f", "json", "--workers", "2", str(runs))
    assert one == two and one[0] == 1


def test_fleet_on_dask_local_cluster(tmp_path):
    pytest.importorskip("dask.distributed")
    runs = fleet(tmp_path, 16)  # tasks of 2 runs on 2 workers
    one = run_cli("analyze", "-f", "json", "--workers", "1", str(runs))
    dask = run_cli("analyze", "-f", "json", "--dask", "local", "--workers", "2", str(runs))
    assert dask == one
