"""The gallery's outlier picture takes any list of fitted estimators (the hook another robust model joins)."""

import importlib.util
import pathlib

import numpy as np

import daskgmm

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "plot_outliers.py"


def _script():
    spec = importlib.util.spec_from_file_location("plot_outliers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_on_outliers_draws_any_fitted_estimators(tmp_path):
    gallery = _script()
    X, outlier = gallery.outlier_data(n_per=60)
    assert outlier.sum() == round(0.05 * 180 / 0.95) and not outlier[:180].any()
    fitted = [daskgmm.KMeans(3, random_state=0).fit(X), daskgmm.KMedoids(3, random_state=0).fit(X),
              daskgmm.GaussianMixture(3, random_state=0).fit(X),  # a mixture: its means_ are the prototypes
              daskgmm.StudentTMixture(3, random_state=0).fit(X)]
    out = tmp_path / "outliers.png"
    fig = gallery.compare_on_outliers(X, outlier, fitted, str(out))
    assert out.stat().st_size > 10_000 and len(fig.axes) == 4
    np.testing.assert_array_equal(gallery.prototypes(fitted[2]), fitted[2].means_)
    # a mixture with full covariances gets its components' ellipses, the prototypes without
    assert [len(ax.patches) for ax in fig.axes] == [0, 0, 3, 3]
    # the t mixture's locations stay in the clusters, which the outliers pull k-means' centre from
    assert gallery.prototype_error(gallery.prototypes(fitted[3]), gallery.TRUE_CENTRES) < 0.5 * \
        gallery.prototype_error(gallery.prototypes(fitted[0]), gallery.TRUE_CENTRES)
    assert gallery.prototype_error(gallery.TRUE_CENTRES, gallery.TRUE_CENTRES) == 0.0
