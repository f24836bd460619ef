"""Checks of what the first scan of the input found: non-finite values, weights, degenerate data."""

from __future__ import annotations

import re
import warnings

import numpy as np

from daskgmm.kernels.scan import far_columns, first_bad_row, non_finite_message


class DataError(ValueError):
    """The input data are unusable: a missing or non-numeric column, disagreeing
    schemas, an empty dataset, a corrupt file, NaN or infinite values, no row to start from.

    Defined in this layer so that the estimators' checks of what a scan found raise it too
    (the command exits 2 on it); :mod:`daskgmm.io.files` exports it with the reading errors.
    """


class EmptyRowsWarning(UserWarning):
    """Rows with every feature missing under ``missing="marginalize"``, left out of the fit.

    Attributes
    ----------
    n_rows : int
        How many (the command adds them up into its metrics' ``n_empty_rows``).
    """

    def __init__(self, message: str = "", n_rows: int = 0):
        super().__init__(message)
        self.n_rows = int(n_rows)


def warn_empty_rows(n_empty: int, name: str = "the estimator", stacklevel: int = 4) -> None:
    """Say that ``n_empty`` rows with every feature missing are left out (:class:`EmptyRowsWarning`).

    Such a row's marginal likelihood is 1 under every component (nothing observed), so it holds no
    information on the parameters: EM for incomplete data would add only the current weights to the counts,
    and its fixed points, the maximum-likelihood fit, are those of the data without it. Left out, the fit
    equals the fit without those rows, and the count is said, as ``nan_policy="omit"`` counts the rows it
    drops. (A refusal made a Parquet job fail on a row with nothing to say; weights added to the counts
    would only slow EM down.)
    """
    if n_empty:
        # the variational mixture predicts and scores by its own form (expected log-weights and offsets)
        what = ("its predictions are those of the expected log-weights, its score a little below 0"
                if name == "BayesianGaussianMixture" else "its predictions are the components' weights, its "
                "log-likelihood 0")
        warnings.warn(EmptyRowsWarning(
            f"{n_empty} row(s) have every feature missing (NaN or null): under missing='marginalize' such a row "
            "is as likely under every component and holds no information on them, so it is left out of "
            f"{name}'s fit ({what})", n_empty), stacklevel=stacklevel)


def bad_weights_message(n_nan: int, n_inf: int, n_negative: int, first: int, name: str) -> str:
    """scikit-learn's sentence for the worst kind of bad sample weight (NaN, then infinity, as its check_array
    finds them, then a negative one, as check_non_negative), then how many of each and the first one's row;
    in-memory weights (checked before any pass) and Dask weights (counted by the scan) say it alike."""
    sentence = ("Input sample_weight contains NaN." if n_nan else
                "Input sample_weight contains infinity or a value too large for dtype('float64')." if n_inf else
                "Negative values in data passed to `sample_weight`.")
    counts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite"), (n_negative, "negative")) if n]
    return (f"{sentence} sample_weight holds {' and '.join(counts)} value(s), the first at row {first}; {name} "
            "takes finite non-negative weights.")


def check_finite(scan, feature_names, what: str = "X", missing: str = "raise", chunks=None,
                 name: str = "the estimator", dtype="float64") -> None:
    """Raise if the scan found NaN or infinite values: scikit-learn's sentence, then columns and counts,
    then the first bad row (and, given ``chunks``, its chunk's rows).

    With ``missing="marginalize"`` NaN is allowed; rows where every value is NaN are left out of the fit, with
    a warning (:func:`warn_empty_rows`). The sentence is :func:`daskgmm.kernels.scan.non_finite_message`'s, as
    for the rows of a prediction.

    Parameters
    ----------
    chunks : sequence of int, optional
        Rows in each chunk of X (Dask input), to say which chunk holds the first bad row.
    dtype : dtype
        Of the rows, for scikit-learn's "a value too large for dtype(...)" (float32 rows said float64's).
    """
    nan = np.asarray(scan.nan)
    if missing == "marginalize":
        warn_empty_rows(scan.empty_rows, name)
        nan = np.zeros_like(nan)
    if nan.any():
        raise ValueError(
            f"{non_finite_message(nan, scan.inf, feature_names, what, dtype)}"
            f"{_first_bad_row(scan, missing, chunks, what)}. "
            "Remove or impute missing values before "
            "fitting (daskgmm.read_parquet(..., nan_policy='omit') drops such rows)."
        )
    if np.any(scan.inf):
        raise ValueError(f"{non_finite_message(nan, scan.inf, feature_names, what, dtype)}"
                         f"{_first_bad_row(scan, missing, chunks, what)}.")
    if scan.bad_weights:
        raise ValueError(bad_weights_message(scan.weight_nan, scan.weight_inf,
                                             scan.bad_weights - scan.weight_nan - scan.weight_inf,
                                             scan.first_bad_weight, name))


