"""``GaussianMixture``: scikit-learn's estimator, fitted by EM passes over Dask chunks.

The estimator is thin: it validates its parameters and input and sets attributes; the fit
procedure is :mod:`daskgmm.fitting.mixture` (and :mod:`daskgmm.fitting.online` for ``partial_fit``),
predictions and samples :mod:`daskgmm.fitting.predict`, the attributes and model files
:mod:`daskgmm.fitting.attributes`, the verbose lines :mod:`daskgmm.fitting.report`.
"""

from __future__ import annotations

import typing

from sklearn.utils.validation import check_is_fitted

from daskgmm.base import BaseMixture, InformationCriteriaMixin
from daskgmm.fitting import attributes as fitting_attributes
from daskgmm.fitting import mixture as fitting
from daskgmm.fitting import online as fitting_online
from daskgmm.fitting import predict as fitting_predict
from daskgmm.fitting.attributes import set_attributes
from daskgmm.io.modelfiles import register
from daskgmm.validation.checks import hinted, input_or_model_names, nan_hint, prepare_rows
from daskgmm.validation.params import ARRAY_LIKE, NONE, Interval, Options
from daskgmm.validation.scan import one_point


@register
class GaussianMixture(InformationCriteriaMixin, BaseMixture):
    """Gaussian mixture fitted by EM on data larger than memory.

    The constructor, attributes and methods are scikit-learn's
    :class:`sklearn.mixture.GaussianMixture`; each EM iteration is one pass in
    which every Dask chunk is reduced to sufficient statistics and the
    statistics are tree-reduced on the cluster. Restarts (``n_init``) run in
    lockstep: one pass per iteration serves all of them.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        EM stops when the change of the mean log-likelihood per sample (the
        lower bound) is below ``tol``.
    reg_covar : float, default=1e-6
        Added to the diagonal of covariances, to keep them positive definite.
    max_iter : int, default=100
    n_init : int, default=1
        Restarts; the one with the largest final lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        "kmeans": k-means++ and Lloyd's algorithm on the first scan's row-keyed
        sample (on the client), one Lloyd pass on the data, then the statistics
        of the labels: three reads of the data with the scan.
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape (K,) spherical, (D, D) tied, (K, D) diag, (K, D, D) full.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation (independently of chunking) and ``sample``.
    warm_start : bool, default=False
        Continue from the fitted parameters on the next ``fit`` (``n_init`` ignored).
    verbose : int, default=0
    verbose_interval : int, default=10
    assignment : {"soft", "hard"}, default="soft"
        "hard" is classification EM: each row wholly to its most likely component.
    update_params : str, default="wmc"
        Which of weights (w), means (m) and covariances (c) the M-step updates.
    on_collapse : {"raise", "reinit"}, default="raise"
        A component whose covariance stops being positive definite raises a
        ValueError naming it ("raise", scikit-learn's behaviour), or is re-seeded
        at the worst-explained rows and the fit continues ("reinit"; recorded
        in ``history_``; one the initialisation leaves on a point takes the
        others' mean covariance).
    cache : {"auto", "memory", "none"}, default="auto"
        Keep Dask input in (cluster) memory across passes, or re-read it every
        pass (out of core). "auto" keeps it when it takes under 40% of memory.
    chunk_size : int, optional
        Rows per chunk when the input is in memory (NumPy, pandas).
    learning_decay : float, default=0.7
        The decay of the step sizes ``η_t = (t + learning_offset) ** -learning_decay`` of
        :meth:`partial_fit`, in (0.5, 1] (where stepwise EM converges, Cappé &
        Moulines 2009); smaller forgets old batches faster.
    learning_offset : float, default=10.0
        ``t0`` of the step sizes (at least 0); larger damps the early steps.
    missing : {"raise", "marginalize"}, default="raise"
        NaN in X is an error ("raise"), or a missing value ("marginalize"): EM for
        incomplete data scores each row by the marginal density of its observed
        features and fills the M-step with the conditional expectations of the
        missing ones (Ghahramani & Jordan 1994); ``predict``, ``predict_proba`` and
        ``score_samples`` then give marginal results for rows with NaN. Infinity
        stays an error. A row with every feature missing holds no information (its
        likelihood is 1 under every component): the fit leaves it out, with an
        ``EmptyRowsWarning`` saying how many, and predicts it as the weights (its
        ``score_samples`` 0). The initialisation uses the rows without NaN (at least
        one is needed).

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
    precisions_ : ndarray
    precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
        Mean log-likelihood per sample of the best run (before its last M-step).
    lower_bounds_ : list of float
        Lower bound at each iteration of the best run.
    history_ : list of dict
        Per iteration of the best run: ``iteration``, ``lower_bound``,
        ``change`` (None on the first iteration or step: no previous lower bound),
        ``seconds`` (wall time of the pass) and ``events``; each
        :meth:`partial_fit` step appends one entry, with ``batch``, ``rows`` and ``eta``.
    restarts_ : list of dict
        ``lower_bound``, ``n_iter``, ``converged`` of every restart.
    init_seconds_ : float
        Wall time of the initialisation (all restarts).
    init_passes_, n_passes_ : int
        Passes over the data for the initialisation (the first scan included),
        and in all.
    n_batches_ : int
        Batches the model has learnt from: ``fit`` counts as one, each
        :meth:`partial_fit` step as one more (its ``t``).
    n_rows_seen_ : int
        Rows of all those batches.
    online_stats_ : SuffStats
        The running sufficient statistics of :meth:`partial_fit` (per unit
        weight); absent after ``fit``, where the fitted model's own statistics
        (:func:`daskgmm.fitting.online.model_statistics`) stand in for them.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when the input had string column names.
    """

    _parameter_constraints: typing.ClassVar[dict] = {
        **BaseMixture._parameter_constraints,
        "weights_init": [ARRAY_LIKE, NONE],
        "means_init": [ARRAY_LIKE, NONE],
        "precisions_init": [ARRAY_LIKE, NONE],
        "assignment": [Options("soft", "hard")],
        "on_collapse": [Options("raise", "reinit")],
        "learning_decay": [Interval(float, 0.5, 1.0, closed="right")],
        "learning_offset": [Interval(float, 0.0, None)],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        assignment="soft",
        update_params="wmc",
        on_collapse="raise",
        cache="auto",
        chunk_size=None,
        learning_decay=fitting_online.LEARNING_DECAY,
        learning_offset=fitting_online.LEARNING_OFFSET,
        missing="raise",
    ):
        super().__init__(n_components=n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init_params, random_state=random_state,
                         warm_start=warm_start, verbose=verbose, verbose_interval=verbose_interval, cache=cache,
                         chunk_size=chunk_size, missing=missing)
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.assignment = assignment
        self.update_params = update_params
        self.on_collapse = on_collapse
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset

    # ------------------------------------------------------------------ fit
    def _fit(self, X, sample_weight, *, checkpoint=None, progress=None):
        """The fit (:func:`daskgmm.fitting.mixture.fit_mixture`); returns the prepared data."""
        self._validate_params()
        fitting.check_update_params(self.update_params)
        data, scan, _ = self._fit_rows(X, sample_weight)
        d = data.n_features
        params = fitting.MixtureParams.of(self.get_params())
        warm = None
        if self._continues(d):
            warm = (fitting.warm_state(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_,
                                       params, data.dtype), self.lower_bound_)
        given = fitting.check_initial_parameters(self.weights_init, self.means_init, self.precisions_init, params, d)
        self._verbose_start(1 if warm is not None else self.n_init)
        fit = fitting.fit_mixture(
            data, scan, params, random_state=self.random_state, given=given, warm=warm, checkpoint=checkpoint,
            progress=progress, on_iteration=self._verbose_iteration if self.verbose else None,
        )
        self._verbose_end(fit.runs)
        # the rows the fit used: those with nothing observed are left out (missing="marginalize"), as an online
        # step leaves them out of its count
        set_attributes(self, fitting_attributes.fit_attributes(fit, data.n_rows - scan.empty_rows, d, self.max_iter,
                                                               data.dtype),
                       drop=("online_stats_",))
        self._shift = fitting_attributes.kept_shift(scan)
        self._warn_if_not_converged()
        # rows, not the scan's weight (which counts complete rows only under missing="marginalize")
        # (fixed weights say nothing of a component's rows: the last update's rows do; nor do sample weights)
        rows = fitting.component_rows(data, [fit.best.state], scan.centre)
        if rows is not None:
            rows, self.n_passes_ = rows[0], self.n_passes_ + 1
        elif "w" not in self.update_params:
            rows = fit.best.state.rows
        # (data of one point: the DegenerateDataWarning of the scan said it; no component on it to name)
        found = fitting.collapsed_on_rows(self.weights_, self.covariances_, self.covariance_type, data.n_rows, rows,
                                         0.0 if one_point(scan) else self.reg_covar)
        fitting.warn_collapsed({"": found}, self.reg_covar, stacklevel=3, update_params=self.update_params,
                               reseeded=self.on_collapse == "reinit")
        return data

    # ------------------------------------------------------------ online EM
    def partial_fit(self, X, y=None, sample_weight=None):
        """One step of stepwise (online) EM on a batch: one pass over it.

        The batch's sufficient statistics under the current parameters are
        blended into running ones, ``s ← (1 - η_t) s + η_t s_batch`` per unit of
        sample weight (so batches may differ in size), with
        ``η_t = (t + learning_offset) ** -learning_decay`` for the ``t``-th batch,
        then the M-step sets the parameters from them (Cappé & Moulines 2009;
        Liang & Klein 2009). The first call initialises as ``fit`` does on the
        batch (``init_params``, the ``*_init`` arrays, ``n_init`` starts, of which
        the one most likely on the batch is kept) and takes ``η_0 = 1``; after
        ``fit`` (which counts as the first batch) or loading a saved model, the
        step continues from the model.

        Parameters
        ----------
        X : array-like, pandas DataFrame, dask Array or dask DataFrame, shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask Array of shape (n_samples,), optional

        Returns
        -------
        self
        """
        first = not hasattr(self, "means_")
        name = type(self).__name__
        self._validate_params()
        fitting.check_update_params(self.update_params)
        params = fitting.MixtureParams.of(self.get_params())
        if first:
            # chunks checked as they are read: a bad value is named with its rows, as score names it
            data, scan, info = self._fit_rows(X, sample_weight, check_chunks=True)
            given = fitting.check_initial_parameters(self.weights_init, self.means_init, self.precisions_init,
                                                     params, data.n_features)
            states, self.init_seconds_ = fitting.online_initial_states(data, scan, params, self.random_state, given)
            running, t, centre, seen = None, 0, scan.centre, 0
        else:
            check_is_fitted(self)
            self._check_continued("partial_fit")
            with hinted(nan_hint(self)):  # rows with NaN that this model could marginalise
                data, _, info = prepare_rows(X, sample_weight, name, cache="none", chunk_size=self.chunk_size,
                                             min_samples=1, estimator=self, reset=False, scan=False,
                                             missing=self.missing, check_chunks=True)
            states = [fitting.warm_state(self.weights_, self.means_, self.covariances_, self.precisions_cholesky_,
                                         params, data.dtype)]
            running = getattr(self, "online_stats_", None)
            if running is None:  # after fit or a model saved by fit: the model stands for its data
                # about each component's mean where the fit kept a robust shift (rows at a fill value): about the
                # means' mean (8e17), a component near 0 lost its covariance to 1e35 terms (not positive definite)
                shift = None if getattr(self, "_shift", None) is None else states[0].means
                running = fitting_online.model_statistics(states[0], shift, loglik=self.lower_bound_)
            t, centre, seen = int(self.n_batches_), self._centre(), int(self.n_rows_seen_)
        # the batch's own column names (a DataFrame batch after a fit on a NumPy array), else the model's
        names = input_or_model_names(info, self)
        step = fitting_online.online_step(data, states, running, t, centre=centre, learning_decay=self.learning_decay,
                                          learning_offset=self.learning_offset, feature_names=names, name=name,
                                          rows_seen=seen)
        # the model keeps the dtype of the data it first learnt from (a float32 batch does not
        # turn a float64 model's parameters into float32, nor the reverse)
        dtype = data.dtype if first else self.means_.dtype
        set_attributes(self, fitting_attributes.online_attributes(step, t, seen, data.passes, dtype,
                                                                  previous=None if first else self))
        if first:  # the later steps (and predictions) keep the first batch's shift
            self._shift = fitting_attributes.kept_shift(scan)
        return self

    # ----------------------------------------------------------- predictions
    def _n_parameters(self) -> int:
        return fitting.n_free_parameters(self.covariance_type, self.n_components, self.means_.shape[1],
                                         self.update_params, weights_init=self.weights_init,
                                         means_init=self.means_init, precisions_init=self.precisions_init)

    def _natural(self, centre):
        """Log-density parameters for predictions (:func:`daskgmm.fitting.predict.natural_form`)."""
        return fitting_predict.natural_form(self.weights_, self.means_, self.precisions_cholesky_,
                                            self.covariance_type, centre)

    def _marginal(self, centre):
        """The per-component form for rows with NaN (``missing="marginalize"``), else None."""
        return fitting_predict.marginal_form(self.weights_, self.means_, self.precisions_cholesky_,
                                             self.covariance_type, centre, getattr(self, "missing", "raise"))

    # ----------------------------------------------------------- persistence
    def export_state(self):
        """The fitted model as (arrays, JSON-able metadata), for :func:`daskgmm.io.modelfiles.save_model`."""
        arrays, meta = super().export_state()
        fitting_attributes.export_online(self, arrays, meta)
        return arrays, meta

    def import_state(self, arrays, meta):
        """Set the fitted attributes from :meth:`export_state`'s output (checked: shapes, finite values)."""
        super().import_state(arrays, meta)
        set_attributes(self, fitting_attributes.import_online(arrays, meta), drop=("online_stats_",))
