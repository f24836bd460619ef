#!/usr/bin/env python3
"""Make the Old Faithful pictures: the fit and the BIC/AIC model selection (the README), the variational
fit (docs/python.md).

    .venv/bin/python scripts/plot_faithful.py      # writes docs/old_faithful*.png
"""

import os
import sys

import pandas as pd

import daskgmm
from daskgmm import plot

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main() -> int:
    df = pd.read_csv(os.path.join(ROOT, "tests", "old_faithful.csv"))
    df.columns = ["eruption (minutes)", "waiting (minutes)"]
    gmm = daskgmm.GaussianMixture(2, random_state=0).fit(df)
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    plot.plot_fit(gmm, df.to_numpy(), os.path.join(ROOT, "docs", "old_faithful.png"))
    res = daskgmm.select_model(df, range(1, 7), ("full", "tied", "diag", "spherical"), random_state=0)
    plot.plot_selection(res, os.path.join(ROOT, "docs", "old_faithful_selection.png"))
    print(res.table.round(2).to_string(index=False))
    print("weights", gmm.weights_.round(3), "means", gmm.means_.round(2).tolist())
    # the variational mixture with a Dirichlet-process prior, given far more components than it needs
    bgm = daskgmm.BayesianGaussianMixture(n_components=10, random_state=0, max_iter=500).fit(df)
    plot.plot_fit(bgm, df.to_numpy(), os.path.join(ROOT, "docs", "old_faithful_bayesian.png"))
    print("bayesian weights", bgm.weights_.round(4), "effective", bgm.n_effective_components_,
          "means", bgm.means_[bgm.weights_ > 0.01].round(2).tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
