#!/usr/bin/env python3
"""One Gaussian against a mixture of two for Old Faithful's eruption times (1-D), as in the notes (003).

    .venv/bin/python scripts/plot_faithful_1d.py      # writes docs/gallery/faithful_1d.png

The histogram of the 272 eruption durations, the density of one Gaussian fitted by maximum
likelihood and that of a two-component mixture (with its weighted components), each with its
mean log-likelihood and BIC.
"""

from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import daskgmm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the repository's copy of the shared data set (byte for byte shared/data/old_faithful.csv)
DATA = os.path.join(ROOT, "tests", "old_faithful.csv")


def normal_pdf(x, mean, var):
    return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def main() -> int:
    x = pd.read_csv(DATA).iloc[:, [0]].to_numpy(np.float64)  # eruption minutes, shape (272, 1)
    grid = np.linspace(x.min() - 0.6, x.max() + 0.6, 600)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True, layout="constrained")
    colours = ["tab:orange", "tab:green"]
    for ax, k in zip(axes, (1, 2)):
        gm = daskgmm.GaussianMixture(n_components=k, random_state=0).fit(x)
        ax.hist(x[:, 0], bins=30, density=True, color="0.82", edgecolor="white", label="272 eruptions")
        total = np.zeros_like(grid)
        for j in range(k):
            part = gm.weights_[j] * normal_pdf(grid, gm.means_[j, 0], gm.covariances_[j, 0, 0])
            total += part
            if k > 1:
                ax.fill_between(grid, part, color=colours[j], alpha=0.35, lw=0,
                                label=f"π·N(x | μ, σ²): π={gm.weights_[j]:.2f}, μ={gm.means_[j, 0]:.2f}, "
                                      f"σ={np.sqrt(gm.covariances_[j, 0, 0]):.2f}")  # noqa: RUF001
        ax.plot(grid, total, color="tab:blue", lw=2.2, label="p(x)")
        ax.set_title(f"K = {k}: mean log-likelihood {gm.score(x):.3f}, BIC {gm.bic(x):.1f}", fontsize=11)
        ax.set_xlabel("eruption duration (minutes)")
        ax.legend(fontsize=9, loc="upper center")
        ax.set_ylim(0, 0.95)
        print(f"K={k}: loglik {gm.score(x):.4f} BIC {gm.bic(x):.2f} weights {gm.weights_.round(3)} "
              f"means {gm.means_[:, 0].round(3)}")
    axes[0].set_ylabel("density")
    fig.suptitle("Old Faithful eruption times: one Gaussian or a mixture of two (GaussianMixture, 1-D)", fontsize=12)
    out = os.path.join(ROOT, "docs", "gallery", "faithful_1d.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=90)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
