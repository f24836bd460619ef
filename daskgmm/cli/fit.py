"""The commands that write a model: ``fit`` and ``update``.

Both write ``--model-out`` (and ``--predictions-out``) staged and swap them in together,
and with ``--checkpoint-dir`` save their progress under a fingerprint of the job (data,
chunking, options), so that ``--resume`` continues only the job that was killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import time
import warnings

import numpy as np

from daskgmm.cli.args import EXIT_OK, PRIOR_OPTIONS, UsageError, require_predictions_out
from daskgmm.cli.config import NAMED_STARTS, OPTIONS, flag
from daskgmm.cli.runtime import (
    Reporter,
    check_model_options,
    check_outputs,
    collapse_in_flags,
    columns_in_data_errors,
    command_cluster,
    count_empty_rows,
    data_command,
    features_text,
    keep_rows,
    missing_policy,
    model_source,
    name_columns,
    plot_after,
    reads_sparse,
    rows_read,
    say_lost_workers,
    storage_options,
    warnings_said,
)
from daskgmm.kernels.covariance import covariance_shape
from daskgmm.kernels.covariance import of as covariance_kind
from daskgmm.validation.scan import short_columns

#: The options of ``--estimator bayesian`` (its priors).
BAYESIAN_OPTIONS = ("estimator", *PRIOR_OPTIONS)

#: How the estimator (as scikit-learn's) refuses a covariance prior: bad usage, as a wrong shape is.
PRIOR_REFUSALS = ("should be symmetric, positive-definite", "precision' should be positive")


def size_of(a) -> str:
    """'a 2 x 3 matrix' or '3 number(s)': what a prior option was given, for messages."""
    return f"a {a.shape[0]} x {a.shape[1]} matrix" if a.ndim == 2 else f"{a.size} number(s)"


def check_degrees_of_freedom(o, n_features: int) -> None:
    """``--degrees-of-freedom-prior`` against the data, before any pass (scikit-learn's bound: > D - 1)."""
    v = o.degrees_of_freedom_prior
    if v is not None and not v > n_features - 1:
        raise UsageError(f"daskgmm {o.command}: --degrees-of-freedom-prior must be greater than {n_features - 1} "
                         f"(the number of feature columns minus one), got {v}")


def bayesian_priors(o, columns) -> tuple:
    """``--mean-prior`` and ``--covariance-prior`` in the shapes the estimator takes, checked against DATA.

    Parameters
    ----------
    o : argparse.Namespace
        The resolved options; ``mean_prior``/``covariance_prior`` are None or float64
        arrays of at most two dimensions (as :func:`daskgmm.cli.config.coerce` reads them).
    columns : list of str
        The feature columns, D of them.

    Returns
    -------
    mean_prior : ndarray of shape (D,) or None
    covariance_prior : float (spherical), ndarray of shape (D,) (diag) or (D, D) (full, tied), or None
        A full or tied matrix may be given flat, D * D numbers row by row.

    Raises
    ------
    UsageError
        A prior whose size does not fit the columns or the covariance type (whether a
        matrix is positive-definite is the estimator's to say).
    """
    d, ct = len(columns), o.covariance_type
    data = f"the data has {d} feature column(s) ({short_columns(columns)})"
    mean, cov = o.mean_prior, o.covariance_prior
    check_degrees_of_freedom(o, d)
    if mean is not None:
        if mean.ndim > 1 or mean.size != d:
            raise UsageError(f"daskgmm fit: --mean-prior has {size_of(mean)} but {data}; give one number per column")
        mean = mean.reshape(d)
    return mean, check_covariance_prior(o, cov, columns, ct)


def shown(a) -> str:
    """An array option's value as it may be typed (``1,0;0,1``), or its size when long, for messages."""
    a = np.asarray(a)
    if a.size > 25:
        return size_of(a)
    rows = a.reshape(1, -1) if a.ndim < 2 else a
    return ";".join(",".join(f"{v:g}" for v in row) for row in rows)


def check_covariance_prior(o, cov, columns, ct):
    """``--covariance-prior`` in covariance type ``ct``'s shape, checked against DATA's columns before any pass:
    its size, then the estimator's own check (a symmetric positive-definite matrix, positive variances), each
    refusal a :class:`UsageError` naming the option, the value and what the type takes.

    Returns
    -------
    None, float (spherical), ndarray of shape (D,) (diag) or (D, D) (full, tied)
        A full or tied matrix may be given flat, D * D numbers row by row.
    """
    if cov is None:
        return None
    d = len(columns)
    data = f"the data has {d} feature column(s) ({short_columns(columns)})"
    where = f"daskgmm {o.command}: --covariance-prior {shown(cov)}"
    kind = covariance_kind(ct)
    shape = kind.component_shape(d)
    if shape == ():
        if cov.size != 1:
            raise UsageError(f"{where} has {size_of(cov)} but --covariance-type spherical takes a single number")
        out, takes = float(cov.reshape(-1)[0]), "a single positive number (a variance)"
    elif len(shape) == 1:
        if cov.ndim > 1 or cov.size != d:
            raise UsageError(f"{where} has {size_of(cov)} but {data}; --covariance-type diag takes one number per "
                             "column")
        out, takes = cov.reshape(d), f"{d} positive numbers (one variance per column)"
    else:
        if cov.shape != (d, d) and not (cov.ndim <= 1 and cov.size == d * d):
            raise UsageError(f"{where} has {size_of(cov)}, but --covariance-type {ct} takes a {d} x {d} matrix "
                             f"({d * d} numbers, row by row) for the data's {d} feature column(s) "
                             f"({short_columns(columns)})")
        out, takes = cov.reshape(d, d), f"a symmetric positive-definite {d} x {d} matrix"
    try:  # the estimator's own check and words (scikit-learn's), now rather than after the cluster's passes
        kind.check_precisions(np.reshape(out, (1, *shape)), f"{ct} precision")
        if not np.all(np.isfinite(out)):
            raise ValueError(f"'{ct} precision' should be finite")
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise UsageError(f"{where}: {exc}; --covariance-type {ct} takes {takes}") from None
    return out


def initial_arrays(o, columns, n_features=None) -> None:
    """The starting values of ``fit`` (``--means-init``, ``--weights-init``, ``--precisions-init``, an array
    ``--init``) checked against DATA's columns by the estimator's own checks, before any pass; each is
    replaced by what the check returns (float64, the estimator's shape).

    Parameters
    ----------
    o : argparse.Namespace
        The resolved options (:func:`daskgmm.cli.args.resolve_starts` has given the arrays the estimator's
        shapes where the data are not needed, and K).
    columns : list of str or None
        The feature columns, D of them; None for sparse rows.
    n_features : int, optional
        D, when ``columns`` does not give it (sparse rows).

    Raises
    ------
    UsageError
        The estimator's message for an array that does not fit, after the option's name, with the shape
        expected: K components, D columns and the covariance type.
    """
    from daskgmm.fitting import kmeans as fitting_kmeans
    from daskgmm.fitting import kmedoids as fitting_kmedoids
    from daskgmm.fitting import mixture as fitting_mixture

    k, ct = o.n_components, o.covariance_type
    d = len(columns) if n_features is None else n_features
    checks = {
        "means_init": (lambda a: fitting_mixture.check_means(a, k, d), (k, d)),
        "weights_init": (lambda a: fitting_mixture.check_weights(a, k), (k,)),
        "precisions_init": (lambda a: fitting_mixture.check_precisions(a, ct, k, d),
                            covariance_shape(ct, k, d)),
        "init": ((lambda a: fitting_kmeans.check_init_centers(a, k, d)) if o.estimator == "kmeans" else
                 (lambda a: fitting_kmedoids.check_init_medoids(a, k, d)), (k, d)),
    }
    for name, (check, shape) in checks.items():
        given = getattr(o, name, None)
        if not isinstance(given, np.ndarray):
            continue
        try:
            setattr(o, name, check(given))
        except ValueError as exc:
            what = (f"{k} component(s) x {d} feature column(s) ({short_columns(columns)})" if columns is not None
                    else f"{k} component(s) x {d} features (of the sparse rows)")
            if name == "weights_init":
                what = f"{k} component(s)"
            elif name == "precisions_init":
                what += f" and --covariance-type {ct}"
                if ct == "full":
                    what += f" (in a .csv or a list of rows: the {k} matrices stacked, {k * d} rows of {d})"
            # the expected shape only where the given one differs: a value refused in the right shape (weights
            # that do not sum to 1, a precision not positive definite) is about the values alone
            shape_note = f"; expected {shape}: {what}" if tuple(given.shape) != tuple(shape) else ""
            raise UsageError(f"daskgmm fit: {flag(name)}: {exc}{shape_note}") from None


def make_estimator(o):
    """The estimator ``daskgmm fit`` fits (``assignment``/``on_collapse`` are the Gaussian EM's only)."""
    if o.estimator == "kmeans":
        from daskgmm.kmeans import KMeans

        return KMeans(n_clusters=o.n_components, init=NAMED_STARTS["kmeans"][0] if o.init is None else o.init,
                      n_init="auto" if o.n_init is None else o.n_init,
                      max_iter=o.max_iter, tol=o.tol, random_state=o.seed, algorithm=o.algorithm, cache=o.cache)
    if o.estimator == "kmedoids":
        from daskgmm.kmedoids import KMedoids

        return KMedoids(n_clusters=o.n_components, metric=o.metric, method=o.method, max_iter=o.max_iter,
                        init=NAMED_STARTS["kmedoids"][0] if o.init is None else o.init, random_state=o.seed,
                        cache=o.cache)
    # the parameters every mixture has (BaseMixture's)
    mixture = dict(n_components=o.n_components, covariance_type=o.covariance_type, tol=o.tol, reg_covar=o.reg_covar,
                   max_iter=o.max_iter, n_init=o.n_init, init_params=o.init_params, random_state=o.seed,
                   cache=o.cache, missing=missing_policy(o))
    if o.estimator == "bayesian":
        from daskgmm.bayesian import BayesianGaussianMixture

        return BayesianGaussianMixture(**mixture, **{k: getattr(o, k) for k in BAYESIAN_OPTIONS[1:]})
    if o.estimator == "student":
        from daskgmm.studentt_mixture import StudentTMixture

        return StudentTMixture(**mixture, df=4.0 if o.df is None else o.df, fixed_df=o.fixed_df)
    from daskgmm.mixture import GaussianMixture

    return GaussianMixture(
        **mixture, assignment=o.assignment, on_collapse=o.on_collapse, weights_init=o.weights_init,
        means_init=o.means_init, precisions_init=o.precisions_init,
        update_params="wmc" if o.update_params is None else o.update_params,
    )


def data_fingerprint(src) -> dict:
    """What every checkpoint records of DATA: the files (size, modification time), columns, rows, chunks."""
    # the chunking fixes the reduction tree, hence the bits: a resume must read the same chunks
    chunks = hashlib.sha256(np.asarray(src.X.chunks[0], np.int64).tobytes()).hexdigest()[:16]
    return {"files": src.signatures(), "columns": src.columns, "n_rows": src.n_rows, "chunks": chunks}


def fingerprint(o, src, **values) -> dict:
    """What a job's checkpoint belongs to: the data and its chunking, and the options of its command that
    change what it computes (``result`` in the options table), ``values`` replacing or adding some."""
    options = {opt.dest: getattr(o, opt.dest) for opt in OPTIONS if opt.result and o.command in opt.commands}
    return {**data_fingerprint(src), **options, **values}


def open_checkpoint(o, log, metrics, fingerprint: dict):
    """The checkpoint of ``--checkpoint-dir`` for a job of this fingerprint (None without the option).

    With ``--resume`` a checkpoint of this job is kept for the fit to continue; one of another
    job (other files, files rewritten since, other options) is said on stderr, recorded as
    ``checkpoint_discarded`` and removed; without ``--resume`` any checkpoint is removed.
    """
    from daskgmm.io.modelfiles import Checkpoint

    if not o.checkpoint_dir:
        return None
    ckpt = Checkpoint(o.checkpoint_dir, fingerprint, storage_options(o))
    stale = ckpt.stale() if o.resume else None
    if stale:
        log(f"checkpoint {ckpt.path} not resumed: {stale}; starting afresh")
        metrics["checkpoint_discarded"] = stale
    if stale or not o.resume:
        ckpt.clear()  # a fresh run must not pick up another run's progress
    return ckpt


def commit_model_and_predictions(est, o, src, staged=None):
    """Write ``--model-out`` and ``--predictions-out`` staged, and swap them in together (one commit).

    ``staged(fs, directory)``, when given, is called with the staged model's directory once both outputs
    are written, before the commit. Returns the number of predictions written (None without
    ``--predictions-out``).
    """
    from daskgmm.io.modelfiles import write_model_files
    from daskgmm.io.outputs import StagedOutput, commit_together, naming_output, write_parts_into

    rows = None
    so = storage_options(o)
    outs = [StagedOutput(o.model_out, so)] + ([StagedOutput(o.predictions_out, so)] if o.predictions_out else [])
    try:
        for out in outs:
            out.begin()
        try:
            # a model of sparse rows says which columns it read them from: predict reads them so by default
            write_model_files(est, outs[0].fs, outs[0].staging,
                              {"sparse_columns": src.columns} if reads_sparse(o) else None)
        except OSError as exc:  # a full disk: say which output
            named = naming_output(exc, outs[0].target)
            if named is not exc:
                raise named from None
            raise
        if o.predictions_out:
            what = ({"distance": o.distance} if hasattr(est, "cluster_centers_")  # a KMeans or a KMedoids
                    else {"proba": o.proba, "loglik": o.loglik})
            parts = est.prediction_parts(src.X, ids=src.ids, id_column=src.id_column, **what)
            rows = write_parts_into(outs[1].fs, outs[1].staging, parts, "predictions", getattr(src, "id_types", None))
        if staged is not None:
            staged(outs[0].fs, outs[0].staging)
        commit_together(outs)
    except BaseException as exc:
        for out in outs:
            out.abort(exc)
        raise
    finally:
        for out in outs:
            out.release()
    return rows


def commit_fit(est, o, src, ckpt, log):
    """Write a fit's model and predictions together, then remove its checkpoint: the job is done, so
    tomorrow's run of the same command starts afresh. Returns the rows predicted (None: none asked)."""
    rows = commit_model_and_predictions(est, o, src)
    log(f"model written to {o.model_out}")
    if rows is not None:
        log(f"{rows:,} predictions written to {o.predictions_out}")
    if ckpt is not None:
        ckpt.clear()
        log(f"checkpoint {ckpt.path} removed (the job finished)")
    return rows


def cmd_fit(o, log, metrics):
    from daskgmm import ConvergenceWarning
    from daskgmm.fitting.mixture import CollapsedComponentWarning
    from daskgmm.io.files import DataError, DataWarning
    from daskgmm.validation.scan import DegenerateDataWarning, EmptyRowsWarning

    t_start = time.perf_counter()
    with data_command(o, log, metrics) as src:
        if src.n_rows < o.n_components:
            raise DataError(f"{o.data}: {src.n_rows} row(s) but --n-components {o.n_components}; "
                            "need at least as many rows as components")
        if o.estimator == "bayesian":
            o.mean_prior, o.covariance_prior = bayesian_priors(o, src.columns)
        sparse = reads_sparse(o)
        if sparse:  # features without names, as many as the rows are wide
            initial_arrays(o, None, src.X.shape[1])
        else:
            initial_arrays(o, src.columns)
        est = make_estimator(o)
        ckpt = open_checkpoint(o, log, metrics, fingerprint(o, src))
        report = Reporter(o.quiet)  # before keep_rows: its read is the first pass's
        if o.predictions_out or o.plot:  # read again after the fit: once, if the rows stay in memory
            keep_rows(o, src)
        with warnings_said(log, record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            try:
                with collapse_in_flags(o), columns_in_data_errors(None if sparse else src.columns):
                    if o.estimator == "kmeans":  # no checkpoint: refused with it (daskgmm.cli.args)
                        est.fit(src.X, progress=report.progress)
                    else:
                        est.fit(src.X, checkpoint=ckpt, progress=report.progress)
            except ValueError as exc:
                from daskgmm.fitting.kmedoids import DissimilarityError

                if isinstance(exc, DissimilarityError):
                    raise DataError(f"{name_columns(exc, src.columns)}; daskgmm fit: --metric {o.metric} cannot "
                                    f"measure the {len(src.columns)} feature column(s) "
                                    f"({short_columns(src.columns)}) of {o.data}") from None
                if o.estimator == "bayesian" and o.covariance_prior is not None and any(
                        t in str(exc) for t in PRIOR_REFUSALS):
                    raise UsageError(f"daskgmm fit: --covariance-prior: {exc}") from None
                raise
            # from the reporter's start: keep_rows' read is the fit's first pass, as the fit's own would be
            fit_seconds = time.perf_counter() - report.t0
        metrics["rows_in_memory"] = report.rows_in_memory
        metrics["first_pass_seconds"] = report.first_pass_seconds
        how = rows_read(report.rows_in_memory)
        for w in caught:
            if issubclass(w.category, (ConvergenceWarning, DataWarning, DegenerateDataWarning,
                                       CollapsedComponentWarning, EmptyRowsWarning)):
                log(f"warning: {name_columns(w.message, None if sparse else src.columns)}")
        count_empty_rows(caught, metrics)
        if not sparse:
            est.feature_names_in_ = np.asarray(src.columns, dtype=object)
        if o.estimator == "kmeans":
            return finish_kmeans(est, o, src, log, metrics, fit_seconds, t_start, how)
        if o.estimator == "kmedoids":
            return finish_kmedoids(est, o, src, log, metrics, ckpt, fit_seconds, t_start, how)
        state = "converged" if est.converged_ else "did not converge"
        log(f"{state} after {est.n_iter_} iteration(s): lower bound {est.lower_bound_:.6f} "
            f"(fit {fit_seconds:.2f} s, {est.n_passes_} passes over the data{joined(how)})")
        rows = commit_fit(est, o, src, ckpt, log)
        metrics.update(
            converged=est.converged_, n_iter=est.n_iter_, lower_bound=est.lower_bound_,
            lower_bounds=est.lower_bounds_, history=est.history_, restarts=est.restarts_,
            init_seconds=est.init_seconds_, init_passes=est.init_passes_, passes=est.n_passes_,
            resumed_from_iteration=report.resumed_from,
            fit_seconds=fit_seconds, total_seconds=time.perf_counter() - t_start,
            n_components=o.n_components, covariance_type=o.covariance_type, weights=est.weights_,
            model_out=o.model_out, predictions_out=o.predictions_out, predictions_rows=rows,
        )
        if hasattr(est, "df_"):
            metrics["df"] = est.df_
        if o.plot:
            from daskgmm.plot import plot_fit

            plot_after(o, log, metrics, lambda: plot_fit(est, src.X, o.plot, storage_options=storage_options(o)))
    return EXIT_OK


def joined(text, sep=", ") -> str:
    """``text`` after ``sep``, or nothing for no text."""
    return f"{sep}{text}" if text else ""


def finish_kmeans(est, o, src, log, metrics, fit_seconds, t_start, read=""):
    """The end of ``fit --estimator kmeans``: its summary line, outputs and metrics (a fit that did not
    converge said so in a warning line)."""
    from daskgmm.fitting.kmeans import resolve_n_init

    algorithm, restarts = o.algorithm, resolve_n_init(est.n_init, est.init)
    if algorithm == "elkan" and restarts > 1:  # the bounds are kept for one restart: Lloyd's passes ran
        algorithm = f"lloyd (--algorithm elkan applies with one restart; {restarts} ran)"
    init = est.init if isinstance(est.init, str) else "given centres"
    log(f"{est.n_iter_} iteration(s) of {algorithm}: inertia {est.inertia_:.6g} (init {init}; fit "
        f"{fit_seconds:.2f} s{joined(read, '; ')})")
    rows = commit_fit(est, o, src, None, log)
    metrics.update(
        n_iter=est.n_iter_, inertia=est.inertia_, history=est.history_, counts=est.counts_, init=init,
        algorithm=o.algorithm, fit_seconds=fit_seconds, total_seconds=time.perf_counter() - t_start,
        n_components=o.n_components, model_out=o.model_out, predictions_out=o.predictions_out,
        predictions_rows=rows,
    )
    return EXIT_OK


def finish_kmedoids(est, o, src, log, metrics, ckpt, fit_seconds, t_start, read=""):
    """The end of ``fit --estimator kmedoids``: its summary line, outputs and metrics."""
    state = "converged" if est.converged_ else "did not converge"
    log(f"{state} after {est.n_iter_} pass(es) of {o.method}: inertia {est.inertia_:.6g} ({o.metric}; fit "
        f"{fit_seconds:.2f} s, {est.n_passes_} passes over the data{joined(read)}); medoids at rows "
        f"{', '.join(str(int(r)) for r in est.medoid_indices_)}")
    rows = commit_fit(est, o, src, ckpt, log)
    metrics.update(
        converged=est.converged_, n_iter=est.n_iter_, inertia=est.inertia_, history=est.history_,
        medoid_indices=est.medoid_indices_, metric=o.metric, method=o.method, start_loss=est.start_loss_,
        start_rows=est.start_rows_, passes=est.n_passes_, fit_seconds=fit_seconds,
        total_seconds=time.perf_counter() - t_start, n_components=o.n_components, model_out=o.model_out,
        predictions_out=o.predictions_out, predictions_rows=rows,
    )
    return EXIT_OK


def model_identity(fs, root: str) -> str:
    """A saved model's identity: a hash of its ``model.json`` (which holds its history and save time)."""
    with fs.open(posixpath.join(root.rstrip("/"), "model.json"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def update_fingerprint(o, src, est) -> dict:
    """What an update's checkpoint belongs to: :func:`fingerprint`, the model it started from
    (:func:`model_identity`) and the learning rate's terms in use (the model's when not given)."""
    from daskgmm.io.files import get_fs, strip_protocol

    fs = get_fs(str(o.model), storage_options(o))
    return fingerprint(o, src, model=model_identity(fs, strip_protocol(fs, str(o.model))),
                       learning_decay=getattr(est, "learning_decay", None),
                       learning_offset=getattr(est, "learning_offset", None))


def committed_already(ckpt) -> bool:
    """Whether the checkpoint on disk is this update's, killed after it committed its model to ``--model``
    (in place) but before it removed the checkpoint: the same job but for the model it started from, and
    the model it committed (``commits``, saved just before the commit) is the one this job starts from.
    Resuming it, or starting afresh, would learn the same rows a second time."""
    doc = ckpt.saved() or {}
    theirs, mine = doc.get("fingerprint"), ckpt.fingerprint
    return (isinstance(theirs, dict) and (doc.get("extra") or {}).get("commits") == mine["model"]
            and {**theirs, "model": mine["model"]} == mine)


def online_counts(est) -> tuple[int, float]:
    """(steps, rows seen) of a model updated online: a GaussianMixture's batches and rows, a KMeans' steps
    and the rows (weight) its centres have received, the fit's included."""
    if hasattr(est, "cluster_centers_"):
        return int(getattr(est, "n_steps_", 0)), float(np.sum(est.counts_))
    return int(est.n_batches_), float(est.n_rows_seen_)


def check_update_options(o, est) -> None:
    """Exit 2 naming the options that do not apply to the model: the online EM's learning rate,
    ``--proba`` and ``--loglik`` to a KMeans (its step is the sequential k-means update), ``--distance``
    to a mixture (:func:`daskgmm.cli.runtime.check_model_options`, by the loaded model's class)."""
    check_model_options(o, {"estimator": type(est).__name__})


def snapshot_exists(snapshot, so) -> bool:
    """Whether an update's checkpoint directory holds a complete model snapshot."""
    from daskgmm.io.files import get_fs, is_local, strip_protocol

    fs = get_fs(snapshot, so)
    root = strip_protocol(fs, snapshot).rstrip("/")
    if is_local(fs):
        return os.path.exists(os.path.join(snapshot, "model.json"))
    fs.invalidate_cache(root)
    return fs.exists(posixpath.join(root, "_SUCCESS"))


def remove_snapshot(snapshot, so) -> None:
    """Remove an update's model snapshot (a directory, or every object under its prefix)."""
    import shutil

    from daskgmm.io.files import get_fs, is_local, strip_protocol
    from daskgmm.io.store import remove_prefix

    fs = get_fs(snapshot, so)
    if is_local(fs):
        shutil.rmtree(snapshot, ignore_errors=True)
    else:
        remove_prefix(fs, strip_protocol(fs, snapshot).rstrip("/"))


def cmd_update(o, log, metrics):
    """Online EM steps of DATA on the model at --model; outputs as ``fit`` writes them.

    With --checkpoint-dir the model after every step is saved there (model files, written
    atomically) beside a checkpoint that names the job; --resume continues a killed job from
    its last step (the steps done are the saved model's batches minus the input model's).
    """
    from daskgmm.io.modelfiles import Checkpoint, load_model, save_model

    so = storage_options(o)

    t_start = time.perf_counter()
    box: dict = {}
    with contextlib.ExitStack() as locks:
        check_outputs(o, locks)  # before the input's check: a lock completes a killed job's commit
        locks.enter_context(command_cluster(o, log, box, metrics))
        est, src = model_source(o, log, clusters=True)
        box["src"] = src
        if not hasattr(est, "partial_fit"):  # the variational and t mixtures, KMedoids: no online step
            raise UsageError(f"daskgmm update: {o.model} holds a {type(est).__name__}; online updates "
                             "(partial_fit) are implemented for GaussianMixture and KMeans only")
        check_update_options(o, est)
        require_predictions_out(o)
        kmeans = hasattr(est, "cluster_centers_")
        for key in ("learning_decay", "learning_offset"):
            if getattr(o, key) is not None:
                est.set_params(**{key: getattr(o, key)})
        steps, seen = online_counts(est)
        log(f"model: {est.n_clusters} cluster(s), {steps} step(s) and {seen:,.0f} rows received" if kmeans else
            f"model: {est.n_components} component(s), {steps} batch(es) and {seen:,.0f} rows seen")
        log(f"data: {src.n_rows:,} rows x {features_text(o, src)} from {len(src.files)} file(s), "
            f"{src.X.numblocks[0]} chunk(s)")
        metrics.update(n_rows=src.n_rows, n_features=src.X.shape[1], columns=src.columns,
                       n_omitted=src.n_omitted, files=len(src.files), chunks=src.X.numblocks[0],
                       **{"n_steps_before" if kmeans else "n_batches_before": steps})
        base, done, ckpt, snapshot, finished = steps, 0, None, None, False
        if o.checkpoint_dir:
            ckpt = Checkpoint(o.checkpoint_dir, update_fingerprint(o, src, est), so)
            snapshot = os.path.join(o.checkpoint_dir, "update-model")
            stale = ckpt.stale() if o.resume else None
            if stale and committed_already(ckpt):
                stale, done, finished = None, o.passes, True
                log(f"checkpoint {ckpt.path}: the job it belongs to committed its model to {o.model}"
                    f"{' and its predictions' if o.predictions_out else ''} already (killed before it removed "
                    "the checkpoint); nothing left to learn")
            elif stale:
                log(f"checkpoint {ckpt.path} not resumed: {stale}; starting afresh")
                metrics["checkpoint_discarded"] = stale
            resumable = o.resume and not stale and ckpt.exists() and not finished
            if resumable and snapshot_exists(snapshot, so):
                saved = load_model(snapshot, so)
                if 0 <= online_counts(saved)[0] - base <= o.passes:
                    est, done = saved, online_counts(saved)[0] - base
                    log(f"resumed from checkpoint after {done} step(s)")
            if not resumable and not finished:
                ckpt.clear()  # a fresh run must not pick up another run's progress
                remove_snapshot(snapshot, so)
            if not finished:
                ckpt.save([], extra={"update_model": snapshot})
            metrics["resumed_steps"] = done
        # each step reads DATA, and so do the predictions: once, if the rows stay in memory (a resumed job
        # with no step left reads them once, for its predictions: nothing to keep them for)
        steps_run = o.passes - done
        kept = steps_run + bool(o.predictions_out) > 1 and keep_rows(o, src, cut=False)
        t_fit = time.perf_counter()
        with warnings_said(log, record=True) as caught:
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            for _ in range(done, o.passes):
                t_step = time.perf_counter()
                est.partial_fit(src.X)
                if kmeans:
                    log(f"step {est.n_steps_ - 1}: {time.perf_counter() - t_step:.2f} s")
                else:
                    h = est.history_[-1]
                    log(f"step {est.n_batches_ - 1}: loglik {h['lower_bound']:.6f} (before the step), "
                        f"eta {h['eta']:.4f}, {h['seconds']:.2f} s")
                    for e in h["events"]:
                        log(f"          {e}")
                say_lost_workers(log, f"at step {online_counts(est)[0] - 1}")
                if ckpt is not None:
                    save_model(est, snapshot, so)
        update_seconds = time.perf_counter() - t_fit
        for said in dict.fromkeys(str(w.message) for w in caught):  # each step's, once
            log(f"warning: {said}")
        count_empty_rows(caught, metrics)
        # partial_fit keeps no rows of a fitted model's batch (cache="none"): each step reads DATA again
        # unless the command kept them (None: no step ran, nothing was read)
        in_memory = kept if steps_run else None
        if steps_run:
            log(f"{steps_run} step(s) in {update_seconds:.2f} s ({steps_run} passes over the data, "
                f"{rows_read(in_memory)})")
        metrics["rows_in_memory"] = in_memory

        def name_commit(fs, staging):
            # before the commit, the checkpoint names the model it commits: a job killed between the commit
            # and the checkpoint's removal is found done by its rerun (committed_already), in place too
            ckpt.save([], extra={"update_model": snapshot, "commits": model_identity(fs, staging)})

        rows = None if finished else commit_model_and_predictions(
            est, o, src, staged=None if ckpt is None else name_commit)
        steps, seen = online_counts(est)
        if not finished:
            log(f"model written to {o.model_out} ({steps} {'step(s)' if kmeans else 'batch(es)'}, {seen:,.0f} "
                f"rows {'received' if kmeans else 'seen'})")
        if rows is not None:
            log(f"{rows:,} predictions written to {o.predictions_out}")
        if ckpt is not None:
            ckpt.clear()  # the job is done: tomorrow's run starts afresh
            remove_snapshot(snapshot, so)
            log(f"checkpoint {ckpt.path} removed (the job finished)")
        if kmeans:
            metrics.update(passes=o.passes, steps_run=steps_run, n_steps=est.n_steps_,
                           counts=est.counts_.tolist(), update_seconds=update_seconds,
                           total_seconds=time.perf_counter() - t_start, n_clusters=est.n_clusters,
                           model_out=o.model_out, predictions_out=o.predictions_out, predictions_rows=rows)
            return EXIT_OK
        steps = est.history_[-o.passes:]  # this job's steps
        metrics.update(
            passes=o.passes, steps_run=steps_run, n_batches=est.n_batches_, n_rows_seen=est.n_rows_seen_,
            lower_bound=est.lower_bound_,
            history=steps, learning_decay=est.learning_decay, learning_offset=est.learning_offset,
            update_seconds=update_seconds, total_seconds=time.perf_counter() - t_start,
            n_components=est.n_components, covariance_type=est.covariance_type, weights=est.weights_,
            model_out=o.model_out, predictions_out=o.predictions_out, predictions_rows=rows,
        )
    return EXIT_OK
