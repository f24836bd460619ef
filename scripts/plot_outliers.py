#!/usr/bin/env python3
"""k-means against K-medoids and a Student-t mixture on data with gross outliers: "l2-norm is not robust to
outliers" (notes, 001).

    .venv/bin/python scripts/plot_outliers.py      # writes docs/gallery/outliers.png

Three round clusters of 300 rows and 5% gross outliers scattered to one side. KMeans'
centres are means, and the outliers drag the nearest one off its cluster; KMedoids'
prototypes are rows, chosen by a sum of (here Manhattan) dissimilarities, and stay;
StudentTMixture's components have heavy tails, its E-step weighs a far row by
u = (nu + D)/(nu + δ²), and its locations stay too (the component that takes the
outliers in its tail ends with few degrees of freedom).

:func:`compare_on_outliers` draws any list of fitted estimators (anything with
``cluster_centers_`` or ``means_`` and ``predict``) side by side; for a mixture with
full ``covariances_`` it also draws each component's two-sigma ellipse (a t mixture's: of its scale).
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

import daskgmm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRUE_CENTRES = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 7.0]])
COLOURS = np.array(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"])


def outlier_data(n_per=300, fraction=0.05, seed=0):
    """Rows of three clusters plus ``fraction`` of gross outliers; and a mask of the outliers."""
    rng = np.random.default_rng(seed)
    inliers = np.vstack([c + rng.normal(size=(n_per, 2)) for c in TRUE_CENTRES])
    n_out = round(fraction * len(inliers) / (1 - fraction))
    outliers = np.column_stack([rng.uniform(12, 30, n_out), rng.uniform(-12, 12, n_out)])
    X = np.vstack([inliers, outliers])
    return X, np.r_[np.zeros(len(inliers), bool), np.ones(n_out, bool)]


def prototypes(est) -> np.ndarray:
    """The fitted centres, medoids or component means."""
    return np.asarray(est.cluster_centers_ if hasattr(est, "cluster_centers_") else est.means_)


def prototype_error(protos, truth) -> float:
    """Mean distance from each true centre to the nearest prototype."""
    d = np.sqrt(((truth[:, None, :] - protos[None, :, :]) ** 2).sum(axis=2))
    return float(d.min(axis=1).mean())


def compare_on_outliers(X, outlier, estimators, path, titles=None, truth=TRUE_CENTRES):
    """One panel per fitted estimator: rows coloured by its labels, outliers as crosses, its prototypes
    (large markers) against the true centres (black stars), and the mean prototype error in the title.

    Parameters
    ----------
    X : ndarray, shape (n, 2)
    outlier : ndarray of bool, shape (n,)
    estimators : list
        Fitted, each with ``predict`` and ``cluster_centers_`` or ``means_``.
    path : str
        PNG to write.
    titles : list of str, optional
        One per estimator (default: its class name).
    """
    titles = titles or [type(e).__name__ for e in estimators]
    fig, axes = plt.subplots(1, len(estimators), figsize=(5.4 * len(estimators), 5.0), layout="constrained",
                             squeeze=False)
    for ax, est, title in zip(axes[0], estimators, titles):
        labels = np.asarray(est.predict(X))
        protos = prototypes(est)
        ax.scatter(X[~outlier, 0], X[~outlier, 1], s=7, c=COLOURS[labels[~outlier] % len(COLOURS)], alpha=0.5, lw=0)
        ax.scatter(X[outlier, 0], X[outlier, 1], s=22, c=COLOURS[labels[outlier] % len(COLOURS)], marker="x", lw=1.2,
                   label="gross outliers (5%)")
        ax.scatter(truth[:, 0], truth[:, 1], s=260, marker="*", c="black", label="true centres", zorder=3)
        ax.scatter(protos[:, 0], protos[:, 1], s=150, marker="o", facecolors="none", edgecolors="red", lw=2.4,
                   label="fitted prototypes", zorder=4)
        if getattr(est, "covariance_type", None) == "full":
            for mean, c in zip(protos, np.asarray(est.covariances_)):
                vals, vecs = np.linalg.eigh(c)
                angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
                ax.add_patch(Ellipse(mean, *(4 * np.sqrt(vals[::-1])), angle=angle, fill=False, ec="red", lw=1.2,
                                     ls="--", zorder=4))
        ax.set_title(f"{title}\nmean distance of a true centre to its prototype: "
                     f"{prototype_error(protos, truth):.2f}", fontsize=10.5)
        ax.set_aspect("equal")
        ax.set_xlim(-10, 31)
        ax.set_ylim(-13, 12)
        ax.legend(fontsize=8.5, loc="lower left")
    fig.suptitle("Three clusters and 5% gross outliers: the squared distance is not robust; a sum of "
                 "dissimilarities over rows is, and so are heavy tails", fontsize=12)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=80)
    return fig


def main() -> int:
    X, outlier = outlier_data()
    estimators = [
        daskgmm.KMeans(n_clusters=3, n_init=10, random_state=0).fit(X),
        daskgmm.KMedoids(n_clusters=3, metric="manhattan", random_state=0).fit(X),
        daskgmm.StudentTMixture(n_components=3, random_state=0).fit(X),
    ]
    df = ", ".join(f"{v:.1f}" for v in estimators[2].df_)
    titles = ["KMeans (squared Euclidean; centres are means)",
              "KMedoids (Manhattan; prototypes are rows)",
              f"StudentTMixture (t components, df_ {df};\nlocations, two-sigma scale ellipses)"]
    for title, est in zip(titles, estimators):
        d = np.sqrt(((TRUE_CENTRES[:, None, :] - prototypes(est)[None]) ** 2).sum(axis=2)).min(axis=1)
        print(f"{title}: prototype error {prototype_error(prototypes(est), TRUE_CENTRES):.3f} "
              f"(per true centre: {', '.join(f'{v:.2f}' for v in d)})".replace("\n", " "))
    out = os.path.join(ROOT, "docs", "gallery", "outliers.png")
    compare_on_outliers(X, outlier, estimators, out, titles)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
