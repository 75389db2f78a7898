"""The version of lktrace, and how every file it writes says which lktrace wrote it.

``__version__`` here is the one place the version is set: ``pyproject.toml``
reads it (``[tool.setuptools.dynamic]``) and ``lktrace --version`` prints it.
Traces (``lktrace.trace``), reports and any other file lktrace writes put
:func:`writer` under :data:`WRITER_KEY`, so a bug report can name the
lktrace that recorded, recovered or analysed a run.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The metadata key naming the lktrace that wrote a file.
WRITER_KEY = "lktrace:writer"


def writer() -> str:
    """What ``lktrace --version`` prints and every written file records: ``lktrace 0.1.0``."""
    return f"lktrace {__version__}"


def writer_metadata() -> dict[str, str]:
    """``{WRITER_KEY: writer()}``, for key-value metadata (Parquet, Arrow, JSON)."""
    return {WRITER_KEY: writer()}
