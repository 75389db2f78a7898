"""Building a lab kernel's artefacts on the host, each step cached under ``lab/cache/``.

For one Debian kernel: the kernel package unpacked, a busybox initramfs that
loads the modules needed to mount the root disk, a bookworm root file system
(BCC, the kernel's headers and modules, lktrace's dependencies in a venv, the
``lkpf`` PF driver built against the headers) and its ext4 image.  Every step
writes a stamp holding the key of its inputs and is skipped when the key
matches, so a second build of the same kernel only checks stamps.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from lab import archive, kernels
from lab.kernels import Kernel
from lab.shell import (
    APT_ENV,
    CACHE,
    LAB,
    LabError,
    apt,
    apt_update_if_empty,
    cached,
    log,
    run,
    timed,
)

REPO = LAB.parent
SUITE = "bookworm"
QEMU_SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
SOURCES = f"""\
deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""

#: Host tools, by the command that shows they are there and the package with it
#: (QEMU is trixie's, in a root of its own: see qemu_root()).
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "cpio": "cpio",
    "mkfs.ext4": "e2fsprogs",
    "depmod": "kmod",
    "xz": "xz-utils",
}
#: What the guest needs besides the kernel's headers (python3-venv for the lktrace venv).
GUEST_PACKAGES = [
    "python3",
    "python3-venv",
    "python3-bpfcc",
    "bpfcc-tools",
    "kmod",
    "pciutils",
    "procps",
    "make",
]
#: Modules the initramfs loads to mount the root disk (the rest load from it).
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"]
#: Loaded where the kernel has them: ext4 asked the crypto API for crc32c (no
#: modules.dep link) until it called the crc32c library directly (v6.15; 6.18
#: has crc32c-cryptoapi, and nothing needs it).
INITRAMFS_OPTIONAL = frozenset({"crc32c_generic"})
#: Bump when base_rootfs() changes how it builds, so cached bases are rebuilt.
BASE_RECIPE = 2
VENV = "/opt/lktrace"
GUEST_PYTHON = "3.11"


@dataclass
class Lab:
    """The built artefacts of one kernel, and the figures of building them."""

    kernel: Kernel
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return CACHE / self.kernel.abi

    @property
    def vmlinuz(self) -> Path:
        """/boot/vmlinuz-V, or /usr/lib/modules/V/vmlinuz in 7.x's linux-binary-V."""
        boot = self.dir / "kernel" / "boot" / f"vmlinuz-{self.kernel.abi}"
        return (
            boot if boot.exists() else self.dir / "kernel/lib/modules" / self.kernel.abi / "vmlinuz"
        )

    @property
    def initramfs(self) -> Path:
        return self.dir / "initramfs.cpio.gz"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def image(self) -> Path:
        return self.dir / "rootfs.img"


def _digest(*paths: Path) -> str:
    """A short hash of files' contents, so editing a lab source rebuilds what uses it."""
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.relative_to(LAB).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def remove_tree(path: Path) -> None:
    """``rm -rf`` a chroot, refusing while anything is mounted in it (a bind of /dev)."""
    prefix = f"{path.resolve()}/"
    mounts = [m.split()[1] for m in Path("/proc/mounts").read_text().splitlines()]
    busy = [m for m in mounts if m.startswith(prefix)]
    if busy:
        raise LabError(f"{busy[0]} is still mounted: umount it before rebuilding {path}")
    shutil.rmtree(path, ignore_errors=True)


def ensure_host_tools() -> None:
    """Install the host packages the lab uses, when a command is missing."""
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})
    if missing:
        log(f"installing host packages: {' '.join(missing)}")
        apt_update_if_empty()
        apt("install", "-y", "--no-install-recommends", *missing)


