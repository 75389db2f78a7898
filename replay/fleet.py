"""Many traces at once: each one's Order computed apart (here, in worker processes or on
Dask), then merged in the order given.

The per-trace part, :func:`order_of`, reads a trace slice by slice (or loads
its summary) and returns its :class:`~lktrace.replay.order.Order`: what
travels back from a worker is a summary, never events.  Merging the Orders
in input order makes the result the same, byte for byte, however and
wherever they were computed.  A worker's task is a few consecutive files,
whose Orders it merges before sending them back, and the client merges what
comes back a batch at a time, as it comes in: so the client neither holds
every run's Order (each run's vocabularies of call sites and stacks, the same
in most runs, are kept once per batch) nor merges each run itself.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
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
) -> Iterator[Order]:
    """The Orders of ``paths``, in order, each as soon as it is in: one per file, or with
    several workers one per task (consecutive files, merged).

    ``workers`` > 1 computes them in that many local processes; ``dask`` is
    the address of a Dask scheduler, or ``local`` for a LocalCluster of
    ``workers`` processes.  ``progress`` gets rows read (in this process),
    ``done`` each finished file.
    """
    names = [str(p) for p in paths]
    if dask:
        yield from _on_dask(names, filters, dask, workers, done)
    elif workers <= 1 or len(names) <= 1:
        for p in names:
            yield order_of(p, filters, progress)
            if done:
                done(Path(p))
    else:
        tasks = split_tasks(names, workers)
        with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
            yield from _collect(tasks, [pool.submit(task_order, t, filters) for t in tasks], done)


#: Files per worker task, at most (fewer when that leaves a worker under four tasks).
TASK_FILES = 16


def split_tasks(names: list[str], workers: int) -> list[list[str]]:
    """``names`` cut into runs of consecutive files, one per task."""
    size = max(1, min(TASK_FILES, len(names) // (4 * max(workers, 1))))
    return [names[i : i + size] for i in range(0, len(names), size)]


def task_order(names: list[str], filters: Filters) -> Order:
    """A worker's task: the merged Order of consecutive files."""
    return merge([order_of(p, filters) for p in names])


def _collect(
    tasks: list[list[str]], futures: list, done: Callable[[Path], None] | None
) -> Iterator[Order]:
    """The futures' results in task order, telling ``done`` as each file is in; a future
    is let go once its result is taken."""
    pending = deque(futures)
    del futures[:]
    for names in tasks:
        yield pending.popleft().result()
        for p in names if done else ():
            done(Path(p))


#: Orders merged together in the client as they come in.
BATCH = 32


def merged(found: Iterable[Order]) -> Order:
    """:func:`~lktrace.replay.order.merge` of ``found``, a batch at a time (the same Order)."""
    it = iter(found)
    parts = []
    while batch := list(islice(it, BATCH)):
        parts.append(merge(batch))
    return merge(parts)


def _on_dask(
    names: list[str],
    filters: Filters,
    address: str,
    workers: int,
    done: Callable[[Path], None] | None,
) -> Iterator[Order]:
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
        tasks = split_tasks(names, sum(client.nthreads().values()) or workers)
        futures = client.map(task_order, tasks, filters=filters, pure=False)
        yield from _collect(tasks, futures, done)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def order_state(paths: Sequence[Path], opts: Filters, **how: Any) -> OrderState:
    """The replay state of ``paths`` (traces or summaries, mixed), merged; ``how`` as
    :func:`orders` takes it."""
    return OrderState(merged(orders(paths, opts, **how)), opts)


def default_workers(n_files: int) -> int:
    """Worker processes unless told: one per CPU, no more than files."""
    return max(1, min(os.cpu_count() or 1, n_files))
