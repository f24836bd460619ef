"""What a fitted Gaussian mixture computes on rows: predictions, scores, samples.

The estimators check their input (:mod:`daskgmm.validation.checks`) and pick the log-density
parameters (the variational mixture has its own); these functions build the work:
NumPy in, NumPy out; Dask in, lazy Dask out (one task per chunk, as
``daskgmm.kernels.predict`` computes it). A graph takes a fitted model's parameters as a pass takes
its plan (:func:`shipped`): inside it when small, else a future of them, sent to the workers once.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.utils import check_random_state

from daskgmm.engine.cluster import active_client, compute_bounded, ship, with_known_rows
from daskgmm.kernels import covariance as cov
from daskgmm.kernels import params as forms
from daskgmm.kernels import predict as blocks
from daskgmm.validation.checks import is_dask_dataframe


def information_criteria(mean_log_likelihood: float, n_rows: float, n_parameters: int) -> tuple[float, float]:
    """BIC and AIC (lower is better) of a model with the given mean log-likelihood per row on ``n_rows``
    rows and ``n_parameters`` free parameters, as scikit-learn's ``GaussianMixture.bic``/``aic``. With
    frequency weights, ``n_rows`` is their sum and the mean is per unit of weight (``select_model``)."""
    total = mean_log_likelihood * n_rows
    return -2 * total + n_parameters * math.log(n_rows), -2 * total + 2 * n_parameters


def shipped(value):
    """A fitted model's parameters (any picklable value) as the tasks of a graph on Dask rows take them:
    themselves when small or without a client, else a future of them on every worker
    (:func:`daskgmm.engine.cluster.ship`). Inside the graph, a full-covariance mixture's precisions (400 MB at
    K=50, D=1000) or k-means' centres on wide sparse rows (16 MiB at K=8, D=2**18) went through the scheduler,
    once per graph or per task."""
    return ship(active_client(), value, "the model's parameters")


def mixture_centre(weights, means) -> np.ndarray:
    """The mixture's mean, ``Σ w_k μ_k`` (float64, shape (D,)): the shift of prediction passes."""
    w = np.asarray(weights, np.float64)
    return (w / w.sum()) @ np.asarray(means, np.float64)


def natural_form(weights, means, precisions_cholesky, covariance_type, centre):
    """Log-density parameters for predictions: the shared features, or the per-component form
    when the model is badly conditioned for them (:func:`daskgmm.kernels.params.precise_needed`)."""
    args = (weights, means, precisions_cholesky, covariance_type, centre)
    if forms.precise_needed(means, precisions_cholesky, covariance_type, centre, np.asarray(means).dtype):
        return forms.per_component(*args)
    return forms.natural_params(*args)


def marginal_form(weights, means, precisions_cholesky, covariance_type, centre, missing="raise"):
    """The per-component form for rows with NaN (``missing="marginalize"``), else None."""
    if missing != "marginalize":
        return None
    return forms.per_component(weights, means, precisions_cholesky, covariance_type, centre)


def apply_mixture(X, nat, centre, what, marginal, n_components, zero_empty=False):
    """``what`` ("labels", "proba" or "score") of every row of X.

    Parameters
    ----------
    X : ndarray or dask.array.Array, shape (n_samples, n_features)
        Checked rows (:func:`daskgmm.validation.checks.prediction_rows`).
    nat, centre, marginal :
        From :func:`natural_form`, :func:`mixture_centre`, :func:`marginal_form`.
    zero_empty : bool
        A row with every value missing scores exactly 0 (a mixture whose weights sum to 1).

    Returns
    -------
    ndarray or dask.array.Array
        Shape (n_samples,), or (n_samples, n_components) for "proba"; lazy for Dask X.
    """
    if not hasattr(X, "map_blocks"):
        return blocks.mixture_block(X, nat, centre, what, marginal, zero_empty)
    nat, centre, marginal = shipped(nat), shipped(centre), shipped(marginal)
    if what == "proba":
        return X.map_blocks(blocks.mixture_block, nat, centre, what, marginal, dtype=X.dtype,
                            chunks=(X.chunks[0], (n_components,)))
    dtype = np.intp if what == "labels" else X.dtype
    return X.map_blocks(blocks.mixture_block, nat, centre, what, marginal, zero_empty, dtype=dtype, drop_axis=1)


