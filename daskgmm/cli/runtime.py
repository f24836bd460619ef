"""What the ``daskgmm`` commands share: progress lines, the cluster, outputs, data and models.

:func:`command_cluster` connects (or starts the embedded ``LocalCluster``), reports it,
and turns a failure of the workers into a message saying what to change; outputs are
locked and checked before any data pass; DATA is opened with the command's options and
a saved model with its own columns and dtype.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import warnings

import numpy as np

import daskgmm.engine.stop as stop
from daskgmm.cli.args import UsageError
from daskgmm.cli.config import SELECT, flag
from daskgmm.validation.scan import short_columns


class Reporter:
    """Progress lines on stderr (unless quiet), and warning lines (``"warning: ..."``, quiet or not)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.last = self.t0
        #: the iteration a checkpoint was resumed at (0: started afresh), for the metrics
        self.resumed_from = 0
        #: whether the fit kept the rows in the workers' memory (None: no "init" event said it)
        self.rows_in_memory = None
        #: seconds from this reporter's start to the initialisation's start (None: no "init" event): the
        #: first pass, which reads, checks and scans DATA (and keeps its rows in memory). At 20M rows it was
        #: 46 of a k-means fit's 48 s, and no line or metric said so.
        self.first_pass_seconds = None

    def __call__(self, msg: str) -> None:
        stop.check()  # every line is a safe point to stop at
        # --quiet silences progress, not warnings: a quiet nightly job must still say that a component
        # collapsed, that rows were omitted, that a worker went silent
        if not self.quiet or msg.startswith("warning: "):
            print(f"daskgmm: {msg}", file=sys.stderr, flush=True)

    def progress(self, event, **info):
        stop.check()
        now = time.perf_counter()
        if event == "init":
            runs = info["runs"]
            self.rows_in_memory = info.get("persisted")
            self.first_pass_seconds = max(0.0, now - self.t0 - info["seconds"])
            kept = {True: "rows read, checked and kept in the workers' memory", False: "rows read and checked"}
            first = f", after the first pass over the data in {self.first_pass_seconds:.2f} s" + (
                f" ({kept[self.rows_in_memory]})" if self.rows_in_memory in kept else "")
            if info["resumed"]:
                # the checkpoint holds every run after the last iteration it finished
                self.resumed_from = max((r.n_iter for r in runs), default=0)
                self(f"resumed from checkpoint at iteration {self.resumed_from}: {len(runs)} run(s) "
                     f"in {info['seconds']:.2f} s{first}")
            else:
                self(f"initialised {len(runs)} run(s) in {info['seconds']:.2f} s{first}")
        elif event == "iteration":
            runs = info["runs"]
            it = info["iteration"]
            rows = [r for r in runs if r.n_iter == it and r.history]  # the runs this pass served
            if not rows:
                return
            # the best over every run, finished ones included, so that the line never goes backwards;
            # one per kind of objective: a log-likelihood and a variational lower bound do not compare
            kinds: dict = {}
            for r in runs:
                if r.history:
                    kinds.setdefault(objective_name(r), []).append(r)
            def shown(name, r):
                change = r.history[-1]["change"]  # None on a first iteration: no previous objective
                return f"{name} {r.objective:.6f}" + ("" if change is None else f"  change {change:.3e}")

            parts = []
            for name, group in kinds.items():
                pick = min if name == "inertia" else max
                best = pick(group, key=lambda r: r.objective)
                text = shown(name, best)
                going = [r for r in group if not r.done]
                if best.done and going:  # its figures stay as they were: show that the others go on
                    number = next(i for i, r in enumerate(runs) if r is best)  # runs are dataclasses of arrays: no ==
                    text += (f" (run {number}, done at iteration {best.n_iter}; the best still running: "
                             f"{shown(name, pick(going, key=lambda r: r.objective))})")
                parts.append(text)
            active = sum(not r.done for r in runs)
            many = f"  [best of {len(runs)} run(s), {active} still active]" if len(runs) > 1 else ""
            self(f"iter {it:4d}  {';  '.join(parts)}  {rows[0].history[-1]['seconds']:.2f} s{many}")
            for r in rows:
                for e in r.history[-1]["events"]:
                    self(f"          {e}")
            say_lost_workers(self, f"at iteration {it}")
        self.last = now


def rows_read(in_memory: bool | None) -> str:
    """How a job's passes read the rows (fit's ``--cache``, "auto" deciding by size; a :class:`Reporter`'s
    ``rows_in_memory``), for its summary line; "" when no pass said (None)."""
    if in_memory is None:
        return ""
    return "rows kept in the workers' memory" if in_memory else "rows read from DATA every pass"


