"""The lab's build logic that needs no root or network: module closure, stamps, kernel names."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.build import module_closure
from lab.kernels import Kernel, RescanLocking, resolve
from lab.scenarios import SCENARIOS
from lab.shell import LabError, cached


def _modules(tmp_path: Path, dep: str, builtin: str = "") -> Path:
    (tmp_path / "modules.dep").write_text(dep)
    (tmp_path / "modules.builtin").write_text(builtin)
    return tmp_path


def test_module_closure_puts_dependencies_first_once(tmp_path: Path) -> None:
    d = _modules(
        tmp_path,
        "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/jbd2/jbd2.ko.xz\n"
        "kernel/fs/jbd2/jbd2.ko.xz: kernel/lib/crc16.ko.xz\n"
        "kernel/lib/crc16.ko.xz:\n"
        "kernel/drivers/block/virtio_blk.ko.xz:\n",
    )
    got = [p.relative_to(d).as_posix() for p in module_closure(d, ["ext4", "virtio_blk"])]
    assert got == [
        "kernel/lib/crc16.ko.xz",
        "kernel/fs/jbd2/jbd2.ko.xz",
        "kernel/fs/ext4/ext4.ko.xz",
        "kernel/drivers/block/virtio_blk.ko.xz",
    ]


def test_module_closure_skips_builtin_and_rejects_unknown(tmp_path: Path) -> None:
    d = _modules(tmp_path, "kernel/fs/ext4/ext4.ko:\n", "kernel/drivers/virtio/virtio_pci.ko\n")
    assert [p.name for p in module_closure(d, ["virtio_pci", "ext4"])] == ["ext4.ko"]
    with pytest.raises(LabError, match="nvme"):
        module_closure(d, ["nvme"])
    assert module_closure(d, ["crc32c_generic"], optional=frozenset({"crc32c_generic"})) == []


def test_cached_step_runs_once_per_key_and_again_after_a_failure(tmp_path: Path) -> None:
    stamp, runs = tmp_path / "s.stamp", []
    assert cached(stamp, "k1", lambda: runs.append(1))
    assert not cached(stamp, "k1", lambda: runs.append(2))
    assert cached(stamp, "k2", lambda: runs.append(3))

    def fail() -> None:
        raise LabError("boom")

    with pytest.raises(LabError):
        cached(stamp, "k3", fail)
    assert not stamp.exists()
    assert runs == [1, 3]


def test_full_abi_names_resolve_without_apt() -> None:
    assert resolve("6.1.0-56-amd64") == Kernel("6.1.0-56-amd64")
    assert resolve("6.12.117+deb12-amd64").headers_package == "linux-headers-6.12.117+deb12-amd64"
    with pytest.raises(ValueError, match="unknown kernel"):
        resolve("5.10.0-30-amd64")


def test_later_kernels_resolve_by_abi_and_know_their_packages() -> None:
    assert resolve("6.18.15+deb13-amd64").packages == ["linux-image-6.18.15+deb13-amd64"]
    assert Kernel("7.2.13+deb14-amd64").packages == [
        "linux-binary-7.2.13+deb14-amd64",
        "linux-modules-7.2.13+deb14-amd64",
    ]
    assert Kernel("6.1.0-56-amd64").bookworm and not Kernel("6.16.12+deb13-amd64").bookworm


@pytest.mark.parametrize(
    ("abi", "locking"),
    [
        ("6.1.0-40-amd64", RescanLocking.NONE),
        ("6.1.0-56-amd64", RescanLocking.NUMVFS_STORE),
        ("6.12.117+deb12-amd64", RescanLocking.NUMVFS_STORE),
        ("6.16.12+deb13-amd64", RescanLocking.NONE),
        ("6.17.13+deb13-amd64", RescanLocking.SRIOV_ENABLE_DISABLE),
        ("6.18.15+deb13-amd64", RescanLocking.SRIOV_ENABLE_DISABLE),
        ("7.2.13+deb14-amd64", RescanLocking.NUMVFS_STORE),
    ],
)
def test_rescan_locking_follows_the_upstream_history(abi: str, locking: RescanLocking) -> None:
    assert Kernel(abi).rescan_locking is locking


def test_igb_scenarios_run_everywhere_lkpf_ones_on_bookworm_kernels() -> None:
    later, bookworm = Kernel("6.18.15+deb13-amd64"), Kernel("6.12.117+deb12-amd64")
    assert SCENARIOS["igb-walk"].runs_on(later) and SCENARIOS["igb-walk"].runs_on(bookworm)
    assert not SCENARIOS["numvfs-cycle"].runs_on(later)
    assert SCENARIOS["igb-pf-remove-vfs-on"].hangs(later)
    assert not SCENARIOS["igb-pf-remove-vfs-on"].hangs(bookworm)
    assert SCENARIOS["rootport-remove-vs-numvfs"].hangs(bookworm)


class _FakeVM:
    """Boots that run the job's scenarios in order until one hangs, as the guest does;
    ``hangs[name]`` says, per run of that scenario, whether it hangs."""

    def __init__(self, tmp: Path, hangs: dict[str, list[bool]]) -> None:
        self.tmp, self.hangs, self.boots = tmp, hangs, []

    def run_job(self, lab, first: str, job: dict, timeout: float):
        names = [n for n, _ in job["scenarios"]]
        self.boots.append(names)
        results = {}
        for name in names:
            hung = self.hangs[name].pop(0)
            blocked = [{"comm": "pf-remove"}] if hung else []
            results[name] = {"rc": None if hung else 0, "timed_out": hung, "blocked": blocked}
            if hung:
                break
        return self.tmp, {"kernel": "k", "vm_seconds": 1.0, "scenarios": results}


ALL = ["igb-walk", "igb-unbind-vs-remove", "igb-pf-remove-vfs-on"]
RACE = ["igb-unbind-vs-remove"]


@pytest.mark.parametrize(
    ("race", "boots", "runs"),
    [
        ([True], [ALL, ["igb-pf-remove-vfs-on"]], 1),  # hangs: the PF remove boots again
        ([False, True], [ALL, RACE], 2),  # the PF remove hung in the same boot
        ([False] * 3, [ALL, RACE, RACE], 3),  # three runs, then the failure stands
    ],
)
def test_a_race_that_should_hang_gets_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, race: list[bool], boots: list, runs: int
) -> None:
    import argparse
    import json

    import lab.__main__ as cli

    fake = _FakeVM(tmp_path, {ALL[0]: [False], ALL[1]: list(race), ALL[2]: [True]})
    monkeypatch.setattr(cli.vm, "run_job", fake.run_job)
    monkeypatch.setattr(cli.build, "build", lambda kernel: type("Lab", (), {"kernel": kernel}))
    args = argparse.Namespace(timeout=None, no_record=False, record_arg=[])
    cli.run_kernel("6.18.15+deb13-amd64", ALL, args, tmp_path / "out")
    assert fake.boots == boots
    result = json.loads((tmp_path / "out" / "igb-unbind-vs-remove.json").read_text())
    assert result["run"] == runs and result["timed_out"] == race[-1]
