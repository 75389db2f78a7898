"""lktrace: record kernel lock acquisitions with eBPF, find lock-order inversions offline."""

__version__ = "0.1.0"
