"""A query-aware novelty score on pbmc68k_reduced, measured before anything is built (issue 33).

Leave-one-type-out over every ``bulk_labels`` type with at least 30 cells, seeds 0, 1, 2. The
reference is 80% of the other types' cells (stratified); the query is the other 20% (seen) and a
share ``--unseen`` of the left-out type's cells (unseen). In the reference's space (per-gene
z-scores of its cells, its 2,000 most variable genes, 50 principal components: the space of
``ag_uncertainty``'s distance term), three scores of each query cell:

* ``distance``: the mean distance to its 10 nearest reference cells (what ``ag_uncertainty`` reads);
* ``query share``: the share of query cells among its 15 nearest cells of reference + query;
* ``density ratio``: its mean distance to the 10 nearest reference cells over its mean distance to
  its 10 nearest other query cells. A cell of a type the reference lacks lies far from the
  reference and close to the other cells of its type in the query.

AUROC of each, unseen against seen. The last two read the query as a whole, so they depend on
its composition: ``--unseen 1`` puts every left-out cell in the query (as
``benchmarks/open_set.py`` does) while the seen types come at 20%; ``--unseen 0.2`` samples both
at 20%, so the query's density says nothing the reference does not.

The package's ``ag.tl.predict(query_aware=True)`` builds on the density ratio, with the neighbour
counts matched to the sets' sizes, the reference weighted to the query's composition and held-out
reference cells read in the same query to calibrate it; ``benchmarks/open_set.py`` measures that.

Run: ``python benchmarks/open_set_query.py [--unseen 0.2]``. Scanpy and scikit-learn only; a few
seconds.
"""

from __future__ import annotations

import argparse

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import NearestNeighbors

SCORES = ("distance", "query share", "density ratio")


def scores(P: np.ndarray, ref: np.ndarray, query: np.ndarray) -> dict[str, np.ndarray]:
    """The three scores of the ``query`` rows of ``P`` against the ``ref`` rows (see the module's text)."""
    d_ref = NearestNeighbors(n_neighbors=10).fit(P[ref]).kneighbors(P[query])[0].mean(axis=1)
    pool = np.concatenate([ref, query])
    is_query = np.r_[np.zeros(len(ref)), np.ones(len(query))]
    near = NearestNeighbors(n_neighbors=16).fit(P[pool]).kneighbors(P[query])[1][:, 1:]  # itself first
    d_query = NearestNeighbors(n_neighbors=11).fit(P[query]).kneighbors(P[query])[0][:, 1:].mean(axis=1)
    return {
        "distance": d_ref,
        "query share": is_query[near].mean(axis=1),
        "density ratio": d_ref / np.maximum(d_query, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unseen", type=float, default=1.0, help="share of the left-out type's cells in the query")
    args = parser.parse_args()
    if not 0 < args.unseen <= 1:
        parser.error(f"--unseen must be in (0, 1], not {args.unseen}")
    a = sc.datasets.pbmc68k_reduced()
    X = a.raw.X.toarray() if sp.issparse(a.raw.X) else np.asarray(a.raw.X)
    X = np.asarray(X, np.float64)
    y = a.obs["bulk_labels"].astype(str).to_numpy()
    names, counts = np.unique(y, return_counts=True)
    types = [t for t, n in zip(names, counts, strict=True) if n >= 30]
    table: dict[str, dict[str, list[float]]] = {t: {s: [] for s in SCORES} for t in types}
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        for t in types:
            seen, unseen = np.flatnonzero(y != t), np.flatnonzero(y == t)
            unseen = rng.choice(unseen, max(int(args.unseen * len(unseen)), 6), replace=False)
            ref, test = train_test_split(seen, test_size=0.2, stratify=y[seen], random_state=seed)
            mu, sd = X[ref].mean(axis=0), X[ref].std(axis=0)
            sd[sd < 1e-6] = 1.0
            genes = np.argsort(-X[ref].var(axis=0), kind="stable")[:2000]
            Z = ((X - mu) / sd)[:, genes]
            P = PCA(50, random_state=seed).fit(Z[ref]).transform(Z)
            query = np.concatenate([test, unseen])
            truth = np.r_[np.zeros(len(test)), np.ones(len(unseen))]
            for name, s in scores(P, ref, query).items():
                table[t][name].append(roc_auc_score(truth, s))
    print(f"pbmc68k_reduced, leave-one-type-out, 3 seeds, {args.unseen:.0%} of the left-out type in the query\n")
    print("| left-out type | " + " | ".join(SCORES) + " |")
    print("| --- |" + " ---: |" * len(SCORES))
    for t in types:
        print(f"| {t} | " + " | ".join(f"{np.mean(table[t][s]):.3f}" for s in SCORES) + " |")
    means = [np.mean([np.mean(table[t][s]) for t in types]) for s in SCORES]
    print("| **mean** | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")


if __name__ == "__main__":
    main()
