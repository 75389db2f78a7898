"""The wheel and sdist: they build, pass ``twine check``, and the wheel works on its own.

The wheel is installed into a fresh venv (its dependencies from the package
index, as a user gets them) and run from outside the checkout, so what it lacks
(the BPF C sources, the report's CSS/JS, the demo's real trace) shows up here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lktrace.version import writer

REPO = Path(__file__).resolve().parent.parent
#: What pip or build print when the package index cannot be reached.
OFFLINE = ("No matching distribution found", "Failed to establish", "Network is unreachable")
SHIPPED = (
    "lktrace/probes/common.c",
    "lktrace/probes/lockprobe.c",
    "lktrace/probes/contention.c",
    "lktrace/replay/report.css",
    "lktrace/replay/report.js",
    "lktrace/data/real-6.12-rootport-remove-vs-numvfs.parquet",
)


def run(*cmd: str | Path, cwd: Path, needs_index: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if needs_index and done.returncode and any(s in done.stdout + done.stderr for s in OFFLINE):
        pytest.skip(f"no package index to build or install from: {done.stderr.splitlines()[-1]}")
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build`` of the checkout (the sdist, then the wheel from it)."""
    pytest.importorskip("build", reason="'build' is not installed (dev extra)")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO, cwd=out, needs_index=True)
    return out


def test_wheel_and_sdist_pass_twine_check_and_carry_their_files(dist):
    pytest.importorskip("twine", reason="'twine' is not installed (dev extra)")
    (wheel,) = dist.glob("lktrace-*.whl")
    (sdist,) = dist.glob("lktrace-*.tar.gz")
    done = run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=dist)
    assert done.stdout.count("PASSED") == 2, done.stdout
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names, set(SHIPPED) - names
    assert "lktrace/cli.py" in names and "lktrace/collector/record.py" in names


def test_the_wheel_runs_from_a_fresh_venv(dist, tmp_path):
    (wheel,) = dist.glob("lktrace-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin/pip", "install", "--quiet", wheel, cwd=tmp_path, needs_index=True)
    lktrace = venv / "bin/lktrace"
    where = run(venv / "bin/python", "-c", "import lktrace; print(lktrace.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout  # not the checkout

    assert run(lktrace, "--version", cwd=tmp_path).stdout.strip() == writer()
    real = run(lktrace, "demo", "--real", cwd=tmp_path).stdout
    assert "DEADLOCK 1 (happened)" in real and "sriov_numvfs_store" in real

    trace = tmp_path / "hung.parquet"
    run(lktrace, "simulate", "stock-deadlock", "-o", trace, cwd=tmp_path)
    analysed = subprocess.run([lktrace, "analyze", trace], capture_output=True, text=True)
    assert analysed.returncode == 1, analysed.stderr  # it found the deadlock
    assert "INVERSION 1: device_lock -> pci_rescan_remove_lock seen once" in analysed.stdout

    report = tmp_path / "report.html"
    run(lktrace, "report", trace, "-o", report, cwd=tmp_path)
    html = report.read_text()
    for asset in ("report.css", "report.js"):  # inlined from the wheel's copies
        assert (REPO / "replay" / asset).read_text().strip() in html
    probes = "from lktrace.probes import program as p; print(p.source('lockprobe.c'), end='')"
    shipped = run(venv / "bin/python", "-c", probes, cwd=tmp_path).stdout
    assert shipped == (REPO / "probes/lockprobe.c").read_text()
