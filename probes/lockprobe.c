// SPDX-License-Identifier: GPL-2.0
// lktrace: mutex acquisitions and releases through kprobes or fentry/fexit, with
// device_lock and the PCI rescan lock recognised, recorded only in scope (common.c
// comes first; lktrace.probes.program appends one entry/return function per target).
//
// Macros beyond common.c's: SCOPE_ALL, WRAPPED_LOCK_ADDR (&pci_rescan_remove_lock from
// kallsyms, 0 if unknown: then only the per-task wrapper state drops the inner calls).

enum { RET_VOID, RET_ZERO_OK, RET_ONE_OK };
enum { WRAP_NONE, WRAP_LOCK, WRAP_UNLOCK };

struct task_state {
    u32 scope;  // depth inside scope entry points
    u32 held;   // locks the task holds in the trace
    u8 wrap;    // inside a wrapper: its inner mutex calls are not recorded
    u8 wrap_emitted;
    u16 wrap_api;
    struct pending p;  // the mutex call in flight
    struct pending w;  // the wrapper call in flight
};

struct held_key {
    u32 tid;
    u32 pad;
    u64 lock;
};

BPF_TABLE("lru_hash", u32, struct task_state, tasks, 16384);
BPF_HASH(held, struct held_key, u32, 65536);
BPF_ARRAY(wrapped_lock, u64, 1);  // address of the wrapped mutex, learned from inside

static __always_inline struct task_state *state_of(u32 tid, int create)
{
    struct task_state *st = tasks.lookup(&tid);
    if (st || !create)
        return st;
    struct task_state zero = {};
    tasks.update(&tid, &zero);
    st = tasks.lookup(&tid);
    if (!st)
        count(CNT_STATE_FULL);
    return st;
}

static __always_inline void hold(struct task_state *st, u32 tid, u64 lock)
{
    struct held_key k = {.tid = tid, .lock = lock};
    u32 one = 1, *depth = held.lookup(&k);
    if (depth) {
        (*depth)++;
    } else if (held.update(&k, &one)) {
        count(CNT_HELD_FULL);
        return;
    }
    st->held++;
}

// Drop one hold of lock; returns 0 if the task did not hold it in the trace.
static __always_inline int unhold(struct task_state *st, u32 tid, u64 lock)
{
    struct held_key k = {.tid = tid, .lock = lock};
    u32 *depth = held.lookup(&k);
    if (!depth)
        return 0;
    if (*depth > 1)
        (*depth)--;
    else
        held.delete(&k);
    if (st->held)
        st->held--;
    return 1;
}

static __always_inline int on_lock_entry(void *ctx, u16 api, u8 ret, u64 lock)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    if (filtered(id >> 32))
        return 0;
    struct task_state *st = state_of(tid, 0);
    if ((st && st->wrap) || (WRAPPED_LOCK_ADDR && lock == WRAPPED_LOCK_ADDR)) {
        // The wrapped mutex itself (pci_lock_rescan_remove tail-calls mutex_lock): learn
        // its address, and the wrapper's attempt is due.
        if (st && st->wrap == WRAP_LOCK && !st->wrap_emitted) {
            int zero = 0;
            wrapped_lock.update(&zero, &lock);
            emit(ctx, EV_ATTEMPT, st->wrap_api, lock, st->w.ts, &st->w, KIND_WRAPPED);
            st->wrap_emitted = 1;
        }
        return 0;
    }
    char name[NAME_LEN];
    u8 kind = classify(lock, name);
    int record = SCOPE_ALL || kind == KIND_DEVICE || (st && (st->scope || st->held));
    if (!record) {
        if (st)
            st->p.active = 0;
        return 0;
    }
    st = state_of(tid, 1);
    if (!st)
        return 0;
    struct pending *p = &st->p;
    p->lock = lock;
    p->ts = bpf_ktime_get_ns();
    p->api = api;
    p->ret = ret;
    p->active = 1;
    capture(ctx, p);
    emit(ctx, EV_ATTEMPT, api, lock, p->ts, p, kind);
    return 0;
}