def keep_rows(o, src, *, cut: bool = True) -> bool:
    """Persist DATA's rows in the workers' memory for a job that reads them again after its passes (fit's
    predictions and plot, update's steps and predictions): the fit's own cache ends with the fit, so these
    would read DATA again (on an object store, the whole of it again). Only where ``--cache`` keeps rows
    (auto: when they fit, by the fit's rule; memory); the fit then finds them persisted and reads nothing.
    Replaces ``src.X``; returns whether it did. ``cut``: cut at the worker threads' shares, as a fit's own
    persist cuts (so that the fit holds them once); not for update's steps, which read the chunks as they
    are (``cache="none"``): cut, their reduction tree and bits would depend on whether the rows were kept
    (a resumed job keeps them or not by its steps left).

    Not sparse rows (``--sparse``): the fit checks their chunks into canonical CSR under keys of its own, so
    kept, each chunk placement moves to another worker would be held twice for the whole fit, where Dask
    counts a ``csr_array`` at a few bytes (its memory limits do not see them); they are read again."""
    from distributed import futures_of

    from daskgmm.engine.cluster import active_client, wait_bounded
    from daskgmm.engine.passes import is_sparse_array
    from daskgmm.engine.placement import PERSIST, cut_at_shares, row_major, should_persist

    client = active_client()
    if client is None or is_sparse_array(src.X) or not should_persist(client, src.X, o.cache, False, False):
        return False
    # the id columns too: they come from the same read tasks as the rows, which would run again for them
    ids = [] if src.ids is None else [src.ids] if not isinstance(src.ids, list) else src.ids
    # laid out as a fit keeps its own (row-major where the workers run the compiled core), and cut as the fit
    # would cut them (into copies: the chunks go), so that it holds them once; unoptimised, as the passes
    # persist and submit chunks: the same keys, so the fit's persist is a no-op
    rows = [row_major(src.X), *ids]
    arrays = cut_at_shares(client, rows, own=True) if cut else rows
    X, *kept_ids = client.persist(arrays, optimize_graph=False)
    wait_bounded(client, futures_of([X, *kept_ids]), PERSIST, first_failure=True)
    src.X = X
    if src.ids is not None:
        src.ids = kept_ids if isinstance(src.ids, list) else kept_ids[0]
    return True


def objective_name(run) -> str:
    """What a run's objective is, as the progress line names it (a mean log-likelihood by default)."""
    return getattr(getattr(run, "state", None), "objective_name", "loglik")


#: Estimators whose passes run NumPy whatever the compiled core (what the cluster line and
#: metrics' "kernel" say of them).
NUMPY_PASSES = {"kmedoids": "k-medoids"}


def check_inputs(o) -> None:
    """DATA's files and --model's files exist and are what they say, checked before a cluster
    starts: a wrong path, a missing or non-numeric column, disagreeing schemas or no rows are bad
    input at once (exit 2), not after seconds of cluster start-up. DATA's footers are kept in
    ``o.footers``, the widths of its vector columns in ``o.vector_widths`` and --model's files in
    ``o.model_files`` for the open and the load: read once."""
    so = storage_options(o)
    if getattr(o, "data", None) is not None:
        from daskgmm.io.files import inspect_files

        o.footers = inspect_files(o.data, so)
    if getattr(o, "model", None) is not None and o.command != "sample":
        from daskgmm.io.modelfiles import read_model_files

        o.model_files = read_model_files(o.model, so)
        model_dtype = o.model_files[0].get("dtype")
        if getattr(o, "dtype", None) not in (None, model_dtype) and model_dtype is not None:
            raise UsageError(f"daskgmm {o.command}: --dtype {o.dtype}: DATA is read in the model's dtype, "
                             f"{model_dtype} ({o.model}); leave --dtype out")
    if getattr(o, "data", None) is not None:
        from daskgmm.io.files import DataWarning
        from daskgmm.io.parquet import check_footers

        doc = o.model_files[0] if getattr(o, "model_files", None) is not None else None
        check_sparse_model(o, doc)
        check_model_options(o, doc)
        if reads_sparse(o):
            o.sparse_width = check_sparse_input(o, doc)
            return
        # the columns open_data will read: --columns, else a saved model's (model_source), else all
        columns = o.columns
        if doc is not None:
            check_model_order(o, doc.get("columns"))
            if columns is None:
                columns = doc.get("columns") or None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # said by open_data, on the job's stderr
            features = check_footers(o.data, o.footers[2], columns, id_column_of(o))
        from daskgmm.io.vectors import expand

        # a vector column's width is in its rows, not the footers: its first vector, which the open would
        # read, is read now (and handed to the open), so that its elements are counted before the cluster
        features, o.vector_widths = expand(features, o.footers[2], o.footers[0])
        if doc is not None and doc.get("n_features") is not None:
            check_model_width(o, features, int(doc["n_features"]))


def reads_sparse(o) -> bool:
    """Whether the command reads DATA as sparse rows (``--sparse``)."""
    return bool(getattr(o, "sparse", None))


