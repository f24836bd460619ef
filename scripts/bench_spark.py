"""Time Spark MLlib's GaussianMixture per EM iteration (local[2], loopback only).

Used by scripts/bench.py when pyspark and a Java runtime are installed
(``pip install -e .[bench]``). Marginal seconds per iteration are
``(t(maxIter=2+iters) - t(maxIter=2)) / iters_that_ran``, which cancels the fixed
costs of a fit (its takeSample init and cluster-size pass). The input is read
and cached before timing.

Two facts about Spark's GMM matter when comparing (measured on this machine):

* Its E-step adds ``2.2e-16`` to ``w * pdf`` in linear space, so in 16
  dimensions at unit scale the densities (~e^-37) fall under that floor and all
  components collapse onto one. Benchmark data are therefore scaled by 0.1
  (timings do not depend on the values).
* With ``tol=0`` it still stops when the log-likelihood is bitwise unchanged,
  so the script divides by the iterations that actually ran.

BLAS: Spark uses dev.ludovic.netlib; with a system ``libblas.so.3`` (e.g.
Debian's libopenblas0-pthread) it loads it through JNI, else it uses its Java
implementation. The result records which one ran.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time


def available() -> str | None:
    """None when Spark can run here, else why not."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e .[bench])"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (java not on PATH)"
    return None


def _shutdown_jvm():
    from pyspark import SparkContext

    gw = SparkContext._gateway
    if gw is None:
        return
    try:
        gw.shutdown()
    except Exception:  # a gateway that is already gone
        pass
    proc = getattr(gw, "proc", None)
    if proc is not None:
        try:
            proc.stdin.close()
            proc.wait(timeout=30)
        except Exception:  # hard stop if it does not exit
            proc.kill()
            proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None


def time_spark_gmm(parquet_path, columns, k, iters=3, repeats=2, driver_memory="4g") -> dict:
    """Marginal seconds per EM iteration of ``pyspark.ml.clustering.GaussianMixture``."""
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.ml.clustering import GaussianMixture
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    _shutdown_jvm()
    spark = (
        SparkSession.builder.master("local[2]").appName("daskgmm-bench")
        .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory).getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    res = {"spark_version": spark.version, "master": "local[2]", "k": k}
    try:
        jvm = spark.sparkContext._jvm
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        blas = jvm.java.lang.Class.forName("org.apache.spark.ml.linalg.BLAS$", True, loader)
        res["blas"] = blas.getField("MODULE$").get(None).nativeBLAS().getClass().getName()
        data = VectorAssembler(inputCols=list(columns), outputCol="features").transform(
            spark.read.parquet(str(parquet_path))).select("features").cache()
        res["n_rows"] = data.count()

        def fit(m):
            t = time.perf_counter()
            model = GaussianMixture(k=k, tol=0.0, maxIter=m, seed=0, featuresCol="features").fit(data)
            return time.perf_counter() - t, model.summary.numIter

        fit(1)  # JIT warm-up
        per = []
        for _ in range(repeats):
            t2, n2 = fit(2)
            tn, nn = fit(2 + iters)
            if nn > n2:
                per.append((tn - t2) / (nn - n2))
        res["per_iter_all"] = per
        res["per_iter"] = statistics.median(per) if per else None
        return res
    finally:
        spark.stop()
        _shutdown_jvm()
