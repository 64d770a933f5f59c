"""Accuracy of ``ag.tl.search`` against the usual peers, side by side on the same folds, on a suite of data sets.

Data sets (all real ones ship with scanpy or are built from Debian's data packages by
``../shared/devdata/make_devdata.sh`` into ``~/.cache/ag-devdata``; missing ones are skipped):

=============  ==========================================================================
pbmc68k        scanpy's pbmc68k_reduced, ``.raw`` (log-normalised), 700 cells x 765 genes, bulk_labels
pbmc150        the same, 150 cells drawn stratified (classes with at least 6 cells kept)
guo            single-cell qPCR of mouse embryos, 428 cells x 48 genes (Ct-like), embryo stage
bladder        bladder-cancer microarray, 57 samples x 22,283 probes, Normal / Biopsy / Cancer
golub          leukemia microarray, 38 samples x 3,051 genes (standardised), ALL / AML
synthetic      negative-binomial counts with small effects (``ag.datasets.synthetic``), 150 x 10,000
microarray     synthetic log2 microarray cohort, 125 samples x 12,600 probes, 4 subtypes
mutations      synthetic binary mutation profiles, 300 samples x 2,000 genes, 4 tumour types
fpkm           synthetic full-length FPKM time course, 271 cells x 47,000 genes, float32 with
               denormals (values down to 1e-45) and many genes zero in most cells, 4 stages
hsmm           human skeletal muscle myoblast differentiation (Trapnell et al. 2014, the
               monocle data), 271 cells x 47,192 genes (FPKM), Hours (0 / 24 / 48 / 72)
all            acute lymphoblastic leukemia microarray (Chiaretti et al. 2004, Bioconductor's
               ALL), 128 samples x 12,625 probes (RMA, log2), mol.biol; the classes with fewer
               than 5 samples (NUP-98, p15/p16: one each) are dropped: 126 samples, 4 classes
=============  ==========================================================================

Protocol: 5-fold stratified cross-validation (seed 0), the same folds for every method.
The peers see what the issue's measurement gave them: log1p for count-like data (after
normalising counts to 1e4 per cell), then per-gene 0-1 scaling fitted on the training fold
and clipped on the test fold (``MinMaxScaler(clip=True)``); XGBoost gets the log data
unscaled. Peers: logistic regression as CellTypist trains it (L2, C=1), a linear SVM
(``LinearSVC``, the overall winner of Abdelaal et al. 2019), XGBoost with the paper's
settings (gbtree, max_depth 6, gamma 0.1), scikit-learn's MLP (2 x 256), and a k-nearest-neighbour
classifier as scanpy's ``ingest`` labels cells ("kNN (ingest)": z-scored genes, PCA to
min(50, training cells - 1, genes - 1) components, 15 neighbours; the same log input).

``ag.tl.search`` runs with its defaults and ``timeout`` seconds (default 60) on the raw matrix
(it detects and preprocesses the input itself), each fold in a fresh process as a new user
would run it; the test fold is passed as the ``test`` part
of ``split_key`` (so the search never trains on it) and a stratified ninth of the training
fold as ``val``. Its wall time is reported separately from the final model's fit.

``--preset fast`` runs the search with that preset (and its budget, unless ``--timeout`` is
given); ``--timeout 0``, with the search's default budget (60 s; before issue 29, 30 trials or 240 s).

Run: ``PYTHONPATH=. python benchmarks/accuracy.py [--datasets a,b] [--folds 1,2] [--timeout 60]``.
Not run by CI. Prints one table per data set, then a summary (markdown) and a paired
comparison of ``ag.tl.search`` with the best peer on the same test cells (exact McNemar test on
accuracy, paired bootstrap interval on macro-F1: is a gap larger than what the test cells can
tell apart?), then which family the search's final model was in each fold (its mode, ENAS's
as ``rrfcn``; ``ensemble of a+b`` or ``stack of a+b`` when several configurations were chosen), and writes the raw
scores and every test cell's prediction to ``--out`` (JSON) when given. ``--report
scores.json`` prints the tables again from such a file (several files: their data sets merged,
later files winning).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import LinearSVC

import autogenome_sc as ag

DEVDATA = Path(os.environ.get("AG_DEVDATA", Path.home() / ".cache" / "ag-devdata"))


# ------------------------------------------------------------------------------------ data sets
def _pbmc():
    a = sc.datasets.pbmc68k_reduced()
    X = a.raw.X
    b = ad.AnnData(sp.csr_matrix(X).astype(np.float32), obs=a.obs[["bulk_labels"]].copy())
    b.var_names = a.raw.var_names
    return b, "bulk_labels", "log"


def _pbmc150():
    a, key, kind = _pbmc()
    idx, _ = train_test_split(np.arange(a.n_obs), train_size=150, stratify=a.obs[key], random_state=0)
    b = a[np.sort(idx)].copy()
    counts = b.obs[key].value_counts()
    b = b[b.obs[key].isin(counts[counts >= 6].index)].copy()
    b.obs[key] = b.obs[key].cat.remove_unused_categories()
    return b, key, kind


def _dev(name, key, kind):
    def load():
        path = DEVDATA / f"{name}.h5ad"
        if not path.is_file():
            return None
        a = ad.read_h5ad(path)
        return a, key, kind

    return load


def _all():
    """Bioconductor's ALL by molecular subtype, without the two classes of one sample each (fewer than 5 dropped)."""
    got = _dev("all", "mol.biol", "log")()
    if got is None:
        return None
    a, key, kind = got
    counts = a.obs[key].value_counts()
    a = a[a.obs[key].isin(counts[counts >= 5].index)].copy()
    a.obs[key] = a.obs[key].cat.remove_unused_categories()
    return a, key, kind