def sparse_columns(o, doc=None):
    """The columns sparse rows are read from: ``--columns``, else those a saved model (its ``model.json``,
    ``doc``) was fitted on, else None (the layout's ``indices``, ``values``)."""
    return o.columns or (doc or {}).get("sparse_columns")


#: The saved models whose predictions are a centre's label and distance (no probabilities, no log-likelihood).
CLUSTER_MODELS = ("KMeans", "KMedoids")


def check_model_options(o, doc) -> None:
    """A UsageError for an option of ``predict`` or ``update`` that the saved model (``doc``, its
    ``model.json``) does not take, from its file before any cluster starts: refused once the cluster had
    started and loaded the model, it cost the cluster's start-up (user-trial-ops-r18). The same messages as
    the checks beside the load (``cmd_predict``, ``cli.fit.check_update_options``), which stay."""
    if doc is None or o.command not in ("predict", "update") or doc.get("estimator") is None:
        return
    name = doc["estimator"]
    clusters = name in CLUSTER_MODELS
    if o.command == "predict":
        wrong = [f for f, v, mine in (("--proba", o.proba, False), ("--loglik", o.loglik, False),
                                      ("--distance", o.distance, True)) if v and mine != clusters]
        if wrong:
            raise UsageError(f"daskgmm predict: {', '.join(wrong)} does not apply to {o.model}, a {name} model")
        return
    if name not in ("GaussianMixture", "KMeans"):
        return  # update refuses the others whole, naming them
    if clusters:
        wrong = [flag(k) for k in ("learning_decay", "learning_offset") if getattr(o, k) is not None]
        wrong += [flag(k) for k in ("proba", "loglik") if getattr(o, k)]
        why = "its online step is the sequential k-means update, mu_k <- mu_k + (x - mu_k) / n_k"
    else:
        wrong, why = (["--distance"] if o.distance else []), "--distance is a KMeans model's"
    if wrong:
        raise UsageError(f"daskgmm update: {', '.join(wrong)} does not apply to {o.model}, a {name} model ({why})")


def check_sparse_model(o, doc) -> None:
    """A UsageError for sparse rows and a saved model (``doc``, its ``model.json``; None: no model) that do
    not go together: ``--sparse`` with a model that is not a KMeans, a model fitted on sparse rows without
    ``--sparse`` (read densely, every row would hold all of its features)."""
    if doc is None:
        return
    if reads_sparse(o) and doc.get("estimator") != "KMeans":
        raise UsageError(f"daskgmm {o.command}: --sparse: {o.model} holds a {doc.get('estimator')} model; only a "
                         "KMeans model takes sparse rows")
    fitted = doc.get("sparse_columns")
    if fitted and not reads_sparse(o):
        raise UsageError(f"daskgmm {o.command}: {o.model} was fitted on sparse rows ({doc.get('n_features')} "
                         f"features, from column(s) {', '.join(fitted)}): give --sparse (read densely, every row "
                         "would hold all of its features)")


def check_sparse_input(o, doc) -> int:
    """The width of DATA's sparse rows, checked before a cluster starts as the sparse reader checks them
    (:func:`daskgmm.io.sparse.check_sparse_footers`), and against a saved model's (``doc``): a DataError
    naming the file and column, or both widths."""
    from daskgmm.io.files import DataError
    from daskgmm.io.sparse import check_sparse_footers, sparse_layout

    fs, _, infos = o.footers
    layout = sparse_layout(sparse_columns(o, doc))
    width = None if doc is None else doc.get("n_features")
    given = getattr(o, "n_features", None)
    # list columns whose files do not store their width are read at the model's (a vector carries its own)
    from_model = given is None and width is not None and "vector" not in layout
    vector = layout.get("vector")
    try:
        # a vector column's width is its first vector's, read here whatever --n-features says (every vector
        # must have it: another number would refuse every row, after the cluster started)
        n = check_sparse_footers(o.data, fs, infos, id_column=id_column_of(o), **layout,
                                 n_features=None if vector else int(width) if from_model else given)
    except DataError as exc:
        if from_model:
            raise DataError(f"{exc} (n_features: the model's, {o.model})") from None
        raise
    if vector and given is not None and n != given:
        raise DataError(f"{o.data}: column {vector!r} holds vectors of {n} features (its first vector's width), not "
                        f"the --n-features {given} given; a vector carries its width: leave --n-features out")
    if width is not None and n != int(width):
        read = ", ".join(layout.values()) if layout else "indices, values"
        raise DataError(f"{o.data}: sparse rows of {n} features (column(s) {read}) but the model {o.model} "
                        f"expects {width}")
    return n


def features_text(o, src) -> str:
    """DATA's features, for the ``data:`` line: "3 columns (a, b, c)", or "262,144 features, sparse rows in
    column(s) features"."""
    if reads_sparse(o):
        return f"{src.X.shape[1]:,} features, sparse rows in column(s) {', '.join(src.columns)}"
    return f"{len(src.columns)} columns ({short_columns(src.columns)})"


