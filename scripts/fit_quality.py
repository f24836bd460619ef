#!/usr/bin/env python3
"""GaussianMixture fits of daskgmm and scikit-learn on the real datasets scikit-learn ships, side by side.

    .venv/bin/python scripts/fit_quality.py                   # every dataset, covariance type, seeds 0-9
    .venv/bin/python scripts/fit_quality.py --datasets wine --seeds 20
    .venv/bin/python scripts/fit_quality.py --sklearn-only --reference-out tests/fit_quality_reference.json

Iris (K=3), wine (3), breast cancer (2), digits (10) and Old Faithful (2, tests/old_faithful.csv),
standardised; every covariance type; both with their default settings (the "kmeans"
initialisation) and ``n_init=5``; one fit per seed. Prints, per case, the mean
log-likelihood of every seed's fit for each, then a JSON line of scikit-learn's values
(``--sklearn-only`` skips daskgmm's fits; ``--reference-out`` also writes them, with
scikit-learn's version, to the file ``tests/test_fit_quality.py`` compares daskgmm with).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ("iris", "wine", "breast_cancer", "digits", "old_faithful")
COMPONENTS = {"iris": 3, "wine": 3, "breast_cancer": 2, "digits": 10, "old_faithful": 2}
TYPES = ("full", "tied", "diag", "spherical")


def load(name):
    """A dataset, standardised, and its number of components."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    if name == "old_faithful":
        X = np.loadtxt(HERE / "tests" / "old_faithful.csv", delimiter=",", skiprows=1)
    else:
        X = getattr(datasets, f"load_{name}")(return_X_y=True)[0]
    return StandardScaler().fit_transform(X), COMPONENTS[name]


def scores(estimator, X, k, covariance_type, seeds):
    return [float(estimator(k, covariance_type=covariance_type, n_init=5, random_state=s).fit(X).score(X))
            for s in seeds]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--sklearn-only", action="store_true")
    p.add_argument("--reference-out", help="write scikit-learn's scores to this JSON file")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    from sklearn.mixture import GaussianMixture as SkGMM

    from daskgmm import GaussianMixture

    seeds = range(args.seeds)
    reference = {}
    for name in args.datasets.split(","):
        X, k = load(name)
        for ct in args.types.split(","):
            t = time.perf_counter()
            sk = scores(SkGMM, X, k, ct, seeds)
            t_sk = time.perf_counter() - t
            reference[f"{name}/{ct}"] = [round(v, 6) for v in sk]
            line = f"{name:14s} {ct:9s} scikit-learn mean {np.mean(sk):9.4f} best {np.max(sk):9.4f} ({t_sk:5.1f} s)"
            if not args.sklearn_only:
                t = time.perf_counter()
                ours = scores(GaussianMixture, X, k, ct, seeds)
                t_ours = time.perf_counter() - t
                line += (f" | daskgmm mean {np.mean(ours):9.4f} best {np.max(ours):9.4f} ({t_ours:5.1f} s) | "
                         f"seeds worse by > 1e-3: {sum(o < s - 1e-3 for o, s in zip(ours, sk))}, "
                         f"better: {sum(o > s + 1e-3 for o, s in zip(ours, sk))}")
            print(line, flush=True)
    print(json.dumps(reference))
    if args.reference_out:
        import sklearn

        doc = {"sklearn": sklearn.__version__, "n_init": 5, "seeds": args.seeds, "scores": reference}
        pathlib.Path(args.reference_out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
