#!/usr/bin/env python3
"""CPU seconds per million rows of the missing-value kernels (full covariance), one thread.

Usage:  .venv/bin/python scripts/profile_missing.py

Rows of 16 features with each entry missing with probability 0.2, K=16, fed to
:func:`daskgmm.kernels.missing.marginal_logits` and ``completed_moments`` in blocks of
2048 rows, as a pass does. Process CPU time, so that other jobs on a shared machine
disturb it less than wall time.
"""
import time

import numpy as np
from threadpoolctl import threadpool_limits

threadpool_limits(1)
from daskgmm.kernels import covariance as cov
from daskgmm.kernels.features import FULL_LEVEL
from daskgmm.kernels.missing import completed_moments, marginal_logits

rng=np.random.default_rng(0)
n,d,k=2048*20,16,16
x=rng.standard_normal((n,d)); x[rng.random((n,d))<0.2]=np.nan
A=rng.standard_normal((k,d,d))/4; covs=np.einsum("kij,klj->kil",A,A)+np.eye(d)
u=cov.precisions_cholesky(covs,"full")
pc=cov.per_component(np.full(k,1/k), rng.standard_normal((k,d)), u, "full", np.zeros(d))
for rep in range(2):
    tl=tm=0
    for a in range(0,n,2048):
        xb=x[a:a+2048]
        t0=time.process_time(); lg, comp = marginal_logits(pc, xb); t1=time.process_time()
        r=np.exp(lg-lg.max(0)); r/=r.sum(0)
        t2=time.process_time(); completed_moments(comp, r, np.zeros(d), FULL_LEVEL); t3=time.process_time()
        tl+=t1-t0; tm+=t3-t2
    print("per 1M rows: logits %.1f s, moments %.1f s"%(tl/n*1e6, tm/n*1e6))
