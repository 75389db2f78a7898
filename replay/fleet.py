"""Many traces at once: each one's Order computed apart (here, in worker processes or on
Dask), then merged in the order given.

The per-trace part, :func:`order_of`, reads a trace slice by slice (or loads
its summary) and returns its :class:`~lktrace.replay.order.Order`: what
travels back from a worker is a summary, never events.  Merging the Orders
in input order makes the result the same, byte for byte, however and
wherever they were computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lktrace.orderfile import filters_dict, is_summary, read_summary
from lktrace.replay.order import Order, merge
from lktrace.replay.orderstate import OrderState
from lktrace.replay.reduce import summarize_trace
from lktrace.replay.state import Filters
from lktrace.trace import TraceError


def order_of(path: str, filters: Filters, progress: Callable[[int], None] | None = None) -> Order:
    """The Order of one trace file, or of the summary file ``path`` names."""
    if is_summary(path):
        order, made = read_summary(path)
        want = filters_dict(filters)
        if made != want:
            raise TraceError(
                path,
                f"summary made with filters {made}, asked for {want}: "
                "filter the trace itself, or summarise it with these filters",
            )
        return order
    return summarize_trace(path, filters, progress)


def orders(
    paths: Sequence[Path],
    filters: Filters,
    workers: int = 1,
    dask: str | None = None,
    progress: Callable[[int], None] | None = None,
    done: Callable[[Path], None] | None = None,
) -> list[Order]:
    """The Order of each of ``paths``, in order.

    ``workers`` > 1 computes them in that many local processes; ``dask`` is
    the address of a Dask scheduler, or ``local`` for a LocalCluster of
    ``workers`` processes.  ``progress`` gets rows read (in this process),
    ``done`` each finished file.
    """
    names = [str(p) for p in paths]
    if dask:
        return _on_dask(names, filters, dask, workers, done)
    if workers <= 1 or len(names) <= 1:
        out = []
        for p in names:
            out.append(order_of(p, filters, progress))
            if done:
                done(Path(p))
        return out
    with ProcessPoolExecutor(min(workers, len(names))) as pool:
        return _collect(names, [pool.submit(order_of, p, filters) for p in names], done)


def _collect(names: list[str], futures: list, done: Callable[[Path], None] | None) -> list[Order]:
    """The futures' results in input order, telling ``done`` as each file is in."""
    out = []
    for p, f in zip(names, futures, strict=True):
        out.append(f.result())
        if done:
            done(Path(p))
    return out


def _on_dask(
    names: list[str],
    filters: Filters,
    address: str,
    workers: int,
    done: Callable[[Path], None] | None,
) -> list[Order]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        raise TraceError(
            address, "--dask needs dask.distributed: pip install 'lktrace[dask]'"
        ) from e
    cluster = None
    if address == "local":
        cluster = LocalCluster(
            n_workers=max(workers, 1), threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout=30)
        except OSError as e:
            raise TraceError(address, f"cannot reach the Dask scheduler: {e}") from e
    try:
        return _collect(names, client.map(order_of, names, filters=filters, pure=False), done)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def order_state(paths: Sequence[Path], opts: Filters, **how: Any) -> OrderState:
    """The replay state of ``paths`` (traces or summaries, mixed), merged; ``how`` as
    :func:`orders` takes it."""
    return OrderState(merge(orders(paths, opts, **how)), opts)


def default_workers(n_files: int) -> int:
    """Worker processes unless told: one per CPU, no more than files."""
    return max(1, min(os.cpu_count() or 1, n_files))