def id_blocks(ids, Xd, id_column=None, columns=()) -> list:
    """``ids`` (array-like or Dask array, one per row of the Dask array ``Xd``) as Delayed blocks
    chunked like its rows; ids of another shape, or an ``id_column`` among the predictions' other
    ``columns`` (whose values would silently replace the ids), are a ValueError saying so."""
    import dask.array as da

    if id_column is not None and id_column in columns:
        raise ValueError(f"id_column={id_column!r} is the name of a column of the predictions "
                         f"({', '.join(columns)}); give the ids another name")
    if is_dask_dataframe(ids):
        ids = _dask_ids(ids)
    elif not isinstance(ids, da.Array):
        ids = ids_array(ids)
    n = Xd.shape[0]
    known = not (math.isnan(ids.shape[0]) or math.isnan(n)) if ids.ndim else True
    if ids.ndim != 1 or (known and ids.shape[0] != n):
        raise ValueError(f"ids has shape {ids.shape}; expected ({n},): one id per row of X")
    if not isinstance(ids, da.Array):
        ids = da.from_array(ids, chunks=(Xd.chunks[0],))
    return list(ids.rechunk((Xd.chunks[0],)).to_delayed(optimize_graph=False).ravel())


def ids_array(ids) -> np.ndarray:
    """In-memory ids as NumPy; a pandas column of a nullable type with missing values as objects with
    None for them (NumPy's conversion made integer ids float, rounding those over 2**53, and strings
    with NaN, which Arrow refused: "Expected bytes, got a 'float' object")."""
    isna = getattr(ids, "isna", None)
    if callable(isna) and hasattr(ids, "to_numpy") and not isinstance(getattr(ids, "dtype", None), np.dtype) \
            and bool(np.asarray(isna()).any()):
        return ids.to_numpy(dtype=object, na_value=None)
    return np.asarray(ids)


def _dask_ids(ids):
    """A Dask Series of ids as a Dask array, each partition converted by :func:`ids_array` by its own task
    (``np.asarray`` computed the whole Series in the client, and made nullable integers float)."""
    import dask
    import dask.array as da

    if getattr(ids, "ndim", 1) != 1:
        raise ValueError(f"ids has {ids.ndim} dimensions; expected a Dask Series, one id per row of X")
    # each Delayed part counted itself: dask-expr may fuse partitions differently when it counts them
    # (map_partitions(len)) and when it cuts the Delayed parts, and a zip of the two would misplace ids
    parts = ids.to_delayed()
    lengths = compute_bounded(*[dask.delayed(len)(part) for part in parts], what="count of rows per chunk")
    return da.concatenate([da.from_delayed(dask.delayed(ids_array)(part), shape=(int(n),), dtype=object)
                           for part, n in zip(parts, lengths, strict=True)])


def prediction_parts(Xd, nat, centre, marginal, n_components, *, ids=None, id_column="id", proba=False,
                     loglik=False, zero_empty=False) -> list:
    """One Delayed column dict per chunk of the Dask array ``Xd`` (label, probabilities, log-likelihood, ids).

    ``ids`` (array-like or Dask array of shape (n_samples,)) are rechunked like the rows;
    without them there is no id column.
    """
    columns = ["label", *(f"proba_{k}" for k in range(n_components) if proba), *(["loglik"] if loglik else [])]
    return delayed_parts(Xd, blocks.prediction_part, columns, ids=ids, id_column=id_column, nat=nat, centre=centre,
                         proba=proba, loglik=loglik, n_components=n_components, marginal=marginal,
                         zero_empty=zero_empty)


