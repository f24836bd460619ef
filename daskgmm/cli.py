"""The ``daskgmm`` command: fit, predict, score, sample and inspect models on Parquet data.

Made for scheduled ETL jobs: outputs are written atomically (a staging
directory renamed into place, with ``_SUCCESS``), progress goes to stderr, a
JSON summary to ``--metrics-out``, and the exit status tells what happened.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
import warnings

import numpy as np

from daskgmm.config import (
    FIT,
    INFO,
    OPTIONS,
    PREDICT,
    SAMPLE,
    SCORE,
    SELECT,
    UPDATE,
    ConfigError,
    coerce,
    load_config,
    options_for,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXIT_DOC = """exit status:
  0  success
  2  bad usage or bad input: a missing/unknown option or config key, a missing or
     non-numeric column, disagreeing schemas, NaN/inf values, an empty or corrupt
     file, an unreadable model (the message names the file, column, key or value)
  1  any other failure (e.g. a component collapsed, a worker failed for good)
Outputs are written to a staging directory and renamed into place only when
complete, so after a failure the previous outputs are untouched."""

COMMANDS = {
    FIT: "fit a Gaussian mixture on Parquet data and save the model",
    PREDICT: "label rows of Parquet data with a saved model",
    SCORE: "mean log-likelihood, BIC and AIC of Parquet data under a saved model",
    SAMPLE: "draw rows from a saved model into Parquet, streaming",
    INFO: "describe a saved model",
    SELECT: "fit every K and covariance type in lockstep and keep the best by BIC or AIC",
    UPDATE: "update a saved Gaussian mixture with new Parquet data by online EM (partial_fit) and save it",
}


class UsageError(ValueError):
    """Bad command line (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    from daskgmm import __version__

    parser = argparse.ArgumentParser(
        prog="daskgmm",
        description="Gaussian mixture models fitted by EM on Parquet data with Dask.",
        epilog=EXIT_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"daskgmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd, text in COMMANDS.items():
        sp = sub.add_parser(cmd, help=text, description=text[0].upper() + text[1:] + ".", epilog=EXIT_DOC,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        if cmd in (FIT, PREDICT, SCORE, SELECT, UPDATE):
            sp.add_argument("data", nargs="*", metavar="DATA",
                            help="Parquet file(s), directory, glob or fsspec URL (or 'data' in the config)")
        for opt in options_for(cmd):
            flags = [opt.flag] + ([opt.short] if opt.short else [])
            default = "" if opt.default in (None, False) else f" (default: {_show(opt.default)})"
            if opt.kind == "bool":
                # --x and --no-x: a flag on the command line overrides the config either way
                sp.add_argument(*flags, dest=opt.dest, action=argparse.BooleanOptionalAction, default=None,
                                help=opt.help)
            else:
                metavar = opt.metavar or (None if opt.choices else opt.dest.upper())
                sp.add_argument(*flags, dest=opt.dest, default=None, metavar=metavar,
                                choices=opt.choices or None, help=opt.help + default)
        if cmd != INFO:
            sp.add_argument("--config", metavar="FILE.yaml",
                            help="YAML file holding the same options (underscores for dashes); flags override it")
    return parser


def _show(value):
    return ",".join(value) if isinstance(value, list) else value


def resolve(args) -> argparse.Namespace:
    """Defaults, then the config file, then explicit flags."""
    cmd = args.command
    merged = {o.dest: o.default for o in options_for(cmd)}
    config = getattr(args, "config", None)
    data = None
    if config:
        values = load_config(config, cmd)
        data = values.pop("data", None)
        merged.update(values)
    for o in options_for(cmd):
        given = getattr(args, o.dest, None)
        if given is not None:
            merged[o.dest] = coerce(o, given, o.flag)
    if getattr(args, "data", None):
        data = args.data
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    merged["data"] = data
    merged["command"] = cmd
    ns = argparse.Namespace(**merged)
    _require(ns)
    return ns


def _require(o):
    need = {FIT: ["data", "model_out"], PREDICT: ["data", "model", "out"], SCORE: ["data", "model"],
            SAMPLE: ["model", "n", "out"], INFO: ["model"], SELECT: ["data", "out"],
            UPDATE: ["data", "model", "model_out"]}[o.command]
    for key in need:
        if getattr(o, key) in (None, [], ""):
            flag = "DATA" if key == "data" else "--" + key.replace("_", "-")
            raise UsageError(f"daskgmm {o.command}: {flag} is required (or '{key}' in the config)")
    for key in ("n_components", "n_init", "max_iter", "n", "chunk_rows", "n_workers", "threads_per_worker",
                "passes"):
        v = getattr(o, key, None)
        if v is not None and v < (0 if key == "max_iter" else 1):
            raise UsageError(f"daskgmm {o.command}: --{key.replace('_', '-')} must be at least "
                             f"{0 if key == 'max_iter' else 1}, got {v}")
    if o.command == SELECT:
        if o.k_min < 1 or o.k_max < o.k_min:
            raise UsageError(f"daskgmm select: need 1 <= --k-min <= --k-max, got {o.k_min} and {o.k_max}")
        bad = [t for t in o.covariance_types if t not in ("full", "tied", "diag", "spherical")]
        if bad:
            raise UsageError(f"daskgmm select: unknown covariance type(s) {', '.join(bad)} "
                             "(choose among full, tied, diag, spherical)")
    if getattr(o, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'daskgmm[plot]'") from None
    if getattr(o, "resume", False) and not getattr(o, "checkpoint_dir", None):
        raise UsageError(f"daskgmm {o.command}: --resume needs --checkpoint-dir")
    tls = [getattr(o, k, None) for k in ("tls_ca", "tls_cert", "tls_key")]
    if any(tls) and not getattr(o, "scheduler", None):
        raise UsageError(f"daskgmm {o.command}: --tls-* options need --scheduler tls://HOST:PORT")
    outs = [p for p in (getattr(o, "model_out", None), getattr(o, "predictions_out", None)) if p]
    if len(outs) == 2 and _overlap(*outs):
        raise UsageError(f"daskgmm {o.command}: --model-out and --predictions-out must be separate directories")


def _overlap(a, b) -> bool:
    a, b = os.path.abspath(a), os.path.abspath(b)
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)


# ---------------------------------------------------------------------------


class Reporter:
    """Progress lines on stderr (unless quiet)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"daskgmm: {msg}", file=sys.stderr, flush=True)

    def progress(self, event, **info):
        now = time.perf_counter()
        if event == "init":
            how = "resumed from checkpoint" if info["resumed"] else "initialised"
            self(f"{how} {len(info['runs'])} run(s) in {info['seconds']:.2f} s")
        elif event == "iteration":
            runs = info["runs"]
            it = info["iteration"]
            rows = [r for r in runs if r.n_iter == it and r.history]  # the runs this pass served
            if not rows:
                return
            # the best over every run, finished ones included, so that the line never goes backwards
            best = max((r for r in runs if r.history), key=lambda r: r.objective)
            h = best.history[-1]
            active = sum(not r.done for r in runs)
            many = f"  [best of {len(runs)} run(s), {active} still active]" if len(runs) > 1 else ""
            self(f"iter {it:4d}  loglik {best.objective:.6f}  change {h['change']:.3e}  "
                 f"{rows[0].history[-1]['seconds']:.2f} s{many}")
            for r in rows:
                for e in r.history[-1]["events"]:
                    self(f"          {e}")
        self.last = now


@contextlib.contextmanager
def _cluster(o, log, box=None):
    """The cluster of a command; NaN found while reading ``box["src"]`` is reported over all of it."""
    from daskgmm.cluster import connect
    from daskgmm.io import DataError, NonFiniteError

    security = None
    if o.scheduler and any((o.tls_ca, o.tls_cert, o.tls_key)):
        from distributed.security import Security

        for key in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(o, key)
            if path and not os.path.isfile(path):
                raise UsageError(f"--{key.replace('_', '-')}: no such file {path!r}")
        security = Security(tls_ca_file=o.tls_ca, tls_client_cert=o.tls_cert, tls_client_key=o.tls_key,
                            require_encryption=True)
    with connect(o.scheduler, n_workers=o.n_workers, threads_per_worker=o.threads_per_worker,
                 memory_limit=o.memory_limit, security=security) as client:
        from daskgmm.cluster import workers as list_workers

        workers = list_workers(client)
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        where = o.scheduler or "embedded LocalCluster on 127.0.0.1"
        from daskgmm.cluster import worker_floor

        # measured now, while every worker lives, for the advice of a later failure
        floor = worker_floor(client) if workers else 0
        idle = f", an idle worker takes {floor / 2**20:.0f} MiB" if floor else ""
        log(f"cluster: {where}, {len(workers)} worker(s), {threads} thread(s){idle}")
        try:
            yield client
        except NonFiniteError as exc:
            src = (box or {}).get("src")
            if src is None:
                raise
            log(f"{exc}; counting over all the data")
            raise DataError(src.nonfinite_summary()) from None
        except Exception as exc:
            _explain_cluster_failure(exc, client)
            raise


def _explain_cluster_failure(exc, client):
    """Turn distributed's KilledWorker into a message saying what happened and what to change."""
    try:
        from distributed.scheduler import KilledWorker, NoValidWorkerError, NoWorkerError
    except ImportError:  # pragma: no cover
        return
    if isinstance(exc, (NoWorkerError, NoValidWorkerError)):
        from daskgmm.cluster import ClusterError, memory_advice

        task, timeout = exc.args[0], exc.args[-1]
        raise ClusterError(
            f"no worker was left to run task {task} for {timeout:.0f} s: the workers died (most likely "
            f"out of memory) and were not restarted, or never started; {memory_advice(client)}"
        ) from None
    if isinstance(exc, KilledWorker):
        from daskgmm.cluster import memory_advice

        raise WorkersDied(
            f"workers died again and again running the same task ({exc.args[0] if exc.args else 'a task'}), "
            f"most likely out of memory: {memory_advice(client)}"
        ) from None


class WorkersDied(RuntimeError):
    """Workers died repeatedly on the same task (exit status 1)."""


def _check_outputs(o, locks):
    """Before any data pass: lock every output directory (which also proves it creatable) and
    check that the plot and metrics files can be written."""
    from daskgmm.outputs import OutputLock

    for key in ("model_out", "predictions_out", "out"):
        target = getattr(o, key, None)
        if target and (key != "out" or o.command == SELECT):
            locks.enter_context(OutputLock(target))
    for key in ("plot", "metrics_out"):
        path = getattr(o, key, None)
        if path:
            _check_file_target(path, "--" + key.replace("_", "-"))


def _check_file_target(path, flag):
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create its directory ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: directory {parent} is not writable")


def _open(o, log, columns=None, dtype=None):
    """Open DATA; the rows dropped by ``--nan-policy omit`` are reported on stderr."""
    from daskgmm.io import DataWarning, RowsOmittedWarning, open_parquet

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RowsOmittedWarning)
        warnings.simplefilter("always", DataWarning)
        src = open_parquet(o.data, columns if columns is not None else o.columns, getattr(o, "id_column", None),
                           dtype or o.dtype, nan_policy=o.nan_policy, chunk_rows=o.chunk_rows)
    for w in caught:
        if issubclass(w.category, (RowsOmittedWarning, DataWarning)):
            log(f"warning: {w.message}")
    return src


#: The options of ``--estimator bayesian`` (its priors), also part of a checkpoint's fingerprint.
BAYESIAN_OPTIONS = ("estimator", "weight_concentration_prior_type", "weight_concentration_prior",
                    "mean_precision_prior", "degrees_of_freedom_prior")


def _estimator(o):
    """The estimator ``daskgmm fit`` fits (``assignment``/``on_collapse`` are EM's only)."""
    if o.estimator == "bayesian":
        from daskgmm.bayesian import BayesianGaussianMixture

        return BayesianGaussianMixture(
            n_components=o.n_components, covariance_type=o.covariance_type, tol=o.tol, reg_covar=o.reg_covar,
            max_iter=o.max_iter, n_init=o.n_init, init_params=o.init_params, random_state=o.seed, cache=o.cache,
            missing=_missing(o), **{k: getattr(o, k) for k in BAYESIAN_OPTIONS[1:]},
        )
    from daskgmm.mixture import GaussianMixture

    return GaussianMixture(
        n_components=o.n_components, covariance_type=o.covariance_type, tol=o.tol, reg_covar=o.reg_covar,
        max_iter=o.max_iter, n_init=o.n_init, init_params=o.init_params, random_state=o.seed,
        assignment=o.assignment, on_collapse=o.on_collapse, cache=o.cache, missing=_missing(o),
    )


def _missing(o) -> str:
    """The estimators' ``missing`` for ``--nan-policy``: "marginalize" keeps NaN for the model."""
    return "marginalize" if o.nan_policy == "marginalize" else "raise"


def _fingerprint(o, src) -> dict:
    keys = ("n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init", "init_params", "seed",
            "assignment", "on_collapse", "dtype", "nan_policy", "chunk_rows", *BAYESIAN_OPTIONS)
    # the chunking fixes the reduction tree, hence the bits: a resume must read the same chunks
    chunks = hashlib.sha256(np.asarray(src.X.chunks[0], np.int64).tobytes()).hexdigest()[:16]
    return {"files": src.signatures(), "columns": src.columns, "n_rows": src.n_rows, "chunks": chunks,
            **{k: getattr(o, k) for k in keys}}


def _named(message, columns) -> str:
    """A warning about columns of X by position, with the Parquet column names instead."""
    def names(m):
        return ", ".join(repr(columns[int(j)]) for j in m.group(1).split(", "))

    return re.sub(r"(?<=column\(s\) )(\d+(?:, \d+)*)(?= of X)", names, str(message))


def _commit_model_and_predictions(est, o, src):
    """Write ``--model-out`` and ``--predictions-out`` staged, and swap them in together (one commit).

    Returns the number of predictions written (None without ``--predictions-out``).
    """
    from daskgmm.outputs import StagedOutput, commit_together, write_parts_into
    from daskgmm.persist import write_model_files

    rows = None
    outs = [StagedOutput(o.model_out)] + ([StagedOutput(o.predictions_out)] if o.predictions_out else [])
    try:
        for out in outs:
            out.begin()
        write_model_files(est, outs[0].fs, outs[0].staging)
        if o.predictions_out:
            parts = est.prediction_parts(src.X, ids=src.ids, id_column=src.id_column, proba=o.proba,
                                         loglik=o.loglik)
            rows = write_parts_into(outs[1].fs, outs[1].staging, parts)
        commit_together(outs)
    except BaseException:
        for out in outs:
            out.abort()
        raise
    finally:
        for out in outs:
            out.release()
    return rows


def cmd_fit(o, log, metrics):
    from daskgmm import ConvergenceWarning
    from daskgmm.io import DataError, DataWarning
    from daskgmm.persist import Checkpoint
    from daskgmm.validation import DegenerateDataWarning

    t_start = time.perf_counter()
    box: dict = {}
    with contextlib.ExitStack() as locks, _cluster(o, log, box):
        _check_outputs(o, locks)
        src = box["src"] = _open(o, log)
        if src.n_rows < o.n_components:
            raise DataError(f"{o.data}: {src.n_rows} row(s) but --n-components {o.n_components}; "
                            "need at least as many rows as components")
        log(f"data: {src.n_rows:,} rows x {len(src.columns)} columns ({', '.join(src.columns)}) from "
            f"{len(src.files)} file(s), {src.X.numblocks[0]} chunk(s) of up to {max(src.X.chunks[0]):,} rows, "
            f"{src.X.dtype}")
        metrics.update(n_rows=src.n_rows, n_features=len(src.columns), columns=src.columns,
                       n_omitted=src.n_omitted, files=len(src.files), chunks=src.X.numblocks[0])
        est = _estimator(o)
        ckpt = None
        if o.checkpoint_dir:
            ckpt = Checkpoint(o.checkpoint_dir, _fingerprint(o, src))
            stale = ckpt.stale() if o.resume else None
            if stale:
                log(f"checkpoint {ckpt.path} not resumed: {stale}; starting afresh")
                metrics["checkpoint_discarded"] = stale
            if stale or not o.resume:
                ckpt.clear()  # a fresh run must not pick up another run's progress
        report = Reporter(o.quiet)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            t_fit = time.perf_counter()
            est.fit(src.X, checkpoint=ckpt, progress=report.progress)
            fit_seconds = time.perf_counter() - t_fit
        for w in caught:
            if issubclass(w.category, (ConvergenceWarning, DataWarning, DegenerateDataWarning)):
                log(f"warning: {_named(w.message, src.columns)}")
        est.feature_names_in_ = np.asarray(src.columns, dtype=object)
        state = "converged" if est.converged_ else "did not converge"
        log(f"{state} after {est.n_iter_} iteration(s): lower bound {est.lower_bound_:.6f} "
            f"(fit {fit_seconds:.2f} s, {est.n_passes_} passes over the data)")
        rows = _commit_model_and_predictions(est, o, src)
        log(f"model written to {o.model_out}")
        if rows is not None:
            log(f"{rows:,} predictions written to {o.predictions_out}")
        if ckpt is not None:
            ckpt.clear()  # the job is done: tomorrow's run of the same command starts afresh
            log(f"checkpoint {ckpt.path} removed (the job finished)")
        metrics.update(
            converged=est.converged_, n_iter=est.n_iter_, lower_bound=est.lower_bound_,
            lower_bounds=est.lower_bounds_, history=est.history_, restarts=est.restarts_,
            init_seconds=est.init_seconds_, init_passes=est.init_passes_, passes=est.n_passes_,
            fit_seconds=fit_seconds, total_seconds=time.perf_counter() - t_start,
            n_components=o.n_components, covariance_type=o.covariance_type, weights=est.weights_,
            model_out=o.model_out, predictions_out=o.predictions_out, predictions_rows=rows,
        )
        if o.plot:
            from daskgmm.plot import plot_fit

            _plot(o, log, metrics, lambda: plot_fit(est, src.X, o.plot))
    return EXIT_OK


def _plot(o, log, metrics, draw):
    """Draw the picture after the outputs are written: a picture that fails costs nothing else."""
    try:
        draw()
    except Exception as exc:
        log(f"warning: picture not written to {o.plot}: {type(exc).__name__}: {exc}")
        metrics["plot_error"] = f"{type(exc).__name__}: {exc}"
    else:
        log(f"picture written to {o.plot}")


def _load(o, mixture=True):
    """The model at ``--model``; with ``mixture``, only a GaussianMixture will do."""
    from daskgmm import load
    from daskgmm.mixture import GaussianMixture
    from daskgmm.persist import ModelFileError

    est = load(o.model)
    if mixture and not isinstance(est, GaussianMixture):
        raise ModelFileError(f"{o.model}: a {type(est).__name__} model; daskgmm {o.command} needs a "
                             "GaussianMixture model (as written by daskgmm fit or GaussianMixture.save)")
    return est


def _model_source(o, log):
    """The saved model and DATA opened with the model's columns and dtype."""
    est = _load(o)
    cols = o.columns
    model_cols = getattr(est, "feature_names_in_", None)
    if cols is None and model_cols is not None:
        cols = [str(c) for c in model_cols]
    if _missing(o) == "marginalize":
        from daskgmm.mixture import GaussianMixture

        if type(est) is not GaussianMixture:
            raise UsageError(f"daskgmm {o.command}: --nan-policy marginalize needs a GaussianMixture model, "
                             f"{o.model} holds a {type(est).__name__}")
        est.set_params(missing="marginalize")  # marginal densities need nothing of how the model was fitted
    src = _open(o, log, columns=cols, dtype=str(np.asarray(est.means_).dtype))
    if len(src.columns) != est.n_features_in_:
        from daskgmm.io import DataError

        raise DataError(f"{o.data}: {len(src.columns)} feature column(s) ({', '.join(src.columns)}) but the model "
                        f"expects {est.n_features_in_}; choose them with --columns")
    return est, src


def cmd_predict(o, log, metrics):
    from daskgmm.outputs import OutputLock

    box: dict = {}
    with OutputLock(o.out), _cluster(o, log, box):
        est, src = box["model"], box["src"] = _model_source(o, log)
        rows = est.write_predictions(src.X, o.out, ids=src.ids, id_column=src.id_column, proba=o.proba,
                                     loglik=o.loglik)
    log(f"{rows:,} predictions written to {o.out}")
    return EXIT_OK


def cmd_score(o, log, metrics):
    box: dict = {}
    with _cluster(o, log, box):
        est, src = box["model"], box["src"] = _model_source(o, log)
        mean = est.score(src.X)
    from daskgmm.kernels.covariance import n_parameters

    n = src.n_rows
    result = {"n_rows": n, "mean_loglik": mean}
    if hasattr(est, "bic"):  # a maximum-likelihood fit; the variational mixture has no BIC/AIC (as scikit-learn's)
        p = n_parameters(est.covariance_type, est.n_components, est.n_features_in_)
        result.update({"bic": -2 * mean * n + p * np.log(n), "aic": -2 * mean * n + 2 * p, "n_parameters": p})
    metrics.update(result)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def cmd_sample(o, log, metrics):
    from daskgmm.outputs import OutputLock

    est = _load(o)
    with OutputLock(o.out), _cluster(o, log):
        rows = est.write_sample(o.out, o.n, random_state=o.seed, chunk_rows=o.chunk_rows or 1_000_000)
    log(f"{rows:,} rows written to {o.out}")
    return EXIT_OK


def cmd_info(o, log, metrics):
    est = _load(o, mixture=False)
    path = os.path.join(o.model, "model.json")
    if o.json:
        with open(path, encoding="utf-8") as f:
            print(f.read())
        return EXIT_OK
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    fit = doc.get("fit", {})
    lines = [
        f"model:            {o.model}",
        f"estimator:        {doc['estimator']} (daskgmm {doc.get('daskgmm_version')}, saved {doc.get('saved_at')})",
    ]
    kmeans = hasattr(est, "cluster_centers_")
    lines += [
        f"clusters:         {doc.get('n_components')}" if kmeans else
        f"components:       {doc.get('n_components')} ({doc.get('covariance_type')} covariance)",
        f"features:         {doc.get('n_features')} ({', '.join(doc.get('columns') or []) or 'unnamed'})",
        f"dtype:            {doc.get('dtype')}",
    ]
    if kmeans:
        lines += [
            f"iterations:       {fit.get('n_iter')} (plus {fit.get('n_steps')} sequential update(s))",
            f"inertia:          {fit.get('inertia')}",
        ]
        centres = est.cluster_centers_
    else:
        lines += [
            f"converged:        {fit.get('converged')} after {fit.get('n_iter')} iteration(s)",
            f"lower bound:      {fit.get('lower_bound')}",
            "weights:          " + " ".join(f"{w:.4f}" for w in np.asarray(est.weights_, float)),
        ]
        if hasattr(est, "n_effective_components_"):
            from daskgmm.bayesian import EFFECTIVE_WEIGHT

            lines.append(f"effective:        {est.n_effective_components_} component(s) of weight > {EFFECTIVE_WEIGHT}")
        centres = est.means_
    for k, m in enumerate(np.asarray(centres, float)):
        lines.append(f"mean[{k}]:{' ' * (9 - len(str(k)))}" + " ".join(f"{v:.6g}" for v in m))
    print("\n".join(lines))
    return EXIT_OK


def cmd_select(o, log, metrics):
    import posixpath

    from daskgmm import ConvergenceWarning
    from daskgmm.io import DataWarning
    from daskgmm.outputs import staged_directory
    from daskgmm.persist import write_model_files
    from daskgmm.selection import select_model
    from daskgmm.validation import DegenerateDataWarning

    t_start = time.perf_counter()
    box: dict = {}
    with contextlib.ExitStack() as locks, _cluster(o, log, box):
        _check_outputs(o, locks)
        src = box["src"] = _open(o, log)
        log(f"data: {src.n_rows:,} rows x {len(src.columns)} columns from {len(src.files)} file(s), "
            f"{src.X.numblocks[0]} chunk(s)")
        ks = list(range(o.k_min, o.k_max + 1))
        log(f"candidates: K = {o.k_min}..{o.k_max} x {', '.join(o.covariance_types)} x {o.n_init} restart(s), "
            "all in the same passes")
        report = Reporter(o.quiet)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("always", DataWarning)
            warnings.simplefilter("always", DegenerateDataWarning)
            res = select_model(src.X, ks, o.covariance_types, criterion=o.criterion, n_init=o.n_init,
                               random_state=o.seed, max_iter=o.max_iter, tol=o.tol, reg_covar=o.reg_covar,
                               init_params=o.init_params, cache=o.cache, progress=report.progress,
                               missing=_missing(o))
        for w in caught:
            log(f"warning: {_named(w.message, src.columns)}")
        best = res.best_
        best.feature_names_in_ = np.asarray(src.columns, dtype=object)
        for m in res.models_.values():
            m.feature_names_in_ = best.feature_names_in_
        log(f"best by {o.criterion.upper()}: K={best.n_components}, {best.covariance_type} covariance")
        if not o.quiet:
            print(res.table.to_string(index=False, float_format=lambda v: f"{v:.6g}"), file=sys.stderr)
        summary = {"criterion": o.criterion, "best": {"n_components": best.n_components,
                                                       "covariance_type": best.covariance_type},
                   "candidates": res.table.to_dict(orient="records")}
        with staged_directory(o.out) as (fs, staging):
            model_dir = posixpath.join(staging, "model")
            fs.makedirs(model_dir, exist_ok=True)
            write_model_files(best, fs, model_dir)
            with fs.open(posixpath.join(staging, "selection.csv"), "w") as f:
                res.table.to_csv(f, index=False)
            with fs.open(posixpath.join(staging, "selection.json"), "w") as f:
                from daskgmm.persist import jsonable

                json.dump(jsonable(summary), f, indent=2)
        log(f"best model and table written to {o.out}")
        metrics.update(summary, n_rows=src.n_rows, total_seconds=time.perf_counter() - t_start, out=o.out)
        if o.plot:
            from daskgmm.plot import plot_selection

            _plot(o, log, metrics, lambda: plot_selection(res, o.plot))
    return EXIT_OK


def _update_fingerprint(o, src, est) -> dict:
    """What an update's checkpoint belongs to: the data, the model it started from, the steps."""
    with open(os.path.join(o.model, "model.json"), "rb") as f:
        model = hashlib.sha256(f.read()).hexdigest()[:16]
    chunks = hashlib.sha256(np.asarray(src.X.chunks[0], np.int64).tobytes()).hexdigest()[:16]
    return {"files": src.signatures(), "columns": src.columns, "n_rows": src.n_rows, "chunks": chunks,
            "model": model, "passes": o.passes, "learning_decay": est.learning_decay,
            "learning_offset": est.learning_offset, "dtype": o.dtype, "nan_policy": o.nan_policy,
            "chunk_rows": o.chunk_rows}


def cmd_update(o, log, metrics):
    """Online EM steps of DATA on the model at --model; outputs as ``fit`` writes them.

    With --checkpoint-dir the model after every step is saved there (model files, written
    atomically) beside a checkpoint that names the job; --resume continues a killed job from
    its last step (the steps done are the saved model's batches minus the input model's).
    """
    import shutil

    from daskgmm.persist import Checkpoint, load_model, save_model

    t_start = time.perf_counter()
    box: dict = {}
    with contextlib.ExitStack() as locks, _cluster(o, log, box):
        _check_outputs(o, locks)
        est, src = _model_source(o, log)
        box["src"] = src
        for key in ("learning_decay", "learning_offset"):
            if getattr(o, key) is not None:
                est.set_params(**{key: getattr(o, key)})
        log(f"model: {est.n_components} component(s), {est.n_batches_} batch(es) and {est.n_rows_seen_:,} rows "
            f"seen; data: {src.n_rows:,} rows x {len(src.columns)} columns from {len(src.files)} file(s), "
            f"{src.X.numblocks[0]} chunk(s)")
        metrics.update(n_rows=src.n_rows, n_features=len(src.columns), columns=src.columns,
                       n_omitted=src.n_omitted, files=len(src.files), chunks=src.X.numblocks[0],
                       n_batches_before=est.n_batches_)
        base, done, ckpt, snapshot = est.n_batches_, 0, None, None
        if o.checkpoint_dir:
            ckpt = Checkpoint(o.checkpoint_dir, _update_fingerprint(o, src, est))
            snapshot = os.path.join(o.checkpoint_dir, "update-model")
            stale = ckpt.stale() if o.resume else None
            if stale:
                log(f"checkpoint {ckpt.path} not resumed: {stale}; starting afresh")
                metrics["checkpoint_discarded"] = stale
            resumable = o.resume and not stale and os.path.exists(ckpt.path)
            if resumable and os.path.exists(os.path.join(snapshot, "model.json")):
                saved = load_model(snapshot)
                if 0 <= saved.n_batches_ - base <= o.passes:
                    est, done = saved, saved.n_batches_ - base
                    log(f"resumed from checkpoint after {done} step(s)")
            if not resumable:
                ckpt.clear()  # a fresh run must not pick up another run's progress
                shutil.rmtree(snapshot, ignore_errors=True)
            ckpt.save([], extra={"update_model": snapshot})
            metrics["resumed_steps"] = done
        t_fit = time.perf_counter()
        with warnings.catch_warnings():
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            for _ in range(done, o.passes):
                est.partial_fit(src.X)
                h = est.history_[-1]
                log(f"step {est.n_batches_ - 1}: loglik {h['lower_bound']:.6f} (before the step), "
                    f"eta {h['eta']:.4f}, {h['seconds']:.2f} s")
                for e in h["events"]:
                    log(f"          {e}")
                if ckpt is not None:
                    save_model(est, snapshot)
        update_seconds = time.perf_counter() - t_fit
        rows = _commit_model_and_predictions(est, o, src)
        log(f"model written to {o.model_out} ({est.n_batches_} batch(es), {est.n_rows_seen_:,} rows seen)")
        if rows is not None:
            log(f"{rows:,} predictions written to {o.predictions_out}")
        if ckpt is not None:
            ckpt.clear()  # the job is done: tomorrow's run starts afresh
            shutil.rmtree(snapshot, ignore_errors=True)
            log(f"checkpoint {ckpt.path} removed (the job finished)")
        steps = est.history_[-o.passes:]  # this job's steps
        metrics.update(
            passes=o.passes, n_batches=est.n_batches_, n_rows_seen=est.n_rows_seen_, lower_bound=est.lower_bound_,
            history=steps, learning_decay=est.learning_decay, learning_offset=est.learning_offset,
            update_seconds=update_seconds, total_seconds=time.perf_counter() - t_start,
            n_components=est.n_components, covariance_type=est.covariance_type, weights=est.weights_,
            model_out=o.model_out, predictions_out=o.predictions_out, predictions_rows=rows,
        )
    return EXIT_OK


HANDLERS = {FIT: cmd_fit, PREDICT: cmd_predict, SCORE: cmd_score, SAMPLE: cmd_sample, INFO: cmd_info,
            SELECT: cmd_select, UPDATE: cmd_update}


def _write_metrics(path, metrics):
    from daskgmm.persist import jsonable

    tmp = f"{path}.tmp-{os.getpid()}"
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(jsonable(metrics), f, indent=2)
    os.replace(tmp, path)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwound like Ctrl-C (staging removed, cluster closed), exit 143."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    """Entry point of the ``daskgmm`` console script; returns the exit status.

    SIGTERM (what schedulers send first) is handled like SIGINT: the job stops
    within seconds, says so, removes its staging directories, closes its
    cluster and writes the error metrics; exit status 143 (130 for SIGINT).
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv=None) -> int:
    from daskgmm.io import DataError
    from daskgmm.validation import InvalidParameterError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    metrics = {"command": args.command, "status": "running"}
    metrics_out = getattr(args, "metrics_out", None)
    status = EXIT_FAILURE
    quiet = bool(getattr(args, "quiet", False))
    try:
        o = resolve(args)
        metrics_out = getattr(o, "metrics_out", None)
        quiet = bool(getattr(o, "quiet", False))
        log = Reporter(quiet)
        status = HANDLERS[o.command](o, log, metrics)
        metrics["status"] = "ok"
    except (UsageError, ConfigError, DataError, InvalidParameterError) as exc:
        status = EXIT_USAGE
        _fail(metrics, exc, status)
    except Terminated:
        status = 143
        _fail(metrics, "terminated (SIGTERM): stopped, no output written", status)
    except KeyboardInterrupt:
        status = 130
        _fail(metrics, "interrupted", status)
    except Exception as exc:  # every other failure: exit 1 with the reason
        status = EXIT_FAILURE
        _fail(metrics, exc, status)
    if metrics_out:
        try:
            _write_metrics(metrics_out, metrics)
        except OSError as exc:
            print(f"daskgmm: error: cannot write --metrics-out {metrics_out}: {exc}", file=sys.stderr)
            status = status or EXIT_FAILURE
    return status


def _fail(metrics, exc, status):
    from daskgmm.cluster import ClusterError
    from daskgmm.outputs import OutputBusyError

    text = exc if isinstance(exc, str) else f"{exc}"
    own = (ClusterError, OutputBusyError, WorkersDied)  # our own messages say what happened
    if not isinstance(exc, str) and status == EXIT_FAILURE and not isinstance(exc, own):
        text = f"{type(exc).__name__}: {exc}"
    print(f"daskgmm: error: {text}", file=sys.stderr, flush=True)
    metrics.update(status="error", exit_code=status, error=text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["OPTIONS", "build_parser", "main"]
