"""lktrace's real-kernel lab: Debian kernels under QEMU with an SR-IOV device.

``python -m lab`` builds a kernel's guest (cached under lab/cache/) and runs
named scenarios in it under ``lktrace record``, copying the traces out.
"""
