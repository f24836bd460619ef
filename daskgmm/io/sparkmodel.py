"""Spark ML model directories: a fitted mixture or k-means as ``pyspark.ml.clustering`` loads it, and back.

Spark ML saves a model as a directory of two parts, which Spark 3.5 and 4.x write and read alike::

    metadata/part-00000   one line of JSON (Spark's DefaultParamsWriter): class, timestamp, sparkVersion,
                          uid, paramMap, defaultParamMap
    data/part-00000-….parquet
                          the model's arrays, in one Parquet file whose footer holds Spark's own schema
                          (key ``org.apache.spark.sql.parquet.row.metadata``): the schema is what tells
                          Spark that a struct column is a vector or a matrix (a user-defined type)

``GaussianMixtureModel``'s data is one row: ``weights`` (array<double>), ``mus`` (array of the RDD-based
``org.apache.spark.mllib.linalg.VectorUDT``) and ``sigmas`` (array of mllib's ``MatrixUDT``: dense, column
major, K full D x D covariances), as Spark's writer stores them. ``KMeansModel``'s is a row per centre:
``clusterIdx`` (int) and ``clusterCenter`` (``org.apache.spark.ml.linalg.VectorUDT``). A vector is the struct
of :data:`daskgmm.io.vectors.FIELDS`; a matrix the struct of :data:`MATRIX_FIELDS`.

What is written here is that layout to the byte of the schema (``tests/test_spark_models.py`` holds it to
directories pyspark 4.3 saved), with pyarrow alone: no Spark at run time. The metadata sets only parameters
that Spark 3.5 and 4.x both have (a reader refuses a parameter its version lacks) and says
``"sparkVersion": "3.5.0"``, the oldest version whose layout it is (a reader decides by it how to read the
rest). The directory is written as daskgmm's other outputs: staged beside its target and committed whole
(:func:`daskgmm.io.outputs.staged_directory`), locally or on an object store.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import time
import uuid

import numpy as np

from daskgmm.io.modelfiles import ModelFileError
from daskgmm.io.vectors import FIELDS

#: ``sparkVersion`` of the metadata and ``org.apache.spark.version`` of the Parquet footer.
SPARK_VERSION = "3.5.0"
ROW_METADATA = "org.apache.spark.sql.parquet.row.metadata"
GMM_CLASS = "org.apache.spark.ml.clustering.GaussianMixtureModel"
KMEANS_CLASS = "org.apache.spark.ml.clustering.KMeansModel"

#: The fields of Spark's MatrixUDT struct, in order.
MATRIX_FIELDS = ("type", "numRows", "numCols", "colPtrs", "rowIndices", "values", "isTransposed")

# Spark SQL types of the structs' fields, with their nullability: (name, type, nullable); a type is a
# name, or ("array", element type) (elements never null)
_VECTOR_SQL = [("type", "byte", False), ("size", "integer", True), ("indices", ("array", "integer"), True),
               ("values", ("array", "double"), True)]
_MATRIX_SQL = [("type", "byte", False), ("numRows", "integer", False), ("numCols", "integer", False),
               ("colPtrs", ("array", "integer"), True), ("rowIndices", ("array", "integer"), True),
               ("values", ("array", "double"), True), ("isTransposed", "boolean", False)]
assert tuple(f[0] for f in _VECTOR_SQL) == FIELDS and tuple(f[0] for f in _MATRIX_SQL) == MATRIX_FIELDS

_UDTS = {  # user-defined type -> (Scala class, Python class, fields)
    "mllib vector": ("org.apache.spark.mllib.linalg.VectorUDT", "pyspark.mllib.linalg.VectorUDT", _VECTOR_SQL),
    "mllib matrix": ("org.apache.spark.mllib.linalg.MatrixUDT", "pyspark.mllib.linalg.MatrixUDT", _MATRIX_SQL),
    "ml vector": ("org.apache.spark.ml.linalg.VectorUDT", "pyspark.ml.linalg.VectorUDT", _VECTOR_SQL),
}

#: Each model's columns: (name, type, nullable), a type as in ``_VECTOR_SQL`` or a user-defined type's name.
_COLUMNS = {
    GMM_CLASS: [("weights", ("array", "double"), True), ("mus", ("array", "mllib vector", True), True),
                ("sigmas", ("array", "mllib matrix", True), True)],
    KMEANS_CLASS: [("clusterIdx", "integer", False), ("clusterCenter", "ml vector", True)],
}

#: Parameters written as Spark's defaults: those Spark 3.5 and 4.x models both have, with Spark's defaults.
_DEFAULTS = {
    GMM_CLASS: {"aggregationDepth": 2, "featuresCol": "features", "k": 2, "maxIter": 100,
                "predictionCol": "prediction", "probabilityCol": "probability", "tol": 0.01},
    KMEANS_CLASS: {"distanceMeasure": "euclidean", "featuresCol": "features", "initMode": "k-means||",
                   "initSteps": 2, "k": 2, "maxIter": 20, "predictionCol": "prediction", "tol": 1e-4},
}

#: daskgmm's estimators Spark ML has a model for, and the Spark class of each.
SPARK_CLASSES = {"GaussianMixture": GMM_CLASS, "KMeans": KMEANS_CLASS}


class SparkModelError(ModelFileError):
    """A model Spark ML cannot hold, or a directory that is not a Spark ML model daskgmm reads (exit status 2)."""


# ---------------------------------------------------------------------------
# Types: Spark's schema (JSON) and the Arrow schema of the same columns


def _sql(t):
    """Spark's JSON of a type of the tables above."""
    if isinstance(t, tuple):
        contains_null = len(t) > 2 and t[2]
        return {"type": "array", "elementType": _sql(t[1]), "containsNull": bool(contains_null)}
    if t in _UDTS:
        cls, py, fields = _UDTS[t]
        return {"type": "udt", "class": cls, "pyClass": py, "sqlType": _sql_struct(fields)}
    return t


