"""k-medoids on a small dissimilarity matrix (a sample's): the starts and FasterPAM.

The starts are scikit-learn-extra's ``KMedoids`` inits ("random", "heuristic",
"k-medoids++", "build"); :func:`fasterpam` is Schubert & Rousseeuw's FasterPAM (Information
Systems 101, 2021, Algorithm 2): for each candidate in turn, the best swap with any medoid in
O(n) from the nearest and second-nearest medoid of every point, done at once when it lowers
the loss ("eager"), until a whole round over the candidates finds none.

Pure NumPy; nothing here knows about Dask.
"""

from __future__ import annotations

import math

import numpy as np

from daskgmm.kernels.medoids import nearest_two, swap_gains


def random_start(diss: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """``k`` distinct points uniformly."""
    return rng.choice(len(diss), k, replace=False).astype(np.int64)


def heuristic_start(diss: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` points with the smallest sum of dissimilarities to all others."""
    return np.sort(np.argpartition(diss.sum(axis=1), k - 1)[:k]).astype(np.int64)


def kmedoids_plusplus(diss: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """k-means++ seeding on dissimilarities (squared), with ``2 + log k`` local trials (as
    scikit-learn-extra's "k-medoids++")."""
    n = len(diss)
    trials = 2 + int(math.log(k))
    centers = [int(rng.randint(n))]
    closest = diss[centers[0]] ** 2
    pot = closest.sum()
    for _ in range(1, k):
        if pot <= 0:  # every point is a chosen one's duplicate: take unchosen ones in order
            rest = np.setdiff1d(np.arange(n), centers)
            centers.append(int(rest[0]))
            continue
        ids = np.searchsorted(np.cumsum(closest), rng.random_sample(trials) * pot)
        ids = np.minimum(ids, n - 1)
        new = np.minimum(closest[None, :], diss[ids] ** 2)
        best = int(np.argmin(new.sum(axis=1)))
        centers.append(int(ids[best]))
        closest = new[best]
        pot = closest.sum()
    return np.asarray(centers, np.int64)


def build_start(diss: np.ndarray, k: int) -> np.ndarray:
    """PAM's BUILD: the point of least total dissimilarity, then each time the point that lowers the loss most."""
    first = int(np.argmin(diss.sum(axis=1)))
    chosen = [first]
    d1 = diss[first].copy()
    for _ in range(1, k):
        gain = np.maximum(d1[:, None] - diss, 0.0).sum(axis=0)  # gain[c]: loss lowered by adding c
        gain[chosen] = -1.0
        c = int(np.argmax(gain))
        chosen.append(c)
        np.minimum(d1, diss[c], out=d1)
    return np.asarray(chosen, np.int64)


def fasterpam(diss: np.ndarray, medoids, max_rounds: int = 100, block: int = 64):
    """FasterPAM from ``medoids`` on a square dissimilarity matrix.

    Candidates are visited in index order, round after round, ``block`` at a time: the gains
    of a block are computed together, the first improving candidate (in order) is swapped in,
    and the visit resumes after it, so the swaps are those of the one-at-a-time algorithm. The
    search ends when a whole round (n candidates) passes without a swap.

    Parameters
    ----------
    diss : ndarray, shape (n, n)
    medoids : array of int, shape (k,)
    max_rounds : int
        Rounds over all candidates at most.

    Returns
    -------
    medoids : ndarray of int64, shape (k,)
    loss : float
    swaps : int
    """
    diss = np.asarray(diss, np.float64)
    cols = np.ascontiguousarray(diss.T)  # a block of candidates' columns as contiguous rows
    n = len(diss)
    med = np.array(medoids, np.int64)
    k = len(med)
    near, d1, d2 = nearest_two(diss[:, med])
    loss = float(d1.sum())
    swaps = visited = since = pos = 0
    while since < n and visited < max_rounds * n and k < n:
        cand = np.arange(pos, pos + min(block, n - pos, n - since))
        gains = swap_gains(cols[cand].T, near, d1, d2, k, loss)
        best_k = np.argmin(gains, axis=0)
        best = gains[best_k, np.arange(len(cand))]
        # a swap must lower the loss by more than rounding (else two equal points would swap forever)
        hit = np.flatnonzero((best < -1e-12 * max(loss, 1e-300)) & ~np.isin(cand, med))
        if hit.size:
            j = int(hit[0])
            med[best_k[j]] = cand[j]
            near, d1, d2 = nearest_two(diss[:, med])
            loss = float(d1.sum())
            swaps += 1
            visited += j + 1
            since = 0
            pos = (int(cand[j]) + 1) % n
        else:
            visited += len(cand)
            since += len(cand)
            pos = (pos + len(cand)) % n
    return med, loss, swaps