def id_arrays(ids, id_column) -> tuple[list, list]:
    """(names, arrays) of the id columns: ``id_column`` a name and ``ids`` its values (one array), or
    ``id_column`` a list of names and ``ids`` one array per name in that order (a sequence of arrays, or a
    pandas or Dask DataFrame holding those columns). A name given twice, or a number of arrays other than
    of names, is a ValueError naming it."""
    if isinstance(id_column, str):
        return [id_column], [ids]
    if not isinstance(id_column, (list, tuple)) or not id_column or not all(isinstance(c, str) for c in id_column):
        raise ValueError(f"id_column must be a column name or a non-empty list of them, got {id_column!r}")
    names = list(id_column)
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(f"id_column lists {', '.join(map(repr, dup))} more than once")
    if hasattr(ids, "columns") and hasattr(ids, "__getitem__"):  # a DataFrame: its columns of those names
        missing = [c for c in names if c not in list(ids.columns)]
        if missing:
            raise ValueError(f"ids has no column {missing[0]!r} of id_column (it has: "
                             f"{', '.join(map(str, ids.columns))})")
        return names, [ids[c] for c in names]
    if isinstance(ids, (list, tuple)) and len(ids) == len(names):
        return names, list(ids)
    got = f"{len(ids)} array(s)" if isinstance(ids, (list, tuple)) else f"a {type(ids).__name__}"
    raise ValueError(f"id_column names {len(names)} column(s) ({', '.join(names)}) but ids is {got}; give one "
                     "array per name, in order, or a DataFrame with those columns")


def delayed_parts(Xd, part, columns, *, ids=None, id_column="id", **args) -> list:
    """One Delayed ``part(x, ids, id_column=..., **args)`` per chunk ``x`` of the Dask array ``Xd``: the
    column dict of one part of a predictions dataset (a mixture's, a KMeans', a KMedoids').

    ``ids`` (array-like or Dask array of shape (n_samples,)) are chunked like the rows by
    :func:`id_blocks`, which refuses an ``id_column`` among ``columns`` (the part's own); with a list
    ``id_column``, ``ids`` holds one such array per name (:func:`id_arrays`) and the part gets a tuple of
    names and one of blocks. Without ids ``id_column`` is None: no id column. Each of ``args`` (the model's
    parameters) is :func:`shipped`: in every task when small, else a future sent to the workers once.
    """
    import dask

    # unfused: the rows and the ids of a chunk come from one read task (fused, each had its own copy)
    xb = Xd.to_delayed(optimize_graph=False).ravel()
    if ids is None:
        ib, id_column = [None] * len(xb), None
    elif isinstance(id_column, str):
        ib = id_blocks(ids, Xd, id_column, columns)
    else:
        names, arrays = id_arrays(ids, id_column)
        blocks_by_column = [id_blocks(a, Xd, c, columns) for c, a in zip(names, arrays)]
        ib, id_column = [tuple(b) for b in zip(*blocks_by_column)], tuple(names)
    part = dask.delayed(part, pure=True)
    args = {name: shipped(value) for name, value in args.items()}
    return [part(x, i, id_column=id_column, **args) for x, i in zip(xb, ib)]


