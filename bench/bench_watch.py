"""Benchmarks of ``lktrace watch``'s user space: what the ring costs, and whether memory
stays flat for long at a high event rate.

    python bench/bench_watch.py ratio [--events N] [--rounds N]
    python bench/bench_watch.py soak [--seconds S] [--rate R]

``ratio`` pushes the same synthetic events (lktrace.collector.synthetic: the BPF
programs' raw records, random lock traffic) through three drains in turns, in one
process: decoding alone (the baseline both share), ``record``'s (decode, spool with
fsync, Parquet on its thread) and ``watch``'s (decode, ring, open holds and waits,
checks once a second). It prints CPU seconds (all threads) per million events, best of
the rounds, and the ratios: watch / record, and the ring's own cost over decoding.

``soak`` runs the watch loop on a source producing ``--rate`` events/s of CLOCK_MONOTONIC
time (what it cannot deliver for the consumer being behind counts as lost, as a full
ring buffer would), with the default ring (120 s / 256 MB), and samples the process's
RSS, the ring's bytes and Arrow's allocation every 10 s; a deadlock is injected near the
end (``--deadlock-at``), so that samples show memory around writing a dump.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from lktrace.collector.pipeline import Drain, Progress
from lktrace.collector.record import Recording, prepare_output
from lktrace.collector.synthetic import SyntheticSource, abba, kallsyms
from lktrace.collector.watch import Watcher, WatchRequest
from lktrace.trace import TraceMeta


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Discard:
    """A sink that keeps nothing: the drain's decoding alone."""

    size = 0

    def append(self, *_args: object) -> None:
        pass


def _source(events: int) -> SyntheticSource:
    # stamped with the real clock, as watch's "stuck for 10 s" reads the kernel's
    return SyntheticSource(total=events, chunk=65_536, clock=True)


def decode_only(events: int, _tmp: Path) -> None:
    source = _source(events)
    Drain(source, Discard(), kallsyms()).run(lambda: source.done, poll_ms=0)


def record(events: int, tmp: Path) -> None:
    source = _source(events)
    out = tmp / "bench.parquet"
    rec = Recording(source, kallsyms(), TraceMeta(), prepare_output(out, False), out, False)
    rec.drain.run(lambda: source.done, poll_ms=0)
    rec.finish({})
    out.unlink()


def watch(events: int, tmp: Path) -> None:
    source = _source(events)
    req = WatchRequest(dir=tmp)
    w = Watcher(source, kallsyms(), TraceMeta(extra={"releases": "yes"}), req)
    w.drain.run(lambda: source.done, w.tick, poll_ms=0)


def ratio(events: int, rounds: int) -> None:
    runs = {"decode only": decode_only, "record": record, "watch": watch}
    best = dict.fromkeys(runs, float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, fn in runs.items():  # in turns, so that drift hits them alike
                cpu = _cpu()
                fn(events, Path(tmp))
                best[name] = min(best[name], _cpu() - cpu)
    per_m = {k: v / events * 1e6 for k, v in best.items()}
    for name, v in per_m.items():
        print(f"{name:12} {v:6.3f} CPU-s per M events ({events / best[name] / 1e6:.2f} M/CPU-s)")
    base = per_m["decode only"]
    print(f"watch / record = {per_m['watch'] / per_m['record']:.2f}")
    print(f"ring's own cost over decoding = {(per_m['watch'] - base) / base:.2f}x of decoding")
    print(f"record's own cost over decoding = {(per_m['record'] - base) / base:.2f}x of decoding")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soak(seconds: float, rate: float, deadlock_at: float | None) -> None:
    source = SyntheticSource(total=None, chunk=1 << 20, rate=rate, locking=True)
    with tempfile.TemporaryDirectory() as tmp:
        req = WatchRequest(dir=Path(tmp))
        w = Watcher(
            source, kallsyms(), TraceMeta(extra={"releases": "yes"}), req, kmsg=Path(tmp) / "k"
        )
        start, cpu0 = time.monotonic(), _cpu()
        samples: list[tuple[float, ...]] = []
        next_sample = [start]
        injected: list[float] = []

        def tick(p: Progress) -> None:
            w.tick(p)
            now = time.monotonic()
            if now - start > (deadlock_at or 0.9 * seconds) and not injected:
                source.add(abba(source.produced, source.produced))
                injected.append(now)
            if now >= next_sample[0]:
                next_sample[0] += 10
                samples.append(
                    (now - start, source.produced, source.lost, w.ring.size / 2**20,
                     pa.total_allocated_bytes() / 2**20, _rss_mb())
                )  # fmt: skip

        w.drain.run(lambda: time.monotonic() - start > seconds, tick)
        cpu = _cpu() - cpu0
        w.dumps.close()
        dumps = sorted(p.name for p in Path(tmp).glob("*.parquet"))
    print("   s    events produced    lost  ring MiB arrow MiB RSS MiB")
    for t, n, lost, ring_mb, arrow_mb, rss in samples:
        print(f"{t:5.0f} {n:18,} {lost:8,} {ring_mb:8.1f} {arrow_mb:9.1f} {rss:7.0f}")
    elapsed = time.monotonic() - start
    print(
        f"{source.produced:,} events in {elapsed:.0f} s = {source.produced / elapsed / 1e6:.2f} "
        f"M events/s asked {rate / 1e6:.2f} M/s, {source.lost:,} lost "
        f"({source.lost / max(1, source.lost + source.produced):.1%}); CPU {cpu:.0f} s "
        f"({cpu / elapsed:.2f} cores); ring peak {max(s[3] for s in samples):.1f} MiB of "
        f"{req.max_mb} MiB; RSS {samples[0][5]:.0f} -> {samples[-1][5]:.0f} MiB "
        f"(peak {max(s[5] for s in samples):.0f} MiB); dumps: {dumps}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("ratio")
    r.add_argument("--events", type=int, default=3_000_000)
    r.add_argument("--rounds", type=int, default=3)
    s = sub.add_parser("soak")
    s.add_argument("--seconds", type=float, default=600)
    s.add_argument("--rate", type=float, default=1e6)
    s.add_argument("--deadlock-at", type=float, help="seconds in (default: 90 %% of the run)")
    args = ap.parse_args()
    if args.mode == "ratio":
        ratio(args.events, args.rounds)
    else:
        soak(args.seconds, args.rate, args.deadlock_at)


if __name__ == "__main__":
    main()
