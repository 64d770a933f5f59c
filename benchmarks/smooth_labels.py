"""``ag.tl.smooth_labels(groupby=...)`` at a million cells, against a pandas group-by vote in the same process.

A million cells with 30 predicted labels (one per cell, skewed towards each cluster's own
label) and 2,000 clusters; both methods take each cluster's most frequent label (pandas:
``groupby(cluster).agg(mode)`` over a crosstab, the usual hand-written route) and the results
are checked equal. Prints the seconds of each and the ratio.

Run: ``PYTHONPATH=. python benchmarks/smooth_labels.py [n_cells]``. Not run by CI.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from anndata import AnnData

import autogenome_sc as ag


def main(n: int = 1_000_000, n_labels: int = 30, n_clusters: int = 2000) -> None:
    ag.settings.verbosity = 0
    rng = np.random.default_rng(0)
    cluster = rng.integers(0, n_clusters, n)
    own = rng.integers(0, n_labels, n_clusters)[cluster]
    labels = np.where(rng.random(n) < 0.7, own, rng.integers(0, n_labels, n))
    a = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)))
    names = [f"type {i}" for i in range(n_labels)]
    a.obs["ag_prediction"] = pd.Categorical.from_codes(labels, categories=names)
    a.obs["leiden"] = pd.Categorical(cluster.astype(str))

    t = time.perf_counter()
    ag.tl.smooth_labels(a, groupby="leiden")
    ours = time.perf_counter() - t

    t = time.perf_counter()
    counts = pd.crosstab(a.obs["leiden"], a.obs["ag_prediction"])  # clusters x labels
    winner = counts.idxmax(axis=1)  # ties: the first label, as ours
    peer = a.obs["leiden"].map(winner).astype(str)
    theirs = time.perf_counter() - t

    same = bool((peer.to_numpy() == a.obs["ag_prediction_smoothed"].astype(str).to_numpy()).all())
    print(
        f"{n:,} cells, {n_clusters:,} clusters, {n_labels} labels: smooth_labels {ours:.2f} s, pandas crosstab vote {theirs:.2f} s"
    )
    print(f"ratio pandas / ours: {theirs / ours:.1f}x; same labels: {same}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
