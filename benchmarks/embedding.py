"""Latent spaces on pbmc68k_reduced scored against bulk_labels: Res-VAE vs VAE vs PCA vs PCA+t-SNE.

The paper (Fig. 4b) reports that the Res-VAE latent gives the smallest Davies-Bouldin score.
Everything here is measured in one process, on the same 700 cells and 765 genes:

- Res-VAE and plain VAE: ``ag.tl.train_vae`` on ``adata.raw`` (log-normalised values, 0-1
  scaled per gene, MSE likelihood), default architecture (3 layers, 512 -> 256 -> 128,
  latent 128), several seeds; scored on the 128-d latent and on its 2-d t-SNE (as the
  paper plots it).
- PCA(50): scanpy's PCA of ``adata.X`` (the z-scored genes, the usual scanpy route).
- PCA(50)+t-SNE(2): scikit-learn t-SNE of those 50 components.

Scores (scikit-learn): Davies-Bouldin (lower is better), silhouette (higher is better), and
the ARI of k-means (k = number of labels, 10 restarts) against the labels. Labels are never
used in training. Run: ``python benchmarks/embedding.py [n_seeds]``.

``python benchmarks/embedding.py --suite [n_trials]``: Davies-Bouldin of PCA(50), the default
Res-VAE and a ``n_trials`` Res-VAE search on pbmc68k_reduced (``.raw``) and the labelled dev
data sets (``../shared/devdata/make_devdata.sh``), each on the same input.

``python benchmarks/embedding.py --scib``: scib-metrics' label-conservation scores of PCA(50)
and the default Res-VAE on the same data sets (needs ``pip install 'autogenome_sc[scib]'``).
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np
import scanpy as sc
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score

import autogenome_sc as ag


def scores(z: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    k = len(np.unique(labels))
    km = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
    return {
        "davies_bouldin": davies_bouldin_score(z, labels),
        "silhouette": silhouette_score(z, labels),
        "kmeans_ari": adjusted_rand_score(labels, km),
    }


def tsne(z: np.ndarray, seed: int) -> np.ndarray:
    return TSNE(2, random_state=seed, init="pca").fit_transform(z)


def main(n_seeds: int = 3) -> None:
    ag.settings.verbosity = 1
    ag.settings.progress_bar = False
    ag.settings.model_dir = tempfile.mkdtemp(prefix="ag_bench_")  # the benchmark's models are thrown away
    adata = sc.datasets.pbmc68k_reduced()
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    rows: dict[str, list[dict]] = {}
    secs: dict[str, list[float]] = {}

    def add(name, z, seed, t):
        rows.setdefault(name, []).append(scores(z, labels, seed))
        secs.setdefault(name, []).append(t)

    for seed in range(n_seeds):
        t = time.perf_counter()
        pca = sc.pp.pca(adata.X, n_comps=50, random_state=seed)
        add("PCA(50)", pca, seed, time.perf_counter() - t)
        t = time.perf_counter()
        add("PCA(50)+t-SNE(2)", tsne(pca, seed), seed, time.perf_counter() - t + secs["PCA(50)"][-1])
        for model in ("resvae", "vae"):
            t = time.perf_counter()
            out = ag.tl.train_vae(adata, model=model, use_raw=True, rng=seed, copy=True)
            elapsed = time.perf_counter() - t
            name = "Res-VAE" if model == "resvae" else "VAE"
            z = out.obsm["X_ag"]
            add(f"{name} (latent 128)", z, seed, elapsed)
            t = time.perf_counter()
            add(f"{name}+t-SNE(2)", tsne(z, seed), seed, elapsed + time.perf_counter() - t)
            m = out.uns["ag"]["metrics"]
            print(f"  seed {seed} {name}: val ELBO {m['val_elbo']:.2f}, best epoch {m['best_epoch']}", flush=True)

    print(f"\npbmc68k_reduced (700 cells, bulk_labels, 10 types), {n_seeds} seeds, mean (sd)")
    print(f"{'method':<24}{'Davies-Bouldin':>18}{'silhouette':>16}{'k-means ARI':>16}{'seconds':>10}")
    for name, rs in rows.items():
        cells = []
        for m in ("davies_bouldin", "silhouette", "kmeans_ari"):
            v = np.array([r[m] for r in rs])
            cells.append(f"{v.mean():.3f} ({v.std():.3f})")
        print(f"{name:<24}{cells[0]:>18}{cells[1]:>16}{cells[2]:>16}{np.mean(secs[name]):>10.1f}")

    def mean(name, m):
        return float(np.mean([r[m] for r in rows[name]]))

    print("\nratios (Davies-Bouldin: < 1 is better than the peer; ARI and silhouette: > 1 is better)")
    for ours in ("Res-VAE (latent 128)", "Res-VAE+t-SNE(2)"):
        for peer in ("VAE (latent 128)", "VAE+t-SNE(2)", "PCA(50)", "PCA(50)+t-SNE(2)"):
            print(
                f"  {ours} / {peer}: DB {mean(ours, 'davies_bouldin') / mean(peer, 'davies_bouldin'):.2f}, "
                f"k-means ARI {mean(ours, 'kmeans_ari') / mean(peer, 'kmeans_ari'):.2f}, "
                f"silhouette {mean(ours, 'silhouette') / mean(peer, 'silhouette'):.2f}"
            )


def _labelled_sets():
    """``(name, adata, labels, PCA(50) of its matrix)`` of pbmc68k_reduced and the labelled dev data sets."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from accuracy import DATASETS

    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    ag.settings.model_dir = tempfile.mkdtemp(prefix="ag_bench_")
    for name in ("pbmc68k", "guo", "bladder", "golub"):
        got = DATASETS[name]()
        if got is None:
            continue
        adata, key, _ = got
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        pca = sc.pp.pca(X, n_comps=min(50, min(X.shape) - 1), random_state=0)
        yield name, adata, adata.obs[key].astype(str).to_numpy(), pca


