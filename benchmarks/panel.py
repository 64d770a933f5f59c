"""A targeted panel against a whole reference on pbmc68k_reduced: what training on the panel's genes costs.

The query is the reference's own test cells, restricted to a "panel" of 200 of the 765 genes of
``adata.raw`` (200 drawn at random, or the 200 most variable on the training cells). For each of
3 seeds (the split and the panel draw), ``ag.tl.train`` (defaults: RFCN-ResNet, ``use_raw=True``):

- ``all genes``: trained on all 765 genes, the test cells labelled with every gene (the ceiling);
- ``zero-padded``: the same model labels the panel query, the 565 missing genes set to zero
  (``data.min_gene_overlap`` lowered to let it: by default the overlap check refuses, 26% < 50%);
- ``genes=panel``: trained with ``genes=`` the panel query, which labels the panel query.

Reported: test accuracy and macro-F1, mean over the seeds. Run: ``PYTHONPATH=. python benchmarks/panel.py``.
Not run by CI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import scanpy as sc
from sklearn.metrics import accuracy_score, f1_score

import autogenome_sc as ag

N_PANEL, SEEDS = 200, (0, 1, 2)


def _scores(truth, pred) -> tuple[float, float]:
    return accuracy_score(truth, pred), f1_score(truth, pred, average="macro")


def _panel(ref, train, how: str, rng: np.random.Generator) -> list[str]:
    if how == "random":
        return list(rng.choice(ref.raw.var_names, N_PANEL, replace=False))
    var = np.asarray(ref.raw.X[train].toarray() if hasattr(ref.raw.X, "toarray") else ref.raw.X[train]).var(axis=0)
    return list(ref.raw.var_names[np.argsort(-var)[:N_PANEL]])


def main() -> None:
    ag.settings.verbosity = 0
    rows: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            ref = sc.datasets.pbmc68k_reduced()
            cfg = {"save": {"path": str(Path(tmp) / f"all{seed}")}, "data": {"min_gene_overlap": 0.2}}
            ag.tl.train(ref, "bulk_labels", use_raw=True, config=cfg, rng=seed)
            test = (ref.obs["ag_split"] == "test").to_numpy()
            train = np.flatnonzero((ref.obs["ag_split"] == "train").to_numpy())
            truth = ref.obs["bulk_labels"].astype(str).to_numpy()[test]
            rows.setdefault("all genes", []).append(_scores(truth, ref.obs["ag_prediction"].astype(str)[test]))
            full = ag.read_model(cfg["save"]["path"])
            for how in ("random", "most variable"):
                genes = _panel(ref, train, how, np.random.default_rng(seed))
                query = sc.AnnData(ref.raw[:, genes].X.copy(), obs=ref.obs[["bulk_labels"]].copy())
                query.var_names = genes
                padded = query.copy()
                ag.tl.predict(padded, full)
                rows.setdefault(f"{how}: zero-padded", []).append(
                    _scores(truth, padded.obs["ag_prediction"].astype(str)[test])
                )
                panel_ref = sc.datasets.pbmc68k_reduced()
                split = ref.obs["ag_split"].astype(str)
                panel_ref.obs["split"] = split
                path = str(Path(tmp) / f"{how}{seed}")
                ag.tl.train(
                    panel_ref, "bulk_labels", use_raw=True, genes=query, split_key="split",
                    config={"save": {"path": path}}, rng=seed,
                )  # fmt: skip
                ag.tl.predict(query, path)
                rows.setdefault(f"{how}: genes=panel", []).append(
                    _scores(truth, query.obs["ag_prediction"].astype(str)[test])
                )
    print("| model, query | test accuracy | macro-F1 |\n| --- | --- | --- |")
    for name, scores in rows.items():
        acc, f1 = np.mean(scores, axis=0)
        print(f"| {name} | {acc:.3f} | {f1:.3f} |")


if __name__ == "__main__":
    main()
