// SPDX-License-Identifier: GPL-2.0
// lktrace: contended sleeping-lock acquisitions from the lock:contention_begin/end
// tracepoints (v5.19+), for kernels where kprobes are off. Only waits are seen, never
// uncontended acquisitions or releases. common.c comes first.
//
// The api field carries a fallback name index with API_FROM_STACK_BIT set: user space
// names the lock function from the stack when it can.

// Flags of contention_begin (include/trace/events/lock.h, LCB_F_*).
#define LCB_F_SPIN (1U << 0)
#define LCB_F_READ (1U << 1)
#define LCB_F_WRITE (1U << 2)
#define LCB_F_MUTEX (1U << 5)

#define API_FROM_STACK_BIT 0x8000
enum { FALLBACK_MUTEX, FALLBACK_READ, FALLBACK_WRITE };

BPF_TABLE("lru_hash", u32, struct pending, waiting, 16384);

TRACEPOINT_PROBE(lock, contention_begin)
{
    u32 flags = args->flags;
    if (!(flags & (LCB_F_MUTEX | LCB_F_READ | LCB_F_WRITE)))
        return 0;  // spinlocks: not an ordering this tool follows
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id;
    if (filtered(id >> 32))
        return 0;
    // A mutex that first spins (MUTEX|SPIN) and then sleeps begins twice: one attempt.
    struct pending *was = waiting.lookup(&tid);
    if (was && was->lock == (u64)args->lock_addr)
        return 0;
    struct pending p = {};
    p.lock = (u64)args->lock_addr;
    p.ts = bpf_ktime_get_ns();
    p.api = API_FROM_STACK_BIT |
            (flags & LCB_F_MUTEX ? FALLBACK_MUTEX
                                 : flags & LCB_F_WRITE ? FALLBACK_WRITE : FALLBACK_READ);
    capture(args, &p);
    char name[NAME_LEN];
    p.ret = classify(p.lock, name);  // no return convention here: ret holds the kind
    if (waiting.update(&tid, &p))
        count(CNT_STATE_FULL);
    emit(args, EV_ATTEMPT, p.api, p.lock, p.ts, &p, p.ret);
    return 0;
}

TRACEPOINT_PROBE(lock, contention_end)
{
    u32 tid = bpf_get_current_pid_tgid();
    struct pending *p = waiting.lookup(&tid);
    if (!p || p->lock != (u64)args->lock_addr)
        return 0;
    u8 event = args->ret ? EV_FAILED : EV_ACQUIRED;
    emit(args, event, p->api, p->lock, bpf_ktime_get_ns(), p, p->ret);
    waiting.delete(&tid);
    return 0;
}