def project_dependencies() -> list[str]:
    """lktrace's runtime requirements, from pyproject.toml."""
    with (REPO / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def wheels(timings: dict[str, float]) -> tuple[Path, str]:
    """Download lktrace's dependencies as wheels for the guest's Python (it has no index)."""
    out = CACHE / "wheels"
    deps = project_dependencies()
    key = f"py{GUEST_PYTHON} {' '.join(deps)}"

    def build() -> None:
        shutil.rmtree(out, ignore_errors=True)
        with timed("wheels: pip download", timings):
            run(
                [
                    sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                    "--python-version", GUEST_PYTHON, "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux2014_x86_64", "-d", out, *deps,
                ],
                retries=3,
            )  # fmt: skip

    cached(CACHE / "wheels.stamp", key, build)
    return out, key


@contextmanager
def chroot_mounts(root: Path, binds: tuple[Path, ...] = ()) -> Iterator[None]:
    """/proc, /sys, /dev and ``binds`` (same paths) inside ``root``, unmounted however we leave."""
    mounted: list[Path] = []
    dirs = [("/proc", "proc"), ("/sys", "sysfs"), ("/dev", None)]
    try:
        for src, fstype in dirs + [(str(b), None) for b in binds]:
            target = root / src.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", src, target] if fstype is None else
                ["mount", "-t", fstype, fstype, target])  # fmt: skip
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def chroot(root: Path, *cmd: str) -> None:
    run(["chroot", root, *cmd], env=APT_ENV)


def chroot_apt(root: Path, *args: str) -> None:
    run(
        ["chroot", root, "apt-get", "-q", "-o", "Acquire::Retries=3", *args],
        retries=3,
        env=APT_ENV,
    )


def base_rootfs(timings: dict[str, float]) -> tuple[Path, str]:
    """debootstrap bookworm (minbase) with the guest packages: shared by every kernel."""
    root = CACHE / f"base-{SUITE}"
    key = f"v{BASE_RECIPE} {SUITE} {MIRROR} {' '.join(GUEST_PACKAGES)}"

    def build() -> None:
        remove_tree(root)
        with timed("rootfs: debootstrap", timings):
            run(["debootstrap", "--variant=minbase", SUITE, root, MIRROR], retries=3)
        (root / "etc/apt/sources.list").write_text(SOURCES)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        # bookworm's 6.12 headers depend on the 6.12 image package (6.1's do not), whose
        # postinst would build an initramfs the lab never boots: make that a no-op.
        chroot(root, "dpkg-divert", "--local", "--rename", "--add", "/usr/sbin/update-initramfs")
        (root / "usr/sbin/update-initramfs").symlink_to("/bin/true")
        with timed("rootfs: guest packages", timings), chroot_mounts(root):
            chroot_apt(root, "update")
            chroot_apt(root, "install", "-y", "--no-install-recommends", *GUEST_PACKAGES)

    cached(CACHE / f"base-{SUITE}.stamp", key, build)
    return root, key


def qemu_root(timings: dict[str, float]) -> Path:
    """trixie (minbase) with its QEMU 10, which the guests run under (chrooted in it).

    bookworm's QEMU 7.2 has no ``igb`` device (QEMU 8.0 added it), the SR-IOV PF
    the kernel matrix is compared on.
    """
    root = CACHE / f"qemu-{QEMU_SUITE}"
    key = f"{QEMU_SUITE} {MIRROR} qemu-system-x86"

    def build() -> None:
        remove_tree(root)
        with timed("qemu: debootstrap", timings):
            run(["debootstrap", "--variant=minbase", "--include=qemu-system-x86", QEMU_SUITE,
                 root, MIRROR], retries=3)  # fmt: skip

    cached(CACHE / f"qemu-{QEMU_SUITE}.stamp", key, build)
    return root


