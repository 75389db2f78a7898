"""Runs the job the host left in /share/job.json, inside the lab guest.

Started by the guest's PID 1 with the guest's own python3 (stdlib only).
Writes everything under /share/out: the trace, the job's log, result.json,
and, when tasks hang, their kernel stacks and a sysrq-w dump; then reboots
the guest with sysrq-b, since hung writers can't be killed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

SHARE = Path("/share")
OUT = SHARE / "out"
LKTRACE = "/usr/local/bin/lktrace"
#: The lab's PF driver for the NVMe PF, built only against a kernel's own headers.
LKPF = Path("/lab/module/lkpf.ko")
#: The scenarios' lib.sh creates this when a scenario starts.
STARTED = Path("/run/lab-scenario-started")
#: How long a recorder may take to start (import, BCC compile, attach) under TCG.
STARTUP_LIMIT = 600.0
#: The signals that stop a command past its timeout, each with the time it gets to exit.
STOP_SIGNALS = ((signal.SIGINT, 120.0), (signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0))


def log(msg: str) -> None:
    print(f"guest: {msg}", flush=True)


def sysrq(key: str) -> None:
    Path("/proc/sysrq-trigger").write_text(key)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _wait_started(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the scenario script runs (the recorder starts it once its probes are in)."""
    deadline = time.monotonic() + STARTUP_LIMIT
    while not STARTED.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)


def run_bounded(cmd: list[str], log_path: Path, timeout: float) -> dict:
    """Run ``cmd``; ``timeout`` s after the scenario starts, stop it by signal, escalating."""
    log(f"run: {' '.join(cmd)} (timeout {timeout:.0f} s)")
    STARTED.unlink(missing_ok=True)
    start = time.monotonic()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        result: dict = {"cmd": cmd, "timed_out": False, "stopped_by": None}
        _wait_started(proc)
        if not _wait(proc, timeout):
            result["timed_out"] = True
            for sig, grace in STOP_SIGNALS:
                log(f"timeout: sending {sig.name} to {proc.pid}")
                proc.send_signal(sig)
                if _wait(proc, grace):
                    result["stopped_by"] = sig.name
                    break
    result["rc"] = proc.returncode
    result["seconds"] = round(time.monotonic() - start, 2)
    log(f"done: rc={proc.returncode} after {result['seconds']} s")
    return result


def blocked_tasks() -> list[dict]:
    """Tasks in uninterruptible sleep, with their kernel stacks."""
    tasks = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            stack = (stat.parent / "stack").read_text().splitlines()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        if text[text.rindex(")") + 2] == "D":
            tasks.append({"pid": int(stat.parent.name), "comm": comm, "stack": stack})
    return tasks


def dump_dmesg(path: Path) -> None:
    path.write_bytes(subprocess.run(["dmesg"], capture_output=True).stdout)


def scenario(job: dict) -> dict:
    """Run one scenario script, under ``lktrace record`` unless the job says not to."""
    name = job["scenario"]
    script = str(SHARE / "scenarios" / f"{name}.sh")
    cmd = [script]
    if job.get("record", True):
        trace = OUT / f"{name}.parquet"
        cmd = [LKTRACE, "record", "-o", str(trace), *job.get("record_args", []), "--", script]
    result = run_bounded(cmd, OUT / f"{name}.log", job.get("timeout", 90))
    # A writer stuck in a kernel lock shows as a D-state task well after the timeout.
    result["blocked"] = blocked_tasks() if result["timed_out"] else []
    if result["blocked"]:
        log(f"blocked tasks: {', '.join(t['comm'] for t in result['blocked'])}")
        sysrq("w")
        time.sleep(1)
    dump_dmesg(OUT / f"{name}.dmesg")
    return result