def _synthetic():
    a = ag.datasets.synthetic(150, 10_000, n_types=4, effect_size=0.3, rng=1)
    return a, "cell_type", "counts"


def _microarray():
    rng = np.random.default_rng(2)
    n, g, k = 125, 12_600, 4
    y = rng.choice(k, n, p=[0.4, 0.25, 0.2, 0.15])
    base = rng.normal(7.0, 2.0, g)
    sd = rng.gamma(4.0, 0.1, g)
    X = base + sd * rng.normal(size=(n, g))
    for c in range(k):  # each subtype shifts its own 60 probes and a shared program a little
        genes = rng.choice(g, 60, replace=False)
        X[np.ix_(y == c, genes)] += rng.normal(0.0, 0.6, 60)
        X[y == c] += 0.15 * rng.normal(size=g) * (rng.random(g) < 0.05)
    batch = rng.integers(0, 3, n)  # three scanning batches shift every probe a little
    X += rng.normal(0, 0.2, (3, g))[batch]
    a = ad.AnnData(X.astype(np.float32), obs=pd.DataFrame({"subtype": pd.Categorical([f"S{c}" for c in y])}))
    a.var_names = [f"probe{i}" for i in range(g)]
    a.obs_names = [f"sample{i}" for i in range(n)]
    return a, "subtype", "log"


def _mutations():
    rng = np.random.default_rng(3)
    n, g, k = 300, 2000, 4
    y = rng.choice(k, n, p=[0.35, 0.3, 0.2, 0.15])
    rate = rng.beta(0.3, 30.0, g)  # most genes rarely mutated
    P = np.tile(rate, (n, 1))
    for c in range(k):  # each type has its drivers, mutated in 20-60% of its tumours
        drivers = rng.choice(g, 8, replace=False)
        P[np.ix_(y == c, drivers)] = rng.uniform(0.2, 0.6, 8)
    X = (rng.random((n, g)) < P).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"tumour": pd.Categorical([f"T{c}" for c in y])}))
    a.var_names = [f"gene{i}" for i in range(g)]
    a.obs_names = [f"tumour{i}" for i in range(n)]
    return a, "tumour", "binary"