def _first_bad_row(scan, missing, chunks, what) -> str:
    """", the first at row 371 (in rows 300 to 399 of X, chunk 4 of 4)" (:func:`daskgmm.kernels.scan.first_bad_row`):
    the first row the scan met holding a value the check refuses (its smallest global row number,
    whatever the chunking), or ""."""
    row = int(getattr(scan, "first_inf" if missing == "marginalize" else "first_nonfinite", -1))
    if row < 0:
        return ""
    chunk = None
    if chunks is not None and len(chunks) > 0:
        ends = np.cumsum(np.asarray(chunks, np.int64))
        i = int(np.searchsorted(ends, row, side="right"))
        if i < len(ends):
            chunk = (int(ends[i] - chunks[i]), int(ends[i]), i, len(ends))
    return f", {first_bad_row(row, chunk, what)}"


class DegenerateDataWarning(UserWarning):
    """Every row of X is the same point, or a column of X has one value in every row."""


def _constant_columns(scan) -> np.ndarray:
    if scan.lo is not None:  # one value exactly: a variance relative to the mean took 1e8 + 1e-4 noise for one
        return np.flatnonzero(np.asarray(scan.hi) <= np.asarray(scan.lo))
    # (sparse rows) a column's standard deviation below 1e-12 of its mean: the scan merges chunk means, so a
    # constant column's variance is rounding, not always zero
    var = np.asarray(scan.m2, np.float64) / scan.weight
    return np.flatnonzero(var <= (1e-12 * np.abs(scan.mean)) ** 2)


def one_point(scan) -> bool:
    """Every row of X is the same point (at least two rows, of positive weight): :func:`warn_degenerate`
    says so, and a component on that point needs no other word."""
    return scan.rows >= 2 and scan.rows_weight > 0 and _constant_columns(scan).size == np.size(scan.mean)


def warn_degenerate(scan, feature_names, n_components=None, columns: bool = True,
                    parameter: str = "n_components", weighted: bool = False) -> None:
    """Warn (``DegenerateDataWarning``) when every row is the same point, or about columns of one value.

    ``parameter`` names ``n_components`` in the message: ``"n_clusters"`` for k-means and k-medoids.
    ``weighted``: sample weights were given, so the scan's moments are those of the rows of positive
    weight (rows of weight 0 may hold anything), and the message speaks of those.

    A column is constant when its smallest and largest values are equal (rows of sparse data: when its
    standard deviation is below 1e-12 of its mean, the scan merging chunk means, so a constant column's
    variance is rounding, not always zero).
    ``columns=False`` warns only when every row is the same point (sparse rows).
    """
    if scan.rows < 2 or not scan.rows_weight > 0:  # (the complete rows' weight: none under missing="marginalize")
        return
    const = _constant_columns(scan)
    if one_point(scan):
        more = f", fewer than {parameter}={n_components}" if n_components and n_components > 1 else ""
        parts = "clusters" if parameter == "n_clusters" else "components"
        which = "every row of X of positive sample weight is" if weighted else f"all {scan.rows} rows of X are"
        warnings.warn(f"{which} the same point: 1 distinct point{more} "
                      f"(possibly duplicate points in X); the {parts} cannot be told apart",
                      DegenerateDataWarning, stacklevel=3)
    elif const.size and columns:
        names = (short_columns([str(feature_names[j]) for j in const], quote=True) if feature_names is not None
                 else ", ".join(str(j) for j in const))
        rows = "every row of positive sample weight" if weighted else "every row"
        warnings.warn(f"column(s) {names} of X have zero variance (one value in {rows}): they carry no "
                      "information, and their variances rest on reg_covar alone; drop them",
                      DegenerateDataWarning, stacklevel=3)


