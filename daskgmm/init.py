"""Initialisations on Dask data: k-means||, k-means++, random, random_from_data.

Every initialisation runs as passes over the chunks (several restarts in
lockstep share each pass); only the chosen rows and small statistics come back
to the client. Random choices about rows use draws keyed by global row number
(:mod:`daskgmm._random`), so results depend on ``random_state`` and not on how
the data are chunked.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from daskgmm._random import stream_key
from daskgmm.em import ChunkedData, Run, lockstep
from daskgmm.models import KMeansState
from daskgmm.stats import MixtureRequest, ModelSpec, SampleRequest, kmeans_natural_params

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")

#: k-means|| rounds and oversampling factor (Bahmani et al. 2012 find 5 rounds
#: of 2k draws enough).
KMEANS_PARALLEL_ROUNDS = 5
KMEANS_PARALLEL_OVERSAMPLING = 2.0


def check_random_state(seed) -> np.random.RandomState:
    """scikit-learn's ``check_random_state``: None, an int, or a RandomState."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def restart_seeds(random_state, n: int) -> list[int]:
    """One 63-bit seed per restart, drawn from ``random_state`` in restart order."""
    rs = check_random_state(random_state)
    return [int(rs.randint(0, np.iinfo(np.int64).max, dtype=np.int64)) for _ in range(n)]


def _per_seed(n_clusters, seeds) -> list[int]:
    """``n_clusters`` as one int per seed (it may be one int for all)."""
    if isinstance(n_clusters, (int, np.integer)):
        return [int(n_clusters)] * len(seeds)
    ks = [int(k) for k in n_clusters]
    if len(ks) != len(seeds):
        raise ValueError("n_clusters must be an int or one int per seed")
    return ks


def _finite_points(result, h=0) -> np.ndarray:
    ok = np.isfinite(result.keys[h])
    return result.points[h][ok]


def random_rows(data: ChunkedData, centre, n, seeds: list[int], stream: int = 7) -> list[np.ndarray]:
    """``n`` distinct rows per seed (``n`` an int, or one per seed), uniformly by sample weight."""
    reqs = [SampleRequest(np.zeros((0, data.n_features)), m, stream_key(s, stream))
            for m, s in zip(_per_seed(n, seeds), seeds)]
    return [_finite_points(r) for r in data.run(reqs, centre)]


def kmeans_plusplus(data: ChunkedData, centre, n_clusters, seeds: list[int]) -> list[np.ndarray]:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007, with scikit-learn's local trials).

    Each new centre is the best of ``2 + log(k)`` candidates drawn with
    probability proportional to the squared distance to the chosen centres.
    Choosing among candidates and drawing the next candidates happen in the
    same pass (the pass computes, for every candidate, the potential it would
    give and the next draws if it were chosen), so k centres take k + 1 passes;
    several seeds (and several k, one per seed) share them.
    """
    d = data.n_features
    ks = _per_seed(n_clusters, seeds)
    trials = [2 + int(math.log(k)) for k in ks]
    first = data.run(
        [SampleRequest(np.zeros((0, d)), 1, stream_key(s, 1000)) for s in seeds], centre
    )
    chosen = [_finite_points(r)[:1] for r in first]
    active = [i for i, k in enumerate(ks) if k > 1]
    if not active:
        return chosen
    res = data.run(
        [SampleRequest(chosen[i], trials[i], stream_key(seeds[i], 1001)) for i in active], centre
    )
    cands = {i: _finite_points(r) for i, r in zip(active, res)}
    for step in range(2, max(ks) + 1):
        active = [i for i in active if ks[i] >= step]
        reqs = []
        for i in active:
            cand = cands[i] if len(cands[i]) else chosen[i][:1]  # every row is a centre: repeat one
            reqs.append(SampleRequest(chosen[i], trials[i], stream_key(seeds[i], 1000 + step), candidates=cand))
        res = data.run(reqs, centre)
        for i, req, r in zip(active, reqs, res):
            best = int(np.argmin(r.potential))
            chosen[i] = np.vstack([chosen[i], req.candidates[best : best + 1]])
            cands[i] = _finite_points(r, best)
    return chosen


def _local_kmeanspp(points, weights, k, rng) -> np.ndarray:
    """Weighted greedy k-means++ on a small in-memory point set."""
    n = len(points)
    w = np.asarray(weights, dtype=np.float64)
    w = w if w.sum() > 0 else np.ones(n)
    trials = 2 + int(math.log(k))
    first = rng.choice(n, p=w / w.sum())
    centers = [points[first]]
    closest = ((points - points[first]) ** 2).sum(axis=1)
    pot = float(w @ closest)
    for _ in range(1, k):
        if pot <= 0:
            centers.append(points[rng.integers(n)])
            continue
        cum = np.cumsum(w * closest)
        cand = np.minimum(np.searchsorted(cum, rng.random(trials) * cum[-1]), n - 1)
        dist = ((points[None, :, :] - points[cand][:, None, :]) ** 2).sum(axis=2)
        np.minimum(dist, closest, out=dist)
        pots = dist @ w
        best = int(np.argmin(pots))
        centers.append(points[cand[best]])
        closest, pot = dist[best], float(pots[best])
    return np.array(centers)


def _local_lloyd(points, weights, centers, max_iter=300) -> np.ndarray:
    """Weighted Lloyd iterations on a small in-memory point set."""
    centers = centers.copy()
    labels = None
    for _ in range(max_iter):
        dist = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        new = dist.argmin(axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(centers)):
            mask = labels == j
            wj = weights[mask].sum()
            if wj > 0:
                centers[j] = weights[mask] @ points[mask] / wj
    return centers


def kmeans_parallel(
    data: ChunkedData, centre, n_clusters, seeds: list[int],
    rounds: int = KMEANS_PARALLEL_ROUNDS, oversampling: float = KMEANS_PARALLEL_OVERSAMPLING,
) -> list[np.ndarray]:
    """k-means|| seeding (Bahmani et al. 2012), one list of centres per seed.

    One row is drawn uniformly, then each of ``rounds`` passes draws
    ``oversampling * k`` rows with probability proportional to their squared
    distance to the candidates so far (without replacement, with keys that
    make the draw independent of the chunking). A last pass weighs every
    candidate by the rows nearest to it, and the client reduces the weighted
    candidates to k centres with k-means++ and Lloyd.
    """
    d = data.n_features
    ks = _per_seed(n_clusters, seeds)
    res = data.run([SampleRequest(np.zeros((0, d)), 1, stream_key(s, 0)) for s in seeds], centre)
    cands = [_finite_points(r) for r in res]
    for rnd in range(1, rounds + 1):
        res = data.run([SampleRequest(c, max(1, round(oversampling * k)), stream_key(s, rnd))
                        for c, k, s in zip(cands, ks, seeds)], centre)
        cands = [np.vstack([c, _finite_points(r)]) for c, r in zip(cands, res)]
    specs = [ModelSpec(kmeans_natural_params(c - centre), "spherical", "hard") for c in cands]
    counts = [st.n for st in data.run([MixtureRequest(specs)], centre)[0]]
    out = []
    for c, w, k, s in zip(cands, counts, ks, seeds):
        rng = np.random.default_rng(s)
        if len(c) <= k:
            reps = np.resize(np.arange(len(c)), k)
            out.append(c[reps])
            continue
        out.append(_local_lloyd(c, w, _local_kmeanspp(c, w, k, rng)))
    return out


def kmeans_tolerance(variance, tol: float) -> float:
    """scikit-learn's KMeans tolerance: ``tol`` times the mean feature variance."""
    return 0.0 if tol == 0 else float(np.mean(variance) * tol)


