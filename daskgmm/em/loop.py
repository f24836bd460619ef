"""The lockstep loop: every model of a list advances by one EM (or Lloyd) iteration per pass.

A model is any state with the members described in :mod:`daskgmm.models.states`
(``spec`` or ``request``, ``objective``, ``update``, ``converged``); the loop asks the
engine for one pass serving every still-active model, hands each its statistics, and
stops a model on its own convergence test or at ``max_iter``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from daskgmm.engine.cluster import blas_threads
from daskgmm.engine.passes import ChunkedData
from daskgmm.kernels import MixtureRequest
from daskgmm.models.states import OBJECTIVE_RTOL, first_best


@dataclass
class Run:
    """One model's course through the loop.

    Attributes
    ----------
    state : model state (see :mod:`daskgmm.models.states`)
    n_iter : int
    converged : bool
    objective : float
        The latest objective (for mixtures: scikit-learn's ``lower_bound_``,
        the mean log-likelihood of the parameters before the last M-step).
    objectives : list of float
    history : list of dict
        Per iteration: ``iteration``, ``objective``, ``change`` (from the previous objective; None
        on a run's first iteration, which has none), ``seconds`` (wall time of the pass that
        served it) and ``events``.
    done : bool
    propose_in, propose_gap : int
        The loop's ``propose`` (:func:`lockstep`): iterations until the run's next try, and the last gap
        between two (0: every iteration).
    """

    state: Any
    n_iter: int = 0
    converged: bool = False
    objective: float = -np.inf
    objectives: list = field(default_factory=list)
    history: list = field(default_factory=list)
    done: bool = False
    propose_in: int = 0
    propose_gap: int = 0


#: A run whose proposals gain nothing is offered one at iterations 1, 2, 4, ... and then every this many
#: iterations after the last that did (:func:`lockstep`): a t mixture's costs ECME's step on the client (37 ms
#: a try at K = 16, D = 16 on one quiet core), which a pass over a million rows on two workers outlasts only
#: about fourfold. A run converges only in an iteration that tried one.
PROPOSE_GAP_MAX = 8


def one_pass(data: ChunkedData, states: list, centre) -> list:
    """One pass serving every state, one result per state in their order: a state with a pass request of
    its own (``request``, e.g. k-medoids) adds it; the others' specs (``spec``) are grouped by kind (the
    spec's ``request_class``, the mixture request by default), one request per kind. A state that judges a
    collapse by its components' rows (``counts_rows``) gets them counted (``SuffStats.counts``) on weighted
    data, from the same E-step (``ModelSpec.count_rows``)."""
    own = [i for i, s in enumerate(states) if hasattr(s, "request")]
    specs = [(i, s.spec(centre)) for i, s in enumerate(states) if not hasattr(s, "request")]
    counted = [i for i, _ in specs if getattr(states[i], "counts_rows", False)]
    return _serve(data, specs, [(i, states[i].request(centre)) for i in own], len(states), centre, counted)


def with_worst_rows(data: ChunkedData, states: list, stats: list, centre) -> list:
    """``stats``, with the worst rows added for the states that ask for them after the pass (``needs_worst``:
    k-means, when a cluster came back empty), found by one more pass with the same parameters: its
    statistics are those of the pass, so only its worst rows are taken."""
    want = [(j, n) for j, st in enumerate(states)
            if (n := getattr(st, "needs_worst", lambda _: 0)(stats[j]))]
    if not want:
        return stats
    again = run_specs(data, [states[j].spec(centre, n_worst=n) for j, n in want], centre)
    out = list(stats)
    for (j, _), st in zip(want, again, strict=True):
        out[j] = replace(out[j], worst=st.worst)
    return out


def run_specs(data: ChunkedData, specs: list, centre, count_rows: bool = False) -> list:
    """One pass serving every spec: one request per kind of spec (its ``request_class``, the mixture
    request by default), all in the same pass; the results in the order of ``specs``. ``count_rows``: on
    weighted data each result's ``counts`` too (mixture specs only)."""
    return _serve(data, list(enumerate(specs)), [], len(specs), centre,
                  list(range(len(specs))) if count_rows else [])


def _serve(data, specs, own, n, centre, counted=()) -> list:
    # the rows each component holds, their weights left out (a collapse is about rows: without sample weights
    # the weighted sums are the rows), summed from the same responsibilities (ModelSpec.count_rows)
    if counted and getattr(data, "sample_weight", None) is not None:
        counted = set(counted)
        specs = [(i, replace(sp, count_rows=True) if i in counted else sp) for i, sp in specs]
    kinds: dict = {}
    for i, spec in specs:
        kinds.setdefault(getattr(spec, "request_class", MixtureRequest), []).append((i, spec))
    requests = [cls([sp for _, sp in items]) for cls, items in kinds.items()] + [req for _, req in own]
    results = data.run(requests, centre)
    out: list = [None] * n
    for result, items in zip(results, kinds.values()):
        for (i, _), st in zip(items, result, strict=True):
            out[i] = st
    for (i, _), res in zip(own, results[len(kinds):len(kinds) + len(own)], strict=True):
        out[i] = res
    return out