def _fpkm():
    c = ag.datasets.synthetic(271, 47_000, n_types=4, effect_size=0.6, mean_library_size=4000.0, rng=4)
    counts = c.X.toarray().astype(np.float64)
    rng = np.random.default_rng(4)
    length = rng.lognormal(7.5, 0.7, counts.shape[1])  # gene lengths, bp
    fpkm = counts / length * 1e9 / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    X = fpkm.astype(np.float32)
    zero = X == 0
    denormal = zero & (rng.random(X.shape) < 0.02)  # what some pipelines leave behind: float32 denormals
    X[denormal] = rng.choice(np.asarray([1e-45, 1e-44, 1e-43, 3e-42], np.float32), int(denormal.sum()))
    a = ad.AnnData(X, obs=pd.DataFrame({"stage": pd.Categorical([f"E{c}" for c in c.obs["cell_type"].cat.codes])}))
    a.var_names = c.var_names
    a.obs_names = [f"cell{i}" for i in range(a.n_obs)]
    return a, "stage", "normalized"


DATASETS = {
    "pbmc68k": _pbmc,
    "pbmc150": _pbmc150,
    "guo": _dev("guo", "num_cells", "log"),
    "bladder": _dev("bladder", "cancer", "log"),
    "golub": _dev("golub", "type", "log"),
    "synthetic": _synthetic,
    "microarray": _microarray,
    "mutations": _mutations,
    "fpkm": _fpkm,
    "hsmm": _dev("hsmm", "Hours", "normalized"),
    "all": _all,
}


