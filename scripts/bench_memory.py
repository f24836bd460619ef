#!/usr/bin/env python3
"""Run a ``daskgmm`` command N times and report exit status, wall time and peak worker memory.

Example (the case of issue 12: 8M x 16 float64, 16 files, 250k-row row groups)::

    python scripts/make_data.py --out /tmp/big --rows 8000000 --features 16 --components 8 \\
        --files 16 --row-group-size 250000
    python scripts/bench_memory.py --runs 10 --limit-mib 300 -- \\
        daskgmm fit /tmp/big --id-column id --n-components 8 --max-iter 5 --n-workers 2 \\
        --threads-per-worker 1 --memory-limit 300MiB --model-out /tmp/m --predictions-out /tmp/p

Peak memory is the largest resident set of any descendant process of the command
other than the nanny (the workers), sampled every 0.1 s. A run that takes longer
than ``--timeout`` seconds counts as a hang and is killed (with every process it
started). ``--total-seconds`` bounds the whole series: no run starts after it, and a run
it stops is reported as ``cut``, not counted.

``--trace FILE`` writes, per run, a JSON line per sample (seconds, each worker's
resident MiB) and per line the command printed on stderr (seconds, text), and adds
to the result the peak worker memory of each phase: the samples between one stderr
line and the next, named by the first line (e.g. ``iter 3``, ``model written``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time

import psutil


def _phase(line: str) -> str:
    """A short name for the phase a stderr line starts (numbers after the first word dropped)."""
    text = line.removeprefix("daskgmm: ").strip()
    m = re.match(r"(iter\s+\d+|[A-Za-z_ ]+)", text)
    return (m.group(1) if m else text[:30]).strip()


def run_once(cmd, timeout, trace=None):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    lines: list = []  # (seconds, text), appended by the reader thread

    def read_stderr():
        for line in proc.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    peak = 0
    phases: dict = {}
    status = None
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if now > timeout:
            for p in parent.children(recursive=True) + [parent]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            status = "hang"
            break
        sample = {}
        try:
            for p in parent.children(recursive=True):
                try:
                    cmdline = " ".join(p.cmdline())
                    if "spawn_main" in cmdline or "multiprocessing" in cmdline:
                        sample[p.pid] = p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            pass
        if sample:
            top = max(sample.values())
            peak = max(peak, top)
            phase = _phase(lines[-1][1]) if lines else "start"
            phases[phase] = max(phases.get(phase, 0), top)
            if trace is not None:
                trace.write(json.dumps({"t": round(now, 2), "rss_mib": {str(k): round(v / 2**20, 1)
                                                                        for k, v in sample.items()}}) + "\n")
        time.sleep(0.1)
    reader.join(timeout=5)
    if trace is not None:
        for t, text in lines:
            trace.write(json.dumps({"t": round(t, 2), "line": text}) + "\n")
        trace.flush()
    last = [text for _, text in lines if text.strip()][-1:] or [""]
    result = {"status": status or proc.returncode,
              "seconds": round(timeout if status else time.perf_counter() - t0, 1),
              "peak_worker_mib": round(peak / 2**20, 1), "last_line": last[0]}
    if trace is not None:
        result["phase_peak_mib"] = {k: round(v / 2**20, 1) for k, v in phases.items()}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds after which a run counts as a hang")
    p.add_argument("--limit-mib", type=float, default=None, help="worker memory limit, to report peak as a share")
    p.add_argument("--total-seconds", type=float, default=None,
                   help="bound on the whole series: no run starts after it, a run still going is stopped "
                        "and reported as 'cut' (not a hang)")
    p.add_argument("--trace", default=None, help="file for per-sample worker memory and timed stderr lines")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run")
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("give the command after --")
    results = []
    trace = open(a.trace, "w") if a.trace else None
    t_series = time.perf_counter()
    for i in range(a.runs):
        left = a.timeout if a.total_seconds is None else a.total_seconds - (time.perf_counter() - t_series)
        if left <= 0:
            break
        if trace is not None:
            trace.write(json.dumps({"run": i + 1}) + "\n")
        started = time.strftime("%H:%M:%S", time.gmtime())
        r = run_once(cmd, min(a.timeout, left), trace)
        if r["status"] == "hang" and left < a.timeout:
            r["status"] = "cut"  # stopped by --total-seconds before its own --timeout
        r["started_utc"] = started
        if a.limit_mib:
            r["peak_share_of_limit"] = round(r["peak_worker_mib"] / a.limit_mib, 3)
        results.append(r)
        print(json.dumps({"run": i + 1, **r}), flush=True)
    if trace is not None:
        trace.close()
    done = [r for r in results if r["status"] != "cut"]
    ok = sum(r["status"] == 0 for r in done)
    print(json.dumps({"runs": len(done), "ok": ok, "cut": len(results) - len(done),
                      "max_peak_worker_mib": max((r["peak_worker_mib"] for r in done), default=None),
                      "max_seconds": max((r["seconds"] for r in done), default=None)}), flush=True)
    return 0 if done and ok == len(done) else 1


if __name__ == "__main__":
    sys.exit(main())
