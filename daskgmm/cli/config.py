"""Options of the ``daskgmm`` command, and YAML configs holding the same keys.

Every option is declared once here (flag, type, default, which subcommands
take it); the parser and the config loader are both built from this table, so a
config key is exactly a long flag with underscores for dashes. Unknown keys and
values of the wrong type are errors naming the file and the key.
"""

from __future__ import annotations

import errno
import io
import json
import os
from dataclasses import dataclass

import numpy as np
import yaml

from daskgmm.kernels.covariance import COVARIANCE_TYPES
from daskgmm.kernels.medoids import METRICS, REFUSED_METRICS
from daskgmm.models.priors import PRIOR_TYPES


class ConfigError(ValueError):
    """A config file or option value is invalid (the command exits with status 2)."""


def flag(name: str) -> str:
    """The long flag of option ``name`` (a config key): ``--`` and dashes for underscores."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Opt:
    dest: str
    kind: str  # int, float, str, bool, list, choice, size, array, mapping, start (a name among choices or an array)
    default: object
    help: str
    commands: tuple
    choices: tuple = ()
    short: str | None = None
    metavar: str | None = None
    #: the option changes what the job computes: it is part of the job's checkpoint fingerprint
    result: bool = False
    #: an array option's most dimensions (``precisions_init`` of full covariances: 3)
    max_ndim: int = 2
    #: values a choice option refuses, each with the reason its error says (value, reason) (not among
    #: ``choices``; a flag's is argparse's error, :func:`daskgmm.cli.args.build_parser`, a config's is
    #: :func:`coerce`'s)
    refused: tuple = ()

    @property
    def flag(self) -> str:
        return flag(self.dest)


FIT, PREDICT, SCORE, SAMPLE, INFO, SELECT = "fit", "predict", "score", "sample", "info", "select"
UPDATE = "update"
SHOW_CONFIG = "show-config"
EXPORT = "export"
_CLUSTER = (FIT, PREDICT, SCORE, SAMPLE, SELECT, UPDATE)
_DATA = (FIT, PREDICT, SCORE, SELECT, UPDATE)

#: The named starts of ``fit --init``, by estimator: KMeans' and KMedoids' (``daskgmm.kmeans.INITS``,
#: ``daskgmm.fitting.kmedoids.INITS``; written out here, as this table imports no estimator), the default first.
NAMED_STARTS = {"kmeans": ("k-means||", "k-means++", "random"),
                "kmedoids": ("k-medoids++", "random", "heuristic", "build")}

#: File types an array option (``--mean-prior``, ``--means-init``, ...) may name instead of numbers, told by
#: the ending of the name, and the same in words.
ARRAY_FILES = (".npy", ".json", ".csv")
_ARRAY_FILE_TYPES = f"{', '.join(ARRAY_FILES[:-1])} or {ARRAY_FILES[-1]}"

#: How an array option is given, for the help and the messages.
_ARRAY_FORMS = f"numbers, rows separated by ';', or a {_ARRAY_FILE_TYPES} file"

OPTIONS = [
    # data
    Opt("columns", "list", None, "feature columns, comma-separated (default: all the files' columns but the "
        "id column; a numeric partition key of the paths, hour=3/, may be named); with --sparse, the column of "
        "Spark ML vectors or the INDICES,VALUES list columns the sparse rows are read from", _DATA,
        metavar="A,B,..."),
    # sparse: None by default, which a checkpoint written before the option matches (daskgmm.io.modelfiles)
    Opt("sparse", "bool", None, "read DATA as sparse rows, never made dense (--estimator kmeans, or a KMeans "
        "model): from one column of Spark ML vectors (--columns features: HashingTF's or a wide "
        "VectorAssembler's output) or from two list columns of the non-zeros' indices and values (--columns "
        "INDICES,VALUES; default indices,values, daskgmm's sparse layout); a model fitted so needs it, and "
        "reads the columns it was fitted on by default", (FIT, PREDICT, SCORE, UPDATE), result=True),
    Opt("n_features", "int", None, "the width of the sparse rows (--sparse) read from list columns whose files "
        "do not store it (daskgmm's layout stores it, a vector carries its size), e.g. Spark's arrays of "
        "indices and values: every index below N", (FIT,), metavar="N", result=True),
    Opt("id_column", "list", None, "column(s) carried into the predictions, comma-separated, each in its own "
        "type and in this order before the model's columns, to join them back (never features; a partition key "
        "of the paths, day=2026-12-01/, may be named)",
        (FIT, PREDICT, SELECT, UPDATE),
        metavar="COL[,COL...]"),
    Opt("dtype", "choice", "float64", "float type for the computation", (FIT, SELECT), choices=("float64", "float32"),
        result=True),
    Opt("dtype", "choice", None, "float type: DATA is read in the model's (default; another is an error)",
        (PREDICT, SCORE, UPDATE), choices=("float64", "float32"), result=True),
    Opt("nan_policy", "choice", "raise", "rows with NaN/null/inf: fail naming them, drop them, or keep NaN/null "
        "as missing values that the mixture marginalises (inf still fails)", (FIT, SELECT),
        choices=("raise", "omit", "marginalize"), result=True),
    # update: the model's policy by default, as partial_fit of the loaded model in Python
    Opt("nan_policy", "choice", None, "rows with NaN/null/inf: fail naming them, drop them, or keep NaN/null "
        "as missing values that the mixture marginalises (inf still fails); default: marginalize for a model "
        "fitted so, else raise", (UPDATE,), choices=("raise", "omit", "marginalize"), result=True),
    Opt("nan_policy", "choice", None, "rows with NaN/null/inf: fail naming them, drop them, or keep NaN/null "
        "as missing values that the mixture marginalises (inf still fails); default: marginalize for a model "
        "fitted so, else raise", (PREDICT, SCORE), choices=("raise", "omit", "marginalize")),
    Opt("chunk_rows", "int", None, "rows per chunk: smaller row groups are merged, larger ones cut into row slices "
        "(default: sized from the workers' memory limit)", _DATA,
        metavar="N", result=True),
    Opt("chunk_rows", "int", None, "rows per part file written (default 1000000); one part is in memory at a time",
        (SAMPLE,), metavar="N"),
    Opt("cache", "choice", "auto", "keep data in cluster memory across passes, or re-read every pass",
        (FIT, SELECT), choices=("auto", "memory", "none")),
    Opt("cache", "choice", "auto", "keep data in cluster memory across the steps and the predictions, or re-read "
        "it for each", (UPDATE,), choices=("auto", "memory", "none")),
    # model
    Opt("n_components", "int", None, "number of mixture components K (default 1); --estimator kmeans or kmedoids: "
        "of clusters (default 8, as scikit-learn's KMeans)", (FIT,), metavar="K", result=True),
    Opt("covariance_type", "choice", "full", "covariance shape", (FIT,),
        choices=COVARIANCE_TYPES, result=True),
    Opt("max_iter", "int", 100, "maximum iterations (EM, variational updates, or k-means' and k-medoids' "
        "passes)", (FIT, SELECT), metavar="N",
        result=True),
    # fit's n_components, tol and n_init: None here, the estimator's default once resolved
    # (daskgmm.cli.args.ESTIMATOR_DEFAULTS)
    Opt("tol", "float", None, "stop when the lower bound (EM: the mean log-likelihood) changes by less (default "
        "1e-3); --estimator kmeans: when the summed squared shift of the centres is at most T times the mean "
        "feature variance (default 1e-4, scikit-learn's)", (FIT,), metavar="T", result=True),
    Opt("tol", "float", 1e-3, "stop when the lower bound (EM: the mean log-likelihood) changes by less",
        (SELECT,), metavar="T", result=True),
    Opt("n_init", "int", None, "restarts (run in lockstep; the best is kept; default 1; --estimator kmeans: 1, "
        "or 10 with --init random, as scikit-learn's n_init='auto')", (FIT,), metavar="N", result=True),
    Opt("n_init", "int", 1, "restarts (run in lockstep; the best is kept)", (SELECT,), metavar="N", result=True),
    Opt("init_params", "choice", "kmeans", "initialisation", (FIT, SELECT),
        choices=("kmeans", "k-means++", "random", "random_from_data"), result=True),
    Opt("reg_covar", "float", 1e-6, "added to covariance diagonals", (FIT, SELECT), metavar="R", result=True),
    Opt("assignment", "choice", "soft", "soft EM, or hard (classification) EM (--estimator gaussian)", (FIT,),
        choices=("soft", "hard"), result=True),
    Opt("on_collapse", "choice", "raise", "a collapsed component: fail, or re-seed it and go on "
        "(--estimator gaussian; select: the gaussian candidates)", (FIT, SELECT), choices=("raise", "reinit"),
        result=True),
    Opt("estimator", "choice", "gaussian", "Gaussian mixture by EM, the variational BayesianGaussianMixture, "
        "the robust StudentTMixture (heavy-tailed components, by EM), KMeans (Lloyd's algorithm; --n-components "
        "is K), or KMedoids (K rows of the data as prototypes, for any --metric; --n-components is K)",
        (FIT,), choices=("gaussian", "bayesian", "student", "kmeans", "kmedoids"), result=True),
    # algorithm: not in the checkpoint fingerprint (result=False) because a kmeans fit keeps no checkpoint
    # (--checkpoint-dir is refused with it); as a new key it would make every other estimator's checkpoint
    # written before it stale. The options added since default to None, which a checkpoint without
    # them matches (daskgmm.io.modelfiles.Checkpoint), so they are in it.
    Opt("init", "start", None, "the start of --estimator kmeans: k-means|| (the default: k-means++ and Lloyd's "
        "algorithm on the first scan's sample, no pass of its own), k-means++ (K + 1 passes) or random "
        "(K distinct rows); of --estimator kmedoids: k-medoids++ (the default), random, heuristic or build; "
        "or, for either, the K starting centres (medoids: the rows nearest to them), K rows of D numbers "
        "(" + _ARRAY_FORMS + "; K is then their number of rows)", (FIT,),
        choices=tuple(dict.fromkeys(n for names in NAMED_STARTS.values() for n in names)), metavar="NAME|ARRAY",
        result=True),
    Opt("algorithm", "choice", "lloyd", "k-means passes (--estimator kmeans): lloyd, or elkan (the same result, "
        "bit for bit: every row keeps a bound between passes and skips the distances that cannot change its "
        "label; faster with many clusters; one restart)", (FIT,), choices=("lloyd", "elkan")),
    # METRICS keeps the refused names for model files saved before the refusal; a job may not fit with them
    Opt("metric", "choice", "euclidean", "dissimilarity (--estimator kmedoids): any name of "
        f"sklearn.metrics.pairwise_distances but {', '.join(REFUSED_METRICS)}", (FIT,),
        choices=tuple(m for m in METRICS if m not in REFUSED_METRICS), metavar="NAME", result=True,
        refused=tuple((m, f"KMedoids does not support it: {why}") for m, why in REFUSED_METRICS.items())),
    Opt("method", "choice", "alternate", "k-medoids passes (--estimator kmedoids): alternate (faster) or pam "
        "(FasterPAM's swaps, more accurate)", (FIT,), choices=("alternate", "pam"), result=True),
    Opt("df", "float", None, "degrees of freedom every component starts with (--estimator student; default 4)",
        (FIT,), metavar="NU", result=True),
    Opt("fixed_df", "bool", False, "keep the degrees of freedom at --df instead of fitting them "
        "(--estimator student)", (FIT,), result=True),
    Opt("weight_concentration_prior_type", "choice", "dirichlet_process",
        "weight prior (--estimator bayesian, select --kinds bayesian)", (FIT, SELECT),
        choices=PRIOR_TYPES, result=True),
    Opt("weight_concentration_prior", "float", None,
        "weight concentration (--estimator bayesian, select --kinds bayesian; default 1/K)", (FIT, SELECT),
        metavar="A", result=True),
    Opt("mean_precision_prior", "float", None,
        "precision of the mean prior (--estimator bayesian, select --kinds bayesian; default 1)", (FIT, SELECT),
        metavar="B", result=True),
    Opt("degrees_of_freedom_prior", "float", None, "Wishart degrees of freedom (--estimator bayesian, "
        "select --kinds bayesian; default D, the number of columns)", (FIT, SELECT), metavar="NU", result=True),
    Opt("mean_prior", "array", None, "mean of the mean prior: one number per feature column, comma-separated, "
        "or a .npy/.json/.csv file (--estimator bayesian, select --kinds bayesian; default: the data's mean)",
        (FIT, SELECT), metavar="M,M,..|FILE", result=True),
    Opt("weights_init", "array", None, "the K starting weights, summing to 1 (--estimator gaussian; "
        + _ARRAY_FORMS + ")", (FIT,), metavar="W,W,..|FILE", result=True),
    Opt("means_init", "array", None, "the K starting means, K rows of D numbers (--estimator gaussian; "
        + _ARRAY_FORMS + ")", (FIT,), metavar="M,M,..;M,M,..|FILE", result=True),
    Opt("precisions_init", "array", None, "the starting precisions (inverse covariances) in the covariance "
        "type's shape: K D x D matrices (full; in a .csv or a list of rows, stacked: K*D rows of D), one "
        "D x D matrix (tied), K rows of D numbers (diag) or K numbers (spherical) (--estimator gaussian; "
        + _ARRAY_FORMS + ")", (FIT,), metavar="P,P,..;..|FILE", result=True, max_ndim=3),
    Opt("init_spark", "str", None, "a Spark ML model directory as the start (pyspark's model.save: local or an "
        "fsspec URL): a GaussianMixtureModel's weights, means and precisions (--estimator gaussian; for "
        "--covariance-type diag, spherical or tied those of its covariances' diagonals, mean variances or "
        "weighted mean) or a KMeansModel's centres (--estimator kmeans); --n-components defaults to its K",
        (FIT,), metavar="DIR", result=True),
    Opt("update_params", "str", None, "the parameters EM updates, of w (weights), m (means) and c "
        "(covariances), e.g. wc to hold the means at --means-init (default wmc, all; --estimator gaussian)",
        (FIT,), metavar="wmc", result=True),
    Opt("covariance_prior", "array", None, "covariance prior: one number (spherical), one per column (diag), "
        "or the D x D matrix (full, tied) row by row, rows optionally separated by ';'; or a .npy/.json/.csv file "
        "(--estimator bayesian, select --kinds bayesian with one of --covariance-types; default: the data's "
        "covariance)", (FIT, SELECT), metavar="C,C,..|FILE", result=True),
    Opt("seed", "int", None, "random seed (initialisation, sampling)", (FIT, SAMPLE, SELECT), metavar="S", result=True),
    # outputs
    Opt("model_out", "str", None, "directory to write the fitted model to (required)", (FIT, UPDATE),
        metavar="DIR"),
    Opt("predictions_out", "str", None, "also write predictions of the training data here", (FIT, UPDATE),
        metavar="DIR"),
    Opt("proba", "bool", False, "write proba_0..proba_{K-1} with the predictions", (FIT, PREDICT, UPDATE)),
    Opt("loglik", "bool", False, "write each row's log-likelihood with the predictions", (FIT, PREDICT, UPDATE)),
    Opt("distance", "bool", False, "write each row's distance to its centre with the predictions (a KMeans "
        "model: the Euclidean distance; a KMedoids model: the dissimilarity to its medoid)", (FIT, PREDICT, UPDATE)),
    Opt("checkpoint_dir", "str", None, "save progress here after every iteration (fit, select) or step (update)",
        (FIT, SELECT, UPDATE), metavar="DIR"),
    Opt("resume", "bool", False, "continue from the checkpoint in --checkpoint-dir if there is one",
        (FIT, SELECT, UPDATE)),
    Opt("metrics_out", "str", None, "write a JSON summary (also on failure) for schedulers",
        (FIT, PREDICT, SCORE, SAMPLE, SELECT, UPDATE), metavar="FILE"),
    Opt("plot", "str", None, "write a PNG picture of the fit, or of the candidates (select); needs matplotlib: "
        "pip install daskgmm[plot]",
        (FIT, SELECT), metavar="FILE.png"),
    # info shows no progress; it takes --quiet too, so that a job's commands can all be given it
    Opt("quiet", "bool", False, "no progress on stderr (warnings still)",
        (FIT, PREDICT, SCORE, SAMPLE, SELECT, UPDATE, EXPORT, INFO)),
    # predict / score / sample / info / update / export
    Opt("model", "str", None, "directory of a saved model (required)",
        (PREDICT, SCORE, SAMPLE, INFO, UPDATE, EXPORT), metavar="DIR"),
    Opt("out", "str", None, "output directory (required)", (PREDICT, SAMPLE, SELECT), metavar="DIR"),
    Opt("out", "str", None, "the Spark ML model directory to write (required), which "
        "pyspark.ml.clustering.GaussianMixtureModel.load or KMeansModel.load reads", (EXPORT,), metavar="DIR"),
    Opt("n", "int", None, "number of rows to draw (required)", (SAMPLE,), short="-n", metavar="N"),
    Opt("json", "bool", False, "print the model's JSON metadata", (INFO,)),
    # select
    Opt("k_min", "int", 1, "smallest number of components to try", (SELECT,), metavar="K", result=True),
    Opt("k_max", "int", 10, "largest number of components to try", (SELECT,), metavar="K", result=True),
    Opt("covariance_types", "list", ["full", "diag"], "covariance types to try, comma-separated", (SELECT,),
        metavar="T,T", result=True),
    Opt("criterion", "choice", "bic", "what picks the best model (lower is better)", (SELECT,),
        choices=("bic", "aic")),
    Opt("kinds", "list", ["gaussian"], "candidate kinds, comma-separated: gaussian (EM), bayesian (the variational "
        "mixture, its BIC/AIC from its effective components); all in the same passes", (SELECT,),
        metavar="KIND,KIND", result=True),
    # update
    Opt("passes", "int", 1, "online EM steps over DATA (each one pass, one batch of the model's count)",
        (UPDATE,), metavar="N", result=True),
    Opt("learning_decay", "float", None, "decay of the step sizes eta_t = (t + offset) ** -decay, in (0.5, 1] "
        "(default: the model's, 0.7 unless set)", (UPDATE,), metavar="A", result=True),
    Opt("learning_offset", "float", None, "offset t0 of the step sizes (default: the model's, 10 unless set)",
        (UPDATE,), metavar="T0", result=True),
    # storage
    Opt("storage_options", "mapping", None, "fsspec options for every path of the job (DATA, models, outputs, "
        "checkpoints, plot, metrics), in this process and on every worker, as a JSON object, e.g. "
        "'{\"endpoint_url\": \"https://minio.internal:9000\"}' or '{\"profile\": \"etl\"}' for s3:// "
        "(s3fs's options; without them the standard AWS variables and profiles apply); needs "
        "pip install 'daskgmm[s3]'. Outputs on S3 are locked by conditional writes; on other object stores "
        "they are committed the same way but not locked",
        (FIT, PREDICT, SCORE, SAMPLE, INFO, SELECT, UPDATE, EXPORT), metavar="JSON"),
    # cluster
    Opt("scheduler", "str", None, "address of a running Dask scheduler (default: an embedded LocalCluster "
        "on 127.0.0.1)", _CLUSTER, metavar="ADDRESS"),
    Opt("tls_ca", "str", None, "CA certificate for a tls:// scheduler", _CLUSTER, metavar="FILE"),
    Opt("tls_cert", "str", None, "client certificate for a tls:// scheduler", _CLUSTER, metavar="FILE"),
    Opt("tls_key", "str", None, "client key for a tls:// scheduler", _CLUSTER, metavar="FILE"),
    Opt("n_workers", "int", None, "LocalCluster workers (default: one process per core, at most 4; one with "
        "--no-processes)", _CLUSTER, metavar="N"),
    Opt("threads_per_worker", "int", None, "LocalCluster threads per worker", _CLUSTER, metavar="T"),
    Opt("processes", "bool", True, "LocalCluster workers in processes of their own (the default); "
        "--no-processes: threads "
        "in the command's process, started at once (no worker process to start and import into: a small "
        "job's seconds), for small jobs: tasks that hold the GIL then wait on each other, and "
        "--memory-limit bounds the whole process", _CLUSTER),
    Opt("memory_limit", "size", "auto", "LocalCluster memory limit per worker (e.g. 2GiB)", _CLUSTER,
        metavar="SIZE"),
    Opt("dashboard_address", "str", "127.0.0.1:0", "where the embedded LocalCluster serves its Dask dashboard "
        "(HOST:PORT; port 0: any free one; the address is printed)", _CLUSTER, metavar="HOST:PORT"),
]


#: Keys a config may hold besides options: the positional DATA argument.
POSITIONAL_KEYS = {"data"}


def options_for(command: str) -> list[Opt]:
    return [o for o in OPTIONS if command in o.commands]


def _type_name(kind) -> str:
    return {
        "int": "an integer", "float": "a number", "bool": "true or false",
        "list": "a list or a comma-separated string", "str": "a string", "choice": "one of",
        "size": "a size such as 2GiB, 500MB or auto",
        "mapping": "a mapping (in a config) or a JSON object (on the command line)",
    }[kind]


def _numbers(value):
    """Nested lists of numbers (or numeric strings: YAML reads ``1e-3`` as one) to float64."""
    def num(v):
        try:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise ValueError
            return float(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a number") from None

    def shape(v):
        if not isinstance(v, list):
            return ()
        inner = {shape(x) for x in v}
        if len(inner) > 1:
            raise ValueError("the rows of a matrix must be lists of the same length")
        return (len(v), *next(iter(inner), ()))

    def floats(v):
        return [floats(x) for x in v] if isinstance(v, list) else num(v)

    rows = floats(value)
    shape(rows)
    out = np.asarray(rows, dtype=np.float64)
    if out.size == 0:
        raise ValueError("no numbers")
    return out


class NotAnArray(ValueError):
    """A string that is neither numbers nor an array file's name (``--init``: perhaps a misspelt start)."""


