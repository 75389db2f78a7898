"""Run a real recording loop on the synthetic source (for the signal and crash tests).

    python tests/synthetic_record.py OUT [--delay S] [--total N] [--lost-per-poll N]

Everything but the source is ``lktrace record``'s own code: spool, drain, signals, finish.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lktrace.collector.errors import CollectorError
from lktrace.collector.record import RecordRequest, prepare_output, run_recording, start_meta
from lktrace.collector.synthetic import SyntheticSource, kallsyms
from lktrace.trace import TraceError


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("output", type=Path)
    ap.add_argument("--delay", type=float, default=0.01)
    ap.add_argument("--total", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--lost-per-poll", type=int, default=0)
    # bounded even if nobody stops it: a test that fails must not record forever
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("command", nargs="*")
    args = ap.parse_args()
    req = RecordRequest(
        output=args.output,
        duration=args.duration,
        force=args.force,
        command=args.command,
        argv=["synthetic_record", *sys.argv[1:]],
    )
    source = SyntheticSource(
        total=args.total, chunk=args.chunk, delay=args.delay, lost_per_poll=args.lost_per_poll
    )
    work = prepare_output(args.output, args.force)
    meta = start_meta(req, "synthetic", ["mutex_lock", "mutex_unlock"], {"releases": "yes"})
    print("recording", flush=True)
    meta, rows = run_recording(source, kallsyms(), meta, work, req)
    print(f"wrote {rows}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (CollectorError, TraceError) as e:  # as lktrace's own main() reports them
        print(f"lktrace: {e}", file=sys.stderr)
        sys.exit(2)
