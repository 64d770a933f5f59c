"""Label hierarchies on pbmc68k_reduced: fine and coarse accuracy, and what rejection keeps at the coarse level.

The coarse level is derived from ``bulk_labels`` (T, B, NK, myeloid, progenitor). For each of
5 stratified folds (the test fold given as the ``test`` part of ``split_key``), ``ag.tl.train``
(default RFCN-ResNet, ``use_raw=True``) learns ``label_key=["lineage", "bulk_labels"]``; the
test cells are then labelled by ``ag.tl.predict`` with ``reject`` at several thresholds
(``reject_uncertainty=None``, so only the confidence decides). Reported, pooled over the
folds: fine and coarse accuracy without rejection; with rejection, the share of test cells
kept at the fine level, falling back to the coarse level, and left unassigned, the accuracy of
the labels kept at each level, and what flat rejection (no hierarchy) would have left unassigned.

Run: ``PYTHONPATH=. python benchmarks/hierarchy.py``. Not run by CI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.model_selection import StratifiedKFold, train_test_split

import autogenome_sc as ag

LINEAGE = {
    "CD14+ Monocyte": "myeloid",
    "Dendritic": "myeloid",
    "CD56+ NK": "NK",
    "CD19+ B": "B",
    "CD34+": "progenitor",
    "CD4+/CD25 T Reg": "T",
    "CD8+ Cytotoxic T": "T",
    "CD4+/CD45RO+ Memory": "T",
    "CD8+/CD45RA+ Naive Cytotoxic": "T",
    "CD4+/CD45RA+/CD25- Naive T": "T",
}
THRESHOLDS = (0.5, 0.7, 0.9)


def main() -> None:
    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    a = sc.datasets.pbmc68k_reduced()
    a.obs["lineage"] = a.obs["bulk_labels"].map(LINEAGE).astype("category")
    y = a.obs["bulk_labels"].astype(str).to_numpy()
    coarse_truth = a.obs["lineage"].astype(str).to_numpy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = Path(tmp)
        for f, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)):
            fit, val = train_test_split(train, test_size=1 / 9, stratify=y[train], random_state=0)
            split = np.full(a.n_obs, "test", dtype=object)
            split[fit], split[val] = "train", "val"
            a.obs["fold"] = pd.Categorical(split)
            ag.tl.train(a, ["lineage", "bulk_labels"], use_raw=True, split_key="fold", rng=0)
            model = ag.read_model(a.uns["ag"]["model_path"])
            q = a[test].copy()
            ag.tl.predict(q, model, use_raw=True)
            fine = q.obs["ag_prediction"].astype(str).to_numpy()
            coarse = q.obs["ag_prediction_lineage"].astype(str).to_numpy()
            row = {
                "fold": f + 1,
                "n": len(test),
                "fine": (fine == y[test]).sum(),
                "coarse": (coarse == coarse_truth[test]).sum(),
            }
            for t in THRESHOLDS:
                ag.tl.predict(q, model, use_raw=True, reject=t, reject_uncertainty=None)
                main = q.obs["ag_prediction"].astype(str).to_numpy()
                at_fine = main == q.obs["ag_prediction_bulk_labels"].astype(str).to_numpy()
                at_fine &= main != "Unassigned"
                at_coarse = (main != "Unassigned") & ~at_fine
                row[f"fine@{t}"] = at_fine.sum()
                row[f"fine_ok@{t}"] = (main[at_fine] == y[test][at_fine]).sum()
                row[f"coarse@{t}"] = at_coarse.sum()
                row[f"coarse_ok@{t}"] = (main[at_coarse] == coarse_truth[test][at_coarse]).sum()
                row[f"flat_unassigned@{t}"] = (q.obs["ag_confidence"].to_numpy() < t).sum()
            rows.append(row)
            print(
                f"fold {f + 1}: fine accuracy {row['fine'] / row['n']:.3f}, coarse {row['coarse'] / row['n']:.3f}",
                flush=True,
            )
    df = pd.DataFrame(rows)
    n = df["n"].sum()
    print(
        f"\npooled over {n} test cells: fine accuracy {df['fine'].sum() / n:.3f}, coarse (lineage) {df['coarse'].sum() / n:.3f}\n"
    )
    print(
        "| reject | kept at fine level (accuracy) | fell back to lineage (accuracy) | unassigned | flat rejection: unassigned |"
    )
    print("| --- | --- | --- | --- | --- |")
    for t in THRESHOLDS:
        kf, kc = df[f"fine@{t}"].sum(), df[f"coarse@{t}"].sum()
        un = n - kf - kc
        print(
            f"| {t} | {kf / n:.1%} ({df[f'fine_ok@{t}'].sum() / max(kf, 1):.3f}) | {kc / n:.1%} "
            f"({df[f'coarse_ok@{t}'].sum() / max(kc, 1):.3f}) | {un / n:.1%} | {df[f'flat_unassigned@{t}'].sum() / n:.1%} |"
        )


if __name__ == "__main__":
    main()