def far_rows_remain(estimators) -> str:
    """What the fits of ``estimators`` still get wrong on rows far from the others ("" where nothing), for
    :func:`warn_far_rows`. The passes shift those columns by the sample's median, k-means' distances that the
    expansion cancels are exact and predictions keep the fit's shift: k-means, k-medoids and the Gaussian and t
    mixtures then fit the other rows as without them (600 rows near 0 and 8, 5 at 1e20: adjusted Rand 1.0, 0.03
    before). What is left is the models' own arithmetic, scikit-learn's too:

    - a tied covariance pools scikit-learn's term ``(10 eps / n_k) μ_k μ_kᵀ`` of every component (its M-step's
      in data coordinates), which for a component at a fill value of 1e20 is 1e-15 x 1e40 / n: 3e22 in that
      column's shared variance (scikit-learn's: 3.2e22), so only the other columns tell the clusters apart;
    - the variational mixture's default priors (``mean_prior``, ``covariance_prior``) are the data's mean and
      covariance, which those rows make;
    - a mixture's random starts (``init_params="random"``, ``"random_from_data"``): responsibilities that blend
      those rows into every component, or rows drawn among the others only, from which EM left all the other
      rows in one component (scikit-learn's too, adjusted Rand 0.03).
    """
    why = []
    for est in estimators:
        params = est.get_params() if hasattr(est, "get_params") else {}
        if params.get("covariance_type") == "tied":
            why.append("a tied covariance pools scikit-learn's (10 eps / n_k) mean_k mean_kᵀ of a component at "
                       "those values, which swamps the others' spread in those columns")
        if params.get("init_params") in ("random", "random_from_data"):
            why.append(f"a mixture's init_params={params['init_params']!r} may start every component among or "
                       "blended with those rows, from which EM keeps the other rows in one component")
        if "mean_prior" in params and (params.get("mean_prior") is None or params.get("covariance_prior") is None):
            why.append("the variational mixture's default priors (mean_prior, covariance_prior) are the data's mean "
                       "and covariance, which those rows make")
    return "; ".join(dict.fromkeys(why))


def warn_far_rows(scan, data, feature_names, remains: str = "") -> None:
    """Warn (``DegenerateDataWarning``) about columns whose mean a few rows far from all others have pulled
    millions of robust spreads from their median (an unmasked fill value such as 1e20 or netCDF's 9.97e36
    among values near 1; :func:`daskgmm.kernels.scan.far_columns`), where the fit still gets something wrong
    there: ``remains`` (:func:`far_rows_remain`; "" says nothing). The passes shift those columns by the scan's
    sample's median (:attr:`daskgmm.kernels.results.ScanResult.centre`), which keeps the other rows' precision.
    The spread is the scan's sample's (rows drawn by weight; dense rows), so a handful of such rows cannot
    widen it; columns whose sample has one value are left out, and so are columns where more than 5% of the
    sample lies that far (a tight cluster beside a wide one, as probabilities near 0 beside others: the spread
    is then the tight cluster's, and the rows are not few). ``data``: the rows' ChunkedData, whose scan drew the
    sample; where the sample is every row (not drawn by weight), its median and spread are weighted, as the mean is.
    Sparse rows are left out."""
    # the scan found them already (ScanResult.far): most data have none, and their medians are not computed again
    if not remains or data.sparse or scan.weight <= 0 or not scan.far.size:
        return
    sample = data.sample()
    weights = data.sample_weights() if data.sample_complete else None
    mean = np.asarray(scan.mean, dtype=np.float64)
    far, median, spread = far_columns(sample, weights, mean)
    if not far.size:
        return
    j = int(far[np.argmax(np.abs(mean - median)[far] / spread[far])])
    names = (short_columns([str(feature_names[i]) for i in far], quote=True) if feature_names is not None
             else ", ".join(str(i) for i in far))
    values = ""
    if scan.hi is not None:  # the column's value farthest from its median
        extreme = scan.hi[j] if abs(scan.hi[j] - median[j]) >= abs(scan.lo[j] - median[j]) else scan.lo[j]
        values = f", values up to {extreme:.3g}"
    # the farthest column's figures without its name: the command renames "column(s) N of X" only
    farthest = "the farthest of them: " if far.size > 1 else ""
    warnings.warn(f"column(s) {names} of X: a few rows lie far from all others ({farthest}"
                  f"mean {mean[j]:.3g}, median {median[j]:.3g}, robust spread {spread[j]:.3g}{values}; a fill value "
                  f"left unmasked, or a heavy tail to transform?). The passes keep the other rows' precision, but "
                  f"{remains}. Mask such values as NaN (nan_policy='omit', or missing='marginalize' for a mixture) "
                  "or drop those rows",
                  DegenerateDataWarning, stacklevel=3)


