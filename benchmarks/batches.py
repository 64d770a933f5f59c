"""Label transfer across batches: leave-one-batch-out accuracy with and without ``batch_key``.

For each batch in turn, a model is trained on the other batches (the reference) and labels the
held-out batch as a new query through ``ag.tl.predict``. With ``batch_key`` every reference
batch is standardised on its own training cells and the query on itself; without it, the
query gets the reference's scaling only. Logistic regression (scikit-learn, 0-1 scaled genes)
is run the same two ways (per-batch z-scores of every batch, the query's on itself) as a peer.

Data sets:

=================  ======================================================================
bladder            bladder-cancer microarray (``../shared/devdata``), 57 samples x 22,283
                   probes, 5 processing batches; three batches hold a single class each
synthetic          ``ag.datasets.synthetic(1200, 2000, n_batches=4, batch_effect=0.5)``:
                   every batch holds every type, gene-wise and library-size batch effects
synthetic-strong   the same with ``batch_effect=1.0``
=================  ======================================================================

Run: ``PYTHONPATH=. python benchmarks/batches.py [--datasets bladder,synthetic] [--model mlp]``.
Not run by CI. Prints per-batch and mean accuracy / macro-F1 (pooled over held-out cells).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

import autogenome_sc as ag

DEVDATA = Path(os.environ.get("AG_DEVDATA", Path.home() / ".cache" / "ag-devdata"))


def _bladder():
    path = DEVDATA / "bladder.h5ad"
    return None if not path.is_file() else (ad.read_h5ad(path), "cancer", "batch")


def _synthetic(effect: float):
    def load():
        a = ag.datasets.synthetic(1200, 2000, n_types=5, n_batches=4, batch_effect=effect, rng=3)
        return a, "cell_type", "batch"

    return load


DATASETS = {"bladder": _bladder, "synthetic": _synthetic(0.5), "synthetic-strong": _synthetic(1.0)}


def _peer_input(a) -> np.ndarray:
    X = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    X = np.asarray(X, np.float64)
    if float(X.max()) > 50:  # counts: normalise and log1p, as the peers of benchmarks/accuracy.py get
        X = np.log1p(X / np.maximum(X.sum(axis=1, keepdims=True), 1) * 1e4)
    return X


def _standardise(X: np.ndarray, batches: np.ndarray) -> np.ndarray:
    Z = X.copy()
    for b in np.unique(batches):
        m = batches == b
        Z[m] -= Z[m].mean(axis=0)
        sd = Z[m].std(axis=0)
        Z[m] = np.divide(Z[m], sd, out=np.zeros_like(Z[m]), where=sd > 1e-8)
    return Z


def run(name: str, model: str, tmp: Path) -> dict:
    got = DATASETS[name]()
    if got is None:
        print(f"{name}: not found in {DEVDATA} (run ../shared/devdata/make_devdata.sh); skipped")
        return {}
    adata, key, bkey = got
    y = adata.obs[key].astype(str).to_numpy()
    b = adata.obs[bkey].astype(str).to_numpy()
    X = _peer_input(adata)
    print(f"\n## {name}: {adata.n_obs} x {adata.n_vars}, {len(set(y))} classes, {len(set(b))} batches")
    preds: dict[str, np.ndarray] = {}
    for method in ("ag without batch_key", "ag with batch_key", "LR without", "LR per-batch z-scores"):
        preds[method] = np.empty(len(y), dtype=object)
    for held in sorted(set(b)):
        test = b == held
        ref, query = adata[~test].copy(), adata[test].copy()
        if len(set(y[~test])) < 2:
            continue
        for with_batch in (False, True):
            t = time.perf_counter()
            ag.tl.train(
                ref, key, model=model, batch_key=bkey if with_batch else None, rng=0,
                config={"save": {"overwrite": True}},
            )  # fmt: skip
            ag.tl.predict(query, ref.uns["ag"]["model_path"], batch_key=bkey if with_batch else None)
            method = "ag with batch_key" if with_batch else "ag without batch_key"
            preds[method][test] = query.obs["ag_prediction"].astype(str).to_numpy()
            acc = accuracy_score(y[test], preds[method][test])
            print(
                f"  held-out {held:10s} {method:22s} accuracy {acc:.3f}  ({time.perf_counter() - t:.0f}s)", flush=True
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lr = make_pipeline(MinMaxScaler(clip=True), LogisticRegression(max_iter=2000))
            preds["LR without"][test] = lr.fit(X[~test], y[~test]).predict(X[test])
            Z = _standardise(X, b)
            preds["LR per-batch z-scores"][test] = lr.fit(Z[~test], y[~test]).predict(Z[test])
    done = preds["ag with batch_key"] != None  # noqa: E711 - object array: cells of a batch that was held out
    out = {}
    for method, p in preds.items():
        acc = accuracy_score(y[done], p[done].astype(str))
        f1 = f1_score(y[done], p[done].astype(str), average="macro")
        out[method] = (acc, f1)
        print(f"  {method:24s} pooled accuracy {acc:.3f}  macro-F1 {f1:.3f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--model", default="mlp", help="ag.tl.train model (default mlp)")
    args = p.parse_args()
    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = Path(tmp) / "models"
        for name in args.datasets.split(","):
            results[name] = run(name, args.model, Path(tmp))
    print("\n| data | " + " | ".join(next(iter(r for r in results.values() if r), {})) + " |")
    for name, r in results.items():
        if r:
            print(f"| {name} | " + " | ".join(f"{a:.3f} / {f:.3f}" for a, f in r.values()) + " |")


if __name__ == "__main__":
    main()