def check_model_order(o, model_cols) -> None:
    """A UsageError if --columns name the model's features (``model_cols``) in another order."""
    if o.columns is None or model_cols is None:
        return
    # columns are matched to the features by position: the model's own names elsewhere are a mistake
    cols, names = o.columns, [str(c) for c in model_cols]
    # as many as the model's: another order; fewer or more: check_model_width says the count (a vector column
    # names many features)
    if len(cols) == len(names) and any(c != m and c in names for c, m in zip(cols, names)):
        raise UsageError(f"daskgmm {o.command}: --columns {','.join(cols)} name the model's features "
                         f"({', '.join(names)}) in another order; columns are matched by position: give "
                         "them in the model's order, or leave --columns out")


def check_model_width(o, columns, n_features: int) -> None:
    """A DataError if DATA's feature ``columns`` are not as many as the model's ``n_features``."""
    if len(columns) != n_features:
        from daskgmm.io.files import DataError

        raise DataError(f"{o.data}: {len(columns)} feature column(s) ({short_columns(columns)}) but the model "
                        f"expects {n_features}; choose them with --columns")


@contextlib.contextmanager
def warnings_said(log, record: bool = False):
    """``warnings.catch_warnings(record=record)`` in which a :class:`SilentWorkerWarning` is said on stderr as
    it is raised ("warning: worker … has not answered the scheduler …"): a pass may wait minutes for the
    scheduler to remove the silent worker, or fail (no worker-ttl). The other warnings are recorded
    (``record``: the list it yields, as ``catch_warnings``) or shown as outside it.

    :func:`command_cluster` holds one over every command that uses the cluster; a block that records warnings
    inside it must be one too (``catch_warnings(record=True)`` puts back the default ``showwarning``)."""
    from daskgmm.engine.cluster import SilentWorkerWarning

    with warnings.catch_warnings(record=record) as caught:
        other = warnings.showwarning  # the recorder, or the display outside

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, SilentWorkerWarning):
                log(f"warning: {message}")
            else:
                other(message, category, filename, lineno, file, line)

        warnings.showwarning = show  # catch_warnings puts the previous one back at its exit
        yield caught


def count_empty_rows(caught, metrics) -> None:
    """The metrics' ``n_empty_rows``: rows with every feature missing that a fit with ``--nan-policy
    marginalize`` left out (each fit's :class:`daskgmm.validation.scan.EmptyRowsWarning` says how many; the
    same data read again, by ``update``'s passes, counts once), as ``n_omitted`` counts the rows omit drops."""
    from daskgmm.validation.scan import EmptyRowsWarning

    counts = [w.message.n_rows for w in caught if issubclass(w.category, EmptyRowsWarning)]
    if counts:
        metrics["n_empty_rows"] = max(counts)


def other_code_warning(client, log) -> None:
    """Say which workers run another daskgmm than the command (the trial of the twelfth round: long-lived
    ``dask worker`` processes ran the code they had imported before daskgmm was changed)."""
    from daskgmm.engine.cluster import CODE, workers_with_other_code

    other = workers_with_other_code(client)
    if other:
        listed = ", ".join(f"{w} ({c})" for w, c in list(other.items())[:4]) + (", ..." if len(other) > 4 else "")
        log(f"warning: {len(other)} worker(s) run another daskgmm than this command ({CODE}): {listed}; restart "
            "them (dask worker) once the same daskgmm is installed there, or their passes run other code")


#: The workers the cluster of the command running has lost (an ``engine.cluster.LostWorkers``), None outside one
_lost = None


def say_lost_workers(log, when: str, now: bool = False) -> None:
    """A warning line for each worker the command's cluster lost (and the job survived) since the last call,
    ``when``: "at iteration 3", "during the job" (``now``: looked at now, not at most once a second)."""
    for address in _lost.take(now) if _lost is not None else ():
        log(f"warning: worker {address} was lost {when} (it died, or its scheduler removed it); the job went on: "
            "its chunks were computed again on the cluster's other workers")