# ------------------------------------------------------------------------------------ peers
def peer_input(X, kind: str) -> np.ndarray:
    """What the peers read: log1p for count-like data (counts normalised to 1e4 per cell first)."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    X = np.asarray(X, np.float64)
    if kind == "counts":
        X = X / np.maximum(X.sum(axis=1, keepdims=True), 1) * 1e4
    if kind in ("counts", "normalized"):
        X = np.log1p(X)
    return X


class IngestKNN:
    """A k-nearest-neighbour classifier as scanpy's ``ingest`` labels cells: z-scores, PCA, 15 neighbours.

    The number of components (at most 50) is set at fitting: PCA cannot have more than the
    training cells or the genes less one (qPCR has 48 genes, Golub's training folds 30 samples).
    """

    def fit(self, X, y):
        from sklearn.decomposition import PCA
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.preprocessing import StandardScaler

        n = min(50, X.shape[0] - 1, X.shape[1] - 1)
        pca = PCA(n, random_state=0)
        self.pipe_ = make_pipeline(StandardScaler(), pca, KNeighborsClassifier(n_neighbors=15)).fit(X, y)
        return self

    def predict(self, X):
        return self.pipe_.predict(X)


def peers():
    from xgboost import XGBClassifier

    return {
        "logistic regression": lambda: make_pipeline(MinMaxScaler(clip=True), LogisticRegression(C=1.0, max_iter=2000)),
        "linear SVM": lambda: make_pipeline(MinMaxScaler(clip=True), LinearSVC(C=1.0, max_iter=5000)),
        "XGBoost": lambda: XGBClassifier(booster="gbtree", max_depth=6, gamma=0.1, n_jobs=2, random_state=0),
        "MLP (2x256)": lambda: make_pipeline(
            MinMaxScaler(clip=True), MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=300, random_state=0)
        ),
        "kNN (ingest)": IngestKNN,
    }


# ------------------------------------------------------------------------------------ run
def run(
    name: str, folds_wanted: list[int], timeout: float | None, methods: set[str] | None, tmp: Path, config=None,
    preset: str | None = None,
) -> dict:  # fmt: skip
    got = DATASETS[name]()
    if got is None:
        print(f"{name}: not found in {DEVDATA} (run ../shared/devdata/make_devdata.sh); skipped", flush=True)
        return {}
    adata, key, kind = got
    y = adata.obs[key].astype(str).to_numpy()
    Xp = peer_input(adata.X, kind)
    print(f"\n## {name}: {adata.n_obs} x {adata.n_vars}, {len(np.unique(y))} classes ({key})", flush=True)
    scores: dict[str, list] = {}
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    for f, (train, test) in enumerate(folds.split(Xp, y)):
        if f + 1 not in folds_wanted:
            continue

        def record(method, pred, seconds, extra="", f=f, test=test):
            acc, f1 = accuracy_score(y[test], pred), f1_score(y[test], pred, average="macro")
            scores.setdefault(method, []).append(
                {
                    "fold": f + 1, "accuracy": acc, "macro_f1": f1, "seconds": seconds,
                    # the test cells and what was predicted for each: the paired comparison reads them
                    "test": [int(i) for i in test], "truth": [str(v) for v in y[test]],
                    "pred": [str(v) for v in pred],
                }
            )  # fmt: skip
            print(
                f"  fold {f + 1} {method:22s} accuracy {acc:.3f}  macro-F1 {f1:.3f}  ({seconds:.0f}s){extra}",
                flush=True,
            )

        for method, make in peers().items():
            if methods and method not in methods:
                continue
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if method == "XGBoost":
                    classes, yi = np.unique(y[train], return_inverse=True)
                    pred = classes[make().fit(Xp[train], yi).predict(Xp[test])]
                else:
                    pred = make().fit(Xp[train], y[train]).predict(Xp[test])
            record(method, pred, time.perf_counter() - t)

        if methods and "ag.tl.search" not in methods:
            continue
        # a fresh process per search, as a new user runs it (no compiled step left over from another fold)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            pred, wall, times, extra = pool.apply(_search_fold, (name, f, timeout, config, str(tmp), preset))
        record("ag.tl.search", pred, wall, extra)
        scores["ag.tl.search"][-1].update(times)
    return scores


def fold_split(name: str, f: int):
    """(data set ``name`` with ``obs["fold"]``, its label key, the test rows) for the search of fold ``f`` (from 0).

    The test fold is the ``test`` part, a stratified ninth of the training fold ``val``.
    """
    adata, key, _ = DATASETS[name]()
    y = adata.obs[key].astype(str).to_numpy()
    train, test = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))[f]
    fit_idx, val_idx = train_test_split(train, test_size=1 / 9, stratify=y[train], random_state=0)
    split = np.full(adata.n_obs, "test", dtype=object)
    split[fit_idx], split[val_idx] = "train", "val"
    a = adata.copy()
    a.obs["fold"] = pd.Categorical(split)
    return a, key, test


def _search_fold(name: str, f: int, timeout: float | None, config, tmp: str, preset: str | None = None):
    """One fold's ``ag.tl.search``, in the calling (fresh) process: test-fold predictions and timings."""
    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    ag.settings.model_dir = Path(tmp) / "models"
    a, key, test = fold_split(name, f)
    t = time.perf_counter()
    ag.tl.search(
        a, key, timeout=timeout, split_key="fold", run_dir=Path(tmp) / "runs", study_name=f"{name}{f}", rng=0,
        config=config, preset=preset,
    )  # fmt: skip
    wall = time.perf_counter() - t
    sel = a.uns["ag"]["selection"]
    board = a.uns["ag"]["leaderboard"]
    members = [int(t) for t in a.uns["ag"]["best"]["ensemble"]]
    times = {
        "search_seconds": float(sel["search_seconds"]),
        "final_seconds": float(sel["final_seconds"]),
        "n_trials": len(board),
        "method": str(sel["method"]),
        "chosen": str(sel["chosen"]),
        "selection": [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in pd.DataFrame(sel["table"]).to_dict("records")
        ],  # what the held-out scores of each re-scored configuration were, and the weights chosen
    }
    extra = (
        f"; search {sel['search_seconds']:.0f}s + final {sel['final_seconds']:.0f}s; {len(board)} trials; "
        f"{sel['method']} chose {sel['chosen']} {members}: {family(times)}"
    )
    return a.obs["ag_prediction"].astype(str).to_numpy()[test], wall, times, extra


def family(record: dict) -> str:
    """The family of a fold's final model, from its record: the chosen mode, ``ensemble of a+b`` (heaviest first) or ``stack of a+b``.

    ENAS's mode is named by what it trains (``rrfcn``); any other choice is named as recorded.
    """
    chosen = record.get("chosen", "")
    if chosen not in ("single", "ensemble", "stack"):
        return str(chosen) or "?"
    rows = sorted((r for r in record.get("selection", []) if r["weight"] > 0), key=lambda r: -r["weight"])
    names = list(dict.fromkeys("rrfcn" if r["mode"] == "enas" else str(r["mode"]) for r in rows))
    if chosen == "single" or len(rows) < 2:
        return names[0] if names else "?"
    return f"{chosen} of " + "+".join(names)


def family_table(all_scores: dict[str, dict]) -> str:
    """Which family the search's final model was in each fold of each data set, as markdown."""
    folds = sorted({r["fold"] for scores in all_scores.values() for r in scores.get("ag.tl.search", [])})
    if not folds:
        return "(no ag.tl.search runs)"
    lines = ["| data | " + " | ".join(f"fold {f}" for f in folds) + " |", "| --- |" + " --- |" * len(folds)]
    for name, scores in all_scores.items():
        by_fold = {r["fold"]: family(r) for r in scores.get("ag.tl.search", [])} if scores else {}
        if by_fold:
            lines.append(f"| {name} | " + " | ".join(by_fold.get(f, "") for f in folds) + " |")
    return "\n".join(lines)


def summary(all_scores: dict[str, dict]) -> str:
    lines = ["| data | " + " | ".join(_methods(all_scores)) + " |", "| --- |" + " --- |" * len(_methods(all_scores))]
    for name, scores in all_scores.items():
        if not scores:
            continue
        means = {
            m: (np.mean([s["accuracy"] for s in v]), np.mean([s["macro_f1"] for s in v])) for m, v in scores.items()
        }
        best_acc = max((v[0] for m, v in means.items() if m != "ag.tl.search"), default=0.0)
        best_f1 = max((v[1] for m, v in means.items() if m != "ag.tl.search"), default=0.0)
        cells = []
        for m in _methods(all_scores):
            if m not in means:
                cells.append("")
                continue
            acc, f1 = means[m]
            a_s = f"**{acc:.3f}**" if acc >= max(best_acc, means.get("ag.tl.search", (0, 0))[0]) else f"{acc:.3f}"
            f_s = f"**{f1:.3f}**" if f1 >= max(best_f1, means.get("ag.tl.search", (0, 0))[1]) else f"{f1:.3f}"
            cells.append(f"{a_s} / {f_s}")
        n = len(next(iter(scores.values())))
        lines.append(f"| {name} ({n} folds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(scores: dict[str, list], ours: str = "ag.tl.search", n_boot: int = 2000, seed: int = 0) -> dict | None:
    """``ours`` against the best peer on the same test cells, pooled over folds (for each score, its best peer).

    Accuracy: the exact McNemar test on the cells one method gets right and the other wrong
    (two-sided binomial test on the discordant cells). Macro-F1: a paired bootstrap of the
    test cells within each fold (both methods resampled together), the 95% interval of the
    difference of the fold-mean macro-F1. A difference whose p-value is large, or whose
    interval holds 0, is within what the test cells can tell apart.
    """
    from scipy.stats import binomtest

    if ours not in scores or len(scores) < 2:
        return None
    peers_ = {m: v for m, v in scores.items() if m != ours}

    def mean(v, k):
        return float(np.mean([s[k] for s in v]))

    best = max(peers_, key=lambda m: (mean(peers_[m], "accuracy"), mean(peers_[m], "macro_f1")))
    best_f1 = max(peers_, key=lambda m: (mean(peers_[m], "macro_f1"), mean(peers_[m], "accuracy")))
    a_folds = scores[ours]
    ran = {s["fold"] for s in a_folds}  # files merged by --report may hold more folds of the peers
    b_folds, c_folds = ([s for s in peers_[m] if s["fold"] in ran] for m in (best, best_f1))
    if any("pred" not in s for s in a_folds + b_folds + c_folds):
        return None
    for fa, fb, fc in zip(a_folds, b_folds, c_folds, strict=True):  # the same cells, in the same order
        if not fa["test"] == fb["test"] == fc["test"]:
            raise ValueError(f"fold {fa['fold']}: the methods were scored on different test cells")
    a_right = np.concatenate([np.asarray(s["pred"]) == np.asarray(s["truth"]) for s in a_folds])
    b_right = np.concatenate([np.asarray(s["pred"]) == np.asarray(s["truth"]) for s in b_folds])
    only_a, only_b = int((a_right & ~b_right).sum()), int((b_right & ~a_right).sum())
    p = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_boot)
    for fa, fb in zip(a_folds, c_folds, strict=True):
        truth, pa, pb = np.asarray(fa["truth"]), np.asarray(fa["pred"]), np.asarray(fb["pred"])
        labels = np.unique(truth)
        for r in range(n_boot):
            i = rng.integers(0, len(truth), len(truth))
            diffs[r] += f1_score(truth[i], pa[i], labels=labels, average="macro", zero_division=0) - f1_score(
                truth[i], pb[i], labels=labels, average="macro", zero_division=0
            )
    diffs /= len(a_folds)
    return {
        "peer": best,
        "cells": int(len(a_right)),
        "accuracy_diff": float(a_right.mean() - b_right.mean()),
        "only_ours_right": only_a,
        "only_peer_right": only_b,
        "mcnemar_p": float(p),
        "f1_peer": best_f1,
        "f1_diff": mean(a_folds, "macro_f1") - mean(c_folds, "macro_f1"),
        "f1_ci": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
    }


def paired_table(all_scores: dict[str, dict]) -> str:
    """The paired comparison of ``ag.tl.search`` with the best peer on every data set, as markdown."""
    lines = [
        "| data | cells | best peer (accuracy) | accuracy, ours - peer | only ours right / only peer right "
        "| McNemar p | best peer (macro-F1) | macro-F1, ours - peer (95% bootstrap) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, scores in all_scores.items():
        r = paired(scores) if scores else None
        if r is None:
            continue
        lo, hi = r["f1_ci"]
        lines.append(
            f"| {name} | {r['cells']} | {r['peer']} | {r['accuracy_diff']:+.3f} | {r['only_ours_right']} / "
            f"{r['only_peer_right']} | {r['mcnemar_p']:.2f} | {r['f1_peer']} | {r['f1_diff']:+.3f} "
            f"({lo:+.3f}, {hi:+.3f}) |"
        )
    return "\n".join(lines)


def _methods(all_scores):
    seen = []
    for scores in all_scores.values():
        for m in scores:
            if m not in seen:
                seen.append(m)
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--folds", default="1,2,3,4,5")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per search (default 60; with --preset, its own; 0: the search's default budget)",
    )
    p.add_argument("--preset", default=None, help="ag.tl.search's preset (fast, default, best)")
    p.add_argument("--methods", default=None, help="comma-separated subset (peer names or ag.tl.search)")
    p.add_argument("--out", default=None, help="write the scores as JSON here")
    p.add_argument(
        "--config", default=None, help="expert config (JSON text) for ag.tl.search, e.g. an A/B of a setting"
    )
    p.add_argument("--report", nargs="+", default=None, help="print the tables from these --out files; run nothing")
    args = p.parse_args()
    if args.report:
        merged: dict = {}
        for path in args.report:
            for name, scores in json.loads(Path(path).read_text()).items():
                merged.setdefault(name, {}).update(scores)
        _print_tables(merged)
        return
    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    methods = set(args.methods.split(",")) if args.methods else None
    folds = [int(f) for f in args.folds.split(",")]
    all_scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = Path(tmp) / "models"
        for name in args.datasets.split(","):
            config = json.loads(args.config) if args.config else None
            timeout = args.timeout if args.timeout is not None or args.preset is not None else 60.0
            timeout = None if timeout is not None and timeout <= 0 else timeout  # 0: the search's default budget
            all_scores[name] = run(name, folds, timeout, methods, Path(tmp), config, args.preset)
            if args.out:
                Path(args.out).write_text(json.dumps(all_scores, indent=1))
    _print_tables(all_scores)


def _print_tables(all_scores: dict[str, dict]) -> None:
    print("\nmean accuracy / macro-F1 over folds (bold: the best, ours included)\n")
    print(summary(all_scores))
    print("\nag.tl.search against the best peer on the same test cells, pooled over folds\n")
    print(paired_table(all_scores))
    print("\nwhich family the search's final model was, in each fold\n")
    print(family_table(all_scores))


if __name__ == "__main__":
    main()