def _sql_struct(fields):
    return {"type": "struct", "fields": [{"name": n, "type": _sql(t), "nullable": bool(null), "metadata": {}}
                                         for n, t, null in fields]}


def _arrow(t):
    import pyarrow as pa

    if isinstance(t, tuple):
        contains_null = len(t) > 2 and t[2]
        return pa.list_(pa.field("element", _arrow(t[1]), nullable=bool(contains_null)))
    if t in _UDTS:
        return _arrow_struct(_UDTS[t][2])
    return {"byte": pa.int8(), "integer": pa.int32(), "double": pa.float64(), "boolean": pa.bool_()}[t]


def _arrow_struct(fields):
    import pyarrow as pa

    return pa.struct([pa.field(n, _arrow(t), nullable=null) for n, t, null in fields])


def spark_schema(cls: str):
    """The Arrow schema of a model's data file, with Spark's schema and version in its metadata."""
    import pyarrow as pa

    columns = _COLUMNS[cls]
    return pa.schema([pa.field(n, _arrow(t), nullable=null) for n, t, null in columns], metadata={
        "org.apache.spark.version": SPARK_VERSION,
        ROW_METADATA: json.dumps(_sql_struct(columns), separators=(",", ":")),
    })


# ---------------------------------------------------------------------------
# Export


def _dense_vector(values) -> dict:
    return {"type": 1, "size": None, "indices": None, "values": [float(v) for v in values]}


def _dense_matrix(m) -> dict:
    m = np.asarray(m, dtype=np.float64)
    return {"type": 1, "numRows": m.shape[0], "numCols": m.shape[1], "colPtrs": None, "rowIndices": None,
            "values": m.ravel(order="F").tolist(), "isTransposed": False}


def spark_class(name: str) -> str:
    """The Spark class of daskgmm's estimator ``name``; :class:`SparkModelError` for one Spark ML has none of."""
    cls = SPARK_CLASSES.get(name)
    if cls is None:
        raise SparkModelError(f"cannot export a {name} as a Spark ML model: Spark ML has no such model (it has "
                              f"GaussianMixtureModel and KMeansModel: export a {' or a '.join(SPARK_CLASSES)})")
    return cls


