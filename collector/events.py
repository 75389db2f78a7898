"""Decoding raw event records into trace format v1 batches.

The record (:mod:`lktrace.probes.record`, shared with the BPF programs) is drained as
bytes, viewed as a numpy structured array and turned into an Arrow table column by
column: call sites are resolved once per distinct stack, never per event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lktrace.probes.kallsyms import Kallsyms
from lktrace.probes.record import (
    API_FROM_STACK_BIT,
    KIND_DEVICE,
    KIND_WRAPPED,
    event_dtype,
)
from lktrace.probes.targets import (
    INFRA_PREFIXES,
    LOCK_INTERNAL_PREFIXES,
    RWSEM_APIS,
    STACK_APIS,
    WRAPPED_LOCK,
    WRAPPERS,
)
from lktrace.trace import EVENTS, SCHEMA, StackTable

DEVICE_CLASS = "device_lock"
WRAPPER_NAMES = frozenset(w.name for w in WRAPPERS)


StackLookup = Callable[[int], Sequence[int]]


class Decoder:
    """Turns raw event bytes into format v1 tables, interning stacks as it goes.

    ``apis`` names the ``api`` ids the BPF program emits; ``stack_lookup`` returns the
    addresses of a kernel stack id (``None`` when stacks are off: the event's own
    frames are used for the call site instead).
    """

    def __init__(
        self, syms: Kallsyms, apis: Sequence[str], stack_lookup: StackLookup | None
    ) -> None:
        self.syms = syms
        self.stack_lookup = stack_lookup
        self.dtype = event_dtype(stacks=stack_lookup is not None)
        self.stacks = StackTable()
        self.stack_errors = 0
        self._strings: dict[str, int] = {}
        self._string_list: list[str] = []
        self._api_ids = np.array([self._intern(a) for a in apis], dtype=np.int32)
        self._sites: dict[int, tuple[int, int, int, int, int]] = {}
        self._event_dict = pa.array(EVENTS)
        self._fixed = {
            KIND_DEVICE: self._intern(DEVICE_CLASS),
            KIND_WRAPPED: self._intern(WRAPPED_LOCK),
        }

    def _intern(self, text: str) -> int:
        idx = self._strings.get(text)
        if idx is None:
            idx = self._strings[text] = len(self._string_list)
            self._string_list.append(text)
        return idx

    def _site(self, key: int, frames: np.ndarray) -> tuple[int, int, int, int, int]:
        """(file stack id, caller, class, api or -1, wrapped) of one call site, cached:
        ``key`` >= 0 is a kernel stack id, else the site is ``frames``."""
        site = self._sites.get(key)
        if site is not None:
            return site
        from_map = key >= 0
        addrs = self.stack_lookup(key) if from_map else [a for a in frames.tolist() if a]
        names = _clean(self.syms.symbolize(addrs) if len(addrs) else [])
        funcs = [n.partition("+")[0] for n in names]
        top, below = None, 0
        while below < len(funcs) and funcs[below].startswith(LOCK_INTERNAL_PREFIXES):
            if funcs[below] in STACK_APIS:
                top = below  # the outermost lock API function seen
            below += 1
        if below < len(funcs) and funcs[below] in WRAPPER_NAMES:
            top, below = below, below + 1  # e.g. pci_lock_rescan_remove around mutex_lock
        api = self._intern(funcs[top]) if top is not None else -1
        wrapped = int(top is not None and funcs[top] in WRAPPER_NAMES)
        start = 0 if top is None else top
        caller = names[below] if below < len(names) else "?"
        caller_func = caller.partition("+")[0]
        sid = -1
        if from_map and names:
            sid = self.stacks.intern(names[start:])
        kind = "rwsem" if top is not None and funcs[top] in RWSEM_APIS else "mutex"
        site = (sid, self._intern(caller), self._intern(f"{kind}@{caller_func}"), api, wrapped)
        self._sites[key] = site
        return site

    def decode(self, raw: bytes | bytearray | memoryview, seq0: int) -> pa.Table:
        """A table (in time order, ``seq`` from ``seq0``) of the records in ``raw``.

        Columns are copied out of the records first and only then put in time order:
        gathering small arrays is cheaper than gathering whole records.
        """
        ev = np.frombuffer(raw, dtype=self.dtype)
        n = len(ev)
        ts = np.ascontiguousarray(ev["ts"])
        in_order = n < 2 or bool((ts[1:] >= ts[:-1]).all())
        order = None if in_order else np.argsort(ts, kind="stable")

        def col(name: str) -> np.ndarray:
            c = np.ascontiguousarray(ev[name])
            return c if order is None else c[order]

        comm = _fixed_strings(ev["comm"], "")
        if order is not None:
            comm = comm.take(pa.array(order))
        # a call site is its kernel stack id, or (no stack) a mix of its frames
        if self.stack_lookup is not None:
            keys = col("stack_id").astype(np.int64)
            bad = np.flatnonzero(keys < 0)
            self.stack_errors += len(bad)
        else:
            keys = np.empty(n, dtype=np.int64)
            bad = np.arange(n)
        if len(bad):
            keys[bad] = _mix(ev["ips"][bad if order is None else order[bad]])
        enc = pc.dictionary_encode(pa.array(keys))
        inv = enc.indices.to_numpy()
        uniq = enc.dictionary.to_pylist()
        first = np.empty(len(uniq), dtype=np.int64)
        first[inv] = np.arange(n)  # any row of each key will do: same site
        if order is not None:
            first = order[first]
        per_site = [self._site(k, ev["ips"][first[i]]) for i, k in enumerate(uniq)]
        sites = np.array(per_site, dtype=np.int32).reshape(-1, 5)
        stack_id, caller, site_class, site_api, wrapped = (sites[:, i][inv] for i in range(5))

        kind = col("kind")
        api = col("api")
        from_stack = (api & API_FROM_STACK_BIT) != 0
        api_idx = self._api_ids[api & (API_FROM_STACK_BIT - 1)]
        if from_stack.any():
            api_idx = np.where(from_stack & (site_api >= 0), site_api, api_idx)
            kind = np.where(from_stack & (wrapped == 1), KIND_WRAPPED, kind)
        class_idx = np.where(
            kind == KIND_DEVICE,
            self._fixed[KIND_DEVICE],
            np.where(kind == KIND_WRAPPED, self._fixed[KIND_WRAPPED], site_class),
        )
        device = np.flatnonzero(kind == KIND_DEVICE)
        names = ev["name"][device if order is None else order[device]]
        strings = pa.array(self._string_list, pa.string())
        lock = col("lock")
        return pa.table(
            {
                "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.uint64)),
                "ts_ns": pa.array((ts if order is None else ts[order]).view(np.int64)),
                "cpu": pa.array(col("cpu").view(np.int32)),
                "pid": pa.array(col("pid").view(np.int32)),
                "tid": pa.array(col("tid").view(np.int32)),
                "comm": comm,
                "event": _dict(col("event"), self._event_dict),
                "api": _dict(api_idx, strings),
                "lock_addr": pa.array(lock),
                "lock_class": _dict(class_idx, strings),
                "lock_name": _lock_names(lock, kind, device, names),
                "caller": _dict(caller, strings),
                "stack_id": pa.array(stack_id, mask=stack_id < 0),
            },
            schema=SCHEMA,
        )


def _mix(frames: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of frames, top bit set so it never equals a stack id."""
    keys = np.zeros(len(frames), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(frames.shape[1]):
            keys += frames[:, i] * np.uint64(0x9E3779B97F4A7C15 * (2 * i + 1) % 2**64)
    return (keys | np.uint64(1 << 63)).view(np.int64)


def _clean(names: list[str]) -> list[str]:
    """Frames without the tracing machinery: BPF programs and trampolines, and the
    return into a function's own fentry call that follows its trampoline."""
    kept: list[str] = []
    after_infra = False
    for name in names:
        func = name.partition("+")[0]
        if func.startswith(INFRA_PREFIXES):
            after_infra = True
            continue
        if after_infra and kept and kept[-1].partition("+")[0] == func:
            after_infra = False  # e.g. remove_store+0x5 under remove_store's trampoline
            continue
        after_infra = False
        kept.append(name)
    return kept


def _dict(indices: np.ndarray, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices.astype(np.int32, copy=False)), dictionary
    )


