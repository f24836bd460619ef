"""Same answers on every BLAS kernel: the initialisation and whole fits under each OpenBLAS
kernel this CPU can run (``OPENBLAS_CORETYPE``), in fresh processes, agree to rounding."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

#: OpenBLAS's x86-64 core types, each with the CPU flag its kernels need (they die of SIGILL without it)
KERNELS = {"SkylakeX": "avx512f", "Haswell": "avx2", "Sandybridge": "avx", "Nehalem": "sse4_2", "Prescott": "sse3"}

#: Cases where, before ties up to rounding kept the first run, the kernel decided the result
#: (same centres or components, in another order): restarts of GaussianMixture on datasets 2
#: and 3 (Sandybridge, Nehalem and Prescott against Haswell), k-means on the sample of dataset 4
#: (Prescott). KMeans's restarts for the claim's sake.
CHILD = r"""
import json, warnings
import dask.array as da
import numpy as np
import threadpoolctl
from daskgmm import GaussianMixture, KMeans
from daskgmm.em import init
from daskgmm.engine.passes import ChunkedData

def blobs(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(5, 4))[rng.integers(5, size=6000)] * 6 + rng.normal(size=(6000, 4))

warnings.simplefilter("ignore")
out = {"blas": sorted({i.get("architecture") for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})}
for seed in (2, 3):
    out[f"gmm{seed}"] = GaussianMixture(5, n_init=3, random_state=seed).fit(blobs(seed)).means_.tolist()
data = ChunkedData(da.from_array(blobs(4), chunks=(333, 4)), None, cache="memory")
out["sample"] = np.vstack(init.sample_kmeans(data, data.scan().mean, [5, 3], [1, 2])).tolist()
out["kmeans"] = KMeans(5, n_init=3, random_state=0).fit(blobs(2)).cluster_centers_.tolist()
print(json.dumps(out))
"""


def _kernels_this_cpu_runs() -> list[str]:
    if not any(i.get("internal_api") == "openblas" for i in threadpoolctl.threadpool_info()):
        pytest.skip("NumPy's BLAS is not OpenBLAS")
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        pytest.skip("no x86 CPU flags in /proc/cpuinfo")
    # pni is /proc/cpuinfo's name for SSE3
    return [k for k, flag in KERNELS.items() if flag in flags or (flag == "sse3" and "pni" in flags)]


@pytest.mark.slow
def test_initialisation_and_fits_agree_on_every_blas_kernel():
    kernels = _kernels_this_cpu_runs()
    results = {}
    repo = pathlib.Path(__file__).resolve().parents[1]
    for kernel in kernels:
        # the NumPy path everywhere, so that the BLAS does every product
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "DASKGMM_KERNEL": "numpy"}
        proc = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=repo, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[kernel] = json.loads(proc.stdout)
    ran = {tuple(r.pop("blas")) for r in results.values()}
    if len(ran) < 2:
        pytest.skip(f"OpenBLAS ran one kernel only: {ran}")
    first, ref = next(iter(results.items()))
    for kernel, got in results.items():
        for key, value in got.items():
            np.testing.assert_allclose(value, ref[key], rtol=1e-9, atol=1e-9, err_msg=f"{key}: {kernel} vs {first}")