def kernel_package(lab: Lab) -> None:
    """Download and unpack the kernel's packages (lab/archive.py), and index its modules."""

    def build() -> None:
        dest = lab.dir / "kernel"
        shutil.rmtree(dest, ignore_errors=True)
        with (
            timed("kernel: download and unpack", lab.timings),
            tempfile.TemporaryDirectory() as tmp,
        ):
            for package in lab.kernel.packages:
                run(["dpkg-deb", "-x", archive.download(package, Path(tmp)), dest])
            # trixie's later kernels install their modules under /usr (merged /usr)
            usr_modules = dest / "usr/lib/modules"
            if usr_modules.is_dir():
                (dest / "lib").mkdir(exist_ok=True)
                usr_modules.rename(dest / "lib/modules")
            run(["depmod", "-b", dest, lab.kernel.abi])

    cached(lab.dir / "kernel.stamp", f"{lab.kernel.abi} {lab.kernel.packages}", build)


def module_closure(
    modules_dir: Path, names: list[str], optional: frozenset[str] = frozenset()
) -> list[Path]:
    """The module files ``names`` need, dependencies first; built-in ones (and absent
    ``optional`` ones) are skipped."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in deps}
    listed = modules_dir / "modules.builtin"
    if not listed.exists():  # 7.x packages ship only modules.builtin.bin: trust modules.dep
        optional = optional | {n for n in names if n not in by_name}
    builtin = {
        Path(p).name.split(".ko")[0].replace("-", "_")
        for p in (listed.read_text().split() if listed.exists() else [])
    }
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in names:
        if name in by_name:
            visit(by_name[name])
        elif name not in builtin and name not in optional:
            raise LabError(f"module {name} is neither built in nor in {modules_dir}")
    return [modules_dir / p for p in order]


def initramfs(lab: Lab) -> None:
    """A busybox initramfs that loads the root disk's modules and switches to it."""
    init = LAB / "guest" / "initramfs-init"
    key = f"{lab.kernel.abi} {INITRAMFS_MODULES} {_digest(init)}"

    def build() -> None:
        with timed("initramfs", lab.timings), tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "bin").mkdir()
            shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
            shutil.copy(init, root / "init")
            (root / "init").chmod(0o755)
            mods = root / "modules"
            mods.mkdir()
            moddir = lab.dir / "kernel/lib/modules" / lab.kernel.abi
            load = []
            for i, ko in enumerate(module_closure(moddir, INITRAMFS_MODULES, INITRAMFS_OPTIONAL)):
                out = mods / f"{i:02d}-{ko.name.removesuffix('.xz')}"
                if ko.name.endswith(".xz"):
                    out.write_bytes(subprocess.run(["xz", "-dc", ko], capture_output=True,
                                                   check=True).stdout)  # fmt: skip
                else:
                    shutil.copy(ko, out)
                load.append(out.name)
            log(f"initramfs modules: {' '.join(load)}")
            files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
            cpio = subprocess.run(
                ["cpio", "-o", "-H", "newc", "--quiet"],
                cwd=root, input=files, capture_output=True, check=True,
            ).stdout  # fmt: skip
            lab.initramfs.write_bytes(
                subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True).stdout
            )

    cached(lab.dir / "initramfs.stamp", key, build)


