"""Pictures of fits (matplotlib, the optional ``plot`` extra).

Functions draw on a given matplotlib ``Axes`` or make their own ``Figure``
(without pyplot, so they work headless and in any backend); ``save_figure``
writes a PNG.
"""

from __future__ import annotations

import numpy as np

from daskgmm.kernels import covariance as cov


def _require():
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("daskgmm.plot needs matplotlib: pip install 'daskgmm[plot]'") from None


def _new_axes(ax, size=(6, 4.5)):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(fig, path, dpi=110, storage_options=None) -> None:
    """Write ``fig`` to ``path`` (PNG by extension) with the Agg canvas; ``path`` may be an fsspec
    URL (``s3://…``, written as one object, with ``storage_options``)."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from daskgmm.io.files import get_fs, is_local, strip_protocol

    FigureCanvasAgg(fig)
    fs = get_fs(str(path), storage_options)
    if not is_local(fs):
        import io

        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format=os.path.splitext(str(path))[1][1:].lower() or "png")
        fs.pipe_file(strip_protocol(fs, str(path)), buf.getvalue())
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=dpi)


def plot_convergence(model, ax=None):
    """Mean log-likelihood per sample at each EM iteration (``lower_bounds_``).

    Returns
    -------
    matplotlib.axes.Axes
    """
    _require()
    _, ax = _new_axes(ax)
    lbs = np.asarray(getattr(model, "lower_bounds_", []), dtype=float)
    ax.plot(np.arange(1, len(lbs) + 1), lbs, marker="o", ms=3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)  # no "1e-8-6.700355" offset label: plain values
    ax.set_xlabel("EM iteration")
    # a variational fit records scikit-learn's ELBO (a sum over rows), not a mean log-likelihood
    ax.set_ylabel("lower bound (ELBO)" if hasattr(model, "weight_concentration_") else "mean log-likelihood per sample")
    state = "converged" if getattr(model, "converged_", False) else "not converged"
    ax.set_title(f"Convergence ({state} after {len(lbs)} iterations)")
    ax.grid(alpha=0.3)
    return ax


def _cov2(model, k, i, j):
    m = cov.component_covariance(model.covariances_, model.covariance_type, k, model.means_.shape[1])
    return m[np.ix_([i, j], [i, j])]


def _sample_rows(X, n, random_state):
    """Up to ``n`` rows of X as NumPy (uniform; Dask input is sampled in one pass)."""
    from daskgmm.validation.checks import check_rows, is_dask

    if is_dask(X):
        from daskgmm.em.init import random_rows
        from daskgmm.engine.passes import ChunkedData
        from daskgmm.fitting.mixture import restart_seeds

        Xd, _ = check_rows(X, "plot", min_samples=1)
        data = ChunkedData(Xd, cache="none")
        m = min(n, data.n_rows)
        return random_rows(data, None, m, restart_seeds(random_state, 1))[0]
    x = np.asarray(X, dtype=float)
    if len(x) > n:
        x = x[np.random.default_rng(random_state).choice(len(x), n, replace=False)]
    return x


def plot_components(model, X=None, *, dims=(0, 1), n_sample=5000, n_std=(1.0, 2.0), ax=None, random_state=0):
    """A sample of the data and each component's ellipses in two dimensions.

    Parameters
    ----------
    model : fitted GaussianMixture
    X : array-like or Dask array, optional
        Data to scatter (a uniform sample of ``n_sample`` rows).
    dims : (int, int)
        Feature indices for the axes.
    n_std : float or sequence of float
        Ellipses at these Mahalanobis radii (one per value and component).

    Returns
    -------
    matplotlib.axes.Axes
    """
    _require()
    from matplotlib.patches import Ellipse

    _, ax = _new_axes(ax)
    if np.shape(model.means_)[1] == 1:
        return _plot_components_1d(model, X, n_sample, ax, random_state)
    i, j = dims
    names = getattr(model, "feature_names_in_", None)
    labels = [str(names[i]), str(names[j])] if names is not None else [f"x{i}", f"x{j}"]
    colors = [f"C{k % 10}" for k in range(model.n_components)]
    if X is not None:
        x = _sample_rows(X, n_sample, random_state)
        if names is not None:  # the sample is NumPy: with its names, so that predict does not warn it has none
            import pandas as pd

            lab = model.predict(pd.DataFrame(x, columns=names))
        else:
            lab = model.predict(x)
        ax.scatter(x[:, i], x[:, j], s=6, c=[colors[k] for k in lab], alpha=0.5, linewidths=0)
    radii = np.atleast_1d(n_std)
    means = np.asarray(model.means_, dtype=float)
    weights = np.asarray(model.weights_, dtype=float)
    for k in range(model.n_components):
        if hasattr(model, "weight_concentration_") and weights[k] < 0.01:
            continue  # a component the variational fit left empty sits on the prior: nothing to draw
        vals, vecs = np.linalg.eigh(_cov2(model, k, i, j))
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        for r in radii:
            ax.add_patch(Ellipse(
                (means[k, i], means[k, j]), 2 * r * np.sqrt(vals[-1]), 2 * r * np.sqrt(vals[0]), angle=angle,
                fill=False, lw=1.8, ec=colors[k], alpha=min(1.0, 0.35 + weights[k]),
                label=f"component {k} (weight {weights[k]:.2f})" if r == radii[0] else None,
            ))
        ax.plot(means[k, i], means[k, j], "x", color=colors[k], ms=8, mew=2)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{model.n_components} components, {model.covariance_type} covariance")
    ax.legend(loc="best", fontsize="small")
    ax.autoscale_view()
    return ax


def _plot_components_1d(model, X, n_sample, ax, random_state):
    """One feature: a histogram of a sample and each component's weighted density."""
    names = getattr(model, "feature_names_in_", None)
    means = np.asarray(model.means_, dtype=float)[:, 0]
    sd = np.sqrt(np.array([_cov1(model, k) for k in range(model.n_components)]))
    weights = np.asarray(model.weights_, dtype=float)
    lo, hi = (means - 4 * sd).min(), (means + 4 * sd).max()
    if X is not None:
        x = _sample_rows(X, n_sample, random_state)[:, 0]
        ax.hist(x, bins=60, density=True, color="0.8")
        lo, hi = min(lo, x.min()), max(hi, x.max())
    grid = np.linspace(lo, hi, 400)
    for k in range(model.n_components):
        dens = weights[k] * np.exp(-0.5 * ((grid - means[k]) / sd[k]) ** 2) / (sd[k] * np.sqrt(2 * np.pi))
        ax.plot(grid, dens, color=f"C{k % 10}", label=f"component {k} (weight {weights[k]:.2f})")
    ax.set_xlabel(str(names[0]) if names is not None else "x0")
    ax.set_ylabel("density")
    ax.set_title(f"{model.n_components} components, one feature")
    ax.legend(loc="best", fontsize="small")
    return ax


