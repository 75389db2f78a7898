"""Run ``lktrace watch``'s loop on the synthetic source (for the signal tests).

    python tests/synthetic_watch.py DIR [--rate N]

Everything but the source is watch's own code: ring, checks, dumps, signals.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lktrace.collector.synthetic import SyntheticSource, kallsyms
from lktrace.collector.watch import Watcher, WatchRequest
from lktrace.trace import TraceMeta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--rate", type=float, default=200_000)
    # bounded even if nobody stops it: a test that fails must not watch forever
    ap.add_argument("--duration", type=float, default=120.0)
    args = ap.parse_args()
    req = WatchRequest(dir=args.dir, keep_s=5, max_mb=32, argv=sys.argv)
    source = SyntheticSource(total=None, chunk=65_536, rate=args.rate, locking=True)
    meta = TraceMeta(command=" ".join(sys.argv), extra={"backend": "synthetic", "releases": "yes"})
    end = time.monotonic() + args.duration
    Watcher(source, kallsyms(), meta, req, kmsg=args.dir / "kmsg").run(
        lambda: time.monotonic() > end
    )


if __name__ == "__main__":
    main()
