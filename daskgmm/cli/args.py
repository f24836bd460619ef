"""The ``daskgmm`` command line: its parser, option resolution and usage checks.

Every option comes from the table in :mod:`daskgmm.cli.config`; values are taken from the
defaults, then ``--config``, then explicit flags (:func:`resolve`), and checked before
any cluster starts (:func:`require`): a bad command line is a :class:`UsageError`, exit 2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re

import numpy as np

from daskgmm.cli.config import (
    EXPORT,
    FIT,
    INFO,
    NAMED_STARTS,
    PREDICT,
    SAMPLE,
    SCORE,
    SELECT,
    SHOW_CONFIG,
    UPDATE,
    coerce,
    flag,
    load_config,
    options_for,
)
from daskgmm.io.files import glob_place, holds, matches_glob, place_of, protocol_of
from daskgmm.kernels.covariance import COVARIANCE_TYPES
from daskgmm.models.priors import PRIOR_PARAMETERS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXIT_DOC = """exit status:
  0  success
  2  bad usage or bad input: a missing/unknown option or config key, a missing or
     non-numeric column, disagreeing schemas, NaN/inf values, an empty or corrupt
     file, an unreadable model, a missing output bucket, an output path that may
     not be written or lies below a file (the message names the file, column,
     key or value)
  1  any other failure (e.g. a component collapsed, a worker failed for good,
     a full disk)
  130  interrupted (SIGINT, Ctrl-C): stopped cleanly, no output written (stopped
       in the middle of a commit, it says so: the next job writing it finishes it)
  143  terminated (SIGTERM): the same"""

#: What the commands that write outputs add to the exit statuses.
OUTPUTS_DOC = """
Outputs are written to a staging directory and renamed into place only when
complete, so after a failure the previous outputs are untouched. On object
stores (s3://, which has no rename) the objects are copied into place under a
journal and _SUCCESS is written last: readers should wait for _SUCCESS. Outputs
on S3 are locked against a second job by conditional writes (If-None-Match);
outputs on other object stores (gs://, az://) are not locked. A missing bucket
is an error (exit 2): daskgmm never creates one."""

COMMANDS = {
    FIT: "fit a mixture (Gaussian, variational or Student-t), K-means (--estimator kmeans) or K-medoids "
         "(--estimator kmedoids) on Parquet data and save the model",
    PREDICT: "label rows of Parquet data with a saved model",
    SCORE: "mean log-likelihood of Parquet data under a saved model, with BIC and AIC (not for a Bayesian one; "
           "the inertia for a KMeans or KMedoids model)",
    SAMPLE: "draw rows from a saved model into Parquet, streaming",
    INFO: "describe a saved model",
    SELECT: "fit every K and covariance type in lockstep and keep the best by BIC or AIC",
    UPDATE: "update a saved Gaussian mixture with new Parquet data by online EM (partial_fit) and save it; a "
            "saved KMeans by the sequential k-means update (its partial_fit)",
    SHOW_CONFIG: "print the compiled core's build and which variant this CPU runs (--json for JSON)",
    EXPORT: "write a saved GaussianMixture or KMeans model as a Spark ML model directory (any covariance type, "
            "as full matrices), which pyspark.ml.clustering's GaussianMixtureModel.load and KMeansModel.load read",
}


class UsageError(ValueError):
    """Bad command line (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, its options built from :data:`daskgmm.cli.config.OPTIONS`."""
    from daskgmm.version import __version__

    parser = argparse.ArgumentParser(
        prog="daskgmm",
        description="Gaussian mixture models on Parquet data with Dask, fitted by EM or variationally "
                    "(--estimator bayesian), mixtures of Student-t distributions (--estimator student), "
                    "K-means (--estimator kmeans) and K-medoids (--estimator kmedoids).",
        epilog=EXIT_DOC + OUTPUTS_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"daskgmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd, text in COMMANDS.items():
        sp = sub.add_parser(cmd, help=text, description=text[0].upper() + text[1:] + ".",
                            epilog=EXIT_DOC + ("" if cmd in (SCORE, INFO, SHOW_CONFIG) else OUTPUTS_DOC),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        # a value that starts with '-' and a digit is a value ('--means-init "-1;1"', '--tol -1e-3'), as
        # Python 3.13's argparse takes it; 3.11's took only '-1' and '-0.5' and said "expected one argument"
        sp._negative_number_matcher = re.compile(r"^-\.?\d")
        if cmd in (FIT, PREDICT, SCORE, SELECT, UPDATE):
            sp.add_argument("data", nargs="*", metavar="DATA",
                            help="Parquet file(s), directory, glob or fsspec URL (or 'data' in the config)")
        for opt in options_for(cmd):
            flags = [opt.flag] + ([opt.short] if opt.short else [])
            default = "" if opt.default in (None, False) else f" (default: {_show(opt.default)})"
            if opt.kind == "bool":
                # --x and --no-x: a flag on the command line overrides the config either way
                sp.add_argument(*flags, dest=opt.dest, action=argparse.BooleanOptionalAction, default=None,
                                help=opt.help)
            else:
                metavar = opt.metavar or (None if opt.choices else opt.dest.upper())
                sp.add_argument(*flags, dest=opt.dest, default=None, metavar=metavar,
                                choices=opt.choices if opt.kind == "choice" else None, help=opt.help + default,
                                **({"type": _refusing(opt)} if opt.refused else {}))
        if cmd == SHOW_CONFIG:
            sp.add_argument("--json", action="store_true", help="print it as JSON")
        elif cmd != INFO:
            sp.add_argument("--config", metavar="FILE.yaml",
                            help="YAML file holding the same options (underscores for dashes); flags override it")
    return parser


def _refusing(opt):
    """argparse's ``type`` of an option with refused values: a refused value is argparse's error (exit 2)
    saying why, before its choices are checked (which would say only "invalid choice")."""
    reasons = dict(opt.refused)

    def value(text: str) -> str:
        if text in reasons:
            raise argparse.ArgumentTypeError(f"{text}: {reasons[text]}")
        return text

    return value


def _show(value):
    return ",".join(value) if isinstance(value, list) else value


#: ``fit``'s options whose default is the estimator's (None in the options table): (the usual default,
#: {estimator: its own}). KMeans' as scikit-learn's (an n_init of None: "auto"); K is 8 for the
#: clusterings, as scikit-learn's KMeans and scikit-learn-extra's KMedoids have it, and 1 for the mixtures.
ESTIMATOR_DEFAULTS = {"tol": (1e-3, {"kmeans": 1e-4}), "n_init": (1, {"kmeans": None}),
                      "n_components": (1, {"kmeans": 8, "kmedoids": 8})}


def resolve(args) -> argparse.Namespace:
    """Defaults (the estimator's, :data:`ESTIMATOR_DEFAULTS`), then the config file, then explicit flags."""
    cmd = args.command
    merged = {o.dest: o.default for o in options_for(cmd)}
    given = [(o, getattr(args, o.dest)) for o in options_for(cmd) if getattr(args, o.dest, None) is not None]
    # --storage-options first: an array option (of the config too) may name a file on the job's object store
    storage = {o.dest: coerce(o, v, o.flag) for o, v in given if o.dest == "storage_options"}
    config = getattr(args, "config", None)
    data = None
    from_config = set()  # the options the config set and no flag overrode: a refusal of one names the file
    if config:
        values = load_config(config, cmd, storage.get("storage_options"))
        data = values.pop("data", None)
        merged.update(values)
        from_config = set(values)
    merged.update(storage)
    for o, value in given:
        from_config.discard(o.dest)
        if o.dest not in storage:
            merged[o.dest] = coerce(o, value, o.flag, merged.get("storage_options"))
    if getattr(args, "data", None):
        data = args.data
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    merged["data"] = data
    merged["command"] = cmd
    for key in PATH_OPTIONS:  # a file:// URL is the local path it names (the metrics and checkpoints, written
        value = merged.get(key)  # by open(), went to ./file:/… below the working directory)
        if isinstance(value, str) and value.startswith("file://"):
            merged[key] = value[len("file://"):]
    if cmd == SHOW_CONFIG:
        merged["json"] = bool(getattr(args, "json", False))
    ns = argparse.Namespace(**merged)
    try:
        if cmd == FIT:
            resolve_starts(ns)  # before the defaults: K may come from the starting values
            for key, (usual, own) in ESTIMATOR_DEFAULTS.items():
                if getattr(ns, key) is None:
                    setattr(ns, key, own.get(ns.estimator, usual))
        require(ns)
    except UsageError as exc:
        exc = _from_config(exc, from_config, config)
        exc.daskgmm_options = ns  # the options as given (a config's metrics_out): the error metrics go there
        raise exc from None
    except Exception as exc:
        exc.daskgmm_options = ns
        raise
    return ns


def _from_config(exc: UsageError, keys: set, config) -> UsageError:
    """``exc`` with each flag it names whose value came from the config named there too (the user wrote
    ``n_components: -3`` in a file, not ``--n-components``)."""
    msg = str(exc)
    named = False
    for key in sorted(keys, key=len, reverse=True):  # --n-init before --n
        f = flag(key)
        at = msg.find(f)
        if at >= 0 and not msg[at + len(f):at + len(f) + 1].isalnum() and msg[at + len(f):at + len(f) + 1] != "-":
            msg = msg[:at] + f"{f} ('{key}' in {config})" + msg[at + len(f):]
            named = True
    return UsageError(msg) if named else exc


#: The classes of ``fit --estimator``, for messages (the command imports an estimator only to fit it).
ESTIMATOR_CLASSES = {"gaussian": "GaussianMixture", "bayesian": "BayesianGaussianMixture",
                     "student": "StudentTMixture", "kmeans": "KMeans", "kmedoids": "KMedoids"}

#: ``fit``'s given starting values and held parameters, and the estimators that take each: those whose Python
#: constructor has the parameter of that name (``tests/test_cli_init.py`` holds the two together).
INIT_OPTIONS = {"means_init": ("gaussian",), "weights_init": ("gaussian",), "precisions_init": ("gaussian",),
                "update_params": ("gaussian",), "init": ("kmeans", "kmedoids")}


#: What ``fit --init-spark`` reads from a Spark ML model of each kind, by the estimator that takes it.
SPARK_STARTS = {"gaussian": ("GaussianMixtureModel", ("weights_init", "means_init", "precisions_init")),
                "kmeans": ("KMeansModel", ("init",))}


def spark_starts(o) -> None:
    """``fit --init-spark DIR``: the starting values of the Spark ML model there
    (:func:`daskgmm.io.sparkmodel.read_spark_model`) set as the options that give them (``--weights-init``,
    ``--means-init``, ``--precisions-init``, or ``--init``), which then go through the same checks; the
    precisions in ``--covariance-type``'s shape (``read_spark_model``'s ``covariance_type``)."""
    from daskgmm.io.sparkmodel import read_spark_model

    est = o.estimator
    if est not in SPARK_STARTS:
        raise UsageError(f"daskgmm fit: --init-spark is a start of --estimator gaussian (a Spark "
                         f"GaussianMixtureModel) and --estimator kmeans (a KMeansModel); --estimator {est} "
                         f"({ESTIMATOR_CLASSES[est]}) has no Spark ML model")
    cls, names = SPARK_STARTS[est]
    given = [flag(n) for n in ("weights_init", "means_init", "precisions_init", "init") if getattr(o, n) is not None]
    if given:
        raise UsageError(f"daskgmm fit: --init-spark and {', '.join(given)} both give starting values; give one")
    starts = read_spark_model(o.init_spark, getattr(o, "storage_options", None), o.covariance_type)
    if not set(names) <= set(starts):
        other = next(c for e, (c, n) in SPARK_STARTS.items() if set(n) <= set(starts))
        raise UsageError(f"daskgmm fit: --init-spark {o.init_spark} holds a Spark {other}, not a {cls}: "
                         f"--estimator {next(e for e, (c, _) in SPARK_STARTS.items() if c == other)} starts from it")
    for name in names:
        setattr(o, name, np.asarray(starts[name], dtype=np.float64))


def resolve_starts(o) -> None:
    """``fit``'s starting values and held parameters (:data:`INIT_OPTIONS`), before the estimator's defaults.

    Refused (:class:`UsageError`) for an estimator whose constructor has no such parameter, as is a named
    ``--init`` of the other clustering; ``--update-params`` is checked by the estimator's check and written
    w, m, c (``None`` for all three, the default). The arrays take the estimator's shapes as far as the
    data are not needed: weights and spherical precisions given as a row or a column become a vector, means,
    an array ``--init`` and diagonal precisions given as one row (no ``;``) one component's, full
    precisions given as a matrix of stacked D x D blocks (a .csv) become K matrices. ``--n-components``
    defaults to the arrays' K, and an error names the two that disagree. Their shapes against the columns
    are the estimators' checks, once the schema is read (:func:`daskgmm.cli.fit.initial_arrays`).
    """
    est = o.estimator
    if getattr(o, "init_spark", None) is not None:
        spark_starts(o)
    for name, takers in INIT_OPTIONS.items():
        if getattr(o, name) is None or est in takers:
            continue
        owner = f" ({ESTIMATOR_CLASSES[takers[0]]}'s {name})" if len(takers) == 1 else ""
        raise UsageError(f"daskgmm fit: {flag(name)} is an option of "
                         f"{' and '.join('--estimator ' + t for t in takers)}{owner}; --estimator {est} "
                         f"({ESTIMATOR_CLASSES[est]}) has no {name}")
    if isinstance(o.init, str) and o.init not in NAMED_STARTS[est]:
        other = next(e for e, names in NAMED_STARTS.items() if o.init in names)
        raise UsageError(f"daskgmm fit: --init {o.init} is a start of --estimator {other}; --estimator {est} takes "
                         f"{', '.join(NAMED_STARTS[est])} or an array of starting centres")
    if o.update_params is not None:
        from daskgmm.fitting.mixture import check_update_params

        try:
            check_update_params(o.update_params)
        except ValueError as exc:
            raise UsageError(f"daskgmm fit: --update-params: {exc}") from None
        held = "".join(g for g in "wmc" if g in o.update_params)
        o.update_params = None if held == "wmc" else held
    ct = o.covariance_type

    def vector(a):  # a row or a column (a .csv's) of a parameter with one number per component
        return a.reshape(-1) if a.ndim == 0 or (a.ndim == 2 and 1 in a.shape) else a

    def matrix(a):  # K rows of D numbers given as one row, without ';' between rows: K = 1
        return a.reshape(1, -1) if isinstance(a, np.ndarray) and a.ndim < 2 else a

    if o.weights_init is not None:
        o.weights_init = vector(o.weights_init)
    o.means_init, o.init = matrix(o.means_init), matrix(o.init)
    p = o.precisions_init
    if p is not None and ct == "spherical":
        o.precisions_init = vector(p)
    elif p is not None and ct == "diag":
        o.precisions_init = matrix(p)
    elif p is not None and ct == "full" and p.ndim == 2 and p.shape[0] % p.shape[1] == 0:
        o.precisions_init = p.reshape(-1, p.shape[1], p.shape[1])
    # K: the first axis, where the covariance type's shape has one of that many dimensions
    ndim = {"means_init": 2, "weights_init": 1, "init": 2,
            "precisions_init": {"full": 3, "tied": None, "diag": 2, "spherical": 1}[ct]}
    given = [(name, a.shape, a.shape[0]) for name in INIT_OPTIONS if name in ndim
             and isinstance(a := getattr(o, name), np.ndarray) and a.ndim == ndim[name]]
    for (first, shape, k), (name, other, n) in itertools.pairwise(given):
        if n != k:
            raise UsageError(f"daskgmm fit: {flag(name)} holds {n} component(s) (shape {other}) but {flag(first)} "
                             f"holds {k} (shape {shape})")
    if given:
        name, shape, k = given[0]
        if o.n_components is None:
            o.n_components = k
        elif o.n_components != k:
            raise UsageError(f"daskgmm fit: {flag(name)} holds {k} component(s) (shape {shape}) but "
                             f"--n-components is {o.n_components}; give the same K, or leave --n-components out "
                             "(it defaults to the K of the starting values)")
    if est == "kmeans" and isinstance(o.init, np.ndarray) and o.n_init not in (None, 1):
        raise UsageError(f"daskgmm fit: --n-init {o.n_init}: an --init array is the one start of --estimator "
                         "kmeans (scikit-learn's KMeans runs it once, with a warning); leave --n-init out")


#: The estimator classes whose constructor parameters the numeric options of ``fit`` set, by ``--estimator``.
ESTIMATOR_MODULES = {"gaussian": "daskgmm.mixture", "bayesian": "daskgmm.bayesian",
                     "student": "daskgmm.studentt_mixture", "kmeans": "daskgmm.kmeans", "kmedoids": "daskgmm.kmedoids"}


def _option_estimators(o) -> list:
    """The estimators ``o``'s numeric options become parameters of: ``fit``'s, ``select``'s candidates, and
    ``update``'s online EM (a KMeans model refuses its options, :func:`daskgmm.cli.fit.check_update_options`)."""
    import importlib

    if o.command == FIT:
        kinds = [o.estimator]
    elif o.command == SELECT:
        kinds = [k for k in ("gaussian", "bayesian") if k in o.kinds]
    elif o.command == UPDATE:
        kinds = ["gaussian"]
    else:
        return []
    return [getattr(importlib.import_module(ESTIMATOR_MODULES[k]), ESTIMATOR_CLASSES[k]) for k in kinds]


def check_estimator_numbers(o) -> None:
    """Check the numeric options that are estimator parameters (``--tol``, ``--reg-covar``, ``--max-iter``,
    ``--n-init``, ``--n-components``, the priors, ``--df``, the learning rate) against the estimator's own
    constraints before any cluster starts: a refusal is scikit-learn's sentence (the estimator's, as a Python
    user gets it) followed by the flag as typed and its value, exit 2 (the sentence alone named ``'tol'``, not
    ``--tol``, and came after the cluster had started and the data were read). ``--n-components`` is
    ``n_clusters`` of KMeans and KMedoids."""
    estimators = _option_estimators(o)
    if not estimators:
        return  # (info, predict, ...: nothing of scikit-learn imported, see test_model_files)
    from daskgmm.validation.params import InvalidParameterError, validate_params

    numeric = [opt.dest for opt in options_for(o.command) if opt.kind in ("int", "float")]
    for cls in estimators:
        constraints = cls._parameter_constraints
        for key in numeric:
            value = getattr(o, key, None)
            name = "n_clusters" if key == "n_components" and "n_clusters" in constraints else key
            if value is None or name not in constraints:
                continue
            probe = type(cls.__name__, (), {"_parameter_constraints": {name: constraints[name]}, name: value})
            try:
                validate_params(probe())
            except InvalidParameterError as exc:
                raise UsageError(f"{exc} daskgmm {o.command}: {flag(key)} was {value}") from None


def require(o):
    """Refuse a resolved command line that cannot run: a missing required value, a bad number or combination."""
    need = {FIT: ["data", "model_out"], PREDICT: ["data", "model", "out"], SCORE: ["data", "model"],
            SAMPLE: ["model", "n", "out"], INFO: ["model"], SELECT: ["data", "out"],
            UPDATE: ["data", "model", "model_out"], SHOW_CONFIG: [], EXPORT: ["model", "out"]}[o.command]
    for key in need:
        if getattr(o, key) in (None, [], ""):
            name = "DATA" if key == "data" else flag(key)
            raise UsageError(f"daskgmm {o.command}: {name} is required (or '{key}' in the config)")
    for key in ("n", "chunk_rows", "n_workers", "threads_per_worker", "passes", "n_features"):
        v = getattr(o, key, None)
        if v is not None and v < 1:
            raise UsageError(f"daskgmm {o.command}: {flag(key)} must be at least 1, got {v}")
    check_estimator_numbers(o)
    if o.command == SELECT:
        if o.k_min < 1 or o.k_max < o.k_min:
            raise UsageError(f"daskgmm select: need 1 <= --k-min <= --k-max, got {o.k_min} and {o.k_max}")
        bad = [t for t in o.covariance_types if t not in COVARIANCE_TYPES]
        if bad:
            raise UsageError(f"daskgmm select: unknown covariance type(s) {', '.join(bad)} "
                             f"(choose among {', '.join(COVARIANCE_TYPES)})")
        bad = [k for k in o.kinds if k not in ("gaussian", "bayesian")]
        if bad or not o.kinds:
            raise UsageError(f"daskgmm select: unknown candidate kind(s) {', '.join(bad) or '(none given)'} "
                             "(--kinds takes gaussian, bayesian or both)")
        types = list(dict.fromkeys(o.covariance_types))
        # as select_model's bayesian_params; without the bayesian kind the prior is refused below, as any prior
        if o.covariance_prior is not None and "bayesian" in o.kinds and len(types) != 1:
            raise UsageError(f"daskgmm select: --covariance-prior has the shape of one covariance type (a D x D "
                             "matrix for full and tied, one number per column for diag, one number for "
                             f"spherical), and --covariance-types {','.join(types)} tries {len(types)}: give one "
                             "type with it, or leave it out (the default is the data's covariance)")
    _require_estimator_options(o)
    _require_sparse(o)
    if o.command == FIT:
        require_predictions_out(o)
    _require_id_column_apart(o)
    if getattr(o, "plot", None):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'daskgmm[plot]'") from None
    if getattr(o, "resume", False) and not getattr(o, "checkpoint_dir", None):
        raise UsageError(f"daskgmm {o.command}: --resume needs --checkpoint-dir")
    if getattr(o, "scheduler", None):
        check_scheduler_address(o.command, o.scheduler)
    if getattr(o, "dashboard_address", None):
        check_dashboard_address(o.command, o.dashboard_address)
    if not getattr(o, "scheduler", None) and getattr(o, "memory_limit", "auto") not in (None, "auto"):
        check_memory_limit(o.memory_limit)
    tls = [getattr(o, k, None) for k in ("tls_ca", "tls_cert", "tls_key")]
    if any(tls) and not getattr(o, "scheduler", None):
        raise UsageError(f"daskgmm {o.command}: --tls-* options need --scheduler tls://HOST:PORT")
    outs = [p for p in (getattr(o, "model_out", None), getattr(o, "predictions_out", None)) if p]
    if len(outs) == 2 and overlap(*outs):
        raise UsageError(f"daskgmm {o.command}: --model-out and --predictions-out must be separate directories")
    if len(outs) == 2 and len({protocol_of(p) for p in outs}) > 1:
        raise UsageError(f"daskgmm {o.command}: --model-out and --predictions-out must be on the same filesystem "
                         f"(they are committed together), got {outs[0]} and {outs[1]}")
    check_filesystems(o)
    check_outputs_apart_from_inputs(o)
    check_files_apart_from_directory_outputs(o)


def check_files_apart_from_directory_outputs(o):
    """Refuse (:class:`UsageError`) a file output or ``--checkpoint-dir`` inside a directory output: see
    :func:`inside_directory_output`."""
    for key in FILE_OUTPUTS + ("checkpoint_dir",):
        problem = inside_directory_output(o, key)
        if problem:
            raise UsageError(problem)


def inside_directory_output(o, key: str) -> str | None:
    """Why ``key`` (``plot``, ``metrics_out``, ``checkpoint_dir``) may not be written where it is, or None: at or
    inside a directory output, which the commit replaces whole and a failed job leaves as it was, its error
    metrics or a checkpoint would be written into the previous output (and a checkpoint go aside with it at
    the commit). The command also asks this before it writes a failed job's error metrics."""
    inner = getattr(o, key, None)
    for outer_key in DIRECTORY_OUTPUTS:
        outer = getattr(o, outer_key, None)
        if inner and outer and holds(place_of(outer), place_of(inner)):
            return (f"daskgmm {o.command}: {flag(key)} {inner} is inside {flag(outer_key)} {outer}, which the job "
                    "replaces whole (a failed job leaves it as it was): give a path apart from it")
    return None


#: Outputs a job replaces as a whole (a directory, or a file), by option.
DIRECTORY_OUTPUTS = ("model_out", "predictions_out", "out")
FILE_OUTPUTS = ("plot", "metrics_out")


def check_outputs_apart_from_inputs(o):
    """Refuse (:class:`UsageError`) an output that would replace what the job reads: see
    :func:`output_conflict`."""
    for key in DIRECTORY_OUTPUTS + FILE_OUTPUTS:
        problem = output_conflict(o, key)
        if problem:
            raise UsageError(problem)


def output_conflict(o, key: str) -> str | None:
    """Why output ``key`` (an option name) of the job ``o`` may not be written, or None.

    Committing an output replaces its directory (or file) whole, so an output at or above DATA
    deleted the data, and one at or above ``--model`` the model. An output inside a DATA directory
    is refused too (a file output there could be one of its files; the next job would read a
    Parquet output there as data), and one a DATA glob matches. ``update`` may write its model where
    it read it. An output inside the ``--model`` directory is refused too (a model directory is the
    model's own: saving the model there again would replace it whole, predictions or export included). The
    command also asks this before it writes the error metrics of a job that failed before its options
    were checked.
    """
    out = getattr(o, key, None)
    if not out:
        return None
    data = getattr(o, "data", None)
    inputs = []  # (DATA or --model, path, place, whether outputs inside it are refused, the glob)
    for path in (data if isinstance(data, list) else [data]):
        if not path:
            continue
        path = str(path)
        glob = glob_place(path)
        if glob is not None:  # a glob reads below its fixed part: refuse outputs at or above that directory
            inputs.append(("DATA", path, glob[0], False, path))
        else:
            inputs.append(("DATA", path, place_of(path), True, None))
    if getattr(o, "model", None) and not (o.command == UPDATE and key == "model_out"):
        inputs.append(("--model", str(o.model), place_of(o.model), True, None))
    where = place_of(out)
    if where[0] != "file" and where[1].count("/") == 1:
        return None  # a bare bucket: io.store refuses it as an output in its own words
    for source, path, place, inside_too, pattern in inputs:
        if (holds(where, place) or (inside_too and holds(place, where))
                or (pattern is not None and matches_glob(where, pattern))):
            relation = "is" if where == place else ("holds" if holds(where, place) else "is inside")
            return (f"daskgmm {o.command}: {flag(key)} {out} {relation} the input {source} {path}: "
                    "writing it would replace what the job reads; give an output path apart from the inputs")
    return None


def check_scheduler_address(command: str, address: str) -> None:
    """Refuse a ``--scheduler`` value that is no address (a usage error, before anything connects)."""
    from distributed.comm.addressing import get_address_host_port

    try:
        _host, port = get_address_host_port(address)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
    except ValueError as exc:
        raise UsageError(f"daskgmm {command}: --scheduler {address!r} is not a scheduler address ({exc}); "
                         "expected tcp://HOST:PORT or tls://HOST:PORT") from None


def check_dashboard_address(command: str, address: str) -> None:
    """Refuse a ``--dashboard-address`` that is not ``HOST:PORT`` (or ``:PORT``), before any cluster starts."""
    host, colon, port = str(address).rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
        raise UsageError(f"daskgmm {command}: --dashboard-address {address!r}: expected HOST:PORT or :PORT "
                         "(e.g. 127.0.0.1:8787; port 0: any free port)")


def check_memory_limit(limit) -> None:
    """Refuse an embedded cluster's ``--memory-limit`` that an idle worker already fills past the pause
    threshold: no worker would ever run a task (the job failed after the stall bounds, 30-50 s)."""
    from dask.utils import format_bytes, parse_bytes

    from daskgmm.engine.cluster import MIN_IDLE_WORKER_BYTES, pause_fraction, paused_from_the_start

    size = parse_bytes(limit) if isinstance(limit, str) else int(limit)
    if paused_from_the_start(size, MIN_IDLE_WORKER_BYTES):
        raise UsageError(f"--memory-limit {limit} per worker is too small: an idle worker takes at least "
                         f"{format_bytes(MIN_IDLE_WORKER_BYTES)}, and distributed pauses a worker at "
                         f"{pause_fraction():.0%} of "
                         "its limit; a worker decoding Parquet takes about 165 MiB: give 300MiB or more")


#: Options that name paths (besides DATA), whose filesystems must be usable before any cluster starts.
PATH_OPTIONS = ("model", "model_out", "predictions_out", "out", "checkpoint_dir", "plot", "metrics_out")


def check_filesystems(o):
    """Refuse a URL whose filesystem cannot be used here (``s3://`` without s3fs), before any cluster starts."""
    import fsspec

    data = getattr(o, "data", None)
    paths = [("DATA", p) for p in (data if isinstance(data, list) else [data]) if p]
    paths += [(flag(k), getattr(o, k)) for k in PATH_OPTIONS if getattr(o, k, None)]
    for name, path in paths:
        protocol = protocol_of(path)
        if protocol == "file":
            continue
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as exc:
            hint = " (pip install 'daskgmm[s3]')" if protocol in ("s3", "s3a") else ""
            raise UsageError(f"daskgmm {o.command}: {name} {path}: {exc}{hint}") from None
        if protocol in ("s3", "s3a"):
            _check_s3_options(o)


def _check_s3_options(o):
    """An unknown key of ``--storage-options`` for an ``s3://`` path is bad usage, named with the key meant:
    s3fs hands it to botocore's session, which refused it only at the job's first request, with a bare
    TypeError, exit 1."""
    import difflib

    from daskgmm.io.files import s3_option_names

    known = s3_option_names()
    unknown = sorted(k for k in (getattr(o, "storage_options", None) or {}) if k not in known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        meant = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"daskgmm {o.command}: --storage-options: unknown option {unknown[0]!r} for s3://{meant}; "
                         f"s3fs takes {', '.join(sorted(known))}")


#: Options of the Student-t mixture only (``fit --estimator student``), with their defaults.
STUDENT_OPTIONS = (("df", None), ("fixed_df", False))

#: Options of the variational mixture only (``fit --estimator bayesian``, ``select --kinds bayesian``).
PRIOR_OPTIONS = PRIOR_PARAMETERS


#: Options of the mixtures with their defaults: given to ``fit --estimator kmeans|kmedoids`` they are an error
#: (``tol`` and ``n_init`` are KMeans' too).
MIXTURE_DEFAULTS = (("covariance_type", "full"), ("tol", 1e-3), ("n_init", 1), ("init_params", "kmeans"),
                    ("reg_covar", 1e-6), ("assignment", "soft"), ("on_collapse", "raise"), ("proba", False),
                    ("loglik", False))

#: The options of ``fit --estimator kmeans`` and ``kmedoids`` only, with their defaults; and what each takes
#: (for the message refusing a mixture's option).
CLUSTER_OPTIONS = {
    "kmeans": ((("algorithm", "lloyd"),),
               "--n-components, --init, --n-init, --max-iter, --tol, --algorithm, --seed, --distance"),
    "kmedoids": ((("metric", "euclidean"), ("method", "alternate")),
                 "--n-components, --init, --metric, --method, --max-iter, --seed, --distance"),
}


def _require_cluster_options(o):
    """``fit --estimator kmeans|kmedoids`` take their own options and --distance, and no option of the mixtures."""
    if o.command != FIT:
        return
    for name, (own, _) in CLUSTER_OPTIONS.items():
        given = [f"{flag(k)} {getattr(o, k)}" for k, default in own if getattr(o, k) != default]
        if given and o.estimator != name:
            raise UsageError(f"daskgmm fit: {', '.join(given)} is an option of --estimator {name}")
    if o.estimator not in CLUSTER_OPTIONS:
        if o.distance:
            raise UsageError("daskgmm fit: --distance is an option of --estimator kmeans and --estimator kmedoids")
        return
    takes = CLUSTER_OPTIONS[o.estimator][1]
    shared = ("tol", "n_init") if o.estimator == "kmeans" else ()
    given = [flag(k) for k, default in MIXTURE_DEFAULTS
             if k not in shared and getattr(o, k) != default]
    given += [flag(k) for k in PRIOR_OPTIONS if getattr(o, k, None) is not None
              and not (k == "weight_concentration_prior_type" and getattr(o, k) == "dirichlet_process")]
    if given:
        raise UsageError(f"daskgmm fit: {', '.join(given)}: option(s) of the mixtures, not of --estimator "
                         f"{o.estimator} (which takes {takes})")
    if o.nan_policy == "marginalize":
        why = ("k-means has no likelihood to marginalise" if o.estimator == "kmeans"
               else "a dissimilarity needs every coordinate")
        raise UsageError(f"daskgmm fit: --estimator {o.estimator} does not marginalise missing values ({why}); "
                         "use --nan-policy omit to leave incomplete rows out")
    if o.plot:
        raise UsageError("daskgmm fit: --plot draws a mixture's components; not available with --estimator "
                         f"{o.estimator}")
    if o.estimator == "kmeans" and o.checkpoint_dir:
        raise UsageError("daskgmm fit: --checkpoint-dir: a fit of --estimator kmeans keeps no checkpoint (its "
                         "iterations are not saved); run it without --checkpoint-dir and --resume")


def _require_sparse(o):
    """``--sparse`` is ``fit --estimator kmeans``'s (whose passes keep rows sparse; a saved model's kind is
    checked with its files), and ``--n-features`` the width of sparse rows."""
    sparse = getattr(o, "sparse", None)
    if o.command == FIT and sparse and o.estimator != "kmeans":
        raise UsageError(f"daskgmm fit: --sparse: only --estimator kmeans takes sparse rows (its distances keep "
                         f"them sparse); --estimator {o.estimator} ({ESTIMATOR_CLASSES[o.estimator]}) needs dense "
                         "rows: leave --sparse out")
    if getattr(o, "n_features", None) is not None and not sparse:
        raise UsageError(f"daskgmm {o.command}: --n-features is the width of sparse rows: it needs --sparse")


def require_predictions_out(o):
    """``--proba``, ``--loglik`` and ``--distance`` are columns of ``--predictions-out``: without it, exit 2
    rather than ignore them. (``update`` asks after the model's own refusals, which name the model.)"""
    given = [flag(k) for k in ("proba", "loglik", "distance") if getattr(o, k, False)]
    if given and not getattr(o, "predictions_out", None):
        raise UsageError(f"daskgmm {o.command}: {', '.join(given)} needs --predictions-out DIR (the column(s) of "
                         "the predictions it writes)")


def _require_id_column_apart(o):
    """An --id-column named twice, or named like a column the predictions write (which would lose the ids
    under it): exit 2, naming the column."""
    names = getattr(o, "id_column", None) or []
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise UsageError(f"daskgmm {o.command}: --id-column lists {', '.join(map(repr, dup))} more than once")
    writes = o.command == PREDICT or (o.command in (FIT, UPDATE) and getattr(o, "predictions_out", None))
    if not writes:
        return
    for c in names:
        taken = (c == "label" or (c == "distance" and o.distance) or (c == "loglik" and o.loglik)
                 or (o.proba and re.fullmatch(r"proba_[0-9]+", c)))
        if taken:
            raise UsageError(f"daskgmm {o.command}: --id-column {c} is the name of a column the predictions "
                             "write (label, proba_k, loglik, distance); rename the id column in the data")


def _require_estimator_options(o):
    """Refuse an option of one estimator given to another, and what the variational and t mixtures cannot do."""
    _require_cluster_options(o)
    if o.command == FIT:
        _require_student_options(o)
        bayesian, where = o.estimator == "bayesian", "--estimator bayesian"
    elif o.command == SELECT:
        bayesian, where = "bayesian" in o.kinds, "--kinds with bayesian"
        if "gaussian" not in o.kinds and o.on_collapse != "raise":
            raise UsageError(f"daskgmm select: --on-collapse {o.on_collapse} is an option of the gaussian "
                             "candidates (EM), and --kinds has none")
    else:
        return
    given = [name for name in PRIOR_OPTIONS if hasattr(o, name) and getattr(o, name) is not None
             and not (name == "weight_concentration_prior_type" and o.weight_concentration_prior_type
                      == "dirichlet_process")]
    if given and not bayesian:
        flags = ", ".join(flag(g) for g in given)
        raise UsageError(f"daskgmm {o.command}: {flags}: prior(s) of the variational mixture, which need "
                         f"{where}")
    if o.command == FIT and bayesian:
        _refuse_em_options(o)


def _require_student_options(o):
    """``fit``: --df and --fixed-df need --estimator student, which has no EM variants."""
    student = o.estimator == "student"
    given = [flag(k) for k, default in STUDENT_OPTIONS if getattr(o, k) != default]
    if given and not student:
        raise UsageError(f"daskgmm fit: {', '.join(given)}: option(s) of the Student-t mixture, which need "
                         "--estimator student")
    if student:
        _refuse_em_options(o)


#: ``fit``'s options of the Gaussian mixture's EM only, with their defaults.
EM_OPTIONS = (("assignment", "soft"), ("on_collapse", "raise"))


def _refuse_em_options(o):
    """``fit`` of a mixture that is not fitted by EM (the variational and t mixtures): exit 2 naming
    the EM options given."""
    em_only = [f"{flag(k)} {getattr(o, k)}" for k, default in EM_OPTIONS if getattr(o, k) != default]
    if em_only:
        raise UsageError(f"daskgmm fit: {', '.join(em_only)} is an option of --estimator gaussian (EM)")


def overlap(a, b) -> bool:
    """Whether directories ``a`` and ``b`` are the same or one holds the other."""
    a, b = os.path.abspath(a), os.path.abspath(b)
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)