def spark_rows(name: str, arrays: dict, meta: dict) -> tuple[str, list]:
    """A daskgmm model's Spark class and data rows.

    Parameters
    ----------
    name : str
        The estimator's class name (a saved model's ``estimator``).
    arrays, meta : dict
        Its fitted arrays and metadata, as ``export_state()`` returns them (a saved model's
        ``arrays.npz`` and ``model.json``).

    Returns
    -------
    cls : str
        The Spark class (:data:`SPARK_CLASSES`).
    rows : list of dict
        The rows of the data file: one for a mixture (its K weights, K means and K full D x D covariances,
        expanded from any covariance type), one per centre for k-means.

    Raises
    ------
    SparkModelError
        A model Spark ML has no class for (BayesianGaussianMixture, StudentTMixture, KMedoids), or of one
        component or cluster (Spark ML's k must be above 1).
    """
    from daskgmm.kernels.covariance import component_covariance

    cls = spark_class(name)
    n = len(arrays["cluster_centers_" if cls == KMEANS_CLASS else "means_"])
    if n < 2:  # Spark's param validator (k > 1) runs on load too: the directory would not load
        raise SparkModelError(f"cannot export a {name} of {n} {'cluster' if cls == KMEANS_CLASS else 'component'} "
                              f"as a Spark ML model: Spark ML's k must be above 1 (pyspark's "
                              f"{cls.rsplit('.', 1)[-1]}.load refuses k = {n}: 'parameter k given invalid value')")
    if cls == KMEANS_CLASS:
        centres = np.asarray(arrays["cluster_centers_"], dtype=np.float64)
        return cls, [{"clusterIdx": k, "clusterCenter": _dense_vector(c)} for k, c in enumerate(centres)]
    means = np.asarray(arrays["means_"], dtype=np.float64)
    k, d = means.shape
    covariances = [component_covariance(arrays["covariances_"], meta["covariance_type"], j, d) for j in range(k)]
    return cls, [{"weights": np.asarray(arrays["weights_"], dtype=np.float64).tolist(),
                  "mus": [_dense_vector(m) for m in means], "sigmas": [_dense_matrix(c) for c in covariances]}]


def metadata_line(cls: str, n_clusters: int, meta: dict) -> str:
    """The JSON line of ``metadata/``: Spark's fields, and daskgmm's own (the feature columns' order, which
    the ``features`` vector must follow), which Spark's reader skips."""
    from daskgmm.version import __version__

    prefix = "GaussianMixture" if cls == GMM_CLASS else "KMeans"
    ours = {"version": __version__, "covariance_type": meta.get("covariance_type"), "columns": meta.get("columns")}
    doc = {"class": cls, "timestamp": int(time.time() * 1000), "sparkVersion": SPARK_VERSION,
           "uid": f"{prefix}_{uuid.uuid4().hex[-12:]}", "paramMap": {"k": int(n_clusters)},
           "defaultParamMap": _DEFAULTS[cls], "daskgmm": {k: v for k, v in ours.items() if v is not None}}
    return json.dumps(doc, separators=(",", ":"))