def suite(n_trials: int = 3) -> None:
    """Davies-Bouldin of PCA(50), the default Res-VAE and a short Res-VAE search, on every labelled data set.

    The same input for all three (what the search reads: pbmc68k_reduced's ``.raw``, the dev
    sets' matrices), scored on all cells against the labels, which none of them uses.
    """
    print(f"| data | PCA(50) | Res-VAE, defaults | Res-VAE search, {n_trials} trials | seconds (search) |")
    print("| --- | --- | --- | --- | --- |")
    for name, adata, labels, pca in _labelled_sets():
        db = {"pca": davies_bouldin_score(pca, labels)}
        out = ag.tl.train_vae(adata, rng=0, copy=True)
        db["vae"] = davies_bouldin_score(out.obsm["X_ag"], labels)
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as runs:
            found = ag.tl.search(adata, None, modes=("resvae",), n_trials=n_trials, run_dir=runs, rng=0, copy=True)
        secs = time.perf_counter() - t
        db["search"] = davies_bouldin_score(found.obsm["X_ag"], labels)
        print(f"| {name} | {db['pca']:.2f} | {db['vae']:.2f} | {db['search']:.2f} | {secs:.0f} |", flush=True)


def scib_table() -> None:
    """scib-metrics' label-conservation scores of PCA(50) and the default Res-VAE on every labelled data set.

    ``scib_silhouette_label`` (silhouette rescaled to [0, 1]), ``scib_nmi_kmeans``,
    ``scib_ari_kmeans``: computed by the scib-metrics package, so they can be set beside
    published scib tables (higher is better). Needs ``pip install 'autogenome_sc[scib]'``.
    """
    from autogenome_sc.tl._finish import scib_scores

    print("| data | method | silhouette (label, rescaled) | NMI (k-means) | ARI (k-means) |")
    print("| --- | --- | --- | --- | --- |")
    for name, adata, labels, pca in _labelled_sets():
        latents = {"PCA(50)": pca}
        latents["Res-VAE, defaults"] = ag.tl.train_vae(adata, rng=0, copy=True).obsm["X_ag"]
        for method, z in latents.items():
            s = scib_scores(z, labels)
            print(
                f"| {name} | {method} | {s['scib_silhouette_label']:.3f} | {s['scib_nmi_kmeans']:.3f} | "
                f"{s['scib_ari_kmeans']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--scib":
        scib_table()
    elif len(sys.argv) > 1 and sys.argv[1] == "--suite":
        suite(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
