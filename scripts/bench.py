#!/usr/bin/env python3
"""Per-iteration cost of an EM fit: daskgmm in memory and out of core, scikit-learn, Spark MLlib.

Usage (after ``scripts/test`` or ``pip install -e .``; ``pip install -e .[bench]`` adds pyspark):

    .venv/bin/python scripts/bench.py                      # 1M x 16, K=16, full covariance
    .venv/bin/python scripts/bench.py --quick              # smaller and fewer repeats
    .venv/bin/python scripts/bench.py --scaling 1,2,4,8,16 # linearity in N (millions of rows)

A daskgmm fit over rows in the workers' memory is timed from one pass's start to the next's
(``benchlib.iteration_seconds``: the median over the iterations after the first two, each a pass,
its merges and the client's update): the start-up of a fit varies between fits by more than a
diag or spherical iteration takes (the marginal cost below gave 0.024 to 0.074 s for the same
spherical iteration on one run). Every other time (out of core, scikit-learn, Spark) is the
*marginal* cost of an EM iteration: (time of a fit with 2 + I iterations - time with 2) / I,
from the same start (``tol=0`` so every iteration runs), so start-up, the first scan and the
initialisation cancel.
The start is daskgmm's default initialisation (k-means on the scan's sample, one
Lloyd pass), computed
once and given to every fit (scikit-learn included) as weights/means/precisions;
a "cold start" row times the first iterations from random rows with broad
covariances, where every component overlaps every row.
The median of ``--repeats`` is reported. daskgmm runs on a LocalCluster of two
worker processes with one thread each (BLAS single-threaded); scikit-learn in
this process with BLAS on both cores; Spark on ``local[2]``. The GEMM rate is
measured in both workers at once, and the bound is ``4 N K D^2`` flops at that
rate (E-step Mahalanobis terms plus M-step second moments, per component).
Whole default fits (initialisation and EM to the default ``tol``) of daskgmm (data
persisted) and scikit-learn (in this process) for seeds 0, 1, 2 are timed too, and
the peak RSS of each worker is compared with its share of the persisted data.
Every target of issue 13 is printed as met or not met.

The data (seeded) are written as Parquet by scripts/make_data.py and scaled by
0.1 so that Spark's linear-space EM does not collapse (timings do not depend on
scale). Results are printed as a table and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
from benchlib import bench_cluster, gemm_rate, iteration_seconds, marginal_seconds, precisions, write_record

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _init(X_sample, k, d, seed=1):
    rng = np.random.default_rng(seed)
    means = X_sample[rng.choice(len(X_sample), k, replace=False)]
    var = X_sample.var(axis=0).mean()
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means,
                precisions_init=np.stack([np.eye(d) / var] * k))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--components", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5, help="I, the extra iterations timed")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="data/bench", help="where the Parquet data go")
    ap.add_argument("--out", default="bench-results/bench.json")
    ap.add_argument("--scaling", default="", help="comma-separated millions of rows for the linearity test")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--quick", action="store_true", help="200k rows, 3 iterations, 1 repeat")
    ap.add_argument("--only-scaling", action="store_true", help="only the linearity test (needs --scaling)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.iters, a.repeats = 200_000, 3, 1
    warnings.simplefilter("ignore")

    import dask
    from make_data import main as make_data

    import daskgmm
    from daskgmm import GaussianMixture
    from daskgmm.engine.placement import row_major
    from daskgmm.io.parquet import open_parquet

    n, d, k = a.rows, a.features, a.components
    stamp = os.path.join(a.data, f".made-{n}-{d}-{k}")
    if not os.path.exists(stamp):
        make_data(["--out", a.data, "--rows", str(n), "--features", str(d), "--components", str(k),
                   "--separation", "2", "--scale", "0.1", "--seed", "7"])
        open(stamp, "w").close()
    cols = [f"f{j}" for j in range(d)]
    res = {
        "config": {"rows": n, "features": d, "components": k, "iters": a.iters, "repeats": a.repeats,
                   "covariance_type": "full"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "daskgmm": daskgmm.__version__, "numpy": np.__version__, "dask": dask.__version__},
        "cases": {},
    }
    cases = res["cases"]

    def report(name, r, note=""):
        cases[name] = {**r, "note": note}
        print(f"  {name:38s} {r['per_iter']:8.3f} s/iter  (min {r['min']:.3f})  {note}", flush=True)

    with bench_cluster() as client:
        rates = list(client.run(gemm_rate).values())
        res["gemm_flops"] = float(sum(rates))
        flops = 4.0 * n * k * d * d
        res["gemm_bound_s"] = flops / res["gemm_flops"]
        print(f"GEMM rate, both workers at once: {res['gemm_flops'] / 1e9:.1f} GFLOP/s; "
              f"bound for 4NKD^2 = {flops / 1e9:.1f} GFLOP: {res['gemm_bound_s']:.3f} s/iter", flush=True)

        src = {dt: open_parquet(a.data, columns=cols, dtype=dt) for dt in ("float64", "float32")}
        sample = src["float64"].X[:20000].compute()
        cold = _init(sample, k, d)
        # kept as a fit keeps the rows it persists itself: row-major (engine.placement.row_major)
        mem = {dt: client.persist(row_major(s.X)) for dt, s in src.items()}
        for x in mem.values():
            x.sum().compute()
        # the in-memory bench's peak starts here: the load's own transient (Parquet buffers) is reported apart
        load_peaks = list(client.run(_peak_rss).values())
        client.run(_reset_peak_rss)
        t0 = time.perf_counter()
        start = GaussianMixture(k, max_iter=0, random_state=0).fit(mem["float64"])
        res["kmeans_init_s"] = time.perf_counter() - t0
        init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
        print(f"default initialisation (sample k-means, one Lloyd pass): {res['kmeans_init_s']:.2f} s", flush=True)

        def fitter(X, ct="full", cache="memory", start=init, **kw):
            def fit(it):
                params = dict(start, precisions_init=precisions(start, ct, k, d))
                GaussianMixture(k, covariance_type=ct, max_iter=it, tol=0.0, cache=cache, **params, **kw).fit(X)
            return fit

        if a.only_scaling:
            a.no_sklearn = a.no_spark = True
        if not a.only_scaling:
            peaks = _main_cases(a, res, client, src, init, cold, mem, fitter, report)
            _whole_fits(res, mem["float64"], k)
            # peak RSS of each worker over the in-memory cases, against its share of the persisted data
            share = sum(int(x.nbytes) for x in mem.values()) / len(peaks)
            every = list(client.run(_peak_rss).values())
            res["memory"] = {"peak_rss_mib": [p / 2**20 for p in peaks], "data_share_mib": share / 2**20,
                             "peak_rss_load_mib": [p / 2**20 for p in load_peaks],
                             "peak_rss_later_mib": [p / 2**20 for p in every]}
            print(f"  peak worker RSS over the in-memory cases {', '.join(f'{p / 2**20:.0f}' for p in peaks)} MiB; "
                  f"data share {share / 2**20:.0f} MiB per worker; while loading "
                  f"{', '.join(f'{p / 2**20:.0f}' for p in load_peaks)} MiB; with the out-of-core cases and "
                  f"whole fits {', '.join(f'{p / 2**20:.0f}' for p in every)} MiB", flush=True)
        del mem

        if a.scaling:
            _scaling(a, res, client, src, fitter)

    if not a.no_sklearn:
        from sklearn.mixture import GaussianMixture as SkGMM

        X = src["float64"].X.compute()
        print("scikit-learn (this process):", flush=True)

        def skfit(it):
            SkGMM(k, max_iter=it, tol=0.0, **init).fit(X)

        report("scikit-learn, float64", marginal_seconds(skfit, max(2, a.iters // 2), 1))
        if not a.only_scaling:
            _whole_fits(res, X, k, sklearn=True)
        del X

    if not a.no_spark:
        import bench_spark

        why = bench_spark.available()
        if why:
            print(f"Spark MLlib: skipped ({why})", flush=True)
            res["spark_skipped"] = why
        else:
            print("Spark MLlib (local[2]):", flush=True)
            r = bench_spark.time_spark_gmm(os.path.join(os.path.abspath(a.data), "*.parquet"), cols, k,
                                           iters=max(2, a.iters // 2),
                                           repeats=max(1, a.repeats - 1))
            if r.get("per_iter"):
                report("Spark MLlib GaussianMixture", {"per_iter": r["per_iter"], "min": min(r["per_iter_all"]),
                                                       "all": r["per_iter_all"]},
                       f"{r['spark_version']}, {r['blas'].rsplit('.', 1)[-1]}")
            res["spark"] = r

    res["targets"] = targets(res)
    print("\ntargets:")
    for t in res["targets"]:
        print(f"  [{'ok' if t['met'] else 'NOT MET'}] {t['what']}: {t['value']}")
    print()
    write_record(res, a.out)
    print("\n" + markdown(res))
    return 0


def _main_cases(a, res, client, src, init, cold, mem, fitter, report):
    """Per-iteration cost of daskgmm in memory and out of core, every case of the table."""
    import dask

    from daskgmm import GaussianMixture
    from daskgmm.engine.passes import ChunkedData
    from daskgmm.io.parquet import open_parquet

    k = a.components
    print("daskgmm (LocalCluster, 2 workers x 1 thread):", flush=True)
    # pass start to pass start: these compare with each other (float32, diag, spherical against full)
    report("daskgmm in memory, float64", iteration_seconds(fitter(mem["float64"]), a.iters, a.repeats))
    report("daskgmm in memory, float32", iteration_seconds(fitter(mem["float32"]), a.iters, a.repeats))
    report("daskgmm in memory, float64, cold start", iteration_seconds(fitter(mem["float64"], start=cold), a.iters,
                                                                 a.repeats), "every component overlaps")
    for ct in ("diag", "spherical", "tied"):
        report(f"daskgmm in memory, float64, {ct}", iteration_seconds(fitter(mem["float64"], ct), a.iters, a.repeats))

    # float32 answers: same start, same iterations
    g64 = GaussianMixture(k, max_iter=10, tol=0.0, **init).fit(mem["float64"])
    g32 = GaussianMixture(k, max_iter=10, tol=0.0, **init).fit(mem["float32"])
    scale = np.abs(g64.means_).max()
    res["float32_vs_float64"] = {
        "max_abs_mean_diff_rel_to_scale": float(np.abs(g32.means_ - g64.means_).max() / scale),
        "max_rel_weight_diff": float(np.abs(g32.weights_ / g64.weights_ - 1).max()),
        "max_rel_cov_diff": float(np.abs(g32.covariances_ - g64.covariances_).max()
                                  / np.abs(g64.covariances_).max()),
        "lower_bound_diff": float(abs(g32.lower_bound_ - g64.lower_bound_)),
    }
    print("  float32 vs float64 after 10 iterations:", res["float32_vs_float64"], flush=True)

    peaks = list(client.run(_peak_rss).values())

    # out of core: the Parquet is read by every pass. A fresh graph (new keys): the persisted
    # copy of src's keys would otherwise meet a differently built task of the same key
    ooc = open_parquet(a.data, columns=src["float64"].columns).X
    data = ChunkedData(ooc, cache="none")
    scans = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        dask.compute(*[dask.delayed(len)(b) for b in data._blocks])
        scans.append(time.perf_counter() - t0)
    res["parquet_scan_s"] = statistics.median(scans)
    print(f"  {'Parquet scan (read only)':38s} {res['parquet_scan_s']:8.3f} s", flush=True)
    report("daskgmm out of core, float64", marginal_seconds(fitter(ooc, cache="none"), a.iters, a.repeats))
    rand = dict(init_params="random_from_data", random_state=0)

    def restarts(n_init):
        def fit(it):
            GaussianMixture(k, max_iter=it, tol=0.0, cache="none", n_init=n_init, **rand).fit(ooc)
        return fit

    report("daskgmm out of core, n_init=1", marginal_seconds(restarts(1), a.iters, a.repeats), "random_from_data")
    report("daskgmm out of core, n_init=8 lockstep", marginal_seconds(restarts(8), a.iters, a.repeats),
           "random_from_data")
    return peaks



SEEDS = (0, 1, 2)


def _reset_peak_rss():
    """Restart ``VmHWM`` from the current RSS (Linux: writing 5 to ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss():
    """Peak resident bytes of this process's own address space (``VmHWM``).

    Not ``ru_maxrss``: it keeps the peak from before ``exec``, so a worker spawned by a
    client of 190 MiB reports at least 190 MiB (measured: 194 MiB for an idle worker
    whose VmHWM was 62 MiB).
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _whole_fits(res, X, k, sklearn=False):
    """Whole default fits (init + EM to the default tol), one per seed: seconds and lower bound."""
    if sklearn:
        from sklearn.mixture import GaussianMixture as Est
        name = "scikit-learn"
    else:
        from daskgmm import GaussianMixture as Est
        name = "daskgmm"
    out = []
    for seed in SEEDS:
        t0 = time.perf_counter()
        g = Est(k, random_state=seed).fit(X)
        row = {"seed": seed, "seconds": time.perf_counter() - t0, "lower_bound": float(g.lower_bound_),
               "n_iter": int(g.n_iter_)}
        if not sklearn:
            row.update(passes=int(g.n_passes_), init_seconds=float(g.init_seconds_))
        out.append(row)
        print(f"  whole default fit, {name}, seed {seed}: {row['seconds']:.2f} s, {row['n_iter']} EM iterations"
              + (f", {row['passes']} passes (init {row['init_seconds']:.2f} s)" if not sklearn else "")
              + f", lower bound {row['lower_bound']:.4f}", flush=True)
    res.setdefault("whole_fit", {})[name] = out


def _scaling(a, res, client, src, fitter):
    """Seconds per EM pass against N: the median pass of one fit per size (in memory)."""
    import dask.array as da

    from daskgmm import GaussianMixture
    from daskgmm.engine.placement import row_major

    res["scaling"] = {}
    print("linearity in N (in memory, float64, median pass of iterations 3 and later):", flush=True)
    n = a.rows
    for m in [float(v) for v in a.scaling.split(",") if v]:
        reps = max(1, round(m * 1_000_000 / n))
        # distinct chunks per copy, so that every row is its own data, as in a real dataset
        X = client.persist(row_major(da.concatenate([src["float64"].X + 1e-9 * i for i in range(reps)], axis=0)))
        X.sum().compute()
        # at least 8 passes per size: one slow pass of a few must not decide a max/min ratio
        g = GaussianMixture(a.components, max_iter=2 + max(8, a.iters), tol=0.0, init_params="random_from_data",
                            random_state=0).fit(X)
        per = statistics.median(h["seconds"] for h in g.history_[2:])
        res["scaling"][str(X.shape[0])] = {"per_iter": per}
        print(f"  {X.shape[0]:>11,d} rows  {per:8.3f} s/pass  {per / (X.shape[0] / 1e6):.3f} s per 1M rows", flush=True)
        del X


def targets(res) -> list:
    """Issue 13's targets, each met or not, from one run."""
    c = res["cases"]
    out = []

    def add(what, value, met):
        out.append({"what": what, "value": value, "met": bool(met)})

    wf = res.get("whole_fit", {})
    if "daskgmm" in wf and "scikit-learn" in wf:
        ours = statistics.median(r["seconds"] for r in wf["daskgmm"])
        theirs = statistics.median(r["seconds"] for r in wf["scikit-learn"])
        add("whole default fit >= 10x faster than scikit-learn's (median of seeds 0, 1, 2)",
            f"{theirs / ours:.1f}x ({ours:.2f} s against {theirs:.2f} s)", theirs / ours >= 10)
        gaps = [o["lower_bound"] - t["lower_bound"] for o, t in zip(wf["daskgmm"], wf["scikit-learn"])]
        add("whole default fit: mean log-likelihood >= scikit-learn's - 0.01 on every seed",
            ", ".join(f"{g:+.4f}" for g in gaps), min(gaps) >= -0.01)
        passes = max(r["passes"] - r["n_iter"] for r in wf["daskgmm"])
        add("default init <= 3 passes beyond the first scan", f"{passes - 1} passes", passes - 1 <= 3)
    if "daskgmm in memory, float64" not in c:
        return out + _linearity(res)
    mem = c["daskgmm in memory, float64"]["per_iter"]
    frac = res["gemm_bound_s"] / mem
    add("one EM iteration >= 75% of the 4NKD^2 bound at the run's dgemm rate", f"{100 * frac:.0f}%", frac >= 0.75)
    if "scikit-learn, float64" in c:
        r = c["scikit-learn, float64"]["per_iter"] / mem
        add("one EM iteration >= 15x faster than scikit-learn", f"{r:.1f}x", r >= 15)
    if "Spark MLlib GaussianMixture" in c:
        ratio = c["Spark MLlib GaussianMixture"]["per_iter"] / mem
        add("in memory >= 2x faster than Spark MLlib local[2]", f"{ratio:.1f}x", ratio >= 2)
    r32 = mem / c["daskgmm in memory, float32"]["per_iter"]
    add("float32 >= 1.7x the float64 speed", f"{r32:.2f}x", r32 >= 1.7)
    ooc = c["daskgmm out of core, float64"]["per_iter"]
    lim = res["parquet_scan_s"] + mem
    add("out of core <= 1.3 x (scan + in-memory iteration)", f"{ooc / lim:.2f} x", ooc <= 1.3 * lim)
    for ct in ("diag", "spherical"):
        r = mem / c[f"daskgmm in memory, float64, {ct}"]["per_iter"]
        add(f"{ct} >= 3x faster than full", f"{r:.1f}x", r >= 3)
    r8 = c["daskgmm out of core, n_init=8 lockstep"]["per_iter"] / c["daskgmm out of core, n_init=1"]["per_iter"]
    add("n_init=8 in lockstep <= 3x one restart, out of core", f"{r8:.2f}x", r8 <= 3)
    if "memory" in res:
        m = res["memory"]
        over = max(m["peak_rss_mib"]) - m["data_share_mib"]
        add("peak worker RSS in the in-memory cases <= data share + 250 MiB", f"share + {over:.0f} MiB", over <= 250)
    return out + _linearity(res)


def _linearity(res) -> list:
    if not res.get("scaling"):
        return []
    per_m = [v["per_iter"] / (int(rows) / 1e6) for rows, v in res["scaling"].items()]
    spread = max(per_m) / min(per_m)
    return [{"what": "linear in N (max/min seconds per pass per 1M rows)", "value": f"{spread:.2f}",
             "met": bool(spread <= 1.25)}]


def markdown(res) -> str:
    cfg = res["config"]
    lines = [
        f"{cfg['rows']:,} rows x {cfg['features']} features, K={cfg['components']}, full covariance unless "
        "noted; seconds per EM iteration (in memory: pass start to pass start; else marginal; median)",
        "",
        "| case | s/iter |",
        "|---|---|",
    ]
    for name, r in res["cases"].items():
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {name}{note} | {r['per_iter']:.3f} |")
    if "parquet_scan_s" in res:
        lines.append(f"| Parquet scan (read only) | {res['parquet_scan_s']:.3f} |")
    lines.append(f"| GEMM bound (4NKD² at {res['gemm_flops'] / 1e9:.0f} GFLOP/s) | {res['gemm_bound_s']:.3f} |")
    for name, rows in res.get("whole_fit", {}).items():
        secs = ", ".join(f"{r['seconds']:.2f}" for r in rows)
        lbs = ", ".join(f"{r['lower_bound']:.4f}" for r in rows)
        lines.append(f"| whole default fit, {name}, seeds 0, 1, 2: seconds ({secs}); lower bound ({lbs}) "
                     f"| {statistics.median(r['seconds'] for r in rows):.3f} |")
    for rows, v in res.get("scaling", {}).items():
        lines.append(f"| {int(rows):,} rows, in memory, float64 (median pass) | {v['per_iter']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
