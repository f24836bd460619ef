"""Models and checkpoints as data: JSON metadata plus ``.npz`` arrays, never pickle.

A saved model is a directory::

    model.json    format, versions, estimator class, constructor parameters,
                  columns, dtype, array shapes, fit summary and history
    arrays.npz    fitted arrays (and array-valued parameters), loaded with
                  ``allow_pickle=False``
    _SUCCESS      written last; the directory is renamed into place atomically

A checkpoint is one ``checkpoint.npz`` (metadata as a JSON string inside),
replaced atomically after every EM iteration (on an object store, by one write of
the whole object).

Paths may be fsspec URLs (``s3://…``) with ``storage_options``. On an object store a
model is read only once its ``_SUCCESS`` is there: a model without it is being
committed, or was left so by a killed job that the next job writing it finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import posixpath

import numpy as np

from daskgmm.io.files import DataError
from daskgmm.io.outputs import staged_directory, write_whole

FORMAT = "daskgmm-model"
#: 2: a value that does not exist is null, not "inf" or "nan": a first iteration's ``change`` (no previous
#: objective), and a KMeans' fit ``inertia`` and ``n_iter`` once ``partial_fit`` (``daskgmm update``) has
#: moved its centres, which its fit summary says by ``"updated": true`` (format 1 said it by an inertia of
#: "nan"). Format-1 files are read as format 2 (:func:`upgrade_document`); a format-1 reader refuses 2.
#: 3: a model may carry a ``shift`` array (the predictions' shift kept from a fit on rows far from the others, a
#: fill value of 1e20). A reader of 2 would ignore it and predict such rows' neighbours wrongly, so a file with it
#: says 3 and such a reader refuses it; a file without it still says 2, which every reader since 2 reads.
FORMAT_VERSION = 3
#: The version of a model file without a ``shift``: unchanged since 2.
PLAIN_FORMAT_VERSION = 2
CHECKPOINT_FORMAT = "daskgmm-checkpoint"
#: 2: a run's first iteration has a null ``change`` (no previous objective; 1 wrote "inf" or "-inf").
#: Version 1 checkpoints are read; a reader of version 1 only refuses version 2 (it read "change" as a float).
CHECKPOINT_VERSION = 2


class ModelFileError(DataError):
    """A model or checkpoint file is missing, corrupt, or from an incompatible version."""


#: Estimator classes a model file may name, filled by :func:`register` (the package registers
#: its estimators on import), so that this module never imports an estimator.
ESTIMATORS: dict = {}


def register(cls):
    """Let model files name ``cls`` (a class with ``export_state`` and ``import_state``); returns it."""
    ESTIMATORS[cls.__name__] = cls
    return cls


def jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)  # JSON has no inf/nan; "inf", "-inf", "nan" round-trip through float()
    return v


def _float_or_str(v):
    return float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v


def upgrade_document(doc: dict) -> dict:
    """A model.json of an older format version as the current version says the same (in place).

    Format 1 to 2: a first iteration's infinite ``change`` becomes null; a KMeans' fit summary gets
    ``updated`` (true when sequential updates ran and the inertia is "nan", as format 1 said it), and an
    updated model's inertia and iterations become null (format 1 wrote "nan" and 0).
    """
    if doc.get("format_version", FORMAT_VERSION) >= 2:
        return doc
    fit = doc.get("fit")
    if not isinstance(fit, dict):
        return doc
    for h in fit.get("history") or []:
        if isinstance(h, dict) and h.get("change") in ("inf", "-inf"):
            h["change"] = None
    if doc.get("estimator") == "KMeans":
        fit["updated"] = bool(fit.get("n_steps")) and str(fit.get("inertia")) == "nan"
        if fit["updated"]:
            fit["inertia"] = fit["n_iter"] = None
    return doc


def restore_history(history) -> list:
    """History dicts read from JSON, with "inf"/"nan" strings turned back into floats; the infinite
    ``change`` of a first iteration in files written before it was None (null) is None."""
    out = [{k: _float_or_str(v) for k, v in h.items()} for h in history or []]
    for h in out:
        if isinstance(h.get("change"), float) and np.isinf(h["change"]):
            h["change"] = None
    return out


def save_model(estimator, path, storage_options=None) -> None:
    """Save a fitted estimator to the directory ``path`` (replaced atomically).

    Parameters
    ----------
    estimator : GaussianMixture or KMeans
        Fitted.
    path : str
        Target directory (local path or fsspec URL).
    """
    with staged_directory(path, storage_options) as (fs, staging):
        write_model_files(estimator, fs, staging)


def model_document(estimator):
    """The arrays and the JSON document that describe a fitted estimator."""
    name = type(estimator).__name__
    if name not in ESTIMATORS:
        raise TypeError(f"cannot save a {name}")
    arrays, meta = estimator.export_state()
    params, param_arrays = {}, {}
    for key, value in estimator.get_params().items():
        if value is None or isinstance(value, (bool, int, float, str)):
            params[key] = value
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            params[key] = value.item()
        elif isinstance(value, np.random.RandomState):
            params[key] = None  # an RNG object is state, not a parameter we can store as data
        else:
            param_arrays[key] = np.asarray(value, dtype=np.float64)
            params[key] = {"array": key}
    stored = {**arrays, **{f"param__{k}": v for k, v in param_arrays.items()}}
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if "shift" in arrays else PLAIN_FORMAT_VERSION,
        "daskgmm_version": _version(),
        "estimator": name,
        "params": params,
        "arrays": {k: {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype)} for k, v in stored.items()},
        "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **jsonable(meta),
    }
    return stored, doc


def _write_files(fs, directory, stored, doc):
    with fs.open(posixpath.join(directory, "arrays.npz"), "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in stored.items()})
    with fs.open(posixpath.join(directory, "model.json"), "w") as f:
        json.dump(doc, f, indent=2)


def write_model_files(estimator, fs, directory, extra: dict | None = None) -> None:
    """Write a model's files into an existing (staging) directory; ``extra``: keys of ``model.json`` besides
    the estimator's (the command's ``sparse_columns``: the columns it read sparse rows from)."""
    stored, doc = model_document(estimator)
    _write_files(fs, directory, stored, {**doc, **(extra or {})})


def _version() -> str:
    from daskgmm.version import __version__

    return __version__


def load_model(path, storage_options=None, files=None):
    """Load an estimator saved by :func:`save_model`, validating it.

    ``files``: its ``(doc, arrays)`` as :func:`read_model_files` returned them, when they were
    read already (the command checks ``--model`` before its cluster starts, and reads it once).

    Raises
    ------
    ModelFileError
        The directory is missing, incomplete, corrupt, of another format or a
        newer format version, or its arrays do not have the recorded shapes.
    """
    path = os.fspath(path)
    doc, arrays = read_model_files(path, storage_options) if files is None else files
    cls = ESTIMATORS.get(doc.get("estimator"))
    if cls is None:
        raise ModelFileError(f"{path}: unknown estimator {doc.get('estimator')!r}")
    params = {}
    for key, value in doc.get("params", {}).items():
        if isinstance(value, dict) and "array" in value:
            params[key] = arrays[f"param__{key}"]
        else:
            params[key] = value
    try:
        est = cls(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path}: parameters do not fit {cls.__name__} ({exc})") from None
    fitted = {k: v for k, v in arrays.items() if not k.startswith("param__")}
    meta = {k: v for k, v in doc.items() if k not in ("params", "arrays")}
    try:
        est.import_state(fitted, meta)
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"{path}: inconsistent model ({exc})") from None
    return est


def _refuse_spark_model(fs, root: str, json_path: str, path: str) -> None:
    """Raise a :class:`ModelFileError` saying so when ``root`` is a Spark ML model directory (``metadata/``,
    no ``model.json``: Spark's own or ``daskgmm export``'s), which daskgmm reads as starting values only. On an
    object store it was called incomplete ("being written"), as Spark writes no ``_SUCCESS`` at its top."""
    if not fs.exists(json_path) and fs.exists(posixpath.join(root, "metadata")):
        raise ModelFileError(f"{path}: a Spark ML model directory (metadata/, data/), not a daskgmm model: daskgmm "
                             "reads one only as starting values: daskgmm fit --init-spark DIR on the command line, "
                             "daskgmm.read_spark_model(path) in Python")


def read_model_files(path, storage_options=None) -> tuple[dict, dict]:
    """A saved model's ``model.json`` and ``arrays.npz``, checked, without building the estimator
    (``daskgmm info`` reads a model so, with no estimator imported).

    Returns
    -------
    doc : dict
        model.json, as the current format version says it (:func:`upgrade_document`).
    arrays : dict of str to ndarray
        The arrays, of the shapes ``doc["arrays"]`` records.

    Raises
    ------
    ModelFileError
        As :func:`load_model`, except that the estimator is not looked up.
    """
    from daskgmm.io.files import get_fs, is_local, raise_store_error, strip_protocol

    path = os.fspath(path)
    fs = get_fs(path, storage_options)
    root = strip_protocol(fs, path).rstrip("/")
    json_path = posixpath.join(root, "model.json")
    local = is_local(fs)
    try:
        if not local:
            fs.invalidate_cache(root)
            parent, base = posixpath.split(root)
            if not fs.exists(posixpath.join(root, "_SUCCESS")) and (
                    fs.exists(root) or fs.glob(posixpath.join(parent, f".{base}.commit-*"))):
                _refuse_spark_model(fs, root, json_path, path)  # Spark writes no _SUCCESS at its top
                raise ModelFileError(f"{path}: the model is incomplete (no _SUCCESS): it is being written, or a "
                                     "job writing it was killed and the next job writing it will finish its commit")
        found = fs.exists(json_path)
    except FileNotFoundError as exc:  # s3fs lists a missing bucket so (exists() says False)
        raise ModelFileError(f"{path}: no model here ({exc})") from None
    except PermissionError as exc:
        raise ModelFileError(f"{path}: cannot read the model ({exc})") from None
    except Exception as exc:
        raise_store_error(exc, path, lambda hint: ModelFileError(f"{path}: cannot read the model ({hint})"))
    if not found:
        _refuse_spark_model(fs, root, json_path, path)
        inner = posixpath.join(path.rstrip("/"), "model")
        # `daskgmm select --out DIR` writes its best model to DIR/model, beside the table
        if fs.exists(posixpath.join(root, "selection.json")) and fs.exists(posixpath.join(root, "model", "model.json")):
            raise ModelFileError(f"{path}: no model here (model.json not found); {inner} holds one (the best model "
                                 "of the `daskgmm select` that wrote this directory)")
        raise ModelFileError(f"{path}: no model here (model.json not found)")
    try:
        with fs.open(json_path, "r") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model.json ({exc})") from None
    except ValueError as exc:
        raise ModelFileError(f"{path}: model.json is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ModelFileError(f"{path}: not a daskgmm model (format {found!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version!r} is newer than this daskgmm "
            f"({_version()}) reads (up to {FORMAT_VERSION}); upgrade daskgmm"
        )
    upgrade_document(doc)
    try:
        with fs.open(posixpath.join(root, "arrays.npz"), "rb") as f:
            with np.load(f, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ModelFileError(f"{path}: arrays.npz is missing or corrupt ({exc})") from None
    recorded = doc.get("arrays", {})
    for key, spec in recorded.items():
        if key not in arrays:
            raise ModelFileError(f"{path}: arrays.npz lacks {key!r}")
        if list(arrays[key].shape) != list(spec["shape"]):
            raise ModelFileError(
                f"{path}: array {key!r} has shape {list(arrays[key].shape)}, model.json says {spec['shape']}"
            )
    return doc, arrays


# ---------------------------------------------------------------------------
# Checkpoints


def _state_classes():
    from daskgmm.models.states import KMeansState, KMedoidsState, MixtureState
    from daskgmm.models.studentt import StudentTState
    from daskgmm.models.variational import VariationalState

    return {"MixtureState": MixtureState, "KMeansState": KMeansState, "VariationalState": VariationalState,
            "KMedoidsState": KMedoidsState, "StudentTState": StudentTState}


class Checkpoint:
    """EM progress of one job in ``directory/checkpoint.npz``, replaced atomically.

    Parameters
    ----------
    directory : str
        Local directory (created if missing), or an fsspec URL (``s3://bucket/prefix``;
        the checkpoint is then one object, written whole by each save).
    fingerprint : dict
        JSON-able description of the job (data, columns, parameters, seed); a
        checkpoint written for a different fingerprint is refused on resume.
    storage_options : dict, optional
        Passed to fsspec for a URL.
    """

    def __init__(self, directory, fingerprint: dict, storage_options=None):
        from daskgmm.io.files import get_fs, is_local, strip_protocol

        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, "checkpoint.npz")
        self.fingerprint = jsonable(fingerprint)
        self.extra: dict = {}
        self.fs = get_fs(self.directory, storage_options)
        self.local = is_local(self.fs)
        self._key = None if self.local else strip_protocol(self.fs, self.path)

    def exists(self) -> bool:
        """Whether there is a checkpoint to resume."""
        if self.local:
            return os.path.exists(self.path)
        self.fs.invalidate_cache(self._key)
        return self.fs.exists(self._key)

    def _open(self):
        """The checkpoint's ``.npz`` as a file (raises OSError when missing or unreadable)."""
        if self.local:
            return open(self.path, "rb")
        import io

        return io.BytesIO(self.fs.cat_file(self._key))

    def _mismatch(self, doc) -> str | None:
        """Why a checkpoint's metadata ``doc`` does not belong to this job, or None."""
        if doc.get("format") != CHECKPOINT_FORMAT or doc.get("format_version", 99) > CHECKPOINT_VERSION:
            return "not a checkpoint this daskgmm can read"
        mine, theirs = self.fingerprint, doc.get("fingerprint", {})
        if not isinstance(theirs, dict):
            theirs = {}
        diff = sorted(k for k in set(theirs) | set(mine) if theirs.get(k) != mine.get(k))
        return f"written for a different job (differs in: {', '.join(diff)})" if diff else None

    def stale(self) -> str | None:
        """Why the checkpoint on disk cannot be resumed by this job, or None.

        None also when there is no checkpoint. A checkpoint of another job
        (other data, files rewritten since, other parameters) or an unreadable
        one is stale: resuming it would give a model of something else.
        """
        if not self.exists():
            return None
        try:
            doc = self._document()
        except (OSError, ValueError, KeyError, EOFError) as exc:
            return f"unreadable ({exc})"
        return self._mismatch(doc)

    def _document(self) -> dict:
        """The metadata of the checkpoint on disk (raises OSError, ValueError, KeyError or EOFError)."""
        with self._open() as f, np.load(f, allow_pickle=False) as npz:
            return json.loads(str(npz["__meta__"]))

    def saved(self) -> dict | None:
        """The metadata of the checkpoint on disk, whichever job wrote it (its ``fingerprint`` and ``extra``),
        or None when there is none or it cannot be read."""
        if not self.exists():
            return None
        try:
            doc = self._document()
        except (OSError, ValueError, KeyError, EOFError):
            return None
        return doc if isinstance(doc, dict) else None

    def clear(self) -> None:
        """Remove the checkpoint: the job it tracked has finished (its outputs are written)."""
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.remove(self.path)
            else:
                self.fs.rm_file(self._key)

    def save(self, runs, extra: dict | None = None) -> None:
        """Write the runs' states atomically; ``extra`` (JSON-able, e.g. the random
        state the runs were drawn from) is kept for later saves and :meth:`load`."""
        if extra is not None:
            self.extra = jsonable(extra)
        if self.local:
            os.makedirs(self.directory, exist_ok=True)
        arrays, run_docs = {}, []
        for i, run in enumerate(runs):
            fields, state = {}, run.state
            for f in dataclasses.fields(state):
                value = getattr(state, f.name)
                if isinstance(value, np.ndarray):
                    arrays[f"run{i}__{f.name}"] = value
                    fields[f.name] = {"array": f"run{i}__{f.name}"}
                elif isinstance(value, np.dtype):
                    fields[f.name] = {"dtype": str(value)}
                else:
                    fields[f.name] = jsonable(value)
            run_docs.append({
                "state_class": type(state).__name__,
                "state": fields,
                "n_iter": run.n_iter,
                "converged": run.converged,
                "objective": jsonable(float(run.objective)),
                "objectives": [float(v) for v in run.objectives],
                "history": jsonable(run.history),
                "done": run.done,
            })
        doc = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "runs": run_docs,
            "extra": self.extra,
        }
        # a kill leaves the old checkpoint or the new, whole
        write_whole(self._key if not self.local else self.path,
                    lambda f: np.savez(f, __meta__=np.array(json.dumps(doc)), **arrays), self.fs)

    def load(self, n_runs: int | None = None, absent: dict | None = None):
        """Runs saved by :meth:`save`, or None when there is no checkpoint.

        Parameters
        ----------
        n_runs : int, optional
            How many runs the job has: a checkpoint with another number is another job's.
        absent : dict, optional
            State class name -> ``{field: value}``: the value of a field a checkpoint written before the
            field existed lacks, where its class's default is not what this job gives it (e.g.
            ``select_model``'s ``MixtureState.weight_scale``, which its weights set).

        Raises
        ------
        ModelFileError
            The checkpoint is corrupt or was written for a different job.
        """
        from daskgmm.em.loop import Run

        if not self.exists():
            return None
        try:
            with self._open() as f, np.load(f, allow_pickle=False) as npz:
                doc = json.loads(str(npz["__meta__"]))
                arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ModelFileError(f"{self.path}: corrupt checkpoint ({exc})") from None
        mismatch = self._mismatch(doc)
        if mismatch:
            raise ModelFileError(f"{self.path}: {mismatch}; remove it or use another --checkpoint-dir")
        self.extra = doc.get("extra", {})
        classes = _state_classes()
        runs = []
        for rd in doc["runs"]:
            kwargs = {}
            for name, value in rd["state"].items():
                if isinstance(value, dict) and "array" in value:
                    kwargs[name] = arrays[value["array"]]
                elif isinstance(value, dict) and "dtype" in value:
                    kwargs[name] = np.dtype(value["dtype"])
                elif isinstance(value, list):
                    kwargs[name] = tuple(value)
                else:
                    kwargs[name] = value
            for name, value in (absent or {}).get(rd["state_class"], {}).items():
                kwargs.setdefault(name, value)
            state = classes[rd["state_class"]](**kwargs)
            history = restore_history(rd["history"])
            for h in history:
                for k in ("objective", "change", "seconds"):
                    if h.get(k) is not None:  # a first iteration's change is None (no previous objective)
                        h[k] = float(h[k])
            runs.append(Run(
                state=state, n_iter=rd["n_iter"], converged=rd["converged"],
                objective=float(_float_or_str(rd["objective"])), objectives=list(rd["objectives"]),
                history=history, done=rd["done"],
            ))
        if n_runs is not None and len(runs) != n_runs:
            raise ModelFileError(f"{self.path}: {len(runs)} run(s) saved but this job has {n_runs}; "
                                 "remove it or use another --checkpoint-dir")
        return runs
