#!/usr/bin/env python3
"""The bytes of DATA a ``daskgmm fit --predictions-out`` job reads from a real S3 API, and its time.

Usage:  .venv/bin/python scripts/bench_s3_reads.py [--rows 1000000] [--files 8]

Starts moto's S3 server on 127.0.0.1 (``tests/s3_server.py``, as the tests do; needs the ``test``
extra), writes ``--files`` Parquet files of 16 float64 columns and an int64 ``id``, and runs
``daskgmm fit s3://… --id-column id --n-components 4 --predictions-out s3://…`` on an embedded
cluster of 2 workers x 1 thread, counting the GET requests and the bytes the server sent for the
data's objects. Prints one JSON line: ``reads_of_data`` is those bytes over the data's size (1.0:
DATA read once, the rows kept in memory from the fit to its predictions; 2.0: read again for them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    a = ap.parse_args(argv)

    from daskgmm.cli import main as daskgmm
    from tests.s3_server import S3Server

    srv = S3Server()
    try:
        fs = srv.fs()
        fs.mkdir("bench")
        rng = np.random.default_rng(0)
        n = a.rows // a.files
        for f in range(a.files):
            x = rng.normal(size=(n, 16)) + rng.integers(0, 4, size=(n, 1)) * 3
            table = pa.table({**{f"f{j}": x[:, j] for j in range(16)}, "id": np.arange(f * n, (f + 1) * n)})
            with fs.open(f"bench/data/part-{f}.parquet", "wb") as fh:
                pq.write_table(table, fh)
        size = sum(fs.du("bench/data", total=False).values())
        served = {"GET": 0, "bytes": 0}
        lock = threading.Lock()
        inner = srv._wsgi

        def counting(environ, start_response):
            body = inner(environ, start_response)
            if environ.get("REQUEST_METHOD") == "GET" and "/bench/data/" in environ.get("PATH_INFO", ""):
                parts = list(body)
                with lock:
                    served["GET"] += 1
                    served["bytes"] += sum(len(p) for p in parts)
                return parts
            return body

        srv.server.app = counting
        t0 = time.perf_counter()
        rc = daskgmm(["fit", "s3://bench/data", "--columns", ",".join(f"f{j}" for j in range(16)), "--id-column", "id",
                      "--n-components", "4", "--seed", "0", "--model-out", "s3://bench/model", "--predictions-out",
                      "s3://bench/preds", "--storage-options", json.dumps(srv.storage_options), "--n-workers", "2",
                      "--threads-per-worker", "1", "--quiet"])
        wall = time.perf_counter() - t0
        print(json.dumps({"rc": rc, "rows": a.files * n, "data_bytes": size, "GET": served["GET"],
                          "served_bytes": served["bytes"], "reads_of_data": round(served["bytes"] / size, 2),
                          "wall_s": round(wall, 1), "load": os.getloadavg()}))
        return rc
    finally:
        srv.close()


if __name__ == "__main__":
    raise SystemExit(main())
