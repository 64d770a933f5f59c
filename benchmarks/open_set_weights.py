"""The unknown-type score's terms, each alone and reweighted: leave-one-type-out, replayed on saved terms.

For each type of a labelled set (``--dataset``, as in ``benchmarks/open_set.py``: pbmc68k_reduced's
types with at least 30 cells, another set's classes with at least 5), ``ag.tl.train`` (defaults) on
the other cells, then the four terms of ``ag_uncertainty`` for every cell, read once from the model
(the input-space distance, the model's and the reference-space classifier's ``1 - p_max``, and the
``query_aware`` density ratio with every cell as the query), and, for comparison, two scores issue 33
lists that the package does not use, in the same space (the reference's principal components the
distance is measured in): the Mahalanobis distance to the nearest class mean, with one covariance
shared by the classes (Ledoit-Wolf), and the relative Mahalanobis distance (that, less the distance
to the reference as one Gaussian; Ren et al. 2021). And the reference-only score (``query_aware=False``)
with either distance alone or both at half weight each (the package's weights since the Mahalanobis
distance joined the score; for a model with the neighbour distance alone, the Mahalanobis distance is
standardised here as the package standardises it: median and 90% quantile of the validation cells). ``ag_uncertainty`` is then recomputed with
the package's own rank function for each weight of the density ratio in ``--query-weights`` (the other
terms as the package weighs them; the model's own weight gives ``benchmarks/open_set.py``'s figures).
Printed: each term's AUROC alone, and per weight the mean AUROC (unseen cells against the reference's
test split), the unseen cells ``reject="auto"`` rejects and the seen test cells it keeps.

Run: ``PYTHONPATH=. python benchmarks/open_set_weights.py --dataset hsmm [--seeds 0] [--query-weights 0.5 1]``
(about 5 minutes for HSMM on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

import autogenome_sc as ag
from autogenome_sc.train._confidence import (
    _class_gaussians,
    _mahalanobis,
    _rank_with_query,
    _robust_scale,
    input_novelty_raw,
    project,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))


def terms(full, labels, key, unseen_type, seed, use_raw, model_dir):
    """The split of every cell, each term alone, and what the package ranks (``None``: no density ratio)."""
    ref = full[labels != unseen_type].copy()
    ref.obs[key] = ref.obs[key].astype(str).astype("category")
    ag.tl.train(
        ref, key, use_raw=use_raw, rng=seed, config={"save": {"path": f"{model_dir}/{seed}_{hash(unseen_type)}"}}
    )
    model = ag.read_model(ref.uns["ag"]["model_path"])
    split = pd.Series("unseen", index=full.obs_names)
    split[ref.obs_names] = ref.obs["ag_split"].astype(str)
    pipe = model.pipeline(full, use_raw=use_raw)[0]
    out, _ = model.outputs_of(pipe, full.n_obs)
    confidence = softmax(out / model.temperature, axis=1).max(axis=1)
    evidence = model.input_evidence(pipe, full.n_obs, query=True)
    if evidence is None or len(evidence) != 4:
        return None  # too few held-out cells for the density ratio
    both, lr, density, held_density = evidence
    state = model.novelty_
    now = input_novelty_raw(both, confidence, lr.max(axis=1), state)
    coords = project(pipe.block, np.arange(full.n_obs), state)
    if both.ndim == 2:  # the model's own two distances: the neighbour's, the Mahalanobis
        z = (both - state["dist_loc"]) / state["dist_scale"]
        z_both = z @ np.asarray(state["dist_weights"])
        dist, maha, z_dist, z_maha = both[:, 0], both[:, 1], z[:, 0], z[:, 1]
    else:  # a model with the neighbour distance alone: the package's Mahalanobis distance, standardised as it does
        dist, z_both = both, (both - state["dist_loc"]) / state["dist_scale"]
        maha = _mahalanobis(coords, _class_gaussians(state["points"], state["point_class"]))
        loc, scale = _robust_scale(maha[(split == "val").to_numpy()])
        z_dist, z_maha = z_both, (maha - loc) / scale
    relative = maha - whole_reference(coords, state)
    return {
        "reference only": {
            "as now": now,
            "neighbour distance alone": now - z_both + z_dist,
            "Mahalanobis alone": now - z_both + z_maha,
            "half each": now - z_both + 0.5 * z_dist + 0.5 * z_maha,
        },  # fmt: skip
        "split": split.to_numpy(),
        "alone": {
            "distance": dist,
            "confidence": 1 - confidence,
            "classifier": 1 - lr.max(axis=1),
            "density": density,
            "mahalanobis": maha,
            "relative mahalanobis": relative,
        },  # fmt: skip
        "s": now,
        "density": (density, held_density),
        "state": model.novelty_,
    }


def whole_reference(coords: np.ndarray, state: dict) -> np.ndarray:
    """Squared Mahalanobis distance to the kept reference cells as one Gaussian (Ledoit-Wolf): the relative one's base."""
    from sklearn.covariance import LedoitWolf

    whole = LedoitWolf().fit(np.asarray(state["points"], np.float64))
    x = np.asarray(coords, np.float64) - whole.location_
    return np.einsum("ij,jk,ik->i", x, whole.precision_, x)