def _array_file_type(text: str) -> str | None:
    """The type of array file (an entry of :data:`ARRAY_FILES`) that ``text`` names by its ending, or None."""
    return next((t for t in ARRAY_FILES if text.lower().endswith(t)), None)


def _read_npy(raw: bytes, max_ndim: int) -> np.ndarray:
    """A ``.npy`` file's array of numbers (no pickles), of at most ``max_ndim`` dimensions."""
    try:
        out = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError) as exc:  # not a .npy file, an object array, or nothing in it
        raise ValueError(f"not a readable .npy array of numbers ({exc})") from None
    if not isinstance(out, np.ndarray) or out.dtype.kind not in "iuf" or out.ndim > max_ndim:
        dims = ", ".join(f"{n}-" for n in range(max_ndim)) + f" or {max_ndim}-d"
        raise ValueError(f"expected a {dims} array of numbers, got "
                         f"{getattr(out, 'dtype', type(out).__name__)} of shape {np.shape(out)}")
    return out.astype(np.float64)


def _read_csv(raw: bytes, max_ndim: int) -> np.ndarray:
    """A ``.csv`` file of numbers only (no header; ``#`` starts a comment): its rows, 2-d."""
    import warnings

    try:
        # utf-8-sig: a byte order mark (Excel's "CSV UTF-8") is not part of the first number
        text = io.StringIO(raw.decode("utf-8-sig"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # NumPy's "Empty input file": said below
            out = np.loadtxt(text, delimiter=",", ndmin=2, dtype=np.float64, comments="#")
    except ValueError as exc:
        raise ValueError(f"not a .csv of numbers ({exc})") from None
    if out.size == 0:
        raise ValueError("no numbers")
    return out


def _read_json(raw: bytes, max_ndim: int) -> np.ndarray:
    """A ``.json`` file's number or nested lists of numbers."""
    try:
        doc = json.loads(raw.decode("utf-8-sig"))  # as a .csv: a byte order mark is skipped
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    return _numbers(doc)


_READERS = {".npy": _read_npy, ".csv": _read_csv, ".json": _read_json}


def _file_bytes(path: str, storage_options: dict | None) -> bytes:
    """The bytes of the file ``path``: on this machine's disk (``~`` and ``file://`` as the data's), or at a
    URL through fsspec with the job's ``storage_options`` (an array file is small: read whole, once)."""
    from daskgmm.io.files import credentials_hint, get_fs, no_credentials, place_of, unreachable, unreachable_error

    protocol, local = place_of(path)
    try:
        if protocol == "file":
            with open(local, "rb") as f:
                return f.read()
        fs = get_fs(path, storage_options)
        with fs.open(path, "rb") as f:
            return f.read()
    except ImportError as exc:  # s3:// without s3fs, as check_filesystems says of DATA's
        hint = " (pip install 'daskgmm[s3]')" if protocol in ("s3", "s3a") else ""
        raise ValueError(f"cannot read {path}: {exc}{hint}") from None
    except OSError as exc:  # a missing file or object (or bucket), one the credentials may not read
        why = exc.strerror or (os.strerror(errno.ENOENT) if isinstance(exc, FileNotFoundError) else exc)
        raise ValueError(f"cannot read {path}: {why}") from None
    except Exception as exc:
        if unreachable(exc):  # the store's endpoint, exit 1 as for the data (not a bad value)
            raise unreachable_error(exc, path) from None
        if no_credentials(exc):
            raise ValueError(f"cannot read {path}: {credentials_hint(exc)}") from None
        raise


def _read_array(path: str, max_ndim: int, storage_options: dict | None = None) -> np.ndarray:
    """The numbers in the array file ``path`` (its type told by its ending, :data:`ARRAY_FILES`), on this
    machine's disk or at an fsspec URL (``s3://bucket/means.npy``) read with ``storage_options``.

    Raises
    ------
    ValueError
        Naming the file: a name of no array file type, a file or object that cannot be read, or one
        that holds no array of numbers.
    """
    kind = _array_file_type(path)
    if kind is None:  # a URL of another ending (a local name without one is taken as numbers)
        raise ValueError(f"{path} is not a {_ARRAY_FILE_TYPES} file (an array file is read as the ending of "
                         "its name says)")
    raw = _file_bytes(path, storage_options)
    try:
        return _READERS[kind](raw, max_ndim)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _text_numbers(text: str) -> np.ndarray:
    """Numbers written out: ``,`` between numbers, ``;`` between rows (``"1,0;0,1"``: 2-d; ``"1,2"``: 1-d;
    ``"5"``: 0-d).

    Raises
    ------
    ValueError
        Naming the text: an empty value, rows of unequal lengths; :class:`NotAnArray` where a value is
        not a number.
    """
    rows = [[v.strip() for v in row.split(",")] for row in text.split(";")]
    if any(v == "" for row in rows for v in row):
        raise ValueError(f"{text!r}: an empty value between ',' or ';'")
    if len({len(row) for row in rows}) > 1:
        raise ValueError(f"{text!r}: rows of unequal lengths ({', '.join(str(len(row)) for row in rows)} values)")
    try:
        return _numbers(rows if ";" in text else rows[0] if len(rows[0]) > 1 else rows[0][0])
    except ValueError:
        raise NotAnArray(f"{text!r} is not numbers, nor a {_ARRAY_FILE_TYPES} file") from None


def _array(value, max_ndim: int = 2, storage_options: dict | None = None) -> np.ndarray:
    """An array option's value, taken by its YAML type and, for a string, its form.

    - not a string (a config's YAML number or nested lists): those numbers;
    - a string ending in ``.npy``, ``.json`` or ``.csv``, or a URL: that file's numbers (:func:`_read_array`,
      a URL's read with the job's fsspec ``storage_options``);
    - any other string: numbers written out (:func:`_text_numbers`), ``"1,2,3"``, ``"1,0;0,1"``; were they
      none, a file or directory of that name is said to be one of the wrong type.

    Raises
    ------
    ValueError
        Naming the string or file given (:class:`NotAnArray` for a string that is neither numbers nor a
        file of any type).
    """
    from daskgmm.io.files import place_of, protocol_of

    named = ""
    if not isinstance(value, str):
        out = _numbers(value)
    else:
        text = value.strip()
        if _array_file_type(text) or protocol_of(text) != "file":
            named, out = text, _read_array(text, max_ndim, storage_options)
        else:
            named = repr(text)
            try:
                out = _text_numbers(text)
            except NotAnArray:
                local = place_of(text)[1]
                if os.path.exists(local):  # a file of another type (by its name): that is what is wrong
                    what = "a directory" if os.path.isdir(local) else "a file"
                    raise ValueError(f"{text} is {what}, not a {_ARRAY_FILE_TYPES} file (an array file is read "
                                     "as the ending of its name says)") from None
                raise
    where = f"{named}: " if named else ""
    if out.ndim > max_ndim:
        raise ValueError(f"{where}{out.ndim} dimensions; at most {max_ndim}"
                         + (" (a matrix)" if max_ndim == 2 else ""))
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{where}not every value is finite")
    return out


def coerce(opt: Opt, value, where: str, storage_options: dict | None = None):
    """Convert a config (or command-line) value to the option's type, or raise ConfigError.

    ``storage_options``: the job's fsspec options, with which an array option's file at a URL is read.
    """
    def bad(extra=""):
        want = _type_name(opt.kind) + (f" {', '.join(opt.choices)}" if opt.kind == "choice" else "")
        named = where if where == opt.flag else f"{where}: {opt.dest}"  # a flag names the option itself
        return ConfigError(f"{named}: expected {want}, got {value!r}{extra}")

    if value is None:
        return None
    kind = opt.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad()
    if kind == "int":
        if isinstance(value, bool):
            raise bad()
        try:
            as_int = int(value) if isinstance(value, (int, str)) else None
        except ValueError:
            raise bad() from None
        if as_int is None or (isinstance(value, float) and not value.is_integer()):
            raise bad()
        return as_int
    if kind == "size":
        if isinstance(value, bool):
            raise bad()
        if value == "auto":
            return value
        if isinstance(value, (int, float)):
            return value
        from dask.utils import parse_bytes

        try:
            parse_bytes(str(value))
        except (TypeError, ValueError):
            raise bad() from None
        return str(value)
    if kind == "float":
        if isinstance(value, bool):
            raise bad()
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad() from None
    if kind == "list":
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            items = [str(v) for v in value]
        else:
            raise bad()
        if not items:
            raise bad(" (empty)")
        return items
    if kind == "array":
        try:
            return _array(value, opt.max_ndim, storage_options)
        except ValueError as exc:
            raise ConfigError(f"{where}: {opt.dest}: {exc}") from None
    if kind == "start":  # a named start, or an array of K rows
        if isinstance(value, str) and value in opt.choices:
            return value
        try:
            return _array(value, opt.max_ndim, storage_options)
        except NotAnArray:  # a word that is no start: perhaps a misspelt name
            raise ConfigError(f"{where}: {opt.dest}: {value!r} is none of {', '.join(opt.choices)}, nor an array "
                              f"({_ARRAY_FORMS})") from None
        except ValueError as exc:  # numbers or a file, as an array option's
            raise ConfigError(f"{where}: {opt.dest}: {exc}") from None
    if kind == "mapping":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise bad(f" (not valid JSON: {exc})") from None
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad()
        return value
    if kind == "choice":
        if isinstance(value, str) and value in dict(opt.refused):
            named = where if where == opt.flag else f"{where}: {opt.dest}"
            raise ConfigError(f"{named}: {value}: {dict(opt.refused)[value]}")
        if not isinstance(value, str) or value not in opt.choices:
            raise bad()
        return value
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise bad()


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` keeps the last of two equal keys silently: a key edited above its old
    line would be ignored. Here it is an error."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise _DuplicateKey(f"{key}: given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str, command: str, storage_options: dict | None = None) -> dict:
    """Read a YAML config for ``command``: a mapping of option names (underscores) to values.

    An array option's file at a URL is read with ``storage_options`` (``--storage-options``), or, when
    None, with the config's own ``storage_options``: the options the job reads its data with.

    Raises
    ------
    ConfigError
        The file is unreadable or not YAML, not a mapping, has unknown keys
        (the message lists the valid ones) or values of the wrong type.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=_UniqueKeyLoader)  # a SafeLoader: data only
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option names to values")
    valid = {o.dest: o for o in options_for(command)}
    valid.pop("config", None)
    out = {}
    # storage_options first: an array option's file may be on the job's object store
    for key, value in sorted(doc.items(), key=lambda kv: str(kv[0]).replace("-", "_") != "storage_options"):
        k = str(key).replace("-", "_")
        if k in out:
            raise ConfigError(f"{path}: {key}: given twice (as {k!r} too)")
        if k in POSITIONAL_KEYS:
            if not (isinstance(value, str) or (isinstance(value, list) and value
                                               and all(isinstance(v, str) for v in value))):
                raise ConfigError(f"{path}: data: expected a path or a list of paths, got {value!r}")
            out[k] = value
            continue
        if k not in valid:
            raise ConfigError(
                f"{path}: unknown key {key!r} for 'daskgmm {command}' (valid: "
                f"{', '.join(sorted(list(valid) + list(POSITIONAL_KEYS)))})"
            )
        out[k] = coerce(valid[k], value, path,
                        storage_options if storage_options is not None else out.get("storage_options"))
    return out
