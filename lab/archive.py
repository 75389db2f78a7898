"""Debian's kernel packages through the lab's own apt configuration.

The kernels of the lab come from bookworm (6.1, and 6.12 from trixie), trixie,
trixie-backports and sid.  Their package lists live in ``lab/cache/apt/``, and
every ``apt-get``/``apt-cache`` call here points at them with ``-o`` options, so
the host's own sources and lists are never read or changed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.shell import APT_ENV, CACHE, LabError, run

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITES = (
    (MIRROR, "bookworm"),
    (MIRROR, "bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    (MIRROR, "trixie"),
    (MIRROR, "trixie-backports"),
    (MIRROR, "sid"),
)
APT_DIR = CACHE / "apt"


def options() -> list[str]:
    """``-o`` options that make apt use only the lab's sources, lists and cache."""
    return [
        "-o", f"Dir::Etc::sourcelist={APT_DIR / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=/nonexistent",
        "-o", f"Dir::State::Lists={APT_DIR / 'lists'}",
        "-o", f"Dir::Cache={APT_DIR / 'cache'}",
        "-o", "Dir::State::status=/dev/null",
        "-o", "APT::Architecture=amd64",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Retries=3",
    ]  # fmt: skip


def update_if_empty() -> None:
    """Write the lab's sources and fetch their package lists, once."""
    lists = APT_DIR / "lists"
    if any(lists.glob("*_Packages*")):
        return
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (APT_DIR / "cache/archives/partial").mkdir(parents=True, exist_ok=True)
    (APT_DIR / "sources.list").write_text(
        "".join(f"deb [signed-by={KEYRING}] {url} {suite} main\n" for url, suite in SUITES)
    )
    run(["apt-get", "-q", *options(), "update"], retries=3, env=APT_ENV)


def package_names(prefix: str) -> list[str]:
    """Names of the (real, not virtual) packages that start with ``prefix``."""
    update_if_empty()
    out = subprocess.run(
        ["apt-cache", *options(), "pkgnames", prefix], capture_output=True, text=True, check=True
    ).stdout
    return out.split()


def has(package: str) -> bool:
    """Whether the archive has ``package`` itself (not only a name that others depend on)."""
    out = subprocess.run(
        ["apt-cache", *options(), "show", "--no-all-versions", package],
        capture_output=True,
        text=True,
    ).stdout
    return out.startswith("Package:")


def download(package: str, dest: Path) -> Path:
    """Download ``package``'s .deb into ``dest``; returns its path."""
    update_if_empty()
    if not has(package):
        raise LabError(f"{package} is not in the archive ({', '.join(s for _, s in SUITES)})")
    before = set(dest.glob("*.deb"))
    run(["apt-get", "-q", *options(), "download", package], cwd=dest, retries=3, env=APT_ENV)
    (deb,) = set(dest.glob("*.deb")) - before
    return deb
