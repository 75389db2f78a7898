"""Command line of the lab: ``python -m lab {build,smoke,run,watch,overhead} KERNEL ...``."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from lab import build, kernels, vm
from lab.scenarios import SCENARIOS
from lab.shell import LabError, log

#: Where ``run`` copies traces, per kernel ABI, unless --out says otherwise.
DEFAULT_OUT = build.CACHE / "out"


def cmd_build(args: argparse.Namespace) -> None:
    for name in args.kernels:
        lab = build.build(kernels.resolve(name))
        print(json.dumps({"kernel": lab.kernel.abi, "timings": lab.timings}))


def cmd_smoke(args: argparse.Namespace) -> None:
    lab = build.build(kernels.resolve(args.kernel))
    out, result = vm.run_job(lab, "smoke", {"kind": "smoke", "record": False})
    print((out / ("smoke.json" if result["rc"] == 0 else "smoke.log")).read_text())
    if result["rc"] != 0:
        raise LabError(f"kprobe smoke test failed on {lab.kernel.abi}")


def cmd_run(args: argparse.Namespace) -> None:
    if args.all == bool(args.kernel):
        raise LabError("run: name a KERNEL and its scenarios, or give --all")
    if not args.all:
        run_kernel(args.kernel, args.scenarios or ["all"], args, args.out)
        return
    for name in kernels.MATRIX:
        run_kernel(name, ["all"], args, args.out / kernels.resolve(name).abi if args.out else None)


def run_kernel(name: str, names: list[str], args: argparse.Namespace, out: Path | None) -> None:
    """Run ``names`` (or ``all`` it can) on one kernel, copying results into ``out``."""
    kernel = kernels.resolve(name)
    if names == ["all"]:
        names = [n for n, s in SCENARIOS.items() if s.runs_on(kernel)]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise LabError(f"unknown scenario(s) {', '.join(unknown)}: know {', '.join(SCENARIOS)}")
    cannot = [n for n in names if not SCENARIOS[n].runs_on(kernel)]
    if cannot:
        raise LabError(f"{', '.join(cannot)} need lkpf, which {kernel.abi} cannot build")
    lab = build.build(kernel)
    dest = (out or DEFAULT_OUT / lab.kernel.abi).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    # Those expected to hang go last: a hang ends the boot.
    pending = sorted(names, key=lambda n: SCENARIOS[n].hangs(kernel))
    runs = dict.fromkeys(names, 0)
    while pending:
        job = {
            "kind": "scenarios",
            "scenarios": [[n, args.timeout or SCENARIOS[n].timeout] for n in pending],
            "record": not args.no_record,
            "record_args": args.record_arg,
        }
        limit = sum(t + vm.STARTUP_ALLOWANCE for _, t in job["scenarios"])
        try:
            out, boot = vm.run_job(lab, pending[0], job, timeout=limit)
        except LabError as e:  # seen once under load: the guest's 9p mount never returned
            log(f"{e}: booting once more")
            out, boot = vm.run_job(lab, pending[0], job, timeout=limit)
        again = []
        for name, result in boot["scenarios"].items():
            runs[name] += 1
            result.update(kernel=boot["kernel"], vm_seconds=boot["vm_seconds"])
            result.update(boot=pending[0], run=runs[name])
            for f in out.glob(f"{name}.*"):
                shutil.copy(f, dest / f.name)
            (dest / f"{name}.json").write_text(json.dumps(result, indent=1))
            hung = sorted({t["comm"] for t in result["blocked"]})
            log(f"{name}: rc={result['rc']} timed_out={result['timed_out']} blocked={hung}")
            s = SCENARIOS[name]
            if bool(hung) != s.hangs(kernel):
                log(f"{name}: unexpected: it {'hung' if hung else 'did not hang'} on this kernel")
                if not hung and runs[name] < s.tries:
                    log(f"{name}: a race: run {runs[name] + 1} of at most {s.tries}")
                    again.append(name)
        pending = pending[len(boot["scenarios"]) :] + again
    log(f"results in {dest}")


def cmd_watch(args: argparse.Namespace) -> None:
    """A non-hanging scenario, then the deadlocking one, under one ``lktrace watch``."""
    lab = build.build(kernels.resolve(args.kernel))
    stuck = args.stuck
    job = {
        "kind": "watch",
        "watch_args": ["--stuck", f"{stuck}s", *args.watch_arg],
        "scenarios": [
            {"name": "numvfs-cycle", "hangs": False, "wait": 120, "settle": stuck + 3},
            {"name": "rootport-remove-vs-numvfs", "hangs": True, "wait": stuck + 60},
        ],
    }
    out, result = vm.run_job(lab, "watch", job)
    dest = (args.out or DEFAULT_OUT / lab.kernel.abi / "watch").resolve()
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(out, dest)
    (dest / "result.json").write_text(json.dumps(result, indent=1))
    log(f"watch: rc={result.get('rc')}, dumps {result['scenarios'][-1:]}; results in {dest}")


def cmd_overhead(args: argparse.Namespace) -> None:
    lab = build.build(kernels.resolve(args.kernel))
    job = {
        "kind": "overhead",
        "ops": args.ops,
        "repeat": args.repeat,
        "record_settings": [
            [],
            ["--scope", "all"],
            ["--scope", "all", "--no-stacks"],
            ["--scope", "all", "--backend", "kprobe"],
        ],
    }
    _, result = vm.run_job(lab, "overhead", job, timeout=3600)
    if "error" in result:
        raise LabError(f"overhead run failed: {result['error']}")
    for measure in ("seconds", "cpu_seconds"):
        best = {k: min(r[measure] for r in v) for k, v in result["runs"].items()}
        result[f"ratio_{measure}"] = {k: round(t / best["bare"], 2) for k, t in best.items()}
    print(json.dumps(result, indent=1))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = p.add_subparsers(required=True)
    b = sub.add_parser("build", help="build (or find cached) the guest of each kernel")
    b.add_argument("kernels", nargs="+", metavar="KERNEL", help="6.1, 6.12 or a full ABI")
    b.set_defaults(fn=cmd_build)
    s = sub.add_parser("smoke", help="prove kprobes work in the guest with a bare BCC script")
    s.add_argument("kernel")
    s.set_defaults(fn=cmd_smoke)
    r = sub.add_parser("run", help="run scenarios under lktrace record, copy the traces out")
    r.add_argument("kernel", nargs="?", help="a series (6.18) or a full ABI")
    r.add_argument(
        "scenarios", nargs="*", help=f"'all' (default) or some of: {', '.join(SCENARIOS)}"
    )
    r.add_argument(
        "--all", action="store_true", help=f"every scenario on {', '.join(kernels.MATRIX)}"
    )
    r.add_argument("--out", type=Path, help="where the traces go (default lab/cache/out/ABI)")
    r.add_argument("--no-record", action="store_true", help="run the scripts bare")
    r.add_argument("--record-arg", action="append", default=[], help="extra lktrace record arg")
    r.add_argument("--timeout", type=float, help="seconds before the recorder is stopped")
    r.set_defaults(fn=cmd_run)
    w = sub.add_parser("watch", help="a quiet scenario, then the deadlock, under lktrace watch")
    w.add_argument("kernel")
    w.add_argument("--out", type=Path, help="where results go (default lab/cache/out/ABI/watch)")
    w.add_argument("--stuck", type=float, default=10.0, help="watch's --stuck (seconds)")
    w.add_argument("--watch-arg", action="append", default=[], help="extra lktrace watch arg")
    w.set_defaults(fn=cmd_watch)
    o = sub.add_parser("overhead", help="time a mutex-heavy workload with and without recording")
    o.add_argument("kernel")
    o.add_argument("--ops", type=int, default=100_000, help="pipe writes per run")
    o.add_argument("--repeat", type=int, default=3)
    o.set_defaults(fn=cmd_overhead)
    return p


def main() -> None:
    args = parser().parse_args()
    try:
        args.fn(args)
    except (LabError, ValueError) as e:
        log(f"error: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
