"""Creating files as root in a user's directory safely: no symlink followed, nothing
overwritten without ``force``, the result owned by the user who ran sudo, and nothing
half-written left at the final path.

A file is written under a private name in a directory only root can enter, then linked
(or, with ``force``, renamed) into place.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from lktrace.collector.errors import CollectorError


def invoking_owner() -> tuple[int, int] | None:
    """(uid, gid) of the user behind sudo, when running as root under sudo."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() != 0 or not uid or not uid.isdigit():
        return None
    return int(uid), int(gid) if gid and gid.isdigit() else int(uid)


def check_target(path: Path, force: bool) -> None:
    """Refuse a symlink, a directory, or an existing file without ``force``."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        parent = path.parent
        if not parent.is_dir():
            raise CollectorError(f"{path}: directory {parent} does not exist") from None
        return
    if stat.S_ISLNK(st.st_mode):
        raise CollectorError(f"{path}: is a symbolic link; refusing to follow it")
    if stat.S_ISDIR(st.st_mode):
        raise CollectorError(f"{path}: is a directory")
    if not force:
        raise CollectorError(f"{path}: already exists (use --force to overwrite)")


def private_dir(near: Path, name: str | None = None) -> Path:
    """A new 0700 directory next to ``near`` (same file system), named ``name`` if given."""
    try:
        if name is None:
            return Path(tempfile.mkdtemp(prefix=f".{near.name}.", dir=near.parent))
        d = near.parent / name
        d.mkdir(mode=0o700)
        return d
    except OSError as e:
        where = near.parent if name is None else near.parent / name
        raise CollectorError(f"cannot write to {where}: {e.strerror}") from e


def remove_dir(path: Path) -> None:
    """Remove a directory this process made (never through a symlink)."""
    if path.is_symlink():
        raise CollectorError(f"{path}: is a symbolic link; not removing it")
    shutil.rmtree(path)


def open_private(workdir: Path, name: str = "output.tmp") -> tuple[BinaryIO, Path]:
    """A new file in ``workdir`` (a directory only root can enter), never through a link."""
    tmp = workdir / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb"), tmp


def place(f: BinaryIO, tmp: Path, path: Path, force: bool, owner: tuple[int, int] | None) -> None:
    """Close a file from :func:`open_private` durably and put it at ``path``."""
    with f:
        f.flush()
        os.fsync(f.fileno())
        if owner:
            os.fchown(f.fileno(), *owner)
    check_target(path, force)
    try:
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if anything appeared at path meanwhile
            tmp.unlink()
    except OSError as e:
        raise CollectorError(f"{path}: cannot create it: {e.strerror}") from e


def create_into(
    path: Path,
    workdir: Path,
    write: Callable[[BinaryIO], None],
    force: bool,
    owner: tuple[int, int] | None,
) -> None:
    """Write a file with ``write`` inside ``workdir``, then put it at ``path``."""
    f, tmp = open_private(workdir)
    try:
        write(f)
    except BaseException:
        f.close()
        raise
    place(f, tmp, path, force, owner)