@contextlib.contextmanager
def command_cluster(o, log, box=None, metrics=None):
    """The cluster of a command; NaN found while reading ``box["src"]`` is reported over all of it.
    ``metrics`` gets ``"kernel"``: what the workers' passes run on."""
    from daskgmm.engine.cluster import LostWorkers, connect, hung_task_bounds
    from daskgmm.io.files import DataError, NonFiniteError

    check_inputs(o)
    if o.scheduler:
        # these size the embedded LocalCluster only; a config written for one (configs/nightly.yaml) run with
        # --scheduler would otherwise look as if it had set the workers of the user's cluster
        defaults = (("n_workers", None), ("threads_per_worker", None), ("processes", True),
                    ("memory_limit", "auto"), ("dashboard_address", "127.0.0.1:0"))
        embedded = ["--no-processes" if key == "processes" else flag(key) for key, default in defaults
                    if getattr(o, key, default) not in (None, default)]
        if embedded:
            theirs = " (dask worker --nthreads and --memory-limit set theirs)" if set(embedded) & {
                "--n-workers", "--threads-per-worker", "--memory-limit"} else ""
            log(f"warning: {', '.join(embedded)} set(s) only the embedded LocalCluster, not the workers of "
                f"--scheduler {o.scheduler}: ignored{theirs}")
    try:
        hung_task_bounds()  # a bad Dask config is bad usage, said before a cluster starts
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    security = None
    if o.scheduler and any((o.tls_ca, o.tls_cert, o.tls_key)):
        from distributed.security import Security

        for key in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(o, key)
            if path and not os.path.isfile(path):
                raise UsageError(f"{flag(key)}: no such file {path!r}")
        security = Security(tls_ca_file=o.tls_ca, tls_client_cert=o.tls_cert, tls_client_key=o.tls_key,
                            require_encryption=True)
    with connect(o.scheduler, n_workers=o.n_workers, threads_per_worker=o.threads_per_worker,
                 processes=getattr(o, "processes", True), memory_limit=o.memory_limit, security=security,
                 dashboard_address=getattr(o, "dashboard_address", None) or "127.0.0.1:0") as client:
        from daskgmm.engine.cluster import pause_fraction, paused_when_idle, threads_of_this_process, worker_floor
        from daskgmm.engine.cluster import workers as list_workers

        workers = list_workers(client)
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        where = o.scheduler or "embedded LocalCluster on 127.0.0.1"
        in_threads = not o.scheduler and threads_of_this_process(client)
        if in_threads:
            where += ", its workers threads of this process"

        # measured now, while every worker lives, for the advice of a later failure
        floor = worker_floor(client) if workers else 0
        # a worker thread measures its process: the command's libraries and client too, one figure for all workers
        idle = "" if not floor else (f", this process takes {floor / 2**20:.0f} MiB idle" if in_threads else
                                     f", an idle worker takes {floor / 2**20:.0f} MiB")
        from daskgmm.engine.cluster import kernels_in_use

        kernel = kernels_in_use(client)
        numpy_only = NUMPY_PASSES.get(getattr(o, "estimator", None)) if o.command == "fit" else None
        if numpy_only and not kernel.startswith("numpy"):
            kernel = f"numpy ({numpy_only} passes have no compiled kernel)"
        if metrics is not None:
            metrics["kernel"] = kernel
        log(f"cluster: {where}, {len(workers)} worker(s), {threads} thread(s){idle}; kernel {kernel}")
        small = paused_when_idle(client, floor)
        if small:  # paused from the start: the job would fail after distributed's no-workers timeout (30 s)
            import math

            pause, n = pause_fraction(), max(1, len(workers))
            # each worker's limit is the process's, --memory-limit times the workers (engine.cluster.process_limit)
            whose = "its limit" if n == 1 else f"its limit, the process's ({n} workers' together),"
            raise UsageError(
                f"{flag('memory_limit')} {o.memory_limit} per worker is too small with --no-processes: the workers "
                f"are threads of this process, which already takes {floor / 2**20:.0f} MiB idle (the command's "
                f"libraries and client too), and distributed pauses a worker at {pause:.0%} of {whose} "
                f"{small / 2**20:.0f} MiB, so no task would run; raise --memory-limit well above "
                f"{math.ceil(floor / pause / n / 2**20)} MiB (the data takes more), or leave --no-processes out")
        if o.scheduler:  # the embedded cluster's workers start from this install
            other_code_warning(client, log)
        if serves_dashboard(client, remote=bool(o.scheduler)):
            log(f"dashboard {client.dashboard_link}")
            if metrics is not None:
                metrics["dashboard"] = client.dashboard_link
        elif o.scheduler:
            log("dashboard: not served (the scheduler has no bokeh, which Dask's dashboard needs where the scheduler "
                "runs)")
        else:
            log("dashboard: not served (Dask's dashboard needs bokeh: pip install 'bokeh>=3.1')")
        global _lost
        try:
            with warnings_said(log):  # through the whole command: its passes, persists, writes and scores
                _lost = LostWorkers(client)
                try:
                    yield client
                    if not stop.requested():  # a line would raise the stop, after the job's end
                        say_lost_workers(log, "during the job", now=True)  # a failed job's error says its own
                finally:
                    if metrics is not None:
                        metrics["workers_lost"] = _lost.count
                    _lost = None
        except NonFiniteError as exc:
            src = (box or {}).get("src")
            if src is None:
                raise
            log(f"{exc}; counting over all the data")
            raise DataError(src.nonfinite_summary()) from None
        except Exception as exc:
            from daskgmm.io.files import note_silent

            note_silent(exc)  # the clean-up deadline of a silent store starts now, not once the cluster is closed
            explain_cluster_failure(exc, client)
            raise