def check_scan(scan, feature_names, name, missing: str = "raise", initialise: bool = True, chunks=None,
               dtype="float64", takes_start: bool = False) -> None:
    """Reject a scan with non-finite values or weights (:func:`check_finite`), or no positive weight.

    Under ``missing="marginalize"`` the scan's ``weight`` is that of the complete rows, and its mean and
    variance are each column's over its observed values (:class:`daskgmm.kernels.results.ScanResult`): a fit
    needs no complete row (the default start draws every row with an observed value; the starts that draw
    complete rows say so, :func:`daskgmm.validation.checks.check_drawable_rows`), but every column needs a value
    in a row of positive weight, for its centre and its start, to ``initialise``. Without that (an online step)
    the caller checks the weight of all rows itself. ``dtype`` is the rows' (for the message about infinity).
    ``takes_start``: the estimator takes ``means_init`` (no longer said: a start given needs no complete row).
    """
    check_finite(scan, feature_names, missing=missing, chunks=chunks, name=name, dtype=dtype)
    weight = scan.weight
    if missing == "marginalize" and np.any(scan.nan):
        weight = scan.rows_weight  # the weight of the rows with an observed value
        if not initialise and not weight > 0:
            return
        unseen = np.flatnonzero(np.asarray(scan.column_weight) <= 0)
        everywhere = bool(np.all(np.asarray(scan.nan)[unseen] >= scan.rows))
        # no value of positive weight: the column has no centre, no start; every value of X missing is the
        # columns' fault, not the weights' (no weight at all then, and no weights given)
        if initialise and unseen.size and (weight > 0 or everywhere):
            names = (short_columns([str(feature_names[j]) for j in unseen], quote=True) if feature_names is not None
                     else ", ".join(str(j) for j in unseen))
            why = ("are missing in every row: drop them" if everywhere else
                   "have no value in a row of positive sample weight: drop them, or give such rows weight")
            raise DataError(f"{name} with missing='marginalize' starts each feature from its observed values, and "
                            f"column(s) {names} of X {why}.")
    if not weight > 0:
        raise ValueError(
            "Sample weights must contain at least one non-zero number. "
            f"{name} got sample_weight with a sum of {weight:g}."
        )
    if not np.isfinite(weight):  # finite weights (checked above) whose sum overflows
        raise ValueError(weight_sum_message(name))


def most_missing(scan, feature_names, n: int = 3) -> str:
    """The (at most ``n``) columns missing in the most rows, with their counts, as "column(s) … of X are missing
    most often (in a, b and c of N rows)": a column of X by position where ``feature_names`` is None, which the
    command renames to its Parquet name."""
    nan = np.asarray(scan.nan)
    top = [int(j) for j in np.argsort(-nan, kind="stable")[:n] if nan[j] > 0]
    names = (", ".join(repr(str(feature_names[j])) for j in top) if feature_names is not None
             else ", ".join(str(j) for j in top))
    counts = [f"{int(nan[j]):,}" for j in top]
    counts = counts[0] if len(counts) == 1 else f"{', '.join(counts[:-1])} and {counts[-1]}"
    return f"column(s) {names} of X are missing most often (in {counts} of {scan.rows:,} rows)"


def weight_sum_message(name: str) -> str:
    """Finite sample weights whose sum overflows float64: NumPy's "Probabilities do not sum to 1" from the
    initialisation's draw said nothing of them, and an online step gave NaN centres."""
    return (f"{name} got sample_weight whose sum overflows float64 (every weight is finite, their sum is inf); "
            "divide the weights by a constant")


#: ``name[j]``: element j of a vector column read as columns (:mod:`daskgmm.io.vectors`).
ELEMENT = re.compile(r"(.+)\[(\d+)\]\Z")


def short_columns(names, quote: bool = False) -> str:
    """Column names for a message, a run of three or more consecutive elements of one vector column
    named by its first and last (``features[0] … features[999]``: a 1000-wide vector made lines of
    1000 names); ``quote`` writes each name as its ``repr``."""
    names = [str(n) for n in names]
    word = repr if quote else str
    out, i = [], 0
    while i < len(names):
        j, m = i, ELEMENT.match(names[i])
        while m and j + 1 < len(names):
            n = ELEMENT.match(names[j + 1])
            if not (n and n[1] == m[1] and int(n[2]) == int(ELEMENT.match(names[j])[2]) + 1):
                break
            j += 1
        out.extend([f"{word(names[i])} … {word(names[j])}"] if j - i >= 2 else map(word, names[i:j + 1]))
        i = j + 1
    return ", ".join(out)
