"""The commands that leave saved models as they are: ``predict``, ``score``, ``sample``, ``info``,
``export`` and ``select`` (which fits its candidates but writes only its own ``--out``, never a model in place).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings

import numpy as np

from daskgmm.cli.args import EXIT_OK, PRIOR_OPTIONS, UsageError
from daskgmm.cli.fit import check_covariance_prior, check_degrees_of_freedom, fingerprint, open_checkpoint, size_of
from daskgmm.cli.runtime import (
    Reporter,
    check_file_outputs,
    check_model_options,
    collapse_in_flags,
    columns_in_data_errors,
    command_cluster,
    count_empty_rows,
    data_command,
    load_saved,
    missing_policy,
    model_source,
    name_columns,
    plot_after,
    rows_read,
    storage_options,
    warnings_said,
)
from daskgmm.validation.scan import short_columns


def cmd_predict(o, log, metrics):
    from daskgmm.io.outputs import OutputLock, write_parts

    box: dict = {}
    so = storage_options(o)
    check_file_outputs(o)
    with OutputLock(o.out, so), command_cluster(o, log, box, metrics):
        est, src = box["model"], box["src"] = model_source(o, log, clusters=True)
        clusters = hasattr(est, "cluster_centers_")  # a KMeans or a KMedoids
        check_model_options(o, {"estimator": type(est).__name__})  # checked from model.json already
        what = {"distance": o.distance} if clusters else {"proba": o.proba, "loglik": o.loglik}
        # the one pass reads, predicts and writes every part (26-57 s at 20M rows, user trial: said nothing)
        log(f"predicting {src.n_rows:,} rows into {o.out} (one pass: read, predict, write each part)")
        t0 = time.perf_counter()
        # write_predictions, with the id columns' Arrow types: each part infers none of its own
        rows = write_parts(o.out, est.prediction_parts(src.X, ids=src.ids, id_column=src.id_column, **what), so,
                           name="predictions", inputs=src.X, types=getattr(src, "id_types", None))
        seconds = time.perf_counter() - t0  # the pass, not the lock's release or the cluster's close
    log(f"{rows:,} predictions written to {o.out} in {seconds:.2f} s")
    metrics.update(n_rows=src.n_rows, n_omitted=src.n_omitted, files=len(src.files), columns=src.columns,
                   predictions_rows=rows, out=o.out, predict_seconds=seconds)
    return EXIT_OK


def cmd_score(o, log, metrics):
    check_file_outputs(o)  # its only output
    box: dict = {}
    with command_cluster(o, log, box, metrics):
        est, src = box["model"], box["src"] = model_source(o, log, clusters=True)
        with warnings.catch_warnings():
            # the command matches Parquet columns to the model's names itself and passes a Dask array
            warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
            mean = est.score(src.X)
    n = src.n_rows
    if hasattr(est, "cluster_centers_"):  # a KMeans or a KMedoids: its score is minus the inertia
        if hasattr(est, "medoid_indices_"):
            result = {"n_rows": n, "inertia": -mean, "mean_dissimilarity": -mean / n, "metric": est.metric}
        else:
            result = {"n_rows": n, "inertia": -mean, "mean_squared_distance": -mean / n}
        metrics.update(result)
        print(json.dumps(result, indent=2))
        return EXIT_OK
    result = {"n_rows": n, "mean_loglik": mean}
    if hasattr(est, "bic"):  # a maximum-likelihood fit; the variational mixture has no BIC/AIC (as scikit-learn's)
        from daskgmm.fitting.predict import information_criteria

        if hasattr(est, "df_"):  # a t mixture: its degrees of freedom too, unless fixed
            from daskgmm.fitting.studentt import n_parameters as t_parameters

            p = t_parameters(est.covariance_type, est.n_components, est.n_features_in_, est.fixed_df)
        else:  # as GaussianMixture.bic counts them: not the groups held at given values
            from daskgmm.fitting.mixture import n_free_parameters

            p = n_free_parameters(est.covariance_type, est.n_components, est.n_features_in_, est.update_params,
                                  weights_init=est.weights_init, means_init=est.means_init,
                                  precisions_init=est.precisions_init)

        bic, aic = information_criteria(mean, n, p)
        result.update({"bic": bic, "aic": aic, "n_parameters": p})
    metrics.update(result)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def cmd_sample(o, log, metrics):
    from daskgmm.io.outputs import OutputLock

    est = load_saved(o)
    so = storage_options(o)
    check_file_outputs(o)
    with OutputLock(o.out, so), command_cluster(o, log, None, metrics):
        rows = est.write_sample(o.out, o.n, random_state=o.seed, chunk_rows=o.chunk_rows or 1_000_000,
                                storage_options=so)
    log(f"{rows:,} rows written to {o.out}")
    metrics.update(n_rows=rows, out=o.out)
    return EXIT_OK


def cmd_show_config(o, log, metrics):
    """The compiled core's build and this CPU's variant (``daskgmm.show_config()``)."""
    import io

    import daskgmm

    with contextlib.redirect_stdout(io.StringIO()) as text:
        info = daskgmm.show_config()
    print(json.dumps(info, indent=2) if o.json else text.getvalue(), end="" if not o.json else "\n")
    metrics["kernel"] = info["kernel"]
    return EXIT_OK


def cmd_export(o, log, metrics):
    """A saved model as a Spark ML model directory, from its files alone (:mod:`daskgmm.io.sparkmodel`)."""
    from daskgmm.io.modelfiles import read_model_files
    from daskgmm.io.sparkmodel import write_spark_model

    so = storage_options(o)
    doc, arrays = read_model_files(o.model, so)
    cls = write_spark_model(o.out, doc["estimator"], arrays, doc, so)
    metrics["spark_class"] = cls
    log(f"{doc['estimator']} written to {o.out} as a Spark ML {cls.rsplit('.', 1)[-1]}")
    return EXIT_OK


def cmd_info(o, log, metrics):
    """What a saved model holds, from its files alone: no estimator is imported (under a second)."""
    from daskgmm.io.modelfiles import read_model_files

    doc, arrays = read_model_files(o.model, storage_options(o))
    if o.json:
        # the document as the current format says it: null where a value does not exist (an updated
        # KMeans' inertia), also for a file of an older format
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    fit, params = doc.get("fit", {}), doc.get("params", {})
    lines = [
        f"model:            {o.model}",
        f"estimator:        {doc['estimator']} (daskgmm {doc.get('daskgmm_version')}, saved {doc.get('saved_at')})",
    ]
    medoids = "medoid_indices_" in arrays
    kmeans = "cluster_centers_" in arrays and not medoids
    if medoids:
        lines.append(f"clusters:         {doc.get('n_components')} medoids, {params.get('metric')} dissimilarity, "
                     f"{params.get('method')} passes")
    elif kmeans:
        lines.append(f"clusters:         {doc.get('n_components')}")
    else:
        lines.append(f"components:       {doc.get('n_components')} ({doc.get('covariance_type')} covariance)")
    sparse = doc.get("sparse_columns")  # fitted by daskgmm fit --sparse: features without names
    named = f"sparse rows in column(s) {', '.join(sparse)}" if sparse else short_columns(doc.get("columns") or [])
    lines += [
        f"features:         {doc.get('n_features')} ({named or 'unnamed'})",
        f"dtype:            {doc.get('dtype')}",
    ]
    if medoids:
        lines += [
            f"converged:        {fit.get('converged')} after {fit.get('n_iter')} pass(es)",
            f"inertia:          {fit.get('inertia')}",
        ]
        if fit.get("start_rows"):
            lines.append(f"start:            FasterPAM on {fit['start_rows']} sampled rows, "
                         f"loss {fit.get('start_loss')}")
        else:  # an array init: the rows nearest to the points, no start on a sample (its loss is NaN)
            lines.append(f"start:            the rows nearest the {doc.get('n_components')} given points (--init)")
        for k, (row, m) in enumerate(zip(arrays["medoid_indices_"], np.asarray(arrays["cluster_centers_"], float))):
            lines.append(f"medoid[{k}]:{' ' * (7 - len(str(k)))}row {int(row)}: " + " ".join(f"{v:.6g}" for v in m))
        print("\n".join(lines))
        return EXIT_OK
    if kmeans and fit.get("updated"):  # read_model_files gives a format-1 file the field
        # partial_fit drops the fit's n_iter_ and inertia_ (they described the centres before the updates)
        lines += [
            f"updates:          {fit.get('n_steps')} sequential update(s) since the fit",
            "inertia:          not kept after the updates (daskgmm score DATA --model M gives it)",
        ]
        centres = arrays["cluster_centers_"]
    elif kmeans:
        lines += [
            f"iterations:       {fit.get('n_iter')}"
            + (f" (plus {fit.get('n_steps')} sequential update(s))" if fit.get("n_steps") else ""),
            f"inertia:          {fit.get('inertia')}",
        ]
        centres = arrays["cluster_centers_"]
    else:
        weights = np.asarray(arrays["weights_"], float)
        history = fit.get("history") or []
        steps = sum("batch" in h for h in history)  # partial_fit's steps (daskgmm update): no convergence test
        if steps:
            online = doc.get("online") or {}
            fitted = f"{len(history) - steps} of the fit, then " if len(history) > steps else ""
            lines.append(f"iterations:       {fitted}{steps} online EM step(s) ({online.get('n_batches')} batch(es), "
                         f"{online.get('n_rows_seen', 0):,} rows learnt from; an online step has no convergence test)")
        else:
            lines.append(f"converged:        {fit.get('converged')} after {fit.get('n_iter')} iteration(s)")
        lines += [
            f"lower bound:      {fit.get('lower_bound')}"
            + (" (the classification log-likelihood: each row with its most likely component)"
               if params.get("assignment") == "hard" else ""),
            "weights:          " + " ".join(f"{w:.4f}" for w in weights),
        ]
        if params.get("missing") == "marginalize":
            # update takes a GaussianMixture only (the one mixture with partial_fit)
            commands = "predict, score and update" if doc["estimator"] == "GaussianMixture" else "predict and score"
            lines.append(f"missing values:   marginalised (by {commands} too, unless --nan-policy says otherwise)")
        if "df_" in arrays:
            fixed = " (fixed)" if params.get("fixed_df") else ""
            lines.append("df:               " + " ".join(f"{v:.4g}" for v in np.asarray(arrays["df_"], float)) + fixed)
        if doc["estimator"] == "BayesianGaussianMixture":
            from daskgmm.models.variational import EFFECTIVE_WEIGHT, effective_components

            lines.append(f"effective:        {effective_components(weights)} component(s) of weight > "
                         f"{EFFECTIVE_WEIGHT}")
        centres = arrays["means_"]
    # a KMeans' centres are centres (a KMedoids' medoids, above), a mixture's means
    label, pad = ("center", 7) if kmeans else ("mean", 9)
    for k, m in enumerate(np.asarray(centres, float)):
        if sparse:  # a centre of sparse rows' features (2^18 of HashingTF's): its size, not its numbers
            values = (f"{np.count_nonzero(m):,} non-zero of {m.size:,} (norm {np.linalg.norm(m):.6g}; "
                      "daskgmm.load(MODEL).cluster_centers_ has them)")
        else:
            values = " ".join(f"{v:.6g}" for v in m)
        lines.append(f"{label}[{k}]:{' ' * (pad - len(str(k)))}{values}")
    print("\n".join(lines))
    return EXIT_OK


#: Prior options ``select --kinds bayesian`` passes to every Bayesian candidate (``--covariance-prior`` has one
#: covariance type's shape: :func:`daskgmm.cli.args.require` takes it with one of ``--covariance-types`` only).
SELECT_PRIORS = PRIOR_OPTIONS


def select_priors(o, columns) -> dict | None:
    """The priors of the Bayesian candidates (None without them), ``--mean-prior`` checked against DATA."""
    if "bayesian" not in o.kinds:
        return None
    priors = {k: getattr(o, k) for k in SELECT_PRIORS if getattr(o, k) is not None}
    d = len(columns)
    check_degrees_of_freedom(o, d)
    mean = priors.get("mean_prior")
    if mean is not None:
        if mean.ndim > 1 or mean.size != d:
            raise UsageError(f"daskgmm select: --mean-prior has {size_of(mean)} but the data has {d} feature "
                             f"column(s) ({short_columns(columns)}); give one number per column")
        priors["mean_prior"] = mean.reshape(d)
    if priors.get("covariance_prior") is not None:
        priors["covariance_prior"] = check_covariance_prior(o, priors["covariance_prior"], columns,
                                                            o.covariance_types[0])
    return priors


def cmd_select(o, log, metrics):
    import posixpath

    from daskgmm import ConvergenceWarning
    from daskgmm.fitting.mixture import check_n_samples
    from daskgmm.io.files import DataError, DataWarning, is_local
    from daskgmm.io.modelfiles import write_model_files
    from daskgmm.io.outputs import staged_directory
    from daskgmm.selection import select_model
    from daskgmm.validation.scan import DegenerateDataWarning

    t_start = time.perf_counter()
    with data_command(o, log, metrics) as src:
        try:  # bad input, as fit's --n-components: exit 2 before any pass
            check_n_samples(src.n_rows, o.k_max)
        except ValueError as exc:
            raise DataError(f"{exc}; daskgmm select: --k-max {o.k_max} is above the {src.n_rows} row(s) of "
                            f"{o.data}") from None
        ks = list(range(o.k_min, o.k_max + 1))
        log(f"candidates: K = {o.k_min}..{o.k_max} x {', '.join(o.covariance_types)} x {', '.join(o.kinds)} "
            f"x {o.n_init} restart(s), all in the same passes")
        priors = select_priors(o, src.columns)
        ckpt = open_checkpoint(o, log, metrics, fingerprint(o, src))
        report = Reporter(o.quiet)
        with warnings_said(log, record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)  # one, naming the unfinished candidates
            warnings.simplefilter("always", DataWarning)
            warnings.simplefilter("always", DegenerateDataWarning)
            with collapse_in_flags(o), columns_in_data_errors(src.columns):
                res = select_model(src.X, ks, o.covariance_types, criterion=o.criterion, n_init=o.n_init,
                                   random_state=o.seed, max_iter=o.max_iter, tol=o.tol, reg_covar=o.reg_covar,
                                   init_params=o.init_params, cache=o.cache, progress=report.progress,
                                   missing=missing_policy(o), kinds=o.kinds, bayesian_params=priors,
                                   checkpoint=ckpt, on_collapse=o.on_collapse)
        for w in caught:
            log(f"warning: {name_columns(w.message, src.columns)}")
        count_empty_rows(caught, metrics)
        best = res.best_
        best.feature_names_in_ = np.asarray(src.columns, dtype=object)
        for m in res.models_.values():
            m.feature_names_in_ = best.feature_names_in_
        kind = "bayesian" if hasattr(best, "n_effective_components_") else "gaussian"
        effective = f" ({best.n_effective_components_} effective)" if kind == "bayesian" else ""
        how = rows_read(report.rows_in_memory)
        log(f"best by {o.criterion.upper()}: K={best.n_components}{effective}, {best.covariance_type} covariance, "
            f"{kind}" + (f" ({res.n_passes} passes over the data, {how})" if how else ""))
        if not o.quiet:
            print(res.table.to_string(index=False, float_format=lambda v: f"{v:.6g}"), file=sys.stderr)
        summary = {"criterion": o.criterion, "best": {"n_components": best.n_components,
                                                       "covariance_type": best.covariance_type, "kind": kind},
                   # a gaussian row's ELBO is NaN in the table: null in JSON (jsonable would write "nan")
                   "candidates": [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()}
                                  for r in res.table.to_dict(orient="records")]}
        with staged_directory(o.out, storage_options(o)) as (fs, staging):
            model_dir = posixpath.join(staging, "model")
            if is_local(fs):  # an object store has no directories
                fs.makedirs(model_dir, exist_ok=True)
            write_model_files(best, fs, model_dir)
            with fs.open(posixpath.join(staging, "selection.csv"), "w") as f:
                res.table.to_csv(f, index=False)
            with fs.open(posixpath.join(staging, "selection.json"), "w") as f:
                from daskgmm.io.modelfiles import jsonable

                json.dump(jsonable(summary), f, indent=2)
        log(f"best model and table written to {o.out}")
        if ckpt is not None:
            ckpt.clear()  # the job is done: tomorrow's run of the same command starts afresh
            log(f"checkpoint {ckpt.path} removed (the job finished)")
        metrics.update(summary, n_rows=src.n_rows, passes=res.n_passes, resumed_from_iteration=report.resumed_from,
                       rows_in_memory=report.rows_in_memory, first_pass_seconds=report.first_pass_seconds,
                       total_seconds=time.perf_counter() - t_start, out=o.out)
        if o.plot:
            from daskgmm.plot import plot_selection

            plot_after(o, log, metrics, lambda: plot_selection(res, o.plot, storage_options(o)))
    return EXIT_OK
