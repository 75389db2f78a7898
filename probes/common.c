// SPDX-License-Identifier: GPL-2.0
// lktrace: what both BPF programs share (prepended to lockprobe.c or contention.c by
// lktrace.probes.program): the event record, the output buffer, filters, device_lock
// recognition, call-site capture and emission.
//
// Macros: NIPS, NAME_LEN (with the struct), STACKS, STACK_DEPTH, STACK_BUCKETS, RINGBUF,
// RINGBUF_PAGES, SELF_PID, FILTER_PID, FILTER_COMM (a string literal, optional),
// DEV_MUTEX_OFF, DEV_BUS_OFF, DEV_NAME_OFF, BUS_NAME_OFF, PCI_BUS_TYPE (0 when the
// symbol is unknown: compare the bus name).
#include <uapi/linux/ptrace.h>

@EVENT_STRUCT@

#ifdef DEVICE_FROM_HEADERS
#include <linux/device.h>
#define DEV_MUTEX_OFF offsetof(struct device, mutex)
#define DEV_BUS_OFF offsetof(struct device, bus)
#define DEV_NAME_OFF (offsetof(struct device, kobj) + offsetof(struct kobject, name))
#define BUS_NAME_OFF offsetof(struct bus_type, name)
#endif

enum { EV_ATTEMPT, EV_ACQUIRED, EV_FAILED, EV_RELEASED };
enum { KIND_MUTEX, KIND_DEVICE, KIND_WRAPPED };
enum { CNT_LOST, CNT_STATE_FULL, CNT_HELD_FULL, NCOUNTERS };

// A lock call in flight, from entry to return (a task waits in at most one).
struct pending {
    u64 lock;
    u64 ts;
    u64 ips[NIPS];
    s32 stack_id;
    u16 api;
    u8 ret;
    u8 active;
};

BPF_PERCPU_ARRAY(counters, u64, NCOUNTERS);
BPF_PERCPU_ARRAY(scratch, struct event, 1);
#if STACKS
// Shallower and more numerous than BCC's BPF_STACK_TRACE (127 frames): a stack whose hash
// bucket is taken is refused (-EEXIST), so buckets matter more than depth here.
struct stack {
    u64 ip[STACK_DEPTH];
};
BPF_TABLE("stacktrace", int, struct stack, stacks, STACK_BUCKETS);
#endif
#if RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif

static __always_inline void count(int which)
{
    u64 *c = counters.lookup(&which);
    if (c)
        (*c)++;
}

static __always_inline int filtered(u32 tgid)
{
    if (tgid == SELF_PID)
        return 1;  // the recorder's own writes would feed back into the trace
#if FILTER_PID
    if (tgid != FILTER_PID)
        return 1;
#endif
#ifdef FILTER_COMM
    char want[] = FILTER_COMM;
    char comm[16] = {};
    bpf_get_current_comm(comm, sizeof(comm));
#pragma unroll
    for (int i = 0; i < sizeof(want); i++) {
        if (comm[i] != want[i])
            return 1;
    }
#endif
    return 0;
}

// Is this mutex the one inside a PCI device's struct device (device_lock)? Reads the
// device name into name if so. Any address is safe to try: the reads may fault.
static __always_inline u8 classify(u64 lock, char *name)
{
    u64 dev = lock - DEV_MUTEX_OFF, bus = 0, kname = 0;
    if (bpf_probe_read_kernel(&bus, sizeof(bus), (void *)(dev + DEV_BUS_OFF)) || !bus)
        return KIND_MUTEX;
#if PCI_BUS_TYPE
    if (bus != PCI_BUS_TYPE)
        return KIND_MUTEX;
#else
    u64 bname = 0;
    char b[4] = {};
    if (bpf_probe_read_kernel(&bname, sizeof(bname), (void *)(bus + BUS_NAME_OFF)) ||
        bpf_probe_read_kernel(b, sizeof(b), (void *)bname) ||
        b[0] != 'p' || b[1] != 'c' || b[2] != 'i' || b[3] != 0)
        return KIND_MUTEX;
#endif
    if (bpf_probe_read_kernel(&kname, sizeof(kname), (void *)(dev + DEV_NAME_OFF)) || !kname)
        return KIND_MUTEX;
    bpf_probe_read_kernel_str(name, NAME_LEN, (void *)kname);
    return KIND_DEVICE;
}

// Capture the call site: a stack id, or the first frames (stacks off, or no stack id).
static __always_inline void capture(void *ctx, struct pending *p)
{
    p->stack_id = -1;
#if STACKS
    p->stack_id = stacks.get_stackid(ctx, 0);
    if (p->stack_id >= 0)
        return;  // else (a hash bucket taken by another stack) keep the first frames
#endif
    bpf_get_stack(ctx, p->ips, sizeof(p->ips), 0);
}

static __always_inline void emit(void *ctx, u8 event, u16 api, u64 lock, u64 ts,
                                 struct pending *site, u8 kind)
{
    int zero = 0;
    struct event *ev = scratch.lookup(&zero);
    if (!ev)
        return;
    u64 id = bpf_get_current_pid_tgid();
    __builtin_memset(ev, 0, sizeof(*ev));
    ev->ts = ts;
    ev->lock = lock;
    ev->pid = id >> 32;
    ev->tid = (u32)id;
    ev->cpu = bpf_get_smp_processor_id();
    ev->stack_id = site->stack_id;
    ev->api = api;
    ev->event = event;
    ev->kind = kind;
    bpf_get_current_comm(ev->comm, sizeof(ev->comm));
    if (site->stack_id < 0)
        __builtin_memcpy(ev->ips, site->ips, sizeof(ev->ips));
    if (kind == KIND_DEVICE)
        classify(lock, ev->name);
#if RINGBUF
    if (events.ringbuf_output(ev, sizeof(*ev), 0))
        count(CNT_LOST);
#else
    if (events.perf_submit(ctx, ev, sizeof(*ev)))
        count(CNT_LOST);
#endif
}
