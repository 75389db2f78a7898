"""``lktrace --version`` and the version every file lktrace writes records."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from lktrace import __version__
from lktrace.trace import read_meta
from lktrace.version import WRITER_KEY, writer

REPO = Path(__file__).resolve().parent.parent


def lktrace(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lktrace", *args], capture_output=True, text=True, cwd=cwd
    )


def test_version_has_one_source():
    done = lktrace("--version")
    assert done.returncode == 0 and done.stdout == f"lktrace {__version__}\n" == writer() + "\n"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and not re.search('^version = "', pyproject, re.M)
    assert version("lktrace") == __version__  # what pip installed, from lktrace/version.py


def test_every_file_lktrace_writes_names_its_writer(tmp_path):
    stamp = lktrace("--version").stdout.strip()
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    for scenario, path in (("stock-deadlock", old), ("patched", new)):
        assert lktrace("simulate", scenario, "-o", str(path)).returncode == 0
        assert read_meta(path).extra["writer"] == stamp
    info = lktrace("info", str(old)).stdout
    assert re.search(rf"^writer +{re.escape(stamp)} *$", info, re.MULTILINE), info

    analysed = lktrace("analyze", "--format", "json", str(old))
    result = json.loads(analysed.stdout)
    assert result["writer"] == stamp and result["trace"]["writer"] == stamp
    assert (
        json.loads(lktrace("diff", "--format", "json", str(old), str(new)).stdout)["writer"]
        == stamp
    )
    assert f'comment="written by {stamp}"' in lktrace("analyze", "--format", "dot", str(old)).stdout

    report = tmp_path / "report.html"
    assert lktrace("report", str(old), "-o", str(report)).returncode == 0
    diff_html = lktrace("diff", "--format", "html", str(old), str(new)).stdout
    for page in (report.read_text(), diff_html):
        assert f'<meta name="generator" content="{stamp}">' in page
        assert f"<th>report</th><td>written by {stamp}</td>" in page
        assert f"old.parquet</code>, written by {stamp}</td>" in page

    perfetto = tmp_path / "t.json"
    assert lktrace("export", str(old), "--perfetto", "-o", str(perfetto)).returncode == 0
    assert json.loads(perfetto.read_text())["otherData"][WRITER_KEY] == stamp
