"""BatchNorm in the FC units or not: our networks against scikit-learn's MLP on the same cells.

For each of the 5 folds of ``benchmarks/accuracy.py`` (stratified, seed 0) the networks train
with ``ag.tl.train`` on the same eight ninths of the training fold as the search (the ninth
left is the validation split for early stopping) and are scored on the test fold;
scikit-learn's ``MLPClassifier`` (the suite's peer) trains on the same eight ninths. Rows:

- ``sklearn MLP``: scikit-learn's MLP, 2 x 256, on the peers' input;
- ``sklearn settings, BN`` / ``no BN``: our 2 x 256 MLP with scikit-learn's settings (Adam at
  1e-3, batch 128, weight decay 1e-4, no dropout, no label smoothing), with and without
  BatchNorm; ``no BN, last epoch`` keeps the last of its 60 epochs instead of the best;
- ``portfolio MLP`` / ``portfolio ResNet``, ``BN`` / ``no BN``: the search's regularised
  first trials (dropout 0.3, input keep 0.8, weight decay 1e-2, label smoothing 0.1).

Run: ``PYTHONPATH=. python benchmarks/batch_norm.py [--datasets pbmc68k,guo]`` (about 10 minutes
on 2 cores). Prints mean accuracy / macro-F1 over the folds; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import warnings

import numpy as np
import pandas as pd
from accuracy import DATASETS, peer_input, peers
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, train_test_split

import autogenome_sc as ag
import autogenome_sc.tl._train as tl_train
from autogenome_sc.train import fit


def _config(bn: bool, portfolio: bool) -> dict:
    if portfolio:
        arch = {"dropout": 0.3, "input_keep": 0.8, "batch_norm": bn}
        trainer = {"learning_rate": 3e-3, "batch_size": 64, "weight_decay": 1e-2}
        smoothing = 0.1
    else:
        arch = {"dropout": 0.0, "input_keep": 1.0, "batch_norm": bn}
        trainer = {"learning_rate": 1e-3, "batch_size": 128, "weight_decay": 1e-4}
        smoothing = 0.0
    return {
        "trainer": trainer,
        "loss": {"label_smoothing": smoothing},
        "models": {"mlp": {"widths": [256, 256], **arch}, "resnet": {"width": 256, "n_blocks": 3, **arch}},
    }


#: row name -> (model, config, keep the last epoch)
VARIANTS = {
    "sklearn settings, BN": ("mlp", _config(True, False), False),
    "sklearn settings, no BN": ("mlp", _config(False, False), False),
    "sklearn settings, no BN, last epoch": ("mlp", _config(False, False), True),
    "portfolio MLP, BN": ("mlp", _config(True, True), False),
    "portfolio MLP, no BN": ("mlp", _config(False, True), False),
    "portfolio ResNet, BN": ("resnet", _config(True, True), False),
    "portfolio ResNet, no BN": ("resnet", _config(False, True), False),
}


def run(name: str) -> dict[str, list[tuple[float, float]]]:
    adata, key, kind = DATASETS[name]()
    y = adata.obs[key].astype(str).to_numpy()
    Xp = peer_input(adata.X, kind)
    res: dict[str, list[tuple[float, float]]] = {}

    def score(row, truth, pred):
        res.setdefault(row, []).append((accuracy_score(truth, pred), f1_score(truth, pred, average="macro")))

    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(Xp, y):
        fit_idx, val_idx = train_test_split(train, test_size=1 / 9, stratify=y[train], random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score("sklearn MLP", y[test], peers()["MLP (2x256)"]().fit(Xp[fit_idx], y[fit_idx]).predict(Xp[test]))
        split = np.full(adata.n_obs, "test", dtype=object)
        split[fit_idx], split[val_idx] = "train", "val"
        for row, (model, cfg, last) in VARIANTS.items():
            a = adata.copy()
            a.obs["fold"] = pd.Categorical(split)
            # keep_last: no early stopping, the last epoch's weights (the search's refits train this way)
            tl_train.fit = functools.partial(fit, keep_last=True) if last else fit
            try:
                ag.tl.train(a, key, model=model, config=cfg, split_key="fold", rng=0)
            finally:
                tl_train.fit = fit
            score(row, y[test], a.obs["ag_prediction"].astype(str).to_numpy()[test])
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="pbmc68k,guo")
    args = p.parse_args()
    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    names = args.datasets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = tmp
        table = {name: run(name) for name in names}
    rows = list(next(iter(table.values())))
    print("| network | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for row in rows:
        cells = [
            f"{np.mean([a for a, _ in table[n][row]]):.3f} / {np.mean([f for _, f in table[n][row]]):.3f}"
            for n in names
        ]
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
