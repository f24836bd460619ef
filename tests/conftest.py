import itertools
import os
import pathlib

# distributed's config defaults, loaded before any test's dask.config.set of a distributed.* key: entered before
# they were, the set removes on exit the subtree it found absent ("distributed.comm": KeyError in the next
# cluster's start), whatever importing distributed meanwhile added
import distributed  # noqa: F401
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskgmm.kernels import compiled

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


def outlier_data(seed, n=4000, frac=0.05):
    """Three unit Gaussian clusters 8 apart in 2-D, ``frac`` of the ``n`` rows replaced by gross outliers
    (uniform in [-40, 40]²): ``(X, the true means)``. The Student-t tests' data, and scripts/bench_studentt.py's."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    X = centres[rng.integers(3, size=n)] + rng.normal(size=(n, 2))
    m = int(frac * n)
    X[:m] = rng.uniform(-40, 40, size=(m, 2))
    rng.shuffle(X)
    return X, centres


def far_rows(seed=0, fill=1e20, d=2, columns=1):
    """600 rows near 0 and 8 in column 0 (two clusters, apart in that column only: the other ``d - 1`` are noise)
    and 5 at an unmasked fill value ``fill`` in the first ``columns``: ``(X, labels)``. The passes shifted every row
    by the mean (8.3e17 at 1e20), which took the 600 rows' precision there: k-means and the mixtures put them in one
    cluster (adjusted Rand 0.03; scikit-learn's too)."""
    rng = np.random.default_rng(seed)
    x0 = np.r_[rng.normal(0, 1, 300), rng.normal(8, 1, 300), np.zeros(5)]
    X = np.c_[x0, rng.normal(0, 1, (605, d - 1))]
    X[600:, :columns] = fill
    return X, np.repeat([0, 1, 2], [300, 300, 5])


def mean_error(means, truth):
    """Largest distance from a true mean to its matched fitted mean (optimal assignment)."""
    from scipy.optimize import linear_sum_assignment

    d = ((means[:, None] - truth[None]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(d)
    return float(np.sqrt(d[rows, cols].max()))


#: CLI options for a small, quick embedded cluster in tests: threads in the test's process (a worker process
#: costs each command ~1 s of starting and importing); the tests of processes, signals and memory use their own
FAST = ["--no-processes", "--n-workers", "1", "--threads-per-worker", "2", "--quiet"]


def write_data(directory, n=3000, d=3, k=3, files=3, seed=0, nan_row=None):
    X, _labels, _ = make_blobs(n=n, d=d, k=k, seed=seed)
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, n, files + 1).astype(int)
    nan_rows = [] if nan_row is None else np.atleast_1d(nan_row)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        cols = {"id": np.arange(a, b), **{f"f{j}": X[a:b, j].copy() for j in range(d)}, "tag": ["t"] * (b - a)}
        for r in nan_rows:
            if a <= r < b:
                cols["f1"][r - a] = np.nan
        pq.write_table(pa.table(cols), os.path.join(directory, f"part-{i}.parquet"), row_group_size=400)
    return X


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


#: Calls of :func:`record_unpickling`: what a pickle of :class:`Pickled` ran when it was loaded.
UNPICKLED: list = []


def record_unpickling():
    UNPICKLED.append(True)
    return 0.0


class Pickled:
    """An object whose unpickling runs code (:func:`record_unpickling`): a reader of data never unpickles it."""

    def __reduce__(self):
        return (record_unpickling, ())


def expect_exit2(argv, match, capsys):
    """Run the command: exit status 2, and ``match`` in what it printed on stderr."""
    from daskgmm.cli import main

    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert match in err, err


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server (a real S3 HTTP API) on 127.0.0.1, on a free port; closed at teardown."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.moto_server.werkzeug_app")
    from .s3_server import S3Server

    server = S3Server()
    yield server
    server.close()


@pytest.fixture
def s3(s3_server):
    """A fresh bucket on the S3 server (and no traps left by another test): ``(server, bucket)``."""
    import uuid

    bucket = f"daskgmm-{uuid.uuid4().hex[:12]}"
    s3_server.fs().mkdir(bucket)
    yield s3_server, bucket
    s3_server.clear_traps()


def assert_same_mixture(a, b, rtol, atol=0.0):
    """Two fitted mixtures have the same components, in whatever order: each component of ``a`` is
    matched to one of ``b`` (an optimal assignment on the distances of their means), then the
    weights, means and covariances of matched components are compared."""
    from scipy.optimize import linear_sum_assignment

    cost = np.linalg.norm(a.means_[:, None, :] - b.means_[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    np.testing.assert_allclose(a.weights_[rows], b.weights_[cols], rtol=rtol, atol=atol, err_msg="weights")
    np.testing.assert_allclose(a.means_[rows], b.means_[cols], rtol=rtol, atol=atol, err_msg="means")
    ca, cb = np.asarray(a.covariances_), np.asarray(b.covariances_)
    if a.covariance_type != "tied":
        ca, cb = ca[rows], cb[cols]
    np.testing.assert_allclose(ca, cb, rtol=rtol, atol=atol, err_msg="covariances")
    return cols


@pytest.fixture(params=compiled.variant_names())
def variant(request, monkeypatch):
    """Force each variant of the compiled core in turn (``DASKGMM_KERNEL``), skipping the ones this
    host cannot run or did not build."""
    name = request.param
    if compiled.load_variant(name) is None:
        why = "not built here" if name not in compiled.config()["variants_built"] else "this CPU cannot run it"
        pytest.skip(f"variant {name}: {why}")
    monkeypatch.setenv("DASKGMM_KERNEL", name)
    compiled.reset()
    yield name
    monkeypatch.undo()
    compiled.reset()


def random_mixture(ct, k, d, rng, spread=3.0):
    """Weights, means and covariances (in ``ct``'s shape) of a random ``k``-component mixture."""
    weights = rng.dirichlet(np.ones(k) * 3)
    means = rng.normal(scale=spread, size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = np.einsum("kij,klj->kil", a, a) / d + 0.5 * np.eye(d)
    covs = {"full": full, "tied": full[0], "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
            "spherical": np.trace(full, axis1=1, axis2=2) / d}[ct]
    return weights, means, covs


def at_odd_bytes(x, order):
    """A copy of ``x`` in ``order`` whose items start one byte off their alignment (as an array
    deserialised from a message's frame can)."""
    shape = x.shape if order == "C" else x.shape[::-1]
    u = np.frombuffer(bytearray(x.nbytes + 1), dtype=x.dtype, offset=1, count=x.size).reshape(shape)
    u = u if order == "C" else u.T
    u[...] = x
    assert not u.flags.aligned
    return u


def between_guard_pages(x, order, odd=0):
    """A copy of ``x`` in ``order`` with a page no one may read (``PROT_NONE``) right after its last
    byte and one before it: a read past either end of its buffer faults. ``odd``: bytes by which
    its items start off their alignment (the end still touches the page after it but for them)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    pages = (x.nbytes + odd + page - 1) // page
    m = mmap.mmap(-1, (pages + 2) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    for at in (base, base + (pages + 1) * page):
        if libc.mprotect(ctypes.c_void_p(at), page, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect")
    shape = x.shape if order == "C" else x.shape[::-1]
    u = np.frombuffer(m, dtype=x.dtype, offset=(pages + 1) * page - x.nbytes - odd, count=x.size).reshape(shape)
    u = u if order == "C" else u.T
    u[...] = x
    assert u.flags.aligned == (odd == 0)
    return u  # holds m (its buffer's exporter) for as long as it lives


def layouts(x):
    """The same rows as a chunk or block may come: C order, Fortran order (a Parquet chunk), rows of
    a longer Fortran chunk (column stride > n), columns of a wider C array (row stride > D), and C
    and Fortran order with items at odd bytes."""
    n, d = x.shape
    return {"C": np.ascontiguousarray(x), "F": np.asfortranarray(x),
            "rows of F": np.asfortranarray(np.vstack([x, x[: n // 3 + 1]]))[:n],
            "columns of C": np.hstack([x, x[:, :2]])[:, :d],
            "C at odd bytes": at_odd_bytes(x, "C"), "F at odd bytes": at_odd_bytes(x, "F")}
