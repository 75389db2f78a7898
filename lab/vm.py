"""Booting a lab kernel under QEMU (TCG) with two SR-IOV PFs and a 9p share.

QEMU is trixie's, run chrooted in the lab's trixie root (lab/build.py) with
the lab cache bound at its own path inside it.  The host prepares the share
(job, guest scripts, the checkout's lktrace), boots the guest with the root
disk in snapshot mode (runs never change the image), and waits for it to
power off or reboot, which ends QEMU (``-no-reboot``).  The console goes to
``console.log`` in the share.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from lab.build import CACHE, LAB, QEMU_SUITE, REPO, Lab, chroot_mounts
from lab.shell import LabError, log, run

#: The machine the issue's facts were established on: /dev/kvm is unusable here.
MACHINE = ["-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35", "-smp", "2", "-m", "4G"]
#: QEMU's NVMe controller (1b36:0010) as an SR-IOV PF with two VFs, behind its own
#: PCIe root port so that removing the port removes the PF and its VFs.
SRIOV_NVME = [
    "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-device", "nvme-subsys,id=subsys0,nqn=lktrace-lab",
    "-device", "nvme,id=nvme0,serial=lab0,subsys=subsys0,bus=rp1,sriov_max_vfs=2,"
    "sriov_vq_flexible=4,sriov_vi_flexible=2,max_ioqpairs=6,msix_qsize=4",
    "-device", "nvme-ns,drive=nvm,nsid=1",
]  # fmt: skip
#: QEMU's Intel 82576 (8086:10c9, 7 VFs) behind a root port of its own: the PF that
#: every kernel drives with its in-tree igb, so that traces compare across kernels.
SRIOV_IGB = ["-device", "pcie-root-port,id=rp2,chassis=2,slot=2", "-device", "igb,bus=rp2"]
#: Seconds a guest may take per scenario besides its timeout (recorder start under TCG).
STARTUP_ALLOWANCE = 300
CMDLINE = "console=ttyS0 root=/dev/vda rw panic=1 loglevel=4"


def _nvme_backing() -> Path:
    disk = CACHE / "nvme-ns.img"
    if not disk.exists():
        with disk.open("wb") as f:
            f.truncate(64 << 20)
    return disk


def stage_lktrace(site: Path) -> None:
    """Put the checkout's lktrace, as a built wheel unpacked, where the guest imports it."""
    with tempfile.TemporaryDirectory() as tmp:
        run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp, REPO],
            retries=2,
        )
        (wheel,) = Path(tmp).glob("lktrace-*.whl")
        zipfile.ZipFile(wheel).extractall(site)


def prepare_share(share: Path, job: dict) -> None:
    """A fresh share with the job, the guest scripts and lktrace."""
    shutil.rmtree(share, ignore_errors=True)
    shutil.copytree(LAB / "guest", share, ignore=shutil.ignore_patterns("*-init", "__pycache__"))
    (share / "out").mkdir()
    (share / "job.json").write_text(json.dumps(job))
    if job.get("record", True) and job["kind"] != "smoke":
        stage_lktrace(share / "site")


def boot(lab: Lab, share: Path, timeout: float) -> float:
    """Boot ``lab``'s kernel with ``share`` and wait for the guest to end; returns seconds."""
    console = share / "console.log"
    qemu_root = CACHE / f"qemu-{QEMU_SUITE}"
    cmd = [
        "chroot", qemu_root, "qemu-system-x86_64", *MACHINE,
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", lab.vmlinuz, "-initrd", lab.initramfs, "-append", CMDLINE,
        "-drive", f"file={lab.image},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={_nvme_backing()},if=none,id=nvm,format=raw,snapshot=on",
        "-virtfs", f"local,path={share},mount_tag=share,security_model=none,id=share",
        *SRIOV_NVME, *SRIOV_IGB,
    ]  # fmt: skip
    log(f"boot {lab.kernel.abi} (console: {console})")
    start = time.monotonic()
    with console.open("wb") as out, chroot_mounts(qemu_root, binds=(CACHE,)):
        qemu = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            qemu.wait(timeout)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
            raise LabError(f"guest still running after {timeout:.0f} s: see {console}") from None
    took = time.monotonic() - start
    if qemu.returncode != 0:
        raise LabError(f"qemu exited with {qemu.returncode}: see {console}")
    log(f"guest ended after {took:.1f} s")
    return took


def run_job(lab: Lab, name: str, job: dict, timeout: float = 900) -> tuple[Path, dict]:
    """Run ``job`` in a fresh guest; returns the share's out directory and result.json."""
    share = lab.dir / "runs" / name
    prepare_share(share, job)
    took = boot(lab, share, timeout)
    result_file = share / "out" / "result.json"
    if not result_file.exists():
        raise LabError(f"the guest wrote no result: see {share / 'console.log'}")
    result = json.loads(result_file.read_text())
    result["vm_seconds"] = round(took, 1)
    result_file.write_text(json.dumps(result, indent=1))
    return share / "out", result
