import os
import pathlib

import numpy as np
import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="session")
def faithful():
    """Old Faithful: (272, 2) eruption minutes and waiting minutes."""
    return np.loadtxt(HERE / "old_faithful.csv", delimiter=",", skiprows=1)


def make_blobs(n=3000, d=3, k=3, seed=0, spread=1.0, sep=6.0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    labels = rng.integers(k, size=n)
    X = centres[labels] + rng.normal(size=(n, d)) * spread + offset
    return X, labels, centres


@pytest.fixture
def blobs():
    return make_blobs()


@pytest.fixture(scope="module")
def process_client():
    """A real LocalCluster with two worker processes on 127.0.0.1."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="1GiB",
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def pytest_configure(config):
    # keep BLAS from oversubscribing the CI machine's two cores in the test process
    os.environ.setdefault("OMP_NUM_THREADS", "1")