def serves_dashboard(client, remote: bool) -> bool:
    """Whether the scheduler serves Dask's dashboard pages, which need bokeh where it runs: this process for the
    embedded one; asked of a remote one (distributed lists its HTTP server as "dashboard" either way, and the
    link led to a 404). True when a remote scheduler cannot be asked (it refuses run_on_scheduler): its link."""
    import importlib.util

    if not remote:
        return importlib.util.find_spec("bokeh") is not None
    try:  # by value (a lambda): the scheduler need not have daskgmm
        return bool(client.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("bokeh") is not None,
                                            callback_timeout=10))
    except Exception:
        return True


def explain_cluster_failure(exc, client):
    """Turn distributed's KilledWorker, and a scheduler gone in the middle of a job, into a message
    saying what happened and what to change."""
    try:
        from distributed.scheduler import KilledWorker, NoValidWorkerError, NoWorkerError
    except ImportError:  # pragma: no cover
        return
    from daskgmm.engine.cluster import ClusterError, all_paused, memory_advice, scheduler_lost, threads_of_this_process

    lost = scheduler_lost(client)
    if lost:
        # distributed cancels every future ("FuturesCancelledError ... re-run your work") or fails the
        # call in flight (CommClosedError) as it tries to reconnect; a stopped or restarted scheduler
        # took its workers' tasks and data with it, so the job cannot go on
        raise ClusterError(
            f"{lost} in the middle of the job (it stopped or was restarted, or the network failed); run the job "
            "again once the scheduler and its workers are back (with --checkpoint-dir and --resume it goes on "
            "from its last checkpoint)"
        ) from None
    if isinstance(exc, (NoWorkerError, NoValidWorkerError)):
        task, timeout = exc.args[0], exc.args[-1]
        if threads_of_this_process(client) or all_paused(client):  # threads do not die: they wait, paused
            raise ClusterError(
                f"no worker ran task {task} for {timeout:.0f} s: the workers were paused, most likely for memory; "
                f"{memory_advice(client)}"
            ) from None
        raise ClusterError(
            f"no worker was left to run task {task} for {timeout:.0f} s: the workers died (most likely "
            f"out of memory) and were not restarted, or never started; {memory_advice(client)}"
        ) from None
    if isinstance(exc, KilledWorker):
        raise WorkersDied(
            f"workers died again and again running the same task ({exc.args[0] if exc.args else 'a task'}), "
            f"most likely out of memory: {memory_advice(client)}"
        ) from None


class WorkersDied(RuntimeError):
    """Workers died repeatedly on the same task (exit status 1)."""


class CollapsedFit(RuntimeError):
    """A fit stopped by a component collapsed onto a point (exit status 1): scikit-learn's message, the
    command's flags where the estimator names its parameters, and the --reg-covar in use."""


@contextlib.contextmanager
def columns_in_data_errors(columns):
    """A DataError of an estimator that names columns of X by position names them as DATA does (the command
    fits a Dask array, which has no feature names)."""
    from daskgmm.io.files import DataError

    try:
        yield
    except DataError as exc:
        named = name_columns(exc, columns)
        if type(exc) is not DataError or named == str(exc):  # a subclass (NonFiniteError) is handled as it is
            raise
        raise DataError(named) from None


@contextlib.contextmanager
def collapse_in_flags(o):
    """A collapse error of a fit or select (:class:`CollapsedFit`) says ``--on-collapse reinit``, not the Python
    ``on_collapse="reinit"``, and ends with the flag's value (user-trial-r16: the Python names only). K-means'
    squared distances overflowing float32 are the data's for that dtype: a DataError (exit 2) saying
    ``--dtype float64``, where it was exit 1 advising ``X.astype(np.float64)``."""
    from daskgmm.validation.scan import DataError

    try:
        yield
    except ValueError as exc:
        if "squared distances overflow the rows' floating-point type" in str(exc):
            raise DataError(f"{exc}".replace("X.astype(np.float64)", "--dtype float64")) from None
        if "ill-defined empirical covariance" not in str(exc):
            raise
        raise CollapsedFit(f"{name_columns(exc, None)} daskgmm {o.command}: --reg-covar was {o.reg_covar:g}") from None


def check_outputs(o, locks):
    """Before any data pass: lock every output directory (which also proves it creatable; on an
    object store, that its bucket exists) and check that the plot, metrics and (on an object
    store) checkpoint paths can be written."""
    from daskgmm.io.outputs import OutputLock

    so = storage_options(o)
    for key in ("model_out", "predictions_out", "out"):
        target = getattr(o, key, None)
        if target and (key != "out" or o.command == SELECT):
            locks.enter_context(OutputLock(target, so))
    check_file_outputs(o)


