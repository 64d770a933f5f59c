"""Accuracy of ag.tl.search against the usual peers, 5-fold stratified CV on pbmc68k_reduced.

Every method sees the same folds and the same input: ``adata.raw.X`` (log-normalised
expression of 765 genes), labels ``obs["bulk_labels"]`` (10 types). For autogenome_sc a
validation split (1/8 of the training fold, stratified) is carved out of the training fold
and passed with the test fold as ``split_key``; the peers train on the whole training fold.

Peers: logistic regression as CellTypist does it (standardised genes, C=1), XGBoost with
the paper's settings (gbtree, max_depth 6, gamma 0.1) and scikit-learn's MLP (2 x 256).
autogenome_sc: ``ag.tl.search`` at a fixed budget (``N_TRIALS`` trials, the config below);
the ensemble of the best ``ENSEMBLE`` trials and, from the same search, the best trial alone.

Run: ``PYTHONPATH=. python benchmarks/accuracy.py [fold ...]`` (``AG_BENCH_PRUNER=none`` to search
without pruning) (folds 1-5, default all; the
folds are fixed, so separate processes may run separate folds). Not run by CI.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scanpy as sc
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import autogenome_sc as ag

N_TRIALS = 16
ENSEMBLE = 5
CONFIG = {
    "trainer": {"max_epochs": 60, "patience": 15},
    "search": {
        "modes": ["mlp", "resnet", "densenet"],
        "ensemble": ENSEMBLE,
        "n_startup_trials": 6,
        "pruner": os.environ.get("AG_BENCH_PRUNER", "hyperband"),
        "spaces": {
            "mlp_widths": [128, 256, 512],
            "mlp_layers": [1, 2],
            "resnet_widths": [64, 128, 256, 512],
            "resnet_blocks": [1, 2, 3],
            "densenet_blocks": [[2, 3, 4]],
            "densenet_growth_rates": [32, 64],
            "input_keep": [0.6, 0.8, 1.0],
            "dropout": [0.1, 0.3, 0.5],
            "learning_rate": [1e-3, 1e-2],
            "weight_decay": [1e-4, 1e-1],
            "batch_size": [32, 64, 128],
        },
    },
}


def peers():
    from xgboost import XGBClassifier

    return {
        "logistic regression (CellTypist)": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)
        ),
        "XGBoost (gbtree, depth 6, gamma 0.1)": lambda: XGBClassifier(
            booster="gbtree", max_depth=6, gamma=0.1, n_jobs=2, random_state=0
        ),
        "scikit-learn MLP (2x256)": lambda: MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=300, random_state=0),
    }


def _best_member(model):
    """The ensemble's first member (the best trial) as a model of its own."""
    arch = model.architecture["members"][0]
    variables = {col: model.variables[col]["members_0"] for col in ("params", "batch_stats")}
    return ag.Model(
        architecture=arch,
        task=model.task,
        classes_=model.classes_,
        var_names_=model.var_names_,
        preprocessing_=model.preprocessing_,
        variables=variables,
        scaler_min_=model.scaler_min_,
        scaler_scale_=model.scaler_scale_,
        config=model.config,
    )


def main(which: list[int]) -> None:
    ag.settings.verbosity = 1
    ag.settings.progress_bar = False
    adata = sc.datasets.pbmc68k_reduced()
    X = adata.raw.X.toarray() if hasattr(adata.raw.X, "toarray") else np.asarray(adata.raw.X)
    y = adata.obs["bulk_labels"].astype(str).to_numpy()
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, float] = {}

    def record(name, y_true, y_pred, t):
        acc = accuracy_score(y_true, y_pred)
        f1 = f1_score(y_true, y_pred, average="macro")
        scores.setdefault(name, []).append((acc, f1))
        seconds[name] = seconds.get(name, 0.0) + t
        print(f"  {name:40s} accuracy {acc:.3f}  macro-F1 {f1:.3f}  ({t:.0f}s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = Path(tmp) / "models"
        for k, (train, test) in enumerate(folds.split(X, y)):
            if k + 1 not in which:
                continue
            print(f"fold {k + 1}/5: {len(train)} training cells, {len(test)} test cells", flush=True)
            for name, make in peers().items():
                t = time.perf_counter()
                if name.startswith("XGBoost"):
                    classes, yi = np.unique(y[train], return_inverse=True)
                    pred = classes[make().fit(X[train], yi).predict(X[test])]
                else:
                    pred = make().fit(X[train], y[train]).predict(X[test])
                record(name, y[test], pred, time.perf_counter() - t)

            fit_idx, val_idx = train_test_split(train, test_size=1 / 8, stratify=y[train], random_state=0)
            split = np.full(adata.n_obs, "test", dtype=object)
            split[fit_idx], split[val_idx] = "train", "val"
            a = adata.copy()
            a.obs["fold"] = split
            t = time.perf_counter()
            ag.tl.search(
                a,
                "bulk_labels",
                n_trials=N_TRIALS,
                use_raw=True,
                split_key="fold",
                config=CONFIG,
                run_dir=Path(tmp) / "runs",
                study_name=f"fold{k}",
                rng=0,
            )
            elapsed = time.perf_counter() - t
            pred = a.obs["ag_prediction"].astype(str).to_numpy()[test]
            record(f"ag.tl.search (ensemble of {ENSEMBLE})", y[test], pred, elapsed)
            single = _best_member(ag.read_model(a.uns["ag"]["model_path"]))
            pred1 = single.predict(a[test], use_raw=True)["prediction"].astype(str).to_numpy()
            record("ag.tl.search (best trial alone)", y[test], pred1, 0.0)
            board = a.uns["ag"]["leaderboard"]
            print(
                f"    {len(board)} trials: {(board['state'] == 'complete').sum()} complete, "
                f"{(board['state'] == 'pruned').sum()} pruned; best {a.uns['ag']['best']['mode']}",
                flush=True,
            )

    print(f"\nmean over {len(next(iter(scores.values())))} folds (pbmc68k_reduced, bulk_labels, raw log data):")
    best_peer = max((n for n in scores if not n.startswith("ag.")), key=lambda n: np.mean([s[0] for s in scores[n]]))
    ref = np.mean(scores[best_peer], axis=0)
    print(f"| method | accuracy | macro-F1 | accuracy / {best_peer.split(' (')[0]} | seconds (all folds) |")
    print("| --- | --- | --- | --- | --- |")
    for name, s in scores.items():
        acc, f1 = np.mean(s, axis=0)
        print(f"| {name} | {acc:.3f} | {f1:.3f} | {acc / ref[0]:.3f} | {seconds[name]:.0f} |")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 2, 3, 4, 5])
