"""scikit-learn's own public GaussianMixture and KMeans tests, pointed at daskgmm (scripts/sklearn_suite.py)."""

import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sklearn_suite.py"


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["gaussian_mixture", "k_means"])
def test_scikit_learn_public_tests_pass_against_daskgmm(suite):
    done = subprocess.run([sys.executable, str(SCRIPT), suite, "-q", "-x"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