def transform_output(estimator, X, result):
    """``result`` of ``transform`` (a lazy Dask array, a row per row of the Dask DataFrame ``X``) as a pandas
    DataFrame indexed by ``X``'s index when ``set_output(transform="pandas")`` (or scikit-learn's global
    ``transform_output``) asks for pandas; otherwise ``result`` as it is.

    scikit-learn's wrapper keeps the index of a pandas input, and of nothing else: a Dask frame's came back
    as 0 .. n-1, so distances could not be joined to the rows of a frame indexed by an id. The index is
    computed with the result, in the same compute (the wrapper would bring every row into the client
    anyway).
    """
    if not is_dask_dataframe(X):
        return result
    import sklearn

    # set_output's per-estimator choice, else the global one, as scikit-learn's wrapper reads them
    wanted = getattr(estimator, "_sklearn_output_config", {}).get("transform",
                                                                  sklearn.get_config()["transform_output"])
    if wanted != "pandas":
        return result
    import dask
    import pandas as pd

    # the index's partitions as Delayed objects (a Dask frame's own collection beside an array in one compute
    # is materialised with Dask's "mixed collections" warning), joined as pandas joins them: names and dtypes
    index = dask.delayed(_joined_index)(X.index.to_delayed())
    values, index = compute_bounded(result, index, what="transform")
    return pd.DataFrame(values, index=index)


def _joined_index(parts):
    return parts[0].append(list(parts[1:])) if len(parts) > 1 else parts[0]


def n_rows(X) -> int:
    """Rows of any supported input (unknown Dask chunk sizes are computed)."""
    if is_dask_dataframe(X):
        return len(X)
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if isinstance(n, float) and np.isnan(n):
        n = int(with_known_rows(X).shape[0])
    return int(n)


def sample_mixture(weights, means, covariances, covariance_type, n_samples, random_state=None, df=None):
    """Draw rows from a mixture with scikit-learn's algorithm and random stream.

    A multinomial draw of the component counts, rows grouped by component. With ``df``
    (K,) the components are t distributions with those degrees of freedom and
    ``covariances`` their scales: each Gaussian row about 0 is divided by ``sqrt(g)``,
    ``g ~ χ²_df / df``, then shifted by its mean.

    Returns
    -------
    X : ndarray, shape (n_samples, n_features)
    y : ndarray of int, shape (n_samples,)
        Component of each row.
    """
    if n_samples < 1:
        raise ValueError(
            f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one sample."
        )
    rng = check_random_state(random_state)
    means = np.asarray(means, np.float64)
    covs = np.asarray(covariances, np.float64)
    counts = rng.multinomial(n_samples, np.asarray(weights, np.float64))
    t = cov.of(covariance_type)
    xs = []
    for k, (m, c) in enumerate(zip(means, counts)):
        if df is None:
            xs.append(t.draw(rng, m, t.of_component(covs, k), c))
            continue
        z = t.draw(rng, np.zeros(means.shape[1]), t.of_component(covs, k), c)
        nu = float(np.asarray(df, np.float64)[k])
        xs.append(m + z / np.sqrt(rng.chisquare(nu, size=c) / nu)[:, None])
    y = np.concatenate([np.full(int(c), j, dtype=np.int64) for j, c in enumerate(counts)])
    return np.vstack(xs), y


def part_seed(random_state) -> int:
    """The seed from which each part of a written sample is drawn (with the part's number)."""
    return int(check_random_state(random_state).randint(0, 2**31 - 1))


def sample_parts(part_rows, random_state, weights, means, covariances, covariance_type, names, df=None) -> list:
    """One ``(callable, *args)`` per part of ``part_rows`` rows drawn from the mixture: the callable, called
    with the args, returns the part's column dict.

    Each part is drawn from a seed derived from ``random_state`` and the part number, by
    the task that writes it (:func:`daskgmm.io.outputs.write_parts`), so a worker holds one
    part per thread. Columns: ``names`` and ``component``. With ``df`` (per component) the
    components are Student-t with scales ``covariances``. The means and covariances are
    :func:`shipped`: in every write task when small, else futures sent to the workers once.
    """
    seed = part_seed(random_state)
    w = np.asarray(weights, np.float64)
    args = (w / w.sum(), shipped(np.asarray(means, np.float64)), shipped(np.asarray(covariances, np.float64)),
            covariance_type, list(names), np.asarray(means).dtype, None if df is None else np.asarray(df, np.float64))
    return [(blocks.sample_part, n, seed, i, *args) for i, n in enumerate(part_rows)]
