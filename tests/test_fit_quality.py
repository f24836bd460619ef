"""GaussianMixture's default fit finds optima as good as scikit-learn's on the real datasets it ships.

scikit-learn's results (its default "kmeans" initialisation, ``n_init=5``, seeds 0-9) are in
``tests/fit_quality_reference.json``, written by ``scripts/fit_quality.py --sklearn-only
--reference-out tests/fit_quality_reference.json`` (scikit-learn's fits of digits take most
of an hour on two cores; daskgmm's here take 90 s, 85 of them on digits, whose cases are marked slow).
"""

import json
import pathlib
import warnings

import numpy as np
import pytest

from daskgmm import GaussianMixture

HERE = pathlib.Path(__file__).parent
REFERENCE = json.loads((HERE / "fit_quality_reference.json").read_text())
COMPONENTS = {"iris": 3, "wine": 3, "breast_cancer": 2, "digits": 10, "old_faithful": 2}


def _load(name):
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    if name == "old_faithful":
        X = np.loadtxt(HERE / "old_faithful.csv", delimiter=",", skiprows=1)
    else:
        X = getattr(datasets, f"load_{name}")(return_X_y=True)[0]
    return StandardScaler().fit_transform(X)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.startswith("digits") else c
                                  for c in sorted(REFERENCE["scores"])])
def test_default_fit_is_as_good_as_scikit_learns(case):
    """Over seeds 0-9 with n_init=5, daskgmm's mean log-likelihood is at least scikit-learn's less 0.005 and
    two standard errors of scikit-learn's mean, and its best at least scikit-learn's best less 0.005 and one
    standard deviation of scikit-learn's results (digits' fits spread over several nats, its best of ten
    with them).

    The mixture init once took the best of three k-means++ seedings by inertia per restart, so the
    restarts all started from the lowest-inertia k-means optimum: on wine (full) that is the start of
    the -11.8406 optimum, and the mean was 0.049 below scikit-learn's (tolerance 0.013).
    """
    name, covariance_type = case.split("/")
    sk = np.asarray(REFERENCE["scores"][case])
    X = _load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = np.array([
            GaussianMixture(COMPONENTS[name], covariance_type=covariance_type, n_init=REFERENCE["n_init"],
                            random_state=seed).fit(X).score(X)
            for seed in range(len(sk))
        ])
    sd = sk.std(ddof=1)
    assert ours.mean() >= sk.mean() - (0.005 + 2 * sd / np.sqrt(len(sk))), (ours.round(4).tolist(), sk.tolist())
    assert ours.max() >= sk.max() - (0.005 + sd), (ours.round(4).tolist(), sk.tolist())
