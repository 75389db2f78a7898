"""The simulator engine's mutex semantics, on hand-made tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lktrace.sim.engine import US, Delay, Engine, Lock, Mutex, Op, TryLock, Unlock, call, kfunc
from lktrace.trace import read_trace


def mutex(i: int, reentrant: bool = False) -> Mutex:
    addr = 0xFFFF888100001000 + 0x100 * i
    return Mutex(addr, f"mutex@f{i}", hex(addr), reentrant=reentrant)


def rows(eng: Engine) -> list[dict]:
    cols = eng.events.columns
    return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]


def last_event(eng: Engine, tid: int) -> tuple[str, str]:
    row = [r for r in rows(eng) if r["tid"] == tid][-1]
    return row["event"], row["lock_name"]


def section(*ops: Op) -> Iterator[Op]:
    yield from ops


def test_three_tasks_in_a_lock_cycle_all_block(tmp_path: Path) -> None:
    m = [mutex(i) for i in range(3)]
    eng = Engine(seed=1, start_ns=10**12)
    for i in range(3):
        body = section(
            Lock(m[i], "mutex_lock"), Delay(50 * US, 60 * US), Lock(m[(i + 1) % 3], "mutex_lock")
        )
        eng.spawn("t", 100 + i, body, i * US)
    eng.run()
    for i in range(3):
        assert last_event(eng, 100 + i) == ("attempt", m[(i + 1) % 3].name)
        assert m[i].owner is eng.tasks[i] and m[i].waiters[0] is eng.tasks[(i + 2) % 3]
    trace = read_trace(eng.write(tmp_path / "c.parquet", kernel="k", kernel_version="v",
                                 scenario="cycle", seed=1, command="test"))  # fmt: skip
    assert trace.num_events == 9


def test_trylock_fails_on_a_held_lock_and_takes_a_free_one() -> None:
    a = mutex(0)
    eng = Engine(seed=2, start_ns=10**12)
    eng.spawn("holder", 1, section(Lock(a, "mutex_lock"), Delay(100 * US, 100 * US),
                                   Unlock(a, "mutex_unlock")), 0)  # fmt: skip
    eng.spawn("try", 2, section(TryLock(a, "mutex_trylock"), Delay(200 * US, 200 * US),
                                TryLock(a, "mutex_trylock")), 10 * US)  # fmt: skip
    eng.run()
    mine = [(r["event"], r["api"]) for r in rows(eng) if r["tid"] == 2]
    assert mine == [
        ("attempt", "mutex_trylock"),
        ("failed", "mutex_trylock"),
        ("attempt", "mutex_trylock"),
        ("acquired", "mutex_trylock"),
    ]


def test_reentrant_owner_nests_and_a_waiter_gets_it_after_the_last_release() -> None:
    r = mutex(0, reentrant=True)
    eng = Engine(seed=3, start_ns=10**12)
    hold = Delay(50 * US, 50 * US)
    nested = section(Lock(r, "wrap_lock"), Lock(r, "wrap_lock"), hold,
                     Unlock(r, "wrap_unlock"), hold, Unlock(r, "wrap_unlock"))  # fmt: skip
    eng.spawn("owner", 1, nested, 0)
    eng.spawn("waiter", 2, section(Lock(r, "wrap_lock"), Unlock(r, "wrap_unlock")), 10 * US)
    eng.run()
    seen = [(r["tid"], r["event"]) for r in rows(eng)]
    assert seen == [
        (1, "attempt"),
        (1, "acquired"),
        (1, "attempt"),
        (1, "acquired"),
        (2, "attempt"),
        (1, "released"),
        (1, "released"),
        (2, "acquired"),
        (2, "released"),
    ]
    ts = {(r["tid"], r["event"]): r["ts_ns"] for r in rows(eng)}
    assert ts[2, "acquired"] > ts[1, "released"]


def test_non_reentrant_owner_blocks_on_itself_and_others_queue() -> None:
    m = mutex(0)
    eng = Engine(seed=4, start_ns=10**12)
    eng.spawn("self", 1, section(Lock(m, "mutex_lock"), Lock(m, "mutex_lock")), 0)
    eng.spawn("other", 2, section(Lock(m, "mutex_lock")), 100 * US)
    eng.run()
    assert [r["event"] for r in rows(eng) if r["tid"] == 1] == ["attempt", "acquired", "attempt"]
    assert last_event(eng, 2) == ("attempt", m.name)
    assert m.depth == 1 and list(m.waiters) == eng.tasks


def test_frames_make_the_stack_innermost_first() -> None:
    m = mutex(0)

    @kfunc
    def inner_fn() -> Iterator[Op]:
        yield Lock(m, "mutex_lock")
        yield Unlock(m, "mutex_unlock")

    eng = Engine(seed=5, start_ns=10**12)
    eng.spawn("t", 1, call(("entry", "middle"), inner_fn()), 0)
    eng.run()
    first = rows(eng)[0]
    stack = eng.stacks.stacks[first["stack_id"]]
    assert [f.split("+")[0] for f in stack] == ["mutex_lock", "inner_fn", "middle", "entry"]
    assert first["caller"] == stack[1]
