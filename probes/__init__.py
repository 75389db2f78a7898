"""BPF C sources and the kernel functions they attach to (``lktrace.probes``)."""
