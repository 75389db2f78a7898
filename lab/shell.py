"""Running the host commands the lab is built from: logging, retries, timing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

LAB = Path(__file__).resolve().parent
#: Everything the lab builds, downloads and records (git-ignored).
CACHE = LAB / "cache"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


class LabError(Exception):
    """A lab step that failed; ``str()`` says which and why, in one line."""


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str | Path],
    *,
    retries: int = 1,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd``; on failure retry (network steps), then raise :class:`LabError`."""
    args = [str(c) for c in cmd]
    full_env = {**os.environ, **(env or {})}
    for attempt in range(1, retries + 1):
        proc = subprocess.run(args, env=full_env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
        if proc.returncode == 0:
            return proc
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        why = " | ".join(tail)
        log(f"{args[0]} failed (exit {proc.returncode}, try {attempt}/{retries}): {why}")
        if attempt < retries:
            time.sleep(5 * attempt)
    raise LabError(f"command failed: {' '.join(args)}")


def apt(*args: str) -> None:
    """``apt-get`` with the retries a flaky mirror needs."""
    run(["apt-get", "-q", "-o", "Acquire::Retries=3", *args], retries=3, env=APT_ENV)


def apt_update_if_empty() -> None:
    """Fetch the package lists once on a fresh machine (``apt-cache`` needs them)."""
    if not any(Path("/var/lib/apt/lists").glob("*_Packages*")):
        apt("update")


@contextmanager
def timed(what: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Log how long ``what`` took, and keep the figure in ``timings``."""
    start = time.monotonic()
    log(f"{what} ...")
    yield
    took = time.monotonic() - start
    if timings is not None:
        timings[what] = round(took, 1)
    log(f"{what}: {took:.1f} s")


def cached(stamp: Path, key: str, build: Callable[[], None]) -> bool:
    """Run ``build`` unless ``stamp`` holds ``key``; returns whether it ran.

    The stamp is written only after ``build`` succeeds, so an interrupted
    step is redone on the next run.
    """
    if stamp.exists() and stamp.read_text() == key:
        return False
    stamp.unlink(missing_ok=True)
    build()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    return True