def _fixed_strings(column: np.ndarray, prefix: str) -> pa.DictionaryArray:
    """Dictionary-encode NUL-padded fixed-size byte strings, decoding only the distinct ones."""
    width = column.dtype.itemsize
    data = pa.py_buffer(np.ascontiguousarray(column))
    enc = pc.dictionary_encode(
        pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(column), [None, data])
    )
    words = [prefix + b.rstrip(b"\0").decode(errors="replace") for b in enc.dictionary.to_pylist()]
    return pa.DictionaryArray.from_arrays(enc.indices, pa.array(words, pa.string()))


def _lock_names(
    lock: np.ndarray, kind: np.ndarray, device: np.ndarray, names: np.ndarray
) -> pa.DictionaryArray:
    """``pci:<dev>`` for the ``device`` rows (their ``names``), the symbol for the wrapped
    lock, else the hex address."""
    enc = pc.dictionary_encode(pa.array(lock))
    hexes = [f"0x{a:x}" for a in enc.dictionary.to_numpy().tolist()]
    idx = enc.indices.to_numpy().astype(np.int64)
    words = [*hexes, WRAPPED_LOCK]
    idx = np.where(kind == KIND_WRAPPED, len(hexes), idx)
    if len(device):
        devs = _fixed_strings(names, "pci:")
        idx[device] = devs.indices.to_numpy() + len(words)
        words += devs.dictionary.to_pylist()
    return _dict(idx, pa.array(words, pa.string()))
