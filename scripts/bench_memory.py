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
than ``--timeout`` seconds counts as a hang and is killed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil


def run_once(cmd, timeout):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        if time.perf_counter() - t0 > timeout:
            for p in parent.children(recursive=True) + [parent]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait()
            return {"status": "hang", "seconds": timeout, "peak_worker_mib": peak / 2**20}
        try:
            for p in parent.children(recursive=True):
                try:
                    cmdline = " ".join(p.cmdline())
                    if "spawn_main" in cmdline or "multiprocessing" in cmdline:
                        peak = max(peak, p.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.1)
    err = proc.stderr.read()
    last = [line for line in err.splitlines() if line.strip()][-1:] or [""]
    return {"status": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "peak_worker_mib": round(peak / 2**20, 1), "last_line": last[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds after which a run counts as a hang")
    p.add_argument("--limit-mib", type=float, default=None, help="worker memory limit, to report peak as a share")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command to run")
    a = p.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        p.error("give the command after --")
    results = []
    for i in range(a.runs):
        r = run_once(cmd, a.timeout)
        if a.limit_mib:
            r["peak_share_of_limit"] = round(r["peak_worker_mib"] / a.limit_mib, 3)
        results.append(r)
        print(json.dumps({"run": i + 1, **r}), flush=True)
    ok = sum(r["status"] == 0 for r in results)
    print(json.dumps({"runs": len(results), "ok": ok, "max_peak_worker_mib": max(r["peak_worker_mib"] for r in results),
                      "max_seconds": max(r["seconds"] for r in results)}), flush=True)
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