def _wait_for(predicate, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


def watch(job: dict) -> dict:
    """Scenarios under one ``lktrace watch`` nobody stops: started once it says it is
    armed, each script runs on its own; for a hanging one, the time the first
    deadlock dump appeared (CLOCK_MONOTONIC, as the trace's timestamps); the dumps there
    after each scenario; then SIGTERM, and how watch ended."""
    dumps = OUT / "watch"
    dumps.mkdir()
    log_path = OUT / "watch.log"
    cmd = [LKTRACE, "watch", "--dir", str(dumps), *job.get("watch_args", [])]
    log(f"run: {' '.join(cmd)}")
    result: dict = {"cmd": cmd, "scenarios": [], "blocked": []}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        started = time.monotonic()
        armed = _wait_for(
            lambda: proc.poll() is not None or b"lktrace: watching" in log_path.read_bytes(),
            STARTUP_LIMIT,
        )
        result["armed_after_s"] = round(time.monotonic() - started, 1)
        if not armed or proc.poll() is not None:
            result["rc"] = proc.poll()
            result["error"] = "watch did not arm"
            return result
        log(f"watch armed after {result['armed_after_s']} s")
        for s in job["scenarios"]:
            name = s["name"]
            script = [str(SHARE / "scenarios" / f"{name}.sh")]
            with (OUT / f"{name}.log").open("wb") as slog:
                run = subprocess.Popen(script, stdout=slog, stderr=subprocess.STDOUT)
                entry: dict = {"name": name, "started_ns": time.monotonic_ns()}
                if s["hangs"]:
                    found = _wait_for(lambda: any(dumps.glob("deadlock-*.parquet")), s["wait"])
                    entry["dump_seen_ns"] = time.monotonic_ns() if found else None
                    time.sleep(1)  # the line reaches the kernel log before the dump
                else:
                    entry["rc"] = run.wait(s["wait"])
                    time.sleep(s["settle"])  # longer than --stuck: a false report would show
                entry["dumps"] = sorted(p.name for p in dumps.iterdir())
            result["scenarios"].append(entry)
            log(f"{name}: dumps {entry['dumps']}")
        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        result["rc"] = proc.returncode if _wait(proc, 60) else None
        result["stop_seconds"] = round(time.monotonic() - stopping, 2)
        if result["rc"] is None:
            proc.kill()
    log(f"watch: rc={result['rc']} after SIGTERM ({result['stop_seconds']} s)")
    result["blocked"] = blocked_tasks()
    dump_dmesg(OUT / "watch.dmesg")
    return result


def scenarios(job: dict) -> dict:
    """Run the job's scenarios in turn in this boot, each under its own recorder.

    Between two, a PCI rescan brings back what the last one removed.  Stops after
    one that hangs (the host runs the rest in a new boot).
    """
    results: dict[str, dict] = {}
    for i, (name, timeout) in enumerate(job["scenarios"]):
        if i:
            restore_devices()
        results[name] = scenario({**job, "scenario": name, "timeout": timeout})
        if results[name]["blocked"]:
            break
    return {"scenarios": results, "blocked": results[name]["blocked"]}


def restore_devices() -> None:
    """Rescan the PCI buses and undo lkpf's delay, as after a fresh boot."""
    Path("/sys/bus/pci/rescan").write_text("1")
    delay = Path("/sys/module/lkpf/parameters/vf_remove_delay_ms")
    if delay.exists():
        delay.write_text("0")
    time.sleep(1)  # the drivers bind to what came back


def smoke(job: dict) -> dict:
    """The raw BCC kprobe check, no lktrace involved."""
    return run_bounded(
        ["python3", str(SHARE / "kprobe_smoke.py"), str(OUT / "smoke.json")],
        OUT / "smoke.log",
        job.get("timeout", 300),
    )


def overhead(job: dict) -> dict:
    """Time a mutex-heavy workload bare and under each ``lktrace record`` setting.

    Settings take turns within each round, so that drift hits them alike.
    """
    bench = str(SHARE / "mutex_bench.sh")
    timing, trace = OUT / "bench.ns", OUT / "bench.parquet"
    settings = {"bare": None, **{" ".join(a) or "defaults": a for a in job["record_settings"]}}
    runs: dict[str, list[dict]] = {label: [] for label in settings}
    for round_ in range(job.get("repeat", 3)):
        for i, (label, args) in enumerate(settings.items()):
            cmd = [bench, str(job["ops"]), str(timing)]
            if args is not None:
                trace.unlink(missing_ok=True)
                cmd = [LKTRACE, "record", "-o", str(trace), *args, "--", *cmd]
            log_path = OUT / f"bench-{round_}-{i}.log"
            res = run_bounded(cmd, log_path, 600)
            if res["rc"] != 0 or not timing.exists():
                return {"error": f"{label}: exit {res['rc']}, see {log_path.name}", "runs": runs}
            wrote = re.search(r"([\d,]+) events.*?([\d,]+) lost", log_path.read_text())
            wall, user, system = map(float, timing.read_text().split())
            runs[label].append(
                {
                    "seconds": wall,
                    "cpu_seconds": round(user + system, 3),
                    "events": int(wrote[1].replace(",", "")) if wrote else None,
                    "lost": int(wrote[2].replace(",", "")) if wrote else None,
                }
            )
            timing.unlink()
    return {"ops": job["ops"], "runs": runs}


def load_pf_drivers() -> None:
    """igb (in-tree, on every kernel) and lkpf (where the build could make it)."""
    subprocess.run(["modprobe", "igb"], check=True)
    if LKPF.exists():
        subprocess.run(["insmod", str(LKPF)], check=True)


def main() -> None:
    job = json.loads((SHARE / "job.json").read_text())
    OUT.mkdir(exist_ok=True)
    uptime = Path("/proc/uptime").read_text().split()[0]
    log(f"{os.uname().release} up after {uptime} s, job {job['kind']}")
    load_pf_drivers()
    kinds = {
        "smoke": smoke,
        "scenario": scenario,
        "scenarios": scenarios,
        "overhead": overhead,
        "watch": watch,
    }
    result = kinds[job["kind"]](job)
    result["kernel"] = os.uname().release
    (OUT / "result.json").write_text(json.dumps(result, indent=1))
    os.sync()
    if result.get("blocked"):
        log("rebooting past the hung tasks (sysrq-b)")
        sysrq("b")


if __name__ == "__main__":
    main()
