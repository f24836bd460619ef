#!/usr/bin/env python3
"""Say in one line whether a fitted model found the mixture ``scripts/make_data.py`` drew.

Usage::

    python scripts/check_truth.py MODEL_DIR DATA_DIR/truth.json [--tol 0.1] [--weight-tol 0.02]

MODEL_DIR holds a mixture (its means and weights) or a KMeans (its centres, and each cluster's
share of the rows as its weight).

The fitted components are matched to the true ones by an optimal assignment
(Hungarian, on the Mahalanobis distance of the means under the true covariance).
The model matches when it has as many components as the truth, every matched mean
lies within ``--tol`` true standard deviations (Mahalanobis) of its true mean, and
every weight within ``--weight-tol`` of the true weight. Exit status 0 when it
matches, 1 when it does not, 2 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def compare(means, weights, truth) -> tuple[bool, float, float]:
    """Whether the model has the truth's K; the worst mean distance (true standard
    deviations) and weight difference after optimal assignment (inf when K differs)."""
    from scipy.optimize import linear_sum_assignment

    t_means = np.asarray(truth["means"], np.float64)
    t_weights = np.asarray(truth["weights"], np.float64)
    t_covs = np.asarray(truth["covariances"], np.float64)
    if len(means) != len(t_means):
        return False, np.inf, np.inf
    inv = np.linalg.inv(t_covs)
    diff = means[:, None, :] - t_means[None, :, :]  # fitted i, true k
    dist = np.sqrt(np.einsum("ikd,kde,ike->ik", diff, inv, diff))
    rows, cols = linear_sum_assignment(dist)
    return True, float(dist[rows, cols].max()), float(np.abs(weights[rows] - t_weights[cols]).max())


def centres_and_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """A mixture's means and weights; a KMeans' (or KMedoids') centres and shares of the rows (its
    ``counts_``; equal shares without them). KMeans has no ``means_``: the check ended in a traceback."""
    if hasattr(model, "means_"):
        return np.asarray(model.means_), np.asarray(model.weights_)
    centres = np.asarray(model.cluster_centers_)
    counts = np.asarray(getattr(model, "counts_", np.ones(len(centres))), np.float64)
    return centres, counts / counts.sum()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model directory written by `daskgmm fit --model-out`")
    p.add_argument("truth", help="truth.json written by scripts/make_data.py")
    p.add_argument("--tol", type=float, default=0.1, help="largest mean error, in true standard deviations")
    p.add_argument("--weight-tol", type=float, default=0.02, help="largest weight error")
    a = p.parse_args(argv)
    import daskgmm

    try:
        model = daskgmm.load(a.model)
        with open(a.truth) as f:
            truth = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"check_truth: error: {exc}", file=sys.stderr)
        return 2
    means, weights = centres_and_weights(model)
    same_k, d_mean, d_weight = compare(means, weights, truth)
    k_true = len(truth["means"])
    if not same_k:
        print(f"the model does NOT match the truth: {len(means)} components, the data were drawn "
              f"from {k_true}")
        return 1
    ok = d_mean <= a.tol and d_weight <= a.weight_tol
    print(f"the model {'matches' if ok else 'does NOT match'} the truth ({k_true} components after optimal "
          f"assignment): means within {d_mean:.3g} true standard deviations (tolerance {a.tol:g}), "
          f"weights within {d_weight:.3g} (tolerance {a.weight_tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