def check_file_outputs(o) -> None:
    """Before the cluster starts: the plot, metrics and checkpoint paths a job gives can be written
    (:func:`check_file_target`, :func:`check_local_directory`)."""
    so = storage_options(o)
    for key in ("plot", "metrics_out"):
        path = getattr(o, key, None)
        if path:
            check_file_target(path, flag(key), so)
    ckpt = getattr(o, "checkpoint_dir", None)
    if ckpt and not local_path(ckpt, so):
        check_file_target(ckpt.rstrip("/") + "/checkpoint.npz", "--checkpoint-dir", so)
    elif ckpt:
        check_local_directory(ckpt, "--checkpoint-dir")


def check_local_directory(path, flag) -> None:
    """Refuse (UsageError) a local directory ``flag`` that could not be made or written: below a file, on a
    read-only filesystem, or where this user may not write. Nothing is made (a checkpoint directory is made
    at the first checkpoint and stays, as before); unchecked, the first checkpoint write failed after the
    cluster and a pass, exit 1 (user-trial-ops-r18)."""
    head = os.path.abspath(os.path.expanduser(str(path)))  # (a file:// URL is its path already: cli.args.resolve)
    while not os.path.lexists(head):  # the nearest part of it that exists: the one a mkdir writes in
        head = os.path.dirname(head)
    if not os.path.isdir(head):
        raise UsageError(f"{flag} {path}: {head} is a file, not a directory; choose another path")
    if not os.access(head, os.W_OK):
        raise UsageError(f"{flag} {path}: directory {head} is not writable (read-only, or not this user's); "
                         "choose another path, or one this user may write")


def storage_options(o) -> dict | None:
    """``--storage-options`` (or ``storage_options:`` of the config): fsspec's options for every path."""
    return getattr(o, "storage_options", None) or None


def local_path(path, so=None) -> bool:
    """Whether ``path`` is on the local filesystem (not an fsspec URL of an object store)."""
    from daskgmm.io.files import get_fs, is_local

    return is_local(get_fs(str(path), so))


def check_file_target(path, flag, so=None):
    """Refuse (UsageError) a file output ``flag`` that is a directory or whose directory cannot be written;
    on an object store (``s3://``), one whose bucket is missing, that is a prefix, or that cannot be written.
    The error carries ``daskgmm_unwritable``, the path: the command writes no error metrics there."""
    try:
        _check_file_target(path, flag, so)
    except Exception as exc:
        exc.daskgmm_unwritable = str(path)
        raise


def _check_file_target(path, flag, so=None):
    if not local_path(path, so):
        from daskgmm.io.files import get_fs, strip_protocol
        from daskgmm.io.store import check_file_target as check_object

        fs = get_fs(str(path), so)
        check_object(fs, strip_protocol(fs, str(path)), f"{flag} {path}")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    from daskgmm.io.outputs import make_directories

    try:
        make_directories(parent)  # removed again if the job fails and leaves it empty
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create its directory ({exc.strerror or exc})") from None
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: directory {parent} is not writable")


@contextlib.contextmanager
def data_command(o, log, metrics):
    """The cluster of a command that reads DATA and writes outputs (fit, select): the outputs
    checked and locked, DATA opened, described on stderr and in the metrics; yields the source."""
    box: dict = {}
    # the outputs locked before the input is checked: taking a lock completes the commit of a job killed
    # in it, which a job that then fails on bad input must do as any other
    with contextlib.ExitStack() as locks:
        check_outputs(o, locks)
        locks.enter_context(command_cluster(o, log, box, metrics))
        src = box["src"] = open_data(o, log)
        log(f"data: {src.n_rows:,} rows x {features_text(o, src)} from {len(src.files)} file(s), "
            f"{src.X.numblocks[0]} chunk(s) of up to {max(src.X.chunks[0]):,} rows, {src.X.dtype}")
        metrics.update(n_rows=src.n_rows, n_features=src.X.shape[1], columns=src.columns,
                       n_omitted=src.n_omitted, files=len(src.files), chunks=src.X.numblocks[0],
                       **({"sparse": True} if reads_sparse(o) else {}))
        if o.columns is None and not reads_sparse(o):
            for c in src.columns:
                if ID_LIKE.fullmatch(c):
                    log(f"warning: column {c!r} looks like a row id and is used as a feature (every numeric "
                        f"column is, without --columns); pass --id-column {c} to carry it to the predictions "
                        "instead, or --columns to choose the features")
        yield src


#: column names that are usually row ids, not features
ID_LIKE = re.compile(r"(?i)(id|index|row|row_?(id|num(ber)?)|.*_id)")