def _cov1(model, k):
    return float(_cov2(model, k, 0, 0)[0, 0])


def plot_criterion(result, ax=None):
    """BIC and AIC against K, one line per covariance type (from :func:`daskgmm.select_model`).

    Returns
    -------
    matplotlib.axes.Axes
    """
    _require()
    _, ax = _new_axes(ax)
    table = result.table
    kinds = table["kind"] if "kind" in table else None
    mixed = kinds is not None and kinds.nunique() > 1
    keys = ["kind", "covariance_type"] if mixed else ["covariance_type"]
    for key, group in table.groupby(keys, sort=False):
        t = ", ".join(key) if mixed else (key[0] if isinstance(key, tuple) else key)
        g = group.sort_values("n_components")
        line, = ax.plot(g["n_components"], g["bic"], marker="o", label=f"BIC, {t}")
        ax.plot(g["n_components"], g["aic"], marker="s", ls="--", color=line.get_color(), alpha=0.7,
                label=f"AIC, {t}")
    # select_model's rule: the lowest criterion, then the fewest parameters
    row = table.sort_values([result.criterion, "n_parameters"], kind="stable").iloc[:1]
    what = f"K={int(row['n_components'].iloc[0])}, {row['covariance_type'].iloc[0]}"
    if mixed:
        what += f", {row['kind'].iloc[0]}"
    ax.plot(row["n_components"], row[result.criterion], "*", ms=16, color="k",
            label=f"best by {result.criterion.upper()}: {what}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title("Model selection")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return ax


def plot_fit(model, X=None, path=None, dims=(0, 1), storage_options=None):
    """A two-panel figure: convergence curve and components; written to ``path`` if given."""
    _require()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    a, b = fig.subplots(1, 2)
    plot_convergence(model, a)
    plot_components(model, X, dims=dims, ax=b)
    if path is not None:
        save_figure(fig, path, storage_options=storage_options)
    return fig


def plot_selection(result, path=None, storage_options=None):
    """The criterion figure of a model selection; written to ``path`` if given."""
    _require()
    fig, ax = _new_axes(None, size=(7, 4.5))
    plot_criterion(result, ax)
    if path is not None:
        save_figure(fig, path, storage_options=storage_options)
    return fig
