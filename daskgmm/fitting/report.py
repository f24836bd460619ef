"""The verbose lines of a fit, worded as scikit-learn's estimators print them.

The estimators pass :meth:`VerboseReport.iteration` (mixtures) or :func:`kmeans_report`
(Lloyd) as the loop's ``on_iteration`` hook, so the loop itself never prints.
"""

from __future__ import annotations

import time


class VerboseReport:
    """scikit-learn's verbose lines of a mixture fit with restarts (``verbose``, ``verbose_interval``).

    Parameters
    ----------
    verbose : int
        0: nothing; 1: the iteration numbers; 2: also the time of each iteration, the
        change of the lower bound (from the second iteration: the first has no previous one)
        and the final lower bounds.
    verbose_interval : int
        Print every ``verbose_interval`` iterations.
    """

    def __init__(self, verbose, verbose_interval):
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.last = time.perf_counter()

    def start(self, n_runs: int) -> None:
        """"Initialization i" for each of ``n_runs`` runs; starts the clock of the first iteration."""
        self.last = time.perf_counter()
        if self.verbose:
            from daskgmm.engine.cluster import kernels_in_use

            print(f"Kernel: {kernels_in_use()}")
            for i in range(n_runs):
                print(f"Initialization {i}")

    def iteration(self, iteration: int, runs: list) -> None:
        """One line per run that made ``iteration`` (every ``verbose_interval`` iterations)."""
        if iteration % self.verbose_interval:
            return
        now = time.perf_counter()
        for i, r in enumerate(runs):
            if r.n_iter != iteration:
                continue
            tag = f" (initialization {i})" if len(runs) > 1 else ""
            if self.verbose == 1:
                print(f"  Iteration {iteration}{tag}")
            else:
                change = r.history[-1]["change"]  # None on the first iteration: no previous lower bound
                shown = "" if change is None else f"\t ll change {change:.5f}"
                print(f"  Iteration {iteration}\t time lapse {now - self.last:.5f}s{shown}{tag}")
        self.last = now

    def end(self, runs: list) -> None:
        """Whether each run converged (and its lower bound with ``verbose >= 2``)."""
        if not self.verbose:
            return
        for i, r in enumerate(runs):
            msg = "converged" if r.converged else "did not converge"
            if self.verbose >= 2:
                print(f"Initialization {i} {msg}. lower bound {r.objective:.5f}.")
            else:
                print(f"Initialization {i} {msg}.")


def kmeans_report(tol: float):
    """scikit-learn's verbose lines of Lloyd's iterations, as an ``on_iteration(iteration, runs)`` hook.

    ``tol`` is the absolute tolerance the convergence line quotes.
    """

    def report(iteration, runs):
        for i, r in enumerate(runs):
            if r.n_iter == iteration:
                tag = f" (init {i})" if len(runs) > 1 else ""
                print(f"Iteration {iteration - 1}, inertia {r.objective}{tag}.")
                if r.converged:
                    shift = r.state.shift
                    if shift == 0:
                        print(f"Converged at iteration {iteration - 1}: strict convergence{tag}.")
                    else:
                        print(f"Converged at iteration {iteration - 1}: center shift {shift} within "
                              f"tolerance {tol}{tag}.")

    return report
