"""Kernel-path simulator: realistic traces without a kernel, for tests, the demo and benchmarks."""
