#!/usr/bin/env python3
"""Colour quantization (image segmentation) of scikit-learn's sample photo, as PRML's Figure 9.3.

    .venv/bin/python scripts/plot_quantization.py      # writes docs/gallery/quantization.png

Each pixel is a point in RGB space; its 273,280 pixels go in as a Dask array (chunks of
32,768 pixels), K = 2, 3 and 10 clusters are fitted by daskgmm's KMeans and GaussianMixture,
and every pixel is redrawn in the colour of its cluster (k-means: the centre; the mixture:
the mean of its most probable component). The notes' k-means examples: "image segmentation,
vector quantization".
"""

from __future__ import annotations

import os
import sys
import time

import dask.array as da
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_sample_image

import daskgmm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KS = (2, 3, 10)


def quantize(pixels, estimator):
    """The fitted estimator and each pixel's colour (its cluster's centre or component mean), shape (N, 3)."""
    estimator.fit(pixels)
    labels = np.asarray(estimator.predict(pixels).compute())
    palette = estimator.cluster_centers_ if hasattr(estimator, "cluster_centers_") else estimator.means_
    return estimator, np.clip(palette[labels], 0.0, 1.0)


def main() -> int:
    image = load_sample_image("china.jpg").astype(np.float64) / 255.0
    h, w, _ = image.shape
    pixels = da.from_array(image.reshape(-1, 3), chunks=(32768, 3))  # the pixels as a Dask array
    makers = {
        "KMeans": lambda k: daskgmm.KMeans(n_clusters=k, random_state=0),
        "GaussianMixture": lambda k: daskgmm.GaussianMixture(n_components=k, covariance_type="full",
                                                             random_state=0, max_iter=200),
    }
    fig, axes = plt.subplots(2, len(KS) + 1, figsize=(4.2 * (len(KS) + 1), 6.4), layout="constrained")
    for row, (name, make) in enumerate(makers.items()):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title("original (24-bit colour)" if row == 0 else "original", fontsize=11)
        for col, k in enumerate(KS, start=1):
            t0 = time.perf_counter()
            est, colours = quantize(pixels, make(k))
            print(f"{name} K={k}: {time.perf_counter() - t0:.1f} s, {est.n_iter_} iterations", flush=True)
            axes[row, col].imshow(colours.reshape(h, w, 3))
            axes[row, col].set_title(f"{name}, K = {k}", fontsize=11)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Colour quantization of {h} x {w} = {h * w:,} pixels (a Dask array), after PRML Fig. 9.3: "
                 "every pixel drawn in its cluster's colour", fontsize=12)
    out = os.path.join(ROOT, "docs", "gallery", "quantization.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=80)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
