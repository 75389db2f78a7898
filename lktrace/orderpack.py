"""How summary format v2 stores an Order's table columns: relative where that is exact,
null for "none", and the Parquet encoding that suits each column.

Every transform here is undone exactly by :func:`unpack`, whatever the values
(the round trip is tested), and only changes what the file holds:

- a reference that is ``-1`` (none) is stored as null;
- ``orderings.other_ts`` is stored as its offset from ``ts`` when there is
  another task, and null when there is none (the Order holds 0 then);
- ``gates.n`` is stored as its difference from the ordering's ``count`` (a
  gate is kept only when held at every occurrence: 0 in every summary
  lktrace writes);
- ``ordering_tasks.task`` is stored as its difference from the previous
  record's task of the same ordering (records are sorted by ordering, task:
  a small positive step).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.replay.order import TABLES

#: Columns whose value refers to a record, -1 meaning none: stored as null for none.
#: ``ordering_tasks.task`` always names a task, and is stored relative (see above).
NULLABLE = {
    (t, c)
    for t, cols in TABLES.items()
    for c, ref in cols.items()
    if ref is not None and (t, c) != ("ordering_tasks", "task")
}

#: Per-column Parquet encodings (the others are dictionary-encoded): sorted or
#: offset-like integers, and the vocabulary strings, which share little.
ENCODINGS = {
    **dict.fromkeys(("ts", "other_ts", "ordering", "bucket", "n"), "DELTA_BINARY_PACKED"),
    "text": "DELTA_LENGTH_BYTE_ARRAY",
}


def _run_starts(group: np.ndarray) -> np.ndarray:
    """Whether each row starts a run of equal ``group`` values."""
    return np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, bool)


def pack(name: str, cols: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, pa.Array]:
    """The columns of table ``name`` as the file stores them; ``counts`` are the
    orderings' counts (for ``gates``)."""
    out = {c: np.asarray(v, np.int64) for c, v in cols.items()}
    null = {c: v < 0 for c, v in out.items() if (name, c) in NULLABLE}
    if name == "orderings":
        other = out["other_task"] >= 0
        out["other_ts"] = out["other_ts"] - np.where(other, out["ts"], 0)
        null["other_ts"] = ~other & (out["other_ts"] == 0)
    elif name == "gates":
        out["n"] = out["n"] - counts[out["ordering"]]
    elif name == "ordering_tasks":
        task = out["task"]
        step = np.r_[0, task[:-1]] if len(task) else task
        out["task"] = task - np.where(_run_starts(out["ordering"]), 0, step)
    return {c: pa.array(v, pa.int64(), mask=null.get(c)) for c, v in out.items()}


def unpack(
    name: str, cols: dict[str, pa.ChunkedArray], counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Table ``name``'s columns as :func:`pack` stored them, back as the Order holds them."""
    out = {
        c: pc.fill_null(v, -1 if (name, c) in NULLABLE else 0).to_numpy().astype(np.int64)
        for c, v in cols.items()
    }
    if name == "orderings":
        out["other_ts"] += np.where(out["other_task"] >= 0, out["ts"], 0)
    elif name == "gates":
        out["n"] += counts[out["ordering"]]
    elif name == "ordering_tasks" and len(out["task"]):
        total = np.cumsum(out["task"])
        start = np.flatnonzero(_run_starts(out["ordering"]))
        before = total[start] - out["task"][start]
        out["task"] = total - np.repeat(before, np.diff(np.r_[start, len(total)]))
    return out
