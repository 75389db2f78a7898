"""lktrace: record kernel lock acquisitions with eBPF, find lock-order inversions offline."""

from lktrace.version import __version__

__all__ = ["__version__"]
