#!/usr/bin/env python3
"""Write the Spark ML model directories the tests read (tests/data/spark/): a GaussianMixtureModel and a
KMeansModel fitted by pyspark on 60 seeded rows of 3 features, saved by Spark itself, and ``expected.json``:
the models' arrays as pyspark returns them and Spark's predictions of a few rows.

    .venv/bin/python scripts/make_spark_models.py     # needs pyspark and Java (pip install -e .[bench])

Run once: the directories are committed (a few KB), so the tests need no Spark.
"""

import glob
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "tests", "data", "spark")


def rows():
    """60 rows, two clusters, 3 features; the first 4 rows are the ones whose predictions are kept."""
    rng = np.random.default_rng(0)
    return np.vstack([rng.normal([0, 0, 0], 1, (30, 3)), rng.normal([5, 5, 1], [1, 2, 0.5], (30, 3))])


def main() -> int:
    from pyspark.ml.clustering import GaussianMixture, KMeans
    from pyspark.ml.linalg import Vectors
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
             .getOrCreate())
    X = rows()
    df = spark.createDataFrame([(Vectors.dense(r),) for r in X], ["features"])
    gm = GaussianMixture(k=2, seed=1).fit(df)
    km = KMeans(k=2, seed=1).fit(df)
    shutil.rmtree(OUT, ignore_errors=True)
    gm.write().save(os.path.join(OUT, "gmm"))
    km.write().save(os.path.join(OUT, "kmeans"))
    for crc in glob.glob(os.path.join(OUT, "**", ".*.crc"), recursive=True):
        os.remove(crc)  # Hadoop's checksums of the files beside them: Spark reads the files without them
    head = df.limit(4)
    g, k = gm.transform(head).collect(), km.transform(head).collect()
    expected = {
        "spark_version": spark.version,
        "gmm": {"weights": list(gm.weights), "means": [g_.mean.toArray().tolist() for g_ in gm.gaussians],
                "covariances": [g_.cov.toArray().tolist() for g_ in gm.gaussians],
                "rows": X[:4].tolist(), "prediction": [r.prediction for r in g],
                "probability": [r.probability.toArray().tolist() for r in g]},
        "kmeans": {"centers": [c.tolist() for c in km.clusterCenters()], "rows": X[:4].tolist(),
                   "prediction": [r.prediction for r in k]},
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    spark.stop()
    print(f"wrote {OUT} with Spark {expected['spark_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