def write_spark_model(path, name: str, arrays: dict, meta: dict, storage_options=None) -> str:
    """Write a model's arrays (:func:`spark_rows`) as a Spark ML model directory at ``path``, replaced whole.

    Returns
    -------
    str
        The Spark class written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from daskgmm.io.outputs import staged_directory

    cls, rows = spark_rows(name, arrays, meta)  # refused before anything is written
    n_clusters = len(rows) if cls == KMEANS_CLASS else len(rows[0]["weights"])
    schema = spark_schema(cls)
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    # as Spark's writer: format-1 data pages, snappy, the standard 3-level lists, and Spark's keys in the
    # footer but no Arrow schema (store_schema=False drops every key, so Spark's are added after)
    with pq.ParquetWriter(buf, schema, compression="snappy", data_page_version="1.0", store_schema=False) as w:
        w.write_table(table)
        w.add_key_value_metadata(schema.metadata)
    with staged_directory(os.fspath(path), storage_options) as (fs, staging):
        for sub, part, data in (("metadata", "part-00000", (metadata_line(cls, n_clusters, meta) + "\n").encode()),
                                ("data", "part-00000.snappy.parquet", buf.getvalue())):
            directory = posixpath.join(staging, sub)
            fs.makedirs(directory, exist_ok=True)
            fs.pipe_file(posixpath.join(directory, part), data)
            fs.pipe_file(posixpath.join(directory, "_SUCCESS"), b"")  # as Spark leaves each part
    return cls


# ---------------------------------------------------------------------------
# Import


def _visible(fs, directory: str) -> list:
    """The files Spark reads in a directory: not ``_SUCCESS``, ``.crc`` or other ``_`` and ``.`` names."""
    return sorted(f for f in fs.find(directory) if not posixpath.basename(f).startswith(("_", ".")))


def _vector(v, where: str) -> np.ndarray:
    if v is None:
        raise SparkModelError(f"{where}: a null vector")
    if v["type"] == 1:
        return np.asarray(v["values"], dtype=np.float64)
    out = np.zeros(int(v["size"]))  # sparse: size, indices, values
    out[np.asarray(v["indices"], dtype=np.int64)] = v["values"]
    return out


def _matrix(m, where: str) -> np.ndarray:
    if m is None:
        raise SparkModelError(f"{where}: a null matrix")
    rows, cols, transposed = int(m["numRows"]), int(m["numCols"]), bool(m["isTransposed"])
    values = np.asarray(m["values"], dtype=np.float64)
    if m["type"] == 1:  # column major, or row major when transposed
        return values.reshape((rows, cols)) if transposed else values.reshape((cols, rows)).T
    # sparse: compressed columns (compressed rows when transposed)
    out = np.zeros((rows, cols))
    ptrs, idx = np.asarray(m["colPtrs"], dtype=np.int64), np.asarray(m["rowIndices"], dtype=np.int64)
    for j in range(len(ptrs) - 1):
        for p in range(ptrs[j], ptrs[j + 1]):
            out[(j, idx[p]) if transposed else (idx[p], j)] = values[p]
    return out


def _precisions(covariances: np.ndarray, weights: np.ndarray, covariance_type: str, where: str) -> np.ndarray:
    """The precisions of a mixture's full covariances in ``covariance_type``'s shape (scikit-learn's
    ``precisions_init``): of each covariance's diagonal (diag), of its mean variance (spherical), or of the
    covariances' mean weighted by ``weights`` (tied), as that type's M-step makes them from the same
    responsibilities."""
    from daskgmm.kernels import covariance as cov

    full = (covariances + covariances.transpose(0, 2, 1)) / 2  # Spark's are symmetric; a last bit is not a model
    diagonals = np.diagonal(full, axis1=1, axis2=2)
    shaped = {"full": full, "diag": diagonals.copy(), "spherical": diagonals.mean(axis=1),
              "tied": np.einsum("k,kij->ij", weights, full)}[covariance_type]
    try:
        chol = cov.precisions_cholesky(shaped, covariance_type)
    except ValueError as exc:
        raise SparkModelError(f"{where}: its covariances have no precision matrix to start from ({exc})") from None
    return cov.precisions_from_cholesky(chol, covariance_type)


def read_spark_model(path, storage_options=None, covariance_type="full") -> dict:
    """The starting values a Spark ML ``GaussianMixtureModel`` or ``KMeansModel`` directory holds, as
    keyword arguments of daskgmm's estimator of the same kind.

    Parameters
    ----------
    path : str or path-like
        A directory ``model.write().save(path)`` wrote (Spark 2.x to 4.x), or :func:`export_spark_model` did;
        local or an fsspec URL.
    storage_options : dict, optional
        Passed to fsspec for a URL.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        The shape of ``precisions_init``. MLlib's covariances are full: for another type the precisions are
        those of each covariance's diagonal (diag), of its mean variance (spherical), or of the covariances'
        mean weighted by the model's weights (tied).

    Returns
    -------
    dict
        For a ``GaussianMixtureModel``: ``n_components`` (K), ``weights_init`` (K,), ``means_init`` (K, D) and
        ``precisions_init`` in ``covariance_type``'s shape ((K, D, D) for full: the inverses of its
        covariances), so that ``GaussianMixture(covariance_type=ct, **read_spark_model(path,
        covariance_type=ct))`` starts from it. For a ``KMeansModel``: ``n_clusters``
        (K) and ``init`` (K, D), its centres, for ``KMeans(**read_spark_model(path))``.

    Raises
    ------
    ModelFileError
        No Spark ML model there, another model class, or its data is not as Spark writes it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from daskgmm.io.files import get_fs, is_local, strip_protocol
    from daskgmm.kernels import covariance as cov

    cov.of(covariance_type)  # an unknown type is refused before anything is read
    given = os.fspath(path)
    fs = get_fs(given, storage_options)
    root = strip_protocol(fs, given).rstrip("/")
    if not is_local(fs):
        # Spark's own directories have no _SUCCESS at their top, so only an export being committed (its
        # journal beside it: daskgmm.io.store) says the model is incomplete. Fresh listings below the root too
        # (s3fs forgets a path and its parents, not its children): a directory rewritten by another job since
        # this process last read it was listed with its old objects' ETags, which reading them then refused
        for sub in ("", "metadata", "data"):
            fs.invalidate_cache(posixpath.join(root, sub).rstrip("/"))
        parent, base = posixpath.split(root)
        if not fs.exists(posixpath.join(root, "_SUCCESS")) and fs.glob(posixpath.join(parent, f".{base}.commit-*")):
            raise SparkModelError(f"{given}: the model is incomplete: it is being written, or a job writing it was "
                                  "killed and the next job writing it will finish its commit")
    try:
        meta_files = _visible(fs, posixpath.join(root, "metadata"))
        data_files = _visible(fs, posixpath.join(root, "data"))
    except FileNotFoundError:
        meta_files = data_files = []
    if not meta_files:
        daskgmm_model = fs.exists(posixpath.join(root, "model.json"))
        raise SparkModelError(f"{given}: no Spark ML model here (no metadata/ part file)" + (
            "; it is a daskgmm model: daskgmm.load reads it, daskgmm.export_spark_model (daskgmm export) writes it "
            "as a Spark ML model" if daskgmm_model else ""))
    try:
        with fs.open(meta_files[0], "rb") as f:
            meta = json.loads(f.readline())
    except (OSError, ValueError) as exc:
        raise SparkModelError(f"{given}: its metadata is not a Spark ML model's JSON line ({exc})") from None
    cls = meta.get("class") if isinstance(meta, dict) else None
    if cls not in (GMM_CLASS, KMEANS_CLASS):
        raise SparkModelError(f"{given}: a {cls}: daskgmm reads a Spark ML GaussianMixtureModel or KMeansModel")
    if not data_files:
        raise SparkModelError(f"{given}: no data/ part file (the model's arrays)")
    try:
        tables = []
        for name in data_files:
            with fs.open(name, "rb") as f:
                tables.append(pq.read_table(f))
        rows = pa.concat_tables(tables).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise SparkModelError(f"{given}: cannot read its data ({exc})") from None
    where = f"{given} ({cls.rsplit('.', 1)[-1]})"
    try:
        if cls == KMEANS_CLASS:
            if rows and "clusterCenters" in rows[0]:  # Spark 1.6's: one row of every centre
                centres = [_vector(v, where) for v in rows[0]["clusterCenters"]]
            else:
                centres = [_vector(r["clusterCenter"], where) for r in sorted(rows, key=lambda r: r["clusterIdx"])]
            return {"n_clusters": len(centres), "init": np.array(centres)}
        (row,) = rows
        weights = np.asarray(row["weights"], dtype=np.float64)
        means = np.array([_vector(v, where) for v in row["mus"]])
        covariances = np.array([_matrix(m, where) for m in row["sigmas"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise SparkModelError(f"{where}: its data is not laid out as Spark writes it ({type(exc).__name__}: "
                              f"{exc})") from None
    k, d = means.shape
    if weights.shape != (k,) or covariances.shape != (k, d, d):
        raise SparkModelError(f"{where}: {weights.size} weights, {k} means of {d} features and covariances of "
                              f"shape {covariances.shape} do not make one mixture")
    return {"n_components": k, "weights_init": weights, "means_init": means,
            "precisions_init": _precisions(covariances, weights, covariance_type, where)}


def export_spark_model(estimator, path, storage_options=None) -> None:
    """Write a fitted ``GaussianMixture`` or ``KMeans`` as a Spark ML model directory.

    ``pyspark.ml.clustering.GaussianMixtureModel.load(path)`` (or ``KMeansModel.load``) reads it in Spark
    3.5 and 4.x and predicts as the estimator does: labels, and a mixture's probabilities (Spark adds machine
    epsilon to each weighted density, which pulls a row of low density towards 1/K; a row whose every weighted
    density is below ~1e-32 gets 1/K each and label 0). No Spark is needed to write it. A mixture of any
    covariance type is written with full covariance matrices, which is all MLlib has. Spark reads the features
    from one vector column (``features`` by default, ``model.setFeaturesCol`` to change it) in the order of the
    model's columns, which the metadata's ``daskgmm`` entry lists (``columns``).

    Parameters
    ----------
    estimator : GaussianMixture or KMeans
        Fitted.
    path : str or path-like
        The model directory (local or fsspec URL), replaced whole when complete, as ``save`` does.
    storage_options : dict, optional
        Passed to fsspec for a URL.

    Raises
    ------
    ModelFileError
        The estimator has no Spark ML model (BayesianGaussianMixture, StudentTMixture, KMedoids), or it has one
        component or cluster (Spark ML's k must be above 1).
    NotFittedError
        It is not fitted.
    """
    name = type(estimator).__name__
    spark_class(name)  # a kind Spark cannot hold is refused first, fitted or not
    arrays, meta = estimator.export_state()  # checks that it is fitted
    write_spark_model(path, name, arrays, meta, storage_options)


__all__ = ["GMM_CLASS", "KMEANS_CLASS", "MATRIX_FIELDS", "SPARK_CLASSES", "SPARK_VERSION", "SparkModelError",
           "export_spark_model", "metadata_line", "read_spark_model", "spark_class", "spark_rows", "spark_schema",
           "write_spark_model"]
