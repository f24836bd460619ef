"""The distributed path: chunking invariance, graph size, real LocalCluster."""

import contextlib
import logging
import time
import warnings

import dask
import dask.array as da
import numpy as np
import pytest

from daskgmm import ConvergenceWarning, GaussianMixture
from daskgmm.engine import passes as engine
from daskgmm.engine.passes import ChunkedData

from .conftest import make_blobs


def _fit(X, **kw):
    with warnings.catch_warnings():
        # max_iter=15 with tol=0 never converges; any other warning (the project's
        # error::RuntimeWarning:daskgmm among them) still shows or fails
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(3, random_state=0, max_iter=15, tol=0.0, **kw).fit(X)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_same_result_for_any_chunking(ct):
    X, _, _ = make_blobs(n=3000, d=3, k=3, spread=1.5, sep=4.0)
    ref = _fit(X, covariance_type=ct, chunk_size=3000)  # one chunk
    chunkings = [
        (100, 3),  # many
        ((1000, 1, 1500, 499), 3),  # uneven
        ((1500, 0, 1500), 3),  # with an empty chunk
    ]
    for chunks in chunkings:
        g = _fit(da.from_array(X, chunks=chunks), covariance_type=ct)
        np.testing.assert_allclose(g.means_, ref.means_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(g.covariances_, ref.covariances_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.lower_bounds_, ref.lower_bounds_, rtol=1e-12)


def test_rows_of_chunks_of_unknown_size_are_counted():
    """Boolean indexing and a Dask DataFrame leave a chunk's rows unknown (nan): they are counted
    once (engine.cluster.with_known_rows), the values untouched."""
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd

    from daskgmm.engine.cluster import with_known_rows

    x = da.from_array(np.arange(40.0).reshape(20, 2), chunks=(6, 1))
    picked = x[x[:, 0] > 13]
    assert np.isnan(picked.chunks[0][0])
    known = with_known_rows(picked)
    assert known.chunks == ((0, 5, 6, 2), (1, 1))
    np.testing.assert_array_equal(known.compute(), picked.compute())
    frame = dd.from_pandas(pd.DataFrame(np.arange(40.0).reshape(20, 2), columns=["a", "b"]), npartitions=3)
    assert with_known_rows(frame).chunks == ((7, 7, 6), (2,))
    assert with_known_rows(frame["a"]).chunks == ((7, 7, 6),)
    assert with_known_rows(x) is x


def test_columns_of_chunks_of_unknown_width_are_read_from_the_first_row_of_chunks():
    """map_blocks without chunks= (or from_delayed with a NaN width) leaves the columns unknown: a fit failed
    on 'cannot convert float NaN to integer' and predict said 'X has nan features' (user-trial-10); the
    width is read from the first chunk of rows (engine.cluster.with_known_columns), rows and values untouched."""
    from daskgmm import KMeans
    from daskgmm.engine.cluster import with_known_columns

    x = np.r_[np.zeros((6, 3)), np.ones((6, 3))]
    lazy = da.from_array(x, chunks=(4, 2))
    blind = lazy.map_blocks(lambda b: b, chunks=((np.nan,) * 3, (np.nan,) * 2))
    known = with_known_columns(blind)
    assert known.chunks == (blind.chunks[0], (2, 1))
    np.testing.assert_array_equal(known.compute(), x)
    assert with_known_columns(lazy) is lazy
    km = KMeans(2, init=x[[0, 6]]).fit(blind)
    assert km.n_features_in_ == 3 and km.inertia_ == 0.0
    np.testing.assert_array_equal(km.predict(blind).compute(), km.labels_.compute())
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
        km.predict(lazy[:, :2].map_blocks(lambda b: b, chunks=((np.nan,) * 3, (np.nan,))))


def test_graph_does_not_grow_with_iterations(monkeypatch):
    X, _, _ = make_blobs(n=2000)
    sizes = []
    original = ChunkedData.graph

    def recording(self, requests, centre=None):
        parts = original(self, requests, centre)
        sizes.append(len({key for p in parts for key in p.__dask_graph__()}))
        return parts

    monkeypatch.setattr(ChunkedData, "graph", recording)
    g = _fit(da.from_array(X, chunks=(250, 3)), init_params="random_from_data")
    em_sizes = sizes[-g.n_iter_:]
    assert len(set(em_sizes)) == 1
    # 8 chunk tasks and their data tasks: small and fixed
    assert em_sizes[0] < 30


def test_fit_on_local_cluster_with_processes(process_client):
    """The same fit through a real distributed cluster (2 worker processes, 127.0.0.1)."""
    X, _, _ = make_blobs(n=4000, d=3, k=3)
    local = _fit(X, init_params="kmeans")
    assert process_client.scheduler.address.startswith("tcp://127.0.0.1")
    with process_client.as_current():
        dist = _fit(da.from_array(X, chunks=(500, 3)), init_params="kmeans")
        on_cluster_numpy = _fit(X, init_params="kmeans")
    np.testing.assert_allclose(dist.means_, local.means_, rtol=1e-9)
    np.testing.assert_allclose(on_cluster_numpy.means_, local.means_, rtol=1e-9)
    np.testing.assert_allclose(dist.lower_bound_, local.lower_bound_, rtol=1e-12)


def test_a_numpy_fit_on_a_cluster_sends_its_rows_without_distributeds_large_graph_warning(process_client):
    """A NumPy array fitted with an active Client goes to the workers in the graph, as it must: the
    scikit-learn user saw distributed's "Sending large graph of size 18.31 MiB ... Consider loading
    the data with Dask directly" for a 300,000 x 8 array, about a graph they never made."""
    import dask

    from daskgmm import KMeans

    X, _, _ = make_blobs(n=4000, d=3, k=3)
    with process_client.as_current(), dask.config.set({"distributed.admin.large-graph-warning-threshold": "10kB"}):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", "Sending large graph", UserWarning)
            GaussianMixture(3, random_state=0, max_iter=5).fit(X, sample_weight=np.ones(len(X)))
            KMeans(3, n_init=1, random_state=0, max_iter=5).fit(X)


@pytest.mark.behaviour
def test_predictions_send_a_large_models_parameters_to_the_workers_once_not_in_the_graph(process_client, monkeypatch,
                                                                                           tmp_path):
    """predict, predict_proba, score_samples, score, transform and write_predictions on Dask rows (the command's
    predict, score and --predictions-out), and write_sample, put a fitted model's parameters in the graph by
    value: KMeans on sparse rows of 2**18 features, K=8, gave "Sending large graph of size 16 MiB" (a
    full-covariance mixture of K=50, D=1000 has 400 MB of them). Over ``INLINE_BYTES`` they go to the workers
    once, as a pass's plan does (``engine.cluster.ship``), with the bits of the graph that holds them."""
    import dask
    import pandas as pd
    import scipy.sparse as sp

    import daskgmm.engine.cluster as cluster
    from daskgmm import KMeans, KMedoids

    rng = np.random.default_rng(0)
    Xg, Xk = rng.normal(size=(60, 100)), rng.normal(size=(60, 1000))
    Xk[np.abs(Xk) < 1.0] = 0.0  # the same rows as sparse chunks
    # fitted models of 30-160 kB of parameters, set as a model file sets them (a fit here takes ~0.4 s)
    gm, km, kmed = GaussianMixture(2, covariance_type="full"), KMeans(4), KMedoids(4)
    gm.import_state({"weights_": np.array([0.4, 0.6]), "means_": Xg[:2],
                     "precisions_cholesky_": np.stack([np.eye(100), 2 * np.eye(100)])},
                    {"n_components": 2, "covariance_type": "full", "n_features": 100})
    km.import_state({"cluster_centers_": Xk[:4]}, {"n_components": 4, "n_features": 1000})
    kmed.import_state({"cluster_centers_": Xk[:4], "medoid_indices_": np.arange(4), "metric_centre": Xk.mean(0)},
                      {"n_components": 4, "n_features": 1000, "metric": "euclidean"})
    # the rows persisted (the graphs name their keys), on one worker: no transfers, which a busy host slows down
    first = sorted(process_client.nthreads())[:1]
    Xg, Xd = (process_client.persist(da.from_array(x, chunks=(20, x.shape[1])), workers=first) for x in (Xg, Xk))
    Xs = process_client.persist(da.from_array(sp.csr_array(Xk), chunks=(20, 1000), asarray=False), workers=first)

    def lazy():  # every kind of prediction graph: a mixture's, k-means' on dense and sparse rows, k-medoids'
        return (gm.score_samples(Xg), km.predict(Xd), km.transform(Xd), km.predict(Xs), km.transform(Xs),
                kmed.predict(Xd), kmed.transform(Xd))

    with process_client.as_current(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        want = dask.compute(*lazy(), gm.predict(Xg), gm.predict_proba(Xg))  # the parameters in the graph
        gm.write_sample(tmp_path / "s0", 50, random_state=0, chunk_rows=25)
    monkeypatch.setattr(cluster, "INLINE_BYTES", 8 << 10)
    with process_client.as_current(), warnings.catch_warnings(), \
            dask.config.set({"distributed.admin.large-graph-warning-threshold": "24kB"}):
        warnings.filterwarnings("error", "Sending large graph", UserWarning)
        for got, ref in zip(dask.compute(*lazy()), want, strict=False):
            np.testing.assert_array_equal(got, ref)
        # the parts of a predictions dataset (KMeans' and KMedoids' take the same path, fitting.predict.delayed_parts)
        assert gm.write_predictions(Xg, tmp_path / "p", proba=True, loglik=True) == 60
        written = pd.read_parquet(tmp_path / "p").to_numpy()
        np.testing.assert_array_equal(written, np.column_stack([*want[-2:], want[0]]))
        assert gm.write_sample(tmp_path / "s", 50, random_state=0, chunk_rows=25) == 50  # the command's sample
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s"), pd.read_parquet(tmp_path / "s0"))


def _fit_in_a_task(seed):
    from distributed import get_client

    get_client()  # as joblib's dask backend does in its tasks: the worker's process then has a client
    X, _, _ = make_blobs(n=600, d=3, k=3)
    return GaussianMixture(3, random_state=seed, max_iter=5).fit(X).means_


@pytest.mark.behaviour
def test_a_fit_inside_a_task_does_not_wait_on_the_busy_workers(process_client):
    """GridSearchCV under joblib's dask backend runs each fit in a task: the fit took the worker's
    client and waited for chunk tasks that needed the threads those fits held, for ever. It leaves the
    worker's thread pool while it waits (engine.cluster.seceded)."""
    from distributed import wait

    workers = sorted(process_client.scheduler_info()["workers"])
    futures = [process_client.submit(_fit_in_a_task, i, workers=[w], pure=False) for i, w in enumerate(workers)]
    _, pending = wait(futures, timeout=30)
    assert not pending, "a fit inside a task did not finish in 30 s"
    X, _, _ = make_blobs(n=600, d=3, k=3)
    for i, f in enumerate(futures):
        np.testing.assert_allclose(f.result(), GaussianMixture(3, random_state=i, max_iter=5).fit(X).means_,
                                   rtol=1e-9)


def _fit_in_a_thread_of_a_task(seed):
    from concurrent.futures import ThreadPoolExecutor

    from distributed import get_client

    get_client()  # the worker's client is the process's default, in every thread
    X, _, _ = make_blobs(n=600, d=3, k=3)
    with ThreadPoolExecutor(1) as pool:  # a thread the task started: not a worker thread, it cannot secede
        return pool.submit(lambda: GaussianMixture(3, random_state=seed, max_iter=5).fit(da.from_array(
            X, chunks=(150, 3))).means_).result()


def test_a_fit_in_a_thread_a_task_started_runs_there_instead_of_waiting_on_the_busy_workers(process_client):
    """A thread a task starts cannot leave the worker's thread pool (distributed.secede is for the task's own
    thread): a fit there took the worker's client and waited, for ever, on chunk tasks that needed the threads
    the tasks held (wait_bounded saw the workers busy, not stalled). It runs in its thread."""
    from distributed import wait

    workers = sorted(process_client.scheduler_info()["workers"])
    futures = [process_client.submit(_fit_in_a_thread_of_a_task, i, workers=[w], pure=False)
               for i, w in enumerate(workers)]
    try:
        wait(futures, timeout=60)  # ~10 s on a loaded two-core host
    except TimeoutError:
        pytest.fail("a fit in a thread of a task did not finish in 60 s")
    X, _, _ = make_blobs(n=600, d=3, k=3)
    for i, f in enumerate(futures):
        np.testing.assert_allclose(f.result(), GaussianMixture(3, random_state=i, max_iter=5).fit(X).means_,
                                   rtol=1e-9)


def _fit_with_a_client_in_a_task(seed, address, path):
    from distributed import Client, get_client

    import daskgmm

    if seed == 0:  # a client the task connects itself, to its own cluster
        with Client(address, set_as_default=True):
            got = GaussianMixture(3, random_state=seed, max_iter=5).fit(daskgmm.read_parquet(path))
    else:  # the worker's client (dask.compute's in a task), rows read from Parquet
        get_client()
        got = GaussianMixture(3, random_state=seed, max_iter=5).fit(daskgmm.read_parquet(path))
    return got.means_


@pytest.mark.behaviour
def test_fits_in_every_task_of_a_cluster_with_its_client_finish(process_client, tmp_path):
    """Fits inside tasks that hold every worker thread, each with a client of that cluster: the fit uses the
    cluster as dask.compute does in a task, seceding from the worker's thread pool while it waits (as
    distributed.worker_client), so the chunk tasks get threads; every wait stays bounded."""
    import pandas as pd
    from distributed import wait

    import daskgmm

    X, _, _ = make_blobs(n=600, d=3, k=3)
    for i in range(3):
        pd.DataFrame(X[i * 200:(i + 1) * 200], columns=list("abc")).to_parquet(tmp_path / f"p{i}.parquet")
    workers = sorted(process_client.scheduler_info()["workers"])
    address = process_client.scheduler.address
    futures = [process_client.submit(_fit_with_a_client_in_a_task, i, address, str(tmp_path), workers=[w],
                                     pure=False) for i, w in enumerate(workers)]
    try:
        wait(futures, timeout=60)
    except TimeoutError:
        pytest.fail("a fit inside a task did not finish in 60 s")
    for i, f in enumerate(futures):
        want = GaussianMixture(3, random_state=i, max_iter=5).fit(daskgmm.read_parquet(str(tmp_path))).means_
        np.testing.assert_allclose(f.result(), want, rtol=1e-9)


def test_workers_run_blas_single_threaded(process_client):
    def blas_threads():
        from threadpoolctl import threadpool_info

        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    for threads in process_client.run(blas_threads).values():
        assert threads and all(t == 1 for t in threads)


def test_cache_policies_give_the_same_fit():
    X, _, _ = make_blobs(n=2000)
    Xd = da.from_array(X, chunks=(300, 3))
    a = _fit(Xd, cache="memory")
    b = _fit(Xd, cache="none")
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    with pytest.raises(ValueError, match="'cache' parameter"):
        GaussianMixture(2, cache="disk").fit(X)


def test_balanced_targets_are_contiguous_runs_that_keep_chunks_where_they_are():
    from daskgmm.engine.tree import balanced_targets

    workers = [("a", 1), ("b", 1)]
    sizes = [10] * 8
    # runs along the rows; persisted a, b, a, b, ...: as many rows held either way, a first
    assert balanced_targets(sizes, workers, [{"a"}, {"b"}] * 4) == ["a"] * 4 + ["b"] * 4
    # b holds the first half: b takes it, nothing moves
    assert balanced_targets(sizes, workers, [{"b"}] * 4 + [{"a"}] * 4) == ["b"] * 4 + ["a"] * 4
    # threads count: a worker with two threads takes twice the rows; b, holding all, goes first
    assert balanced_targets([10] * 6, [("a", 2), ("b", 1)], [{"b"}] * 6) == ["b"] * 2 + ["a"] * 4
    # the bench's chunks (two files of 3 x 131072 + 106784 rows), persisted four full ones on a:
    # each worker ends with one file, 500,000 rows, and two chunks move
    sizes = [131072, 131072, 131072, 106784] * 2
    out = balanced_targets(sizes, workers, [{"a"}, {"a"}, {"a"}, {"b"}, {"a"}, {"b"}, {"b"}, {"b"}])
    assert out == ["a"] * 4 + ["b"] * 4
    # and a placement made here is kept by the next fit: nothing moves
    assert balanced_targets(sizes, workers, [{t} for t in out]) == out
    # a worker's share is off by at most half a chunk at either end; every chunk has a worker
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 100, size=50)
    out = balanced_targets(sizes, [("a", 1), ("b", 2), ("c", 1)])
    share = {w: sum(n for n, t in zip(sizes, out) if t == w) for w in "abc"}
    assert abs(share["b"] - sizes.sum() / 2) <= sizes.max()
    assert [t for i, t in enumerate(out) if i == 0 or out[i - 1] != t] == ["a", "b", "c"]


def test_share_cuts_split_the_rows_evenly_over_threads():
    from daskgmm.engine.tree import share_cuts

    # the profile's chunks: 8 of 131,072 rows but the last; two threads take 500,000 rows each
    sizes = [131072] * 7 + [82496]
    pieces = share_cuts(sizes, 2)
    assert pieces[3:5] == [(3, 0, 106784), (3, 106784, 131072)] and len(pieces) == 9
    assert sum(b - a for _, a, b in pieces[:4]) == 500_000
    # every chunk's rows, once, in order; no piece larger than its chunk
    assert [(i, a) for i, a, _ in pieces] == sorted((i, a) for i, a, _ in pieces)
    for threads in (1, 2, 3, 4, 7):
        pieces = share_cuts(sizes, threads)
        assert [sum(b - a for j, a, b in pieces if j == i) for i in range(8)] == sizes
        mids = np.cumsum([b - a for _, a, b in pieces]) - 0.5 * np.array([b - a for _, a, b in pieces])
        # each thread's share is whole pieces: a piece's middle tells whose it is, and the shares' rows are equal
        share = np.searchsorted(np.arange(1, threads) * 1_000_000 / threads, mids)
        rows = np.bincount(share, weights=[b - a for _, a, b in pieces], minlength=threads)
        assert np.all(np.abs(rows - 1_000_000 / threads) <= 0.01 * 1_000_000 / threads + 1), (threads, rows)
    # one thread, or chunks already on the shares (the default chunking of NumPy input): nothing is cut
    assert share_cuts(sizes, 1) == [(i, 0, n) for i, n in enumerate(sizes)]
    assert share_cuts([125_000] * 8, 2) == [(i, 0, 125_000) for i in range(8)]
    # a boundary within 1% of a share of a chunk's edge stays there
    assert share_cuts([501_000, 499_000], 2) == [(0, 0, 501_000), (1, 0, 499_000)]
    assert share_cuts([100], 3) == [(0, 0, 33), (0, 33, 67), (0, 67, 100)]


def test_batches_split_a_workers_run_by_threads():
    from daskgmm.engine.tree import contiguous_batches

    out = contiguous_batches([10] * 7, ["a"] * 4 + ["b"] * 2 + [None], {"a": 2, "b": 1})
    assert out == [("a", [0, 1]), ("a", [2, 3]), ("b", [4, 5]), (None, [6])]


def test_subtree_merges_are_the_trees_nodes_inside_a_batch():
    from daskgmm.engine.tree import merge_levels, subtree_merges

    levels = merge_levels(20, 4)
    assert levels == [20, 5, 2]
    merges, frontier = subtree_merges(range(10), levels, 4)
    assert merges == {(1, 0): [(0, 0), (0, 1), (0, 2), (0, 3)], (1, 1): [(0, 4), (0, 5), (0, 6), (0, 7)]}
    assert frontier == [(0, 8), (0, 9), (1, 0), (1, 1)]
    merges, frontier = subtree_merges(range(16), levels, 4)
    assert (2, 0) in merges and frontier == [(2, 0)]


def _mixture_request(d=3, k=2):
    from daskgmm.kernels import MixtureRequest, ModelSpec, NaturalParams

    rng = np.random.default_rng(1)
    nat = NaturalParams(-np.abs(rng.normal(size=(k, d, d))) - np.eye(d), rng.normal(size=(k, d)), rng.normal(size=k))
    return [MixtureRequest([ModelSpec(nat, "full")])]


def test_any_batching_gives_the_same_bits(process_client):
    """Batch tasks merge inside themselves what the tree would: the bits do not depend on
    which chunks go together, and equal those of the graph of one task per chunk."""
    X = da.random.default_rng(0).standard_normal((20_000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory", split_every=4)
    req = _mixture_request()

    def stats():
        (st,) = data.run(req, np.zeros(3))[0]
        return np.concatenate([st.n, st.s1.ravel(), st.s2.ravel(), [st.loglik]])

    first = stats()  # the first pass runs as tasks
    placed = stats()  # outside the task graph (ChunkedData._run_direct), over the pass's channel
    assert len(data._batches) == 2 and data.direct and data.direct_passes == 1
    assert data._channel is not None and data._channel.workers == {t for t, _ in data._batches}
    np.testing.assert_array_equal(first, placed)
    with dask.config.set({"daskgmm.pass-channel": False}):  # through client.run, without a channel
        np.testing.assert_array_equal(stats(), placed)
    assert data.direct_passes == 2
    data.direct = False  # the same batches as tasks
    np.testing.assert_array_equal(stats(), placed)
    for batches in ([(None, [i]) for i in range(20)], [(None, list(range(0, 20, 2))), (None, list(range(1, 20, 2)))],
                    [(None, list(range(20)))]):
        data._batches = batches
        np.testing.assert_array_equal(stats(), placed)
    graph = ChunkedData(X.persist(), cache="none", split_every=4)
    (st,) = graph.run(req, np.zeros(3))[0]
    np.testing.assert_array_equal(np.concatenate([st.n, st.s1.ravel(), st.s2.ravel(), [st.loglik]]), placed)


@pytest.mark.parametrize("route", ["channel", "client.run"])
@pytest.mark.parametrize("failure", ["raises", "a worker lost a chunk"])
def test_a_direct_pass_that_fails_runs_as_tasks(process_client, monkeypatch, failure, route):
    """A pass outside the task graph that cannot run (the scheduler or a worker gone, a chunk no longer
    where it was placed), over the pass's channel or through ``client.run``, runs again as tasks, with
    the same bits, and later passes stay tasks."""
    from daskgmm.engine.channel import Channel, ChannelError

    X = da.random.default_rng(0).standard_normal((20_000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory", split_every=4)
    req = _mixture_request()

    def stats():
        (st,) = data.run(req, np.zeros(3))[0]
        return np.concatenate([st.n, st.s1.ravel(), st.s2.ravel(), [st.loglik]])

    ref = stats()  # the first pass, as tasks
    calls = []

    async def run(client, workers, fn, *args):  # the engine awaits it beside its question to the scheduler
        calls.append(fn.__name__)
        if failure == "raises":
            raise OSError("connection closed")
        return {w: None for w in workers}  # as _direct_batches answers for a missing chunk

    def call(self, fn, args, timeout):
        calls.append(fn.__name__)
        if failure == "raises":
            self.close()
            raise ChannelError("the worker closed the connection")
        return {w: None for w in self.workers}

    if route == "channel":
        monkeypatch.setattr(Channel, "call", call)
    else:
        monkeypatch.setattr(engine, "CHANNEL", False)
        monkeypatch.setattr(engine, "_run_on_workers", run)
    np.testing.assert_array_equal(stats(), ref)
    assert calls == ["_direct_batches"] and not data.direct and data.direct_passes == 0
    assert (data._channel is not None) == (route == "channel")
    np.testing.assert_array_equal(stats(), ref)
    assert len(calls) == 1


def _set_status(name, dask_worker=None):
    """Pause or resume a worker, its memory monitor off meanwhile (it would resume a worker using little memory)."""
    from distributed.core import Status

    mm = dask_worker.memory_manager
    if name == "paused":
        mm.saved_pause_fraction, mm.memory_pause_fraction = mm.memory_pause_fraction, False
    else:
        mm.memory_pause_fraction = getattr(mm, "saved_pause_fraction", mm.memory_pause_fraction)
    dask_worker.status = getattr(Status, name)


@pytest.mark.behaviour
def test_a_direct_pass_leaves_paused_workers_alone(process_client, monkeypatch):
    """Workers paused for memory run no pass outside the task graph either: the pass goes to tasks,
    which wait for the workers within the stall bound (here shortened), and fails saying why."""
    import daskgmm.engine.cluster
    from daskgmm.engine.cluster import ClusterError

    X = da.random.default_rng(0).standard_normal((8000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory")
    data.run(_mixture_request(), np.zeros(3))  # the first pass, as tasks
    monkeypatch.setattr(daskgmm.engine.cluster, "STALL_SECONDS", 2.0)
    process_client.run(_set_status, "paused")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                w["status"] != "paused" for w in process_client.scheduler_info()["workers"].values()):
            time.sleep(0.05)
        with pytest.raises(ClusterError, match="every worker is paused"):
            data.run(_mixture_request(), np.zeros(3))
        assert data.direct_passes == 0 and not data.direct
    finally:
        process_client.run(_set_status, "running")


def test_cache_auto_keeps_the_rows_when_they_take_under_40_percent_of_the_memory(monkeypatch):
    """``cache="auto"`` (``--cache auto``): rows of files are kept when they take at most 40% of the memory, else
    read again every pass; "memory" and "none" decide alone."""
    import daskgmm.engine.placement as placement

    X = da.zeros((1000, 10), chunks=500)  # 80,000 bytes
    for memory, kept in ((190_000, False), (210_000, True)):
        monkeypatch.setattr(placement, "local_memory", lambda memory=memory: memory)
        assert placement.should_persist(None, X, "auto", False, False) is kept
        assert placement.should_persist(None, X, "memory", False, False) and not placement.should_persist(
            None, X, "none", False, False)


def test_placement_leaves_one_copy_of_each_chunk_and_balanced_rows(process_client):
    X = da.random.default_rng(0).standard_normal((8000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory")
    holders = process_client.who_has(data._futures)
    assert all(len(h) == 1 for h in holders.values()), holders
    per_worker = {}
    for fut in data._futures:
        (w,) = holders[fut.key]
        per_worker[w] = per_worker.get(w, 0) + 1
    assert sorted(per_worker.values()) == [4, 4]


def test_placement_gives_up_quietly_when_a_target_is_paused(process_client, caplog):
    """A chunk is never copied to a worker that is not running (the scheduler would log a
    replication to no worker as an error): placement gives up, the chunks stay where they are,
    and the passes run on them."""
    import logging

    import dask

    first, second = sorted(process_client.scheduler_info()["workers"])
    x = np.random.default_rng(0).standard_normal((8000, 3))
    # every chunk on the first worker, so that placement would move half of them to the second
    futures = process_client.scatter([x[i : i + 1000] for i in range(0, 8000, 1000)], workers=[first])
    held = da.concatenate([da.from_delayed(dask.delayed(f), shape=(1000, 3), dtype=x.dtype) for f in futures])
    assert {w for h in process_client.who_has(futures).values() for w in h} == {first}
    process_client.run(_set_status, "paused", workers=[second])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process_client.scheduler_info()["workers"][second]["status"] != "paused":
            time.sleep(0.05)
        with caplog.at_level(logging.ERROR, logger="distributed"):
            data = ChunkedData(held, cache="memory")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        holders = process_client.who_has(data._futures)
        assert {w for h in holders.values() for w in h} == {first}
    finally:
        process_client.run(_set_status, "running", workers=[second])
    data.run(_mixture_request(), np.zeros(3))


def test_a_pass_leaves_no_futures_behind(process_client):
    """Without the cyclic GC: a pass's futures go when it returns, so the workers drop its results
    (a reference cycle once kept them, and the scan's samples, 16 MiB per worker on the bench)."""
    import gc

    X = da.random.default_rng(0).standard_normal((20_000, 3), chunks=1000)
    data = ChunkedData(process_client.persist(X), cache="memory", split_every=4)
    before = set(process_client.futures)
    gc.disable()
    try:
        data.run(_mixture_request(), np.zeros(3))
        deadline = time.monotonic() + 10  # the client drops released futures in its event loop
        while set(process_client.futures) != before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(process_client.futures) == before
    finally:
        gc.enable()


def test_placed_chunks_are_cut_at_the_workers_shares(process_client):
    """Chunks that would leave one worker more rows than the other are cut where the shares meet: each
    worker holds half the rows (one copy of each piece), and a pass gives the bits of the same pieces as
    a graph, and the fit of the uncut chunks to rounding."""
    X = da.random.default_rng(0).standard_normal((7000, 3), chunks=2000)  # 2000, 2000, 2000, 1000
    w = da.random.default_rng(1).uniform(0.5, 2.0, 7000, chunks=2000)
    data = ChunkedData(process_client.persist(X), process_client.persist(w), cache="memory", split_every=4)
    assert list(np.diff(data.offsets)) == [2000, 1500, 500, 2000, 1000]
    holders = process_client.who_has(data._futures + data._wfutures)
    assert all(len(h) == 1 for h in holders.values()), holders
    rows: dict = {}
    for fut, wfut, n in zip(data._futures, data._wfutures, np.diff(data.offsets)):
        (where,) = holders[fut.key]
        assert holders[wfut.key] == (where,)  # the weights with their rows
        rows[where] = rows.get(where, 0) + n
    assert sorted(rows.values()) == [3500, 3500]
    req = _mixture_request()

    def stats(d):
        (st,) = d.run(req, np.zeros(3))[0]
        return np.concatenate([st.n, st.s1.ravel(), st.s2.ravel(), [st.loglik, st.weight]])

    first, placed = stats(data), stats(data)  # as tasks, then outside the task graph
    assert data.direct_passes == 1
    np.testing.assert_array_equal(first, placed)
    pieces = (2000, 1500, 500, 2000, 1000)
    graph = ChunkedData(X.rechunk({0: pieces}), w.rechunk((pieces,)), cache="none", split_every=4)
    np.testing.assert_array_equal(stats(graph), placed)
    uncut = ChunkedData(X, w, cache="none", split_every=4)
    np.testing.assert_allclose(stats(uncut), placed, rtol=1e-12)
    # the sample is keyed by row number: the same rows for any chunking
    np.testing.assert_array_equal(data.sample_rows(), uncut.sample_rows())


def _layout(keys, dask_worker=None):
    return {k: ("C" if x.flags.c_contiguous else "F" if x.flags.f_contiguous else "strided")
            for k, x in ((k, dask_worker.data[k]) for k in keys if k in dask_worker.data)}


def test_a_cut_chunk_gives_the_same_bits_whichever_worker_held_it(process_client):
    """Column-major chunks (as Parquet's are) cut at the threads' shares: whether the piece that stays
    where the chunk was is the first or the second, both pieces keep the chunk's layout, so the scan
    (whose column sums round by layout) and the fit have the same bits. (A strided view of a
    column-major chunk is sent row-major: left as a view, the piece that stays and the one that moves
    would differ.)"""
    X, _, _ = make_blobs(n=3000)
    first, second = sorted(process_client.nthreads())
    scans, fits = [], []
    # chunks of 1000 rows, the first on the first worker, the last on the second; the share boundary
    # (1500) cuts the middle one, which is on the first worker (its second piece moves) or the second
    for middle in (first, second):
        futs = [process_client.scatter(np.asfortranarray(X[a:a + 1000]), workers=[w], hash=False)
                for a, w in ((0, first), (1000, middle), (2000, second))]
        Xf = da.concatenate([da.from_delayed(f, shape=(1000, 3), dtype=X.dtype) for f in futs])
        data = ChunkedData(Xf, cache="memory")
        assert list(np.diff(data.offsets)) == [1000, 500, 500, 1000]
        layouts = process_client.run(_layout, [f.key for f in data._futures])
        assert sorted(v for lay in layouts.values() for v in lay.values()) == ["F"] * 4, layouts
        scan = data.scan()
        scans.append(np.concatenate([scan.mean, scan.m2]))
        fits.append(_fit(Xf))
        del data, Xf, futs
    np.testing.assert_array_equal(scans[0], scans[1])
    for key in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(fits[0], key), getattr(fits[1], key), err_msg=key)


def _compiled_core_runs():
    from daskgmm.kernels import compiled

    return compiled.ready() is not None


def test_kept_layout_is_row_major_where_the_compiled_core_runs(monkeypatch):
    from daskgmm.kernels import protocol

    x = np.asfortranarray(np.arange(12.0).reshape(6, 2))
    monkeypatch.setattr(protocol.compiled_kernel, "ready", lambda: object())
    c = protocol.kept_layout(x)
    assert c.flags.c_contiguous and np.array_equal(c, x)
    assert protocol.kept_layout(c) is c
    monkeypatch.setattr(protocol.compiled_kernel, "ready", lambda: None)  # the NumPy path: as it is
    assert protocol.kept_layout(x) is x


def test_rows_kept_in_memory_are_row_major_and_fit_as_read_every_pass(process_client, tmp_path):
    """Parquet's chunks are column-major; a fit that keeps them in memory keeps them row-major where the
    workers run the compiled core (every pass reads them again, and the core reads rows; the NumPy path
    keeps them as read), and fits as a fit reading them every pass (column-major) does: the same bits.
    Chunks a caller persisted are left as they are."""
    from daskgmm import read_parquet

    from .conftest import write_data

    # two files of 1500 rows: the threads' shares end where chunks do, so kept chunks are not cut (the
    # same chunking as the reads')
    write_data(str(tmp_path / "d"), n=3000, files=2)
    X = read_parquet(str(tmp_path / "d"), columns=["f0", "f1", "f2"])
    with process_client.as_current():
        kept = ChunkedData(X, cache="memory")
        assert list(np.diff(kept.offsets)) == list(X.chunks[0])
        layouts = process_client.run(_layout, [f.key for f in kept._futures])
        core = set(process_client.run(_compiled_core_runs).values())
        want = "C" if core == {True} else "F"
        assert sorted(v for lay in layouts.values() for v in lay.values()) == [want] * len(kept._futures), layouts
        mine = X.persist()
        assert not [f.key for f in ChunkedData(mine, cache="memory")._futures if "kept" in str(f.key)]  # no copy
        del kept, mine
        fits = [_fit(X, cache=cache) for cache in ("memory", "none")]
    for key in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(fits[0], key), getattr(fits[1], key), err_msg=key)


def _held_bytes(keys, dask_worker=None):
    """Bytes of the buffers the worker's kept chunks ``keys`` hold (a view holds its base's), each buffer once."""
    bufs = {}
    for k in keys:
        x = dask_worker.data[k] if k in dask_worker.data else None
        if isinstance(x, np.ndarray):
            while isinstance(x.base, np.ndarray):
                x = x.base
            bufs[id(x)] = x.nbytes
    return sum(bufs.values())


@contextlib.contextmanager
def _scheduler_warnings():
    """The warnings distributed's scheduler logs meanwhile (in a LocalCluster, in this process)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("distributed.scheduler")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_a_kept_chunk_cut_at_the_shares_holds_its_rows_once(process_client, tmp_path):
    """A fit keeps Parquet's chunks row-major (placement.row_major), and a chunk cut at the threads'
    shares is cut in pieces, one of which moves to the other worker: a row slice of a row-major chunk
    is a view, which held the whole chunk where it was while the moved piece was held again where it
    went (its rows twice, unseen by Dask's sizes of the views). The fit's own copy is cut into copies,
    and freed, as Parquet's column-major chunks were before the fit kept them row-major."""
    from daskgmm import read_parquet
    from daskgmm.engine.placement import row_major

    from .conftest import write_data

    # three files of 2000 rows: the share boundary (3000) cuts the middle chunk
    write_data(str(tmp_path / "d"), n=6000, files=3)
    X = read_parquet(str(tmp_path / "d"), columns=["f0", "f1", "f2"])
    with _scheduler_warnings() as records:
        with process_client.as_current():
            kept = ChunkedData(X, cache="memory")
            assert list(np.diff(kept.offsets)) == [2000, 1000, 1000, 2000]
            held = process_client.run(_held_bytes, [f.key for f in kept._futures])
            # (a piece that moved may sit in the buffer of the message it came in: a few hundred bytes more)
            assert sum(held.values()) < 1.05 * X.nbytes, held  # the moved piece held twice: 1.17
            layouts = process_client.run(_layout, [f.key for f in kept._futures])
            want = "C" if set(process_client.run(_compiled_core_runs).values()) == {True} else "F"  # kept_layout
            assert sorted(v for lay in layouts.values() for v in lay.values()) == [want] * 4, layouts
            # the same chunks persisted by a caller (as scripts/bench.py does) are cut into views: other
            # tasks, so other keys than the fit's copies (else the scheduler's "different run_spec")
            mine = ChunkedData(process_client.persist(row_major(X), optimize_graph=False), cache="memory")
            assert not {f.key for f in mine._futures} & {f.key for f in kept._futures if "rows" in str(f.key)}
            del kept, mine
    assert not [r for r in records if "run_spec" in r.getMessage()], [r.getMessage()[:300] for r in records]


def test_rows_the_command_keeps_cut_at_the_shares_hold_their_rows_once(process_client, tmp_path):
    """The command keeps a job's rows itself when it reads them again after the fit (``cli.runtime.keep_rows``):
    laid out and cut as a fit's own (``row_major``, ``cut_at_shares(own=True)``: copies), so that the fit,
    which finds them persisted and only places them, holds each row once after its moves."""
    from daskgmm import read_parquet
    from daskgmm.engine.placement import cut_at_shares, row_major

    from .conftest import write_data

    write_data(str(tmp_path / "d"), n=6000, files=3)  # the share boundary (3000) cuts the middle chunk
    X = read_parquet(str(tmp_path / "d"), columns=["f0", "f1", "f2"])
    with process_client.as_current():
        kept = process_client.persist(cut_at_shares(process_client, [row_major(X)], own=True)[0],
                                      optimize_graph=False)
        data = ChunkedData(kept, cache="memory")
        assert list(np.diff(data.offsets)) == [2000, 1000, 1000, 2000]
        held = process_client.run(_held_bytes, [f.key for f in data._futures])
        assert sum(held.values()) < 1.05 * X.nbytes, held
        del data, kept


def test_rows_kept_in_memory_and_rows_read_every_pass_give_their_chunks_the_same_tasks(process_client, tmp_path):
    """Persisting the rows and reading them every pass submit the same keys (the chunks of the
    caller's array): with different tasks under one key, distributed's scheduler logs "Detected
    different `run_spec`" ("can cause failures and deadlocks"). Seen in a user trial: a KMedoids fit
    with ``cache="none"`` on a Parquet directory just after one that kept the rows in memory."""
    from daskgmm import read_parquet

    from .conftest import write_data

    write_data(str(tmp_path / "d"), n=3000, files=3)
    X = read_parquet(str(tmp_path / "d"), columns=["f0", "f1", "f2"])
    with _scheduler_warnings() as records:
        with process_client.as_current():
            kept = ChunkedData(X, cache="memory")  # its futures held while the other reads
            read = ChunkedData(X, cache="none")
            (a,) = kept.run(_mixture_request(), np.zeros(3))[0]
            (b,) = read.run(_mixture_request(), np.zeros(3))[0]
    assert not [r for r in records if "run_spec" in r.getMessage()], [r.getMessage()[:300] for r in records]
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)


def _set_code(code, dask_worker=None):
    from daskgmm.engine import cluster

    old, cluster.CODE = cluster.CODE, code
    return old


def test_workers_that_run_another_daskgmm_are_named(process_client):
    """A long-lived worker keeps the daskgmm it imported (user-trial-r12: edited code ran old passes on
    external workers): the command names every worker whose version and sources' digest differ from its own."""
    from daskgmm.cli.runtime import other_code_warning
    from daskgmm.engine import cluster

    assert cluster.workers_with_other_code(process_client) == {}
    first = sorted(process_client.scheduler_info()["workers"])[0]
    old = process_client.run(_set_code, "0.0.9+0123456789ab", workers=[first])[first]
    try:
        assert cluster.workers_with_other_code(process_client) == {first: "0.0.9+0123456789ab"}
        said: list = []
        other_code_warning(process_client, said.append)
        assert said == [f"warning: 1 worker(s) run another daskgmm than this command ({cluster.CODE}): {first} "
                        "(0.0.9+0123456789ab); restart them (dask worker) once the same daskgmm is installed "
                        "there, or their passes run other code"]
    finally:
        process_client.run(_set_code, old, workers=[first])


def test_the_loop_runs_the_clients_blas_on_one_thread():
    """The loop's own arithmetic (updates, a t mixture's proposals) takes one BLAS thread, whatever the process
    had: with workers on the same machine, OpenBLAS's threads took their cores (docs: em.loop.lockstep)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from daskgmm.em.loop import Run, lockstep
    from daskgmm.models.states import KMeansState

    X, _, _ = make_blobs(n=500, d=3, k=3, seed=1)
    seen = []

    def callback(iteration, runs):
        seen.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

    with threadpool_limits(limits=2, user_api="blas"):
        before = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        lockstep(ChunkedData(da.from_array(X, chunks=250)), [Run(KMeansState(X[:3].copy(), tol=0.0))],
                 centre=X.mean(axis=0), max_iter=2, callback=callback)
    assert before == {2} and seen == [{1}, {1}]