def open_data(o, log, columns=None, dtype=None):
    """Open DATA; the rows dropped by ``--nan-policy omit`` are reported on stderr."""
    from daskgmm.io.files import DataWarning, RowsOmittedWarning
    from daskgmm.io.source import open_source

    # sparse rows: at the width check_inputs found (a vector column's first vector is not read again)
    sparse = {"format": "sparse", "n_features": getattr(o, "sparse_width", None) or getattr(o, "n_features", None)
              } if reads_sparse(o) else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RowsOmittedWarning)
        warnings.simplefilter("always", DataWarning)
        src = open_source(o.data, columns if columns is not None else o.columns, id_column_of(o),
                           dtype or o.dtype, nan_policy=o.nan_policy, chunk_rows=o.chunk_rows,
                           storage_options=storage_options(o), footers=getattr(o, "footers", None),
                           **(sparse or {"vector_widths": getattr(o, "vector_widths", None)}))
    for w in caught:
        if issubclass(w.category, (RowsOmittedWarning, DataWarning)):
            log(f"warning: {w.message}")
    return src


def id_column_of(o):
    """``--id-column`` as the readers take it: None, one name (as the option was before it took a list: the
    same reads and outputs), or a list of several."""
    names = getattr(o, "id_column", None)
    return names[0] if names and len(names) == 1 else names


def missing_policy(o) -> str:
    """The estimators' ``missing`` for ``--nan-policy``: "marginalize" keeps NaN for the model."""
    return "marginalize" if o.nan_policy == "marginalize" else "raise"


def name_columns(message, columns) -> str:
    """A warning about columns of X by position, with the Parquet column names instead (``columns`` None:
    sparse rows, whose features have no names: by position)."""
    def names(m):
        if columns is None:
            return m.group(1)
        return short_columns([columns[int(j)] for j in m.group(1).split(", ")], quote=True)

    text = re.sub(r"(?<=column\(s\) )(\d+(?:, \d+)*)(?= of X)", names, str(message))
    # the options' names on the command line
    text = re.sub(r"init_params='([\w+-]+)'", r"--init-params \1", text)
    return (text.replace('on_collapse="reinit"', "--on-collapse reinit").replace("(means_init)", "(--means-init)")
            .replace("with means_init too", "with --means-init too"))


def plot_after(o, log, metrics, draw):
    """Draw the picture after the outputs are written: a picture that fails costs nothing else."""
    try:
        draw()
    except Exception as exc:
        log(f"warning: picture not written to {o.plot}: {type(exc).__name__}: {exc}")
        metrics["plot_error"] = f"{type(exc).__name__}: {exc}"
    else:
        log(f"picture written to {o.plot}")


def load_saved(o, clusters=False):
    """The model at ``--model``: a mixture (Gaussian, variational or t; or, with ``clusters``, a KMeans or
    a KMedoids)."""
    from daskgmm import register_estimators
    from daskgmm.base import BaseMixture
    from daskgmm.io.modelfiles import ModelFileError, load_model
    from daskgmm.kmeans import KMeans
    from daskgmm.kmedoids import KMedoids

    register_estimators()
    est = load_model(o.model, storage_options(o), files=getattr(o, "model_files", None))
    if not isinstance(est, BaseMixture) and not (clusters and isinstance(est, (KMeans, KMedoids))):
        takes = "a mixture model (GaussianMixture, BayesianGaussianMixture or StudentTMixture)"
        if clusters:
            takes += ", a KMeans or a KMedoids model"
        raise ModelFileError(f"{o.model}: a {type(est).__name__} model; daskgmm {o.command} needs {takes}, "
                             "as daskgmm fit writes")
    return est


def model_source(o, log, clusters=False):
    """The saved model and DATA opened with the model's columns and dtype (``clusters``: a KMeans or a
    KMedoids will do)."""
    est = load_saved(o, clusters=clusters)
    cols = o.columns
    model_cols = getattr(est, "feature_names_in_", None)
    if reads_sparse(o):  # the columns the model was fitted on, not one per feature
        files = getattr(o, "model_files", None)
        cols = sparse_columns(o, files[0] if files is not None else None)
    elif cols is None and model_cols is not None:
        cols = [str(c) for c in model_cols]
    if not reads_sparse(o):
        check_model_order(o, model_cols)  # check_inputs said it before the cluster; a caller without it, here
    if o.nan_policy is None:  # as the estimator in Python: a model fitted with missing values marginalises them
        o.nan_policy = "marginalize" if getattr(est, "missing", "raise") == "marginalize" else "raise"
    if missing_policy(o) == "marginalize":
        from daskgmm.base import BaseMixture

        if not isinstance(est, BaseMixture):
            raise UsageError(f"daskgmm {o.command}: --nan-policy marginalize needs a mixture model (Gaussian, "
                             f"variational or Student-t), {o.model} holds a {type(est).__name__}")
        est.set_params(missing="marginalize")  # marginal densities need nothing of how the model was fitted
    centres = est.means_ if hasattr(est, "means_") else est.cluster_centers_
    o.dtype = str(np.asarray(centres).dtype)  # the model's (check_inputs refused another)
    src = open_data(o, log, columns=cols, dtype=o.dtype)
    if not reads_sparse(o):  # sparse rows: their width was checked against the model's by check_inputs
        check_model_width(o, src.columns, est.n_features_in_)  # as check_inputs did before the cluster
    return est, src