def lloyd(data: ChunkedData, centre, centers: list[np.ndarray], *, max_iter: int, tol_scaled: float,
          callback=None) -> list[Run]:
    """Lloyd's algorithm on the cluster, every start in lockstep (one pass per iteration)."""
    runs = [Run(KMeansState(np.asarray(c, dtype=np.float64), tol=tol_scaled), objective=np.inf) for c in centers]
    return lockstep(data, runs, centre=centre, max_iter=max_iter, callback=callback)


#: Lloyd passes on the cluster after k-means|| when initialising a mixture
#: ("a few": EM refines the result; it stops earlier at scikit-learn's tolerance).
MIXTURE_KMEANS_MAX_ITER = 10


def initial_centers(data: ChunkedData, centre, method: str, n_clusters, seeds: list[int]) -> list[np.ndarray]:
    """Starting centres per seed: "k-means||", "k-means++" or "random" (distinct rows)."""
    if method == "k-means||":
        return kmeans_parallel(data, centre, n_clusters, seeds)
    if method == "k-means++":
        return kmeans_plusplus(data, centre, n_clusters, seeds)
    if method == "random":
        return random_rows(data, centre, n_clusters, seeds)
    raise ValueError(f"unknown centre initialisation {method!r}")


def mixture_init_stats(
    data: ChunkedData, centre, *, method: str, jobs: list[tuple],
    kmeans_tol: float = 1e-4, kmeans_max_iter: int = MIXTURE_KMEANS_MAX_ITER,
):
    """Statistics of the initial responsibilities, one per job, with scikit-learn's meaning.

    Parameters
    ----------
    jobs : list of (n_components, covariance_type, seed)
        One initial model each; jobs that share (n_components, seed) share
        their centres, and all run in the same passes.

    ``kmeans``: hard labels of k-means (k-means|| then Lloyd on the cluster);
    ``k-means++`` and ``random_from_data``: one chosen row per component;
    ``random``: uniform random responsibilities, normalised per row.
    """
    from daskgmm.stats import NaturalParams, points_stats

    keys = sorted({(k, s) for k, _, s in jobs})
    if method in ("kmeans", "k-means++", "random_from_data"):
        ks, seeds = [k for k, _ in keys], [s for _, s in keys]
        if method == "kmeans":
            centers = kmeans_parallel(data, centre, ks, seeds)
            tol_scaled = kmeans_tolerance(data.scan().variance, kmeans_tol)
            runs = lloyd(data, centre, centers, max_iter=kmeans_max_iter, tol_scaled=tol_scaled)
            centers = [r.state.centers for r in runs]
        else:
            centers = initial_centers(data, centre, "k-means++" if method == "k-means++" else "random", ks, seeds)
        by_key = dict(zip(keys, centers))
        if method != "kmeans":
            return [points_stats(by_key[(k, s)], centre, ct) for k, ct, s in jobs]
        specs = [ModelSpec(kmeans_natural_params(by_key[(k, s)] - centre), ct, "hard") for k, ct, s in jobs]
        return data.run([MixtureRequest(specs)], centre)[0]
    if method == "random":
        d = data.n_features
        specs = [
            ModelSpec(NaturalParams(quad=np.zeros(k), lin=np.zeros((k, d)), const=np.zeros(k)), ct, "random",
                      seed=stream_key(s, 9))
            for k, ct, s in jobs
        ]
        return data.run([MixtureRequest(specs)], centre)[0]
    raise ValueError(f"init_params must be one of {INIT_METHODS}; got {method!r}")