def uncertainty(t: dict, w: float) -> np.ndarray:
    """``ag_uncertainty`` as ``ag.tl.predict(query_aware=True)`` computes it, with the density ratio weighted ``w``."""
    return _rank_with_query(t["s"], t["density"], {**t["state"], "query_weight": np.asarray(w)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pbmc68k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--query-weights", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    ag.settings.verbosity = 0
    if args.dataset == "pbmc68k":
        full, key, use_raw = sc.datasets.pbmc68k_reduced(), "bulk_labels", True
    else:
        import accuracy

        got = accuracy.DATASETS[args.dataset]()
        if got is None:
            parser.error(f"{args.dataset} is not in {accuracy.DEVDATA}: run ../shared/devdata/make_devdata.sh")
        full, key, _ = got
        use_raw = False
    labels = full.obs[key].astype(str).to_numpy()
    counts = full.obs[key].value_counts()
    types = [t for t, n in counts.items() if n >= (30 if args.dataset == "pbmc68k" else 5)]
    rows = []
    with tempfile.TemporaryDirectory() as model_dir:
        for seed in args.seeds:
            for unseen_type in types:
                t = terms(full, labels, key, unseen_type, seed, use_raw, model_dir)
                if t is None:
                    print(f"  seed {seed} {unseen_type}: too few held-out cells for the density ratio; left out")
                    continue
                held = (t["split"] == "unseen") | (t["split"] == "test")
                y = (t["split"] == "unseen")[held]
                row = {"type": unseen_type, "seed": seed}
                row.update({f"alone {k}": roc_auc_score(y, np.asarray(v)[held]) for k, v in t["alone"].items()})
                row.update({f"ref {k}": roc_auc_score(y, np.asarray(v)[held]) for k, v in t["reference only"].items()})
                for w in args.query_weights:
                    u = uncertainty(t, w)
                    row[f"{w} AUROC"] = roc_auc_score(y, u[held])
                    row[f"{w} unseen rejected"] = float((u[t["split"] == "unseen"] > 0.95).mean())
                    row[f"{w} seen kept"] = float((u[t["split"] == "test"] <= 0.95).mean())
                rows.append(row)
                print(f"  seed {seed} {unseen_type}", flush=True)
    df = pd.DataFrame(rows).drop(columns="seed").groupby("type", sort=False).mean()
    m = df.mean()
    print(f"\n{args.dataset}, {len(df)} left-out types, seeds {args.seeds}: each term alone, mean AUROC")
    print(
        "| distance | `1 - ag_confidence` | reference-space classifier | density ratio | Mahalanobis | "
        "relative Mahalanobis |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {m['alone distance']:.3f} | {m['alone confidence']:.3f} | {m['alone classifier']:.3f} | "
        f"{m['alone density']:.3f} | {m['alone mahalanobis']:.3f} | {m['alone relative mahalanobis']:.3f} |"
    )
    print("\nPer left-out type, each term alone:")
    alone = [c for c in df.columns if c.startswith(("alone", "ref "))]
    print("| type | " + " | ".join(c.removeprefix("alone ") for c in alone) + " |")
    print("| --- |" + " ---: |" * len(alone))
    for name, r in df.iterrows():
        print(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in alone) + " |")
    ref = [c for c in df.columns if c.startswith("ref ")]
    print("\nThe reference-only score (no query): mean AUROC, and the lowest left-out type's")
    print("| distance term | mean | lowest |")
    print("| --- | ---: | ---: |")
    for c in ref:
        print(f"| {c.removeprefix('ref ')} | {df[c].mean():.3f} | {df[c].min():.3f} ({df[c].idxmin()}) |")
    print('\nThe density ratio\'s weight: AUROC / unseen cells rejected by `reject="auto"` / seen test cells kept')
    print("| weight | AUROC | unseen rejected | seen kept |")
    print("| ---: | ---: | ---: | ---: |")
    for w in args.query_weights:
        print(f"| {w} | {m[f'{w} AUROC']:.3f} | {m[f'{w} unseen rejected']:.3f} | {m[f'{w} seen kept']:.3f} |")


if __name__ == "__main__":
    main()