static __always_inline int on_lock_return(void *ctx, long rc)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct task_state *st = state_of(tid, 0);
    if (!st || st->wrap || !st->p.active)
        return 0;
    struct pending *p = &st->p;
    p->active = 0;
    int ok = p->ret == RET_VOID || (p->ret == RET_ZERO_OK && rc == 0) ||
             (p->ret == RET_ONE_OK && rc == 1);
    char name[NAME_LEN];
    u8 kind = classify(p->lock, name);
    emit(ctx, ok ? EV_ACQUIRED : EV_FAILED, p->api, p->lock, bpf_ktime_get_ns(), p, kind);
    if (ok)
        hold(st, tid, p->lock);
    return 0;
}

static __always_inline int on_unlock(void *ctx, u16 api, u64 lock)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    if (filtered(id >> 32))
        return 0;
    if (WRAPPED_LOCK_ADDR && lock == WRAPPED_LOCK_ADDR)
        return 0;  // recorded by the wrapper's own probe
    struct task_state *st = state_of(tid, 0);
    if (!st || st->wrap || !unhold(st, tid, lock))
        return 0;
    struct pending site = {};
    capture(ctx, &site);
    char name[NAME_LEN];
    emit(ctx, EV_RELEASED, api, lock, bpf_ktime_get_ns(), &site, classify(lock, name));
    return 0;
}

static __always_inline int on_scope_entry(void)
{
    u64 id = bpf_get_current_pid_tgid();
    if (filtered(id >> 32))
        return 0;
    struct task_state *st = state_of((u32)id, 1);
    if (st)
        st->scope++;
    return 0;
}

static __always_inline int on_scope_return(void)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct task_state *st = state_of(tid, 0);
    if (st && st->scope)
        st->scope--;
    return 0;
}

// pci_lock_rescan_remove(): the attempt is emitted when the inner mutex_lock shows the
// lock's address (before it may block), or at return when a reentrant wrapper (v14
// series) took it again without calling mutex_lock.
static __always_inline int on_wrap_lock_entry(void *ctx, u16 api)
{
    u64 id = bpf_get_current_pid_tgid();
    if (filtered(id >> 32))
        return 0;
    struct task_state *st = state_of((u32)id, 1);
    if (!st)
        return 0;
    st->wrap = WRAP_LOCK;
    st->wrap_emitted = 0;
    st->wrap_api = api;
    st->w.ts = bpf_ktime_get_ns();
    capture(ctx, &st->w);
    return 0;
}

static __always_inline int on_wrap_lock_return(void *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct task_state *st = state_of(tid, 0);
    if (!st || st->wrap != WRAP_LOCK)
        return 0;
    int zero = 0;
    u64 *lock = wrapped_lock.lookup(&zero);
    u64 addr = lock && *lock ? *lock : WRAPPED_LOCK_ADDR;
    if (!st->wrap_emitted)
        emit(ctx, EV_ATTEMPT, st->wrap_api, addr, st->w.ts, &st->w, KIND_WRAPPED);
    emit(ctx, EV_ACQUIRED, st->wrap_api, addr, bpf_ktime_get_ns(), &st->w, KIND_WRAPPED);
    hold(st, tid, addr);
    st->wrap = WRAP_NONE;
    return 0;
}

static __always_inline int on_wrap_unlock_entry(void *ctx, u16 api)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    if (filtered(id >> 32))
        return 0;
    struct task_state *st = state_of(tid, 0);
    if (!st)
        return 0;
    st->wrap = WRAP_UNLOCK;
    int zero = 0;
    u64 *lock = wrapped_lock.lookup(&zero);
    u64 addr = lock && *lock ? *lock : WRAPPED_LOCK_ADDR;
    if (!unhold(st, tid, addr))
        return 0;
    struct pending site = {};
    capture(ctx, &site);
    emit(ctx, EV_RELEASED, api, addr, bpf_ktime_get_ns(), &site, KIND_WRAPPED);
    return 0;
}

static __always_inline int on_wrap_unlock_return(void)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct task_state *st = state_of(tid, 0);
    if (st && st->wrap == WRAP_UNLOCK)
        st->wrap = WRAP_NONE;
    return 0;
}