def rootfs(lab: Lab, base: Path, base_key: str, wheel_dir: Path, wheel_key: str) -> str:
    """The kernel's root file system: base + headers, modules, lkpf, the lktrace venv."""
    headers = headers_package(lab.kernel)
    key = f"{lab.kernel.abi} {headers} | {base_key} | {wheel_key} | {_digest(LAB / 'module')}"

    def build() -> None:
        root = lab.rootfs
        remove_tree(root)
        with timed("rootfs: copy base", lab.timings):
            run(["cp", "-a", base, root])
        abi = lab.kernel.abi
        with chroot_mounts(root):
            with timed("rootfs: kernel headers", lab.timings):
                chroot_apt(root, "update")
                chroot_apt(root, "install", "-y", "--no-install-recommends", headers)
            (root / f"lib/modules/{abi}").mkdir(parents=True, exist_ok=True)
            run(["cp", "-a", f"{lab.dir}/kernel/lib/modules/{abi}/.", f"{root}/lib/modules/{abi}/"])
            chroot(root, "depmod", abi)
            # lkpf needs the kernel's own headers: only bookworm's kernels have them here.
            if lab.kernel.bookworm:
                with timed("rootfs: build lkpf", lab.timings):
                    shutil.copytree(LAB / "module", root / "lab/module")
                    chroot(root, "make", "-s", "-C", f"/lib/modules/{abi}/build",
                           "M=/lab/module", "modules")  # fmt: skip
            with timed("rootfs: lktrace venv", lab.timings):
                shutil.copytree(wheel_dir, root / "tmp/wheels")
                chroot(root, "python3", "-m", "venv", "--system-site-packages", VENV)
                chroot(root, f"{VENV}/bin/pip", "install", "--quiet", "--no-index",
                       "--find-links", "/tmp/wheels", *project_dependencies())  # fmt: skip
                shutil.rmtree(root / "tmp/wheels")
            chroot_apt(root, "clean")
        # The checkout's lktrace reaches the guest as /share/site at each run.
        site = root / f"opt/lktrace/lib/python{GUEST_PYTHON}/site-packages"
        (site / "lktrace-share.pth").write_text("/share/site\n")
        wrapper = root / "usr/local/bin/lktrace"
        wrapper.write_text(f'#!/bin/sh\nexec {VENV}/bin/python -m lktrace "$@"\n')
        wrapper.chmod(0o755)
        (root / "share").mkdir(exist_ok=True)

    cached(lab.dir / "rootfs.stamp", key, build)
    return key


def headers_package(kernel: Kernel) -> str:
    """The headers BCC compiles with in the guest: the kernel's own, where bookworm has them.

    The archive has no headers for most of trixie's kernels, and later ones need
    trixie's toolchain; lktrace takes struct offsets from BTF, so bookworm's newest
    6.12 headers do for the generic definitions.
    """
    return kernel.headers_package if kernel.bookworm else kernels.resolve("6.12").headers_package


def image(lab: Lab, rootfs_key: str) -> None:
    """The ext4 disk image of the root file system (``mkfs.ext4 -d``: no loop device).

    The guest's PID 1 goes in here, so that editing it costs an image, not a rootfs.
    """
    init = LAB / "guest" / "rootfs-init"

    def build() -> None:
        (lab.rootfs / "lab").mkdir(exist_ok=True)
        shutil.copy(init, lab.rootfs / "lab/init")
        (lab.rootfs / "lab/init").chmod(0o755)
        with timed("rootfs image", lab.timings):
            used = int(subprocess.run(["du", "-sm", lab.rootfs], capture_output=True, text=True,
                                      check=True).stdout.split()[0])  # fmt: skip
            size = max(2048, used * 5 // 4 + 512)
            lab.image.unlink(missing_ok=True)
            run(["mkfs.ext4", "-q", "-F", "-L", "lkroot", "-d", lab.rootfs, lab.image, f"{size}M"])

    cached(lab.dir / "image.stamp", f"{rootfs_key} | {_digest(init)}", build)


@contextmanager
def build_lock() -> Iterator[None]:
    """One builder at a time on the cache (CI builds ahead while other tests run)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build(kernel: Kernel) -> Lab:
    """Build (or find cached) everything needed to boot ``kernel`` in the lab."""
    lab = Lab(kernel)
    lab.dir.mkdir(parents=True, exist_ok=True)
    with build_lock(), timed(f"build {kernel.abi}", lab.timings):
        ensure_host_tools()
        wheel_dir, wheel_key = wheels(lab.timings)
        base, base_key = base_rootfs(lab.timings)
        qemu_root(lab.timings)
        kernel_package(lab)
        initramfs(lab)
        image(lab, rootfs(lab, base, base_key, wheel_dir, wheel_key))
    return lab
