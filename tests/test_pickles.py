"""Estimators pickled before the modules moved into folders (tests/data/estimators-0.x.pkl,
written by the package at commit 64ae697) still load and predict."""

import pathlib
import pickle
import warnings

import numpy as np
import pytest

DATA = pathlib.Path(__file__).parent / "data" / "estimators-0.x.pkl"


@pytest.fixture(scope="module")
def pickled():
    with open(DATA, "rb") as f:
        return pickle.load(f)


NAMES = ["gmm", "gmm_online", "gmm_warm", "gmm_missing", "bgmm", "t", "km", "km_online", "kmed"]


@pytest.mark.parametrize("name", NAMES)
def test_an_estimator_pickled_before_the_move_loads_and_predicts(pickled, name):
    blob, X = pickled[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's version note, if its version moved too
        est = pickle.loads(blob)
    assert type(est).__module__.startswith("daskgmm.")
    labels = est.predict(X)
    assert labels.shape == (X.shape[0],)
    if hasattr(est, "predict_proba"):
        np.testing.assert_allclose(est.predict_proba(X).sum(axis=1), 1.0)
