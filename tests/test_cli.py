"""The command line checks its own options: choices and bounds, shown in --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer
from conftest import locked, unlocked
from typer.testing import CliRunner

from lktrace.cli import app


def lktrace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lktrace", *args], capture_output=True, text=True, timeout=120
    )


def ab_ba() -> list:
    rows = locked(1, "A") + locked(1, "B") + unlocked(1, "B") + unlocked(1, "A")
    return rows + locked(2, "B") + locked(2, "A") + unlocked(2, "A") + unlocked(2, "B")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["analyze", "T", "--level", "bogus"], "'bogus' is not one of 'class', 'instance', 'both'"),
        (["analyze", "T", "-f", "xml"], "'xml' is not one of 'text', 'json', 'dot'"),
        (["analyze", "T", "--max-cycles", "0"], "--max-cycles"),
        (["analyze", "T", "--max-depth", "0"], "--max-depth"),
        (["analyze", "T", "--since", "-1"], "--since"),
        (["report", "T", "-o", "x.html", "--level", "all"], "'all' is not one of"),
        (["diff", "T", "T", "-f", "dot"], "'dot' is not one of 'text', 'json', 'html'"),
        (["diff", "T", "T", "--max-listed", "-1"], "--max-listed"),
        (["record", "--scope", "most"], "'most' is not one of 'pci', 'all'"),
        (["record", "--backend", "uprobe"], "'uprobe' is not one of 'auto', 'fentry'"),
        (["record", "--buffer-mb", "8192"], "--buffer-mb"),
        (["record", "--duration", "0"], "--duration"),
        (["analyze", "T", "--bogus"], "No such option: --bogus"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(make_trace, args, says):
    path = str(make_trace(ab_ba()))
    proc = lktrace(*[path if a == "T" else a for a in args])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("lktrace: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert says in proc.stderr
    assert not proc.stdout


def test_help_shows_choices_and_bounds():
    runner = CliRunner(env={"COLUMNS": "200"})
    text = runner.invoke(app, ["analyze", "--help"]).output
    assert "text|json|dot" in text and "class|instance|both" in text and "x>=1" in text
    text = runner.invoke(app, ["record", "--help"]).output
    assert "pci|all" in text and "auto|fentry|kprobe|tracepoint" in text and "1<=x<=4096" in text


def test_same_option_has_the_same_default_everywhere():
    group = typer.main.get_command(app)
    defaults: dict[str, set] = {}
    for name, command in group.commands.items():
        for p in command.params:
            if p.param_type_name == "option" and name != "demo":
                defaults.setdefault(p.name, set()).add(str(getattr(p.default, "value", p.default)))
    # what is written differs by command: a trace, a page, an export
    shared = {k: v for k, v in defaults.items() if len(v) > 1 and k != "output"}
    assert not shared, shared
    assert defaults["max_cycles"] == {"200"} and defaults["level"] == {"both"}


def test_diff_takes_analyze_filters(make_trace):
    old, new = str(make_trace(ab_ba(), "old.parquet")), str(make_trace(ab_ba(), "new.parquet"))
    runner = CliRunner()
    both = json.loads(runner.invoke(app, ["diff", "-f", "json", old, new]).output)
    assert both["summary"]["inversions_remaining"] == 1
    one = json.loads(runner.invoke(app, ["diff", "-f", "json", "--tid", "1", old, new]).output)
    assert one["summary"]["inversions_remaining"] == 0 and one["verdict"] == "same"
    other = json.loads(runner.invoke(app, ["diff", "-f", "json", "--class", "Z", old, new]).output)
    assert not any(other["summary"].values())


def test_export_and_report_take_the_filters(make_trace, tmp_path):
    path = str(make_trace(ab_ba()))
    runner = CliRunner()
    out = tmp_path / "t.json"
    assert (
        runner.invoke(app, ["export", "--perfetto", "--tid", "1", path, "-o", str(out)]).exit_code
        == 0
    )
    tids = {e.get("tid") for e in json.loads(out.read_text())["traceEvents"] if e.get("ph") == "X"}
    assert tids == {1}
    page = tmp_path / "r.html"
    done = runner.invoke(app, ["report", path, "-o", str(page), "--comm", "task1"])
    assert done.exit_code == 0 and "0 inversion(s)" in done.output