def lockstep(data: ChunkedData, runs: list[Run], *, centre, max_iter: int, callback=None,
             propose=None) -> list[Run]:
    """Advance every run by EM iterations, all served by one pass per iteration.

    Semantics per run are scikit-learn's: iteration ``t`` computes the
    objective of the current parameters and updates them; a run stops when
    ``state.converged`` says so or after ``max_iter`` iterations. Runs already
    marked done are skipped; ``Run.n_iter`` continues a resumed run.

    Parameters
    ----------
    data : ChunkedData
    runs : list of Run
    centre : ndarray, shape (D,)
        Shift for every pass of the fit.
    max_iter : int
    callback : callable, optional
        ``callback(iteration, runs)`` after every iteration (progress, checkpoints).
    propose : callable, optional
        ``propose(state) -> state or None``: another state to try in place of a run's (a t mixture's degrees
        of freedom from the rows' likelihood, ECME's step on the scan's sample), served in the same pass: the
        run goes on from the one of higher objective (the run's own on a tie up to rounding,
        :func:`daskgmm.models.states.first_best`), so that the objective still never decreases (the update
        from the better of the two gains on it).

    The client's own arithmetic in the loop (updates, proposals) runs BLAS on one thread: with workers on
    the same machine (the embedded cluster) OpenBLAS's threads took the cores from the pass's batches and
    spun on after each call; a Student-t fit's ECME proposals on the sample took 163 ms an iteration with
    two BLAS threads and 55 with one, its passes 230 and 161 ms (200,000 rows, K = D = 16, two workers on
    two cores).
    """
    with blas_threads(1):
        return _lockstep(data, runs, centre, max_iter, callback, propose)


def _lockstep(data, runs, centre, max_iter, callback, propose) -> list[Run]:
    while True:
        active = [r for r in runs if not r.done and r.n_iter < max_iter]
        if not active:
            for r in runs:
                r.done = True
            return runs
        t0 = time.perf_counter()
        asked = [propose is not None and r.propose_in <= 0 for r in active]
        tried = [(j, alt) for j, r in enumerate(active) if asked[j] and (alt := propose(r.state)) is not None]
        states = [r.state for r in active] + [alt for _, alt in tried]
        stats = with_worst_rows(data, states, one_pass(data, states, centre), centre)
        seconds = time.perf_counter() - t0
        taken = set()
        for (j, alt), st in zip(tried, stats[len(active):], strict=True):
            # higher beyond rounding (which the chunking sets), by the rule that picks a restart
            if first_best([active[j].state.objective(stats[j]), alt.objective(st)], maximize=True,
                          atol=OBJECTIVE_RTOL) == 1:
                active[j].state, stats[j] = alt, st
                taken.add(j)
        for j, r in enumerate(active):
            if not asked[j]:
                r.propose_in -= 1
            elif j in taken:
                r.propose_in = r.propose_gap = 0
            else:  # nothing to gain now: wait twice as long as last time for the next try
                r.propose_gap = min(max(1, 2 * r.propose_gap), PROPOSE_GAP_MAX)
                r.propose_in = r.propose_gap
        for j, (r, st) in enumerate(zip(active, stats)):
            obj = r.state.objective(st)
            try:
                new = r.state.update(st)
            except ValueError as exc:
                # which run failed (a collapse): a caller fitting several names it (by identity: a Run's == compares
                # its arrays)
                exc.run = next(i for i, q in enumerate(runs) if q is r)
                raise
            # the first iteration has no previous objective (a run starts at ±inf, a warm start at its own):
            # the convergence test takes the infinite change (never converged), the history None (no change)
            first = not np.isfinite(r.objective)
            # what made the starting state (a component re-seeded at the start) is told with the first iteration
            events = [*(r.state.events if r.n_iter == 0 else ()), *new.events]
            change = obj - r.objective
            r.converged = bool(r.state.converged(new, change))
            if r.converged and propose is not None and not asked[j]:
                # EM alone has converged, but the proposal was not tried: not done before it has been
                r.converged, r.propose_in = False, 0
            r.state = new
            r.objective = obj
            r.n_iter += 1
            r.objectives.append(obj)
            r.history.append({
                "iteration": r.n_iter,
                "objective": obj,
                "change": None if first else change,
                "seconds": seconds,
                "events": events,
            })
            if r.converged or r.n_iter >= max_iter:
                r.done = True
        if callback is not None:
            callback(max(r.n_iter for r in active), runs)
