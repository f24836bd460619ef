#!/usr/bin/env python3
"""Two moons: can a mixture of Gaussians model a shape that is not Gaussian? With enough components, yes.

    .venv/bin/python scripts/plot_moons.py      # writes docs/gallery/moons.png

The notes (002) ask whether mixtures work for non-Gaussian shapes such as two moons. 2,000
rows of ``sklearn.datasets.make_moons(noise=0.08)``; daskgmm's GaussianMixture with K = 2, 6
and 16 full-covariance components; contours of the fitted log-density, the components'
2-sigma ellipses, and the held-out mean log-likelihood (2,000 fresh rows) in each title.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse
from sklearn.datasets import make_moons

import daskgmm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KS = (2, 6, 16)


def ellipse(ax, mean, cov, weight, colour):
    """The 2-sigma ellipse of one component, its opacity following its weight."""
    vals, vecs = np.linalg.eigh(cov)
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    w, h = 2 * 2.0 * np.sqrt(vals[::-1])
    ax.add_patch(Ellipse(mean, w, h, angle=angle, fill=False, lw=1.4, color=colour,
                         alpha=float(np.clip(0.35 + 4 * weight, 0.35, 1.0))))


def main() -> int:
    X, _ = make_moons(n_samples=2000, noise=0.08, random_state=0)
    held_out, _ = make_moons(n_samples=2000, noise=0.08, random_state=1)
    xs = np.linspace(-1.6, 2.6, 300)
    ys = np.linspace(-1.1, 1.6, 200)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    fig, axes = plt.subplots(1, len(KS), figsize=(5.6 * len(KS), 4.4), layout="constrained")
    for ax, k in zip(axes, KS):
        gm = daskgmm.GaussianMixture(n_components=k, covariance_type="full", n_init=3, random_state=0).fit(X)
        logp = gm.score_samples(grid).reshape(gx.shape)
        levels = np.arange(-6.0, max(0.5, logp.max()) + 0.5, 0.5)  # the same levels in every panel
        cs = ax.contourf(gx, gy, np.maximum(logp, -6.0), levels=levels, cmap="viridis")
        ax.scatter(X[:, 0], X[:, 1], s=2.5, c="white", alpha=0.55, lw=0)
        for j in range(k):
            ellipse(ax, gm.means_[j], gm.covariances_[j], gm.weights_[j], "tab:red")
        ax.plot(gm.means_[:, 0], gm.means_[:, 1], "+", color="tab:red", ms=7, mew=1.6)
        ax.set_title(f"K = {k}: held-out mean log-likelihood {gm.score(held_out):.3f}, BIC {gm.bic(X):.0f}",
                     fontsize=10.5)
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        ax.set_aspect("equal")
        print(f"K={k}: held-out loglik {gm.score(held_out):.4f}, BIC {gm.bic(X):.1f}, {gm.n_iter_} iterations")
    fig.colorbar(cs, ax=axes, shrink=0.85, label="log p(x) (clipped at -6)")
    fig.suptitle("Two moons (2,000 rows) by GaussianMixture: log-density contours, components' 2-sigma ellipses",
                 fontsize=12)
    out = os.path.join(ROOT, "docs", "gallery", "moons.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=80)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
