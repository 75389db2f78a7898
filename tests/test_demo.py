"""lktrace demo: the newcomer's first command works and says what it found."""

from __future__ import annotations

import subprocess
import sys

from lktrace.trace import read_trace


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lktrace", "demo", *args], capture_output=True, text=True
    )


def test_demo_finds_the_deadlock_and_its_inversion(tmp_path):
    kept = tmp_path / "demo.parquet"
    proc = demo("-o", str(kept))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "DEADLOCK 1 (happened)" in text
    assert "INVERSION 1: device_lock -> pci_rescan_remove_lock seen once" in text
    assert "cycle: pci_rescan_remove_lock -> device_lock -> pci_rescan_remove_lock" in text
    assert "Possible unsafe locking scenario" in text
    assert "remove_store" in text and "unbind_store" in text
    assert read_trace(kept).num_events > 0


def test_demo_other_scenario_and_bad_one():
    proc = demo("--scenario", "patched")
    assert proc.returncode == 0 and "REENTRANT" in proc.stdout
    bad = demo("--scenario", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("lktrace: unknown demo scenario")


def test_demo_real_shows_the_recorded_deadlock():
    proc = demo("--real")
    assert proc.returncode == 0, proc.stderr
    assert "6.12.117" in proc.stdout and "DEADLOCK 1 (happened)" in proc.stdout
    assert "sriov_numvfs_store" in proc.stdout and "remove_store" in proc.stdout
