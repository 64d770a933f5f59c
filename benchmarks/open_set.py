"""Open-set label transfer on pbmc68k_reduced: can the model tell cells of an unseen type?

Leave-one-type-out over every ``bulk_labels`` type with at least 30 cells, repeated over
several seeds (each seed: another split and initialisation). For each left-out type:

* ``ag.tl.train`` (default settings, ``use_raw=True``: log-normalised input) on all other
  cells; ``ag.tl.predict`` on every cell.
* the peer: CellTypist's recipe in scikit-learn on the same input and the same training
  cells (train + validation split of ours): per-gene z-scores clipped at 10, multinomial
  logistic regression; its score is the max class probability.
* evaluation on held-out cells only: the reference's test split (seen types) against all
  cells of the left-out type (unseen). AUROC of the uncertainty (ours: ``ag_uncertainty``;
  ablations: ``1 - ag_confidence`` and the input-space distance alone; peer: ``1 - p_max``),
  and the rejection at a threshold: the fraction of unseen cells rejected and of seen
  cells kept (ours: ``reject="auto"``, and ``reject`` 0.5 and 0.9 with and without the novelty rule
  ``reject_uncertainty=0.95``; peer: p_max < 0.5, CellTypist's default, and < 0.9), and
  the fraction of unseen cells rejected at the thresholds that keep 90% or 80% of seen cells.
* calibration on the same held-out seen cells: ECE (15 bins) before and after
  temperature scaling, and the peer's.

``--hierarchy``: the same leave-one-type-out, trained on ``label_key=["lineage", "bulk_labels"]``
(the lineages of ``benchmarks/hierarchy.py``) and predicted with ``reject="auto"``. Where each
held-out cell's label lands: its fine type, its lineage only, another lineage, or
``"Unassigned"``; for the unseen cells, under the rule of ``ag.tl.predict`` (each coarser level
judges novelty against its own classes) and under the rule before it (a cell unlike the reference's
fine types is unassigned at every level). A left-out type whose lineage the reference still has
(monocytes, dendritic cells, T cell types) should fall back to that lineage; one whose lineage is
gone with it (B, NK) should stay unassigned.

``--composition``: what ``query_aware=True`` costs when the query's composition differs from the
reference's. ``ag.tl.train`` on 60% of pbmc68k_reduced (every type, stratified), then queries of the
other 40% in which one type makes up ``--shares`` of the cells (all of its held-out cells, the rest
drawn from the others); the share of that type's cells and of the others that ``reject="auto"``
leaves ``"Unassigned"``, with and without ``query_aware``. No type is unseen here: every rejection
is a false one.

``--cost``: the time ``ag.tl.predict`` takes on 100,000 cells (pbmc68k_reduced's cells drawn again
with a little noise) with and without ``query_aware``, twice each, in the same process.

``--dataset``: other labelled sets of ``benchmarks/accuracy.py`` (``guo``: qPCR stages; ``hsmm``:
hours of differentiation; ``all``: leukemia subtypes), each class of at least 5 cells left out in
turn, on ``.X`` as the suite reads it; the peer on the suite's peer input. Several (``--dataset pbmc68k
guo hsmm all``): each set's tables, then one summary row per set (issue 33's measures).

Run: ``PYTHONPATH=. python benchmarks/open_set.py [--seeds 0 1 2] [--hierarchy] [--composition] [--cost] [--dataset guo hsmm]`` (about 6
minutes on 2 cores for pbmc68k_reduced).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

import autogenome_sc as ag
from autogenome_sc.train import expected_calibration_error

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hierarchy.py: the lineages
from autogenome_sc.train._confidence import confidence_bins, ece_from_bins

RULES = [("auto", 0.95), (0.5, 0.95), (0.5, None), (0.9, 0.95), (0.9, None)]  # (reject, reject_uncertainty)


def celltypist_lr(x_train, y_train, x_all, rng):
    """CellTypist's model on our input: z-score genes (fitted on training cells), clip at 10, LR."""
    scaler = StandardScaler().fit(x_train)

    def z(x):
        return np.clip(scaler.transform(x), -10, 10)

    lr = LogisticRegression(max_iter=1000, random_state=rng).fit(z(x_train), y_train)
    return lr.classes_, lr.predict_proba(z(x_all))


def one_fold(full, x, labels, unseen_type, seed, model_dir, key="bulk_labels", use_raw=True):
    ref = full[labels != unseen_type].copy()
    ref.obs[key] = ref.obs[key].astype(str).astype("category")
    path = f"{model_dir}/{seed}_{hash(unseen_type)}"
    ag.tl.train(ref, key, use_raw=use_raw, rng=seed, config={"save": {"path": path}})
    model = ag.read_model(ref.uns["ag"]["model_path"])
    query = full.copy()
    ag.tl.predict(query, model, use_raw=use_raw, reject=0.9)

    split = pd.Series("unseen", index=full.obs_names)
    split[ref.obs_names] = ref.obs["ag_split"].astype(str)
    split = split.to_numpy()
    unseen = split == "unseen"
    seen_test = split == "test"
    held_out = unseen | seen_test
    fit_cells = (split == "train") | (split == "val")
    classes, proba = celltypist_lr(x[fit_cells], labels[fit_cells], x, seed)
    p_max = proba.max(axis=1)

    u = query.obs["ag_uncertainty"].to_numpy()
    conf = query.obs["ag_confidence"].to_numpy()
    aware = full.copy()  # the same query read as a whole (query_aware=True), rejected at "auto"
    ag.tl.predict(aware, model, use_raw=use_raw, reject="auto", query_aware=True)
    u_query = aware.obs["ag_uncertainty"].to_numpy()
    rejected_query = (aware.obs["ag_prediction"] == "Unassigned").to_numpy()
    pipe = model.pipeline(full, use_raw=use_raw)[0]
    out, _ = model.outputs_of(pipe, full.n_obs)
    dist, _ = model.input_evidence(pipe, full.n_obs)  # the distances to the reference in input space
    if dist.ndim == 2:  # the neighbour and the Mahalanobis distance, standardised and weighed as the score does
        state = model.novelty_
        dist = ((dist - state["dist_loc"]) / state["dist_scale"]) @ np.asarray(state["dist_weights"])
    y = unseen[held_out]
    rules = {}
    for r, level in RULES:  # the rule of ag.tl.predict(reject=r, reject_uncertainty=level)
        rej = (conf < (0.0 if r == "auto" else r)) | (
            u > (1.0 if level is None else level)
        )  # "auto": no confidence rule
        rules[f"rule_{r}_{level}_unseen"] = rej[unseen].mean()
        rules[f"rule_{r}_{level}_seen"] = 1 - rej[split == "test"].mean()
    at_kept = {}
    for name, score in (("ours", u), ("query", u_query), ("lr", -p_max)):
        for kept in (0.9, 0.8):  # threshold keeping this fraction of held-out seen cells
            cut = np.quantile(score[split == "test"], kept)
            at_kept[f"unseen_rejected_{name}_at_{kept}"] = float((score[unseen] > cut).mean())
    rejected = (query.obs["ag_prediction"] == "Unassigned").to_numpy()
    truth = labels[seen_test]
    lr_pred = classes[proba[seen_test].argmax(axis=1)]
    return {
        "type": unseen_type,
        "seed": seed,
        "n_unseen": int(unseen.sum()),
        "n_seen_test": int(seen_test.sum()),
        "auroc_ours": roc_auc_score(y, u[held_out]),
        "auroc_ours_query": roc_auc_score(y, u_query[held_out]),
        "auto_query_unseen": rejected_query[unseen].mean(),
        "auto_query_seen": 1 - rejected_query[seen_test].mean(),
        "auroc_ours_confidence_only": roc_auc_score(y, -conf[held_out]),
        "auroc_ours_distance_only": roc_auc_score(y, dist[held_out]),
        "auroc_lr": roc_auc_score(y, -p_max[held_out]),
        "unseen_rejected_ours": rejected[unseen].mean(),
        **rules,
        "unseen_rejected_lr_0.5": (p_max[unseen] < 0.5).mean(),
        "seen_kept_lr_0.5": (p_max[seen_test] >= 0.5).mean(),
        "unseen_rejected_lr_0.9": (p_max[unseen] < 0.9).mean(),
        "seen_kept_lr_0.9": (p_max[seen_test] >= 0.9).mean(),
        **at_kept,
        "ece_before": _ece_test(model, out, seen_test, truth, temperature=1.0),
        "ece_after": _ece_test(model, out, seen_test, truth, temperature=model.temperature),
        "ece_lr": ece_from_bins(confidence_bins(p_max[seen_test], lr_pred == truth)),
        "accuracy_ours": float((np.asarray(model.classes_)[out[seen_test].argmax(1)] == truth).mean()),
        "accuracy_lr": float((lr_pred == truth).mean()),
    }


def one_fold_hierarchy(full, labels, unseen_type, seed, model_dir):
    """Where the held-out cells' labels land with a lineage level, now and under the rule before per-level novelty."""
    from hierarchy import LINEAGE

    full = full.copy()
    full.obs["lineage"] = full.obs["bulk_labels"].map(LINEAGE).astype("category")
    ref = full[labels != unseen_type].copy()
    for key in ("bulk_labels", "lineage"):
        ref.obs[key] = ref.obs[key].cat.remove_unused_categories()
    path = f"{model_dir}/h{seed}_{hash(unseen_type)}"
    ag.tl.train(ref, ["lineage", "bulk_labels"], use_raw=True, rng=seed, config={"save": {"path": path}})
    model = ag.read_model(ref.uns["ag"]["model_path"])
    query = full.copy()
    ag.tl.predict(query, model, use_raw=True, reject="auto")
    split = pd.Series("unseen", index=full.obs_names)
    split[ref.obs_names] = ref.obs["ag_split"].astype(str)
    split = split.to_numpy()
    main = query.obs["ag_prediction"].astype(str).to_numpy()
    novel = query.obs["ag_uncertainty"].to_numpy() > 0.95
    fine_pred = np.asarray(model.classes_)[model.predict_proba(full, use_raw=True).to_numpy().argmax(axis=1)]
    before = np.where(novel, "Unassigned", fine_pred)  # the rule before: novel among fine types, nothing at all
    lineage = full.obs["lineage"].astype(str).to_numpy()
    lineages = set(LINEAGE.values())

    def where(lab, cells):
        lab, own = lab[cells], lineage[cells]
        return {
            "fine_right": float((lab == labels[cells]).mean()),
            "fine_wrong": float((np.isin(lab, list(LINEAGE)) & (lab != labels[cells])).mean()),
            "lineage_right": float((lab == own).mean()),
            "lineage_wrong": float((np.isin(lab, list(lineages)) & (lab != own)).mean()),
            "unassigned": float((lab == "Unassigned").mean()),
        }

    unseen, test = split == "unseen", split == "test"
    return {
        "type": unseen_type,
        "seed": seed,
        "lineage_known": LINEAGE[unseen_type] in set(ref.obs["lineage"].astype(str)),
        **{f"unseen_now_{k}": v for k, v in where(main, unseen).items()},
        **{f"unseen_before_{k}": v for k, v in where(before, unseen).items()},
        **{f"seen_now_{k}": v for k, v in where(main, test).items()},
        **{f"seen_before_{k}": v for k, v in where(before, test).items()},
    }


def composition(full, labels, types, seeds, shares, model_dir):
    """False rejections of ``reject="auto"`` when one known type is enriched in the query (see the module's text)."""
    from sklearn.model_selection import train_test_split

    rows = []
    for seed in seeds:
        ref_cells, held = train_test_split(np.arange(full.n_obs), test_size=0.4, stratify=labels, random_state=seed)
        ref = full[ref_cells].copy()
        ag.tl.train(ref, "bulk_labels", use_raw=True, rng=seed, config={"save": {"path": f"{model_dir}/c{seed}"}})
        model = ag.read_model(ref.uns["ag"]["model_path"])
        rng = np.random.default_rng(seed)
        row = {"type": "(none: the held-out cells as drawn)", "seed": seed, "share": 0.0, "n_query": len(held)}
        for aware in (False, True):
            q = full[held].copy()
            ag.tl.predict(q, model, use_raw=True, reject="auto", query_aware=aware)
            rejected = (q.obs["ag_prediction"] == "Unassigned").to_numpy()
            row[f"{'aware' if aware else 'alone'}_type"] = row[f"{'aware' if aware else 'alone'}_others"] = (
                rejected.mean()
            )
        rows.append(row)
        for t in types:
            own, rest = held[labels[held] == t], held[labels[held] != t]
            for share in shares:
                n_rest = min(len(rest), int(round(len(own) * (1 - share) / share)))
                cells = np.concatenate([own, rng.choice(rest, n_rest, replace=False)])
                row = {"type": t, "seed": seed, "share": share, "n_query": len(cells)}
                for aware in (False, True):
                    q = full[cells].copy()
                    ag.tl.predict(q, model, use_raw=True, reject="auto", query_aware=aware)
                    rejected = (q.obs["ag_prediction"] == "Unassigned").to_numpy()
                    name = "aware" if aware else "alone"
                    row[f"{name}_type"], row[f"{name}_others"] = (
                        rejected[: len(own)].mean(),
                        rejected[len(own) :].mean(),
                    )
                rows.append(row)
            print(f"  seed {seed} {t}", flush=True)
    df = pd.DataFrame(rows).groupby(["share", "type"], sort=False).mean(numeric_only=True)
    print("\nShare of cells `reject='auto'` leaves Unassigned (every type known; mean over seeds): the enriched type's")
    print("cells / the other cells, without and with `query_aware=True`:\n")
    print("| enriched type | its share of the query | query cells | without | with `query_aware` |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (share, t), r in df.iterrows():
        if share == 0:  # no type enriched: every cell rejected is a false rejection
            print(f"| {t} | | {r.n_query:.0f} | {r.alone_type:.3f} | {r.aware_type:.3f} |")
            continue
        print(
            f"| {t} | {share:.0%} | {r.n_query:.0f} | {r.alone_type:.3f} / {r.alone_others:.3f} | "
            f"{r.aware_type:.3f} / {r.aware_others:.3f} |"
        )
    for share, r in df[df.index.get_level_values("share") > 0].groupby(level="share").mean().iterrows():
        print(
            f"| **mean, {share:.0%}** | | | **{r.alone_type:.3f}** / {r.alone_others:.3f} | "
            f"**{r.aware_type:.3f}** / {r.aware_others:.3f} |"
        )


def cost(full, n=100_000):
    """Seconds ``ag.tl.predict`` takes on ``n`` cells with and without ``query_aware`` (see the module's text)."""
    import anndata

    with tempfile.TemporaryDirectory() as model_dir:
        ag.tl.train(full, "bulk_labels", use_raw=True, rng=0, config={"save": {"path": f"{model_dir}/m"}})
        model = ag.read_model(full.uns["ag"]["model_path"])
    x = full.raw.X.toarray() if hasattr(full.raw.X, "toarray") else np.asarray(full.raw.X)
    rng = np.random.default_rng(0)
    cells = x[rng.integers(0, full.n_obs, n)] + rng.normal(0, 0.05, (n, x.shape[1]))
    query = anndata.AnnData(cells.astype(np.float32))
    query.var_names = full.raw.var_names
    for aware in (False, True, False, True):
        start = time.perf_counter()
        ag.tl.predict(query, model, use_raw=False, query_aware=aware)
        print(f"  {n} cells, query_aware={aware}: {time.perf_counter() - start:.1f} s", flush=True)


def report_hierarchy(rows):
    df = pd.DataFrame(rows)
    per_type = df.drop(columns="seed").groupby("type", sort=False).mean()
    cols = ("fine_right", "fine_wrong", "lineage_right", "lineage_wrong", "unassigned")
    print("\nUnseen cells, where their label lands (mean over seeds; now / before per-level novelty):\n")
    print(
        "| left-out type | its lineage in the reference | " + " | ".join(c.replace("_", " ") for c in cols[1:]) + " |"
    )
    print("| --- | --- |" + " ---: |" * (len(cols) - 1))
    for t, r in per_type.iterrows():
        cells = [f"{r[f'unseen_now_{c}']:.3f} / {r[f'unseen_before_{c}']:.3f}" for c in cols[1:]]
        print(f"| {t} | {'yes' if r.lineage_known else 'no'} | " + " | ".join(cells) + " |")
    print("\nSeen held-out cells (test split), mean over types and seeds (now / before):\n")
    print("| " + " | ".join(c.replace("_", " ") for c in cols) + " |")
    print("|" + " ---: |" * len(cols))
    m = per_type.mean(numeric_only=True)
    print("| " + " | ".join(f"{m[f'seen_now_{c}']:.3f} / {m[f'seen_before_{c}']:.3f}" for c in cols) + " |")


def _ece_test(model, out, cells, truth, temperature):
    from scipy.special import softmax

    index = {c: i for i, c in enumerate(model.classes_)}
    y = np.asarray([index[t] for t in truth])
    return expected_calibration_error(softmax(out[cells] / temperature, axis=1), y)


def load(name, parser):
    """A labelled set: (the AnnData, its label key, whether the model reads ``.raw``, the peer's input)."""
    if name == "pbmc68k":
        full = sc.datasets.pbmc68k_reduced()
        x = full.raw.X.toarray() if hasattr(full.raw.X, "toarray") else np.asarray(full.raw.X)
        return full, "bulk_labels", True, x
    import accuracy

    got = accuracy.DATASETS[name]()
    if got is None:
        parser.error(f"{name} is not in {accuracy.DEVDATA}: run ../shared/devdata/make_devdata.sh")
    full, key, kind = got
    return full, key, False, accuracy.peer_input(full.X, kind)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--min-cells", type=int, default=None, help="types left out: those with at least this many cells"
    )
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=["pbmc68k"],
        help="labelled sets of benchmarks/accuracy.py (guo, hsmm, all, ...); several: a summary table at the end",
    )
    parser.add_argument("--hierarchy", action="store_true", help="with a lineage level: where unseen cells land")
    parser.add_argument(
        "--composition", action="store_true", help="query_aware's false rejections when a known type is enriched"
    )
    parser.add_argument("--shares", type=float, nargs="+", default=[0.3, 0.5], help="with --composition")
    parser.add_argument("--cost", action="store_true", help="the time of query_aware on 100,000 cells")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    ag.settings.verbosity = 0
    if (args.hierarchy or args.composition or args.cost) and args.dataset != ["pbmc68k"]:
        parser.error("--hierarchy, --composition and --cost are for pbmc68k (its lineages, its cells)")
    summary = []
    for name in args.dataset:
        full, key, use_raw, x = load(name, parser)
        labels = full.obs[key].astype(str).to_numpy()
        counts = full.obs[key].value_counts()
        min_cells = args.min_cells if args.min_cells is not None else (30 if name == "pbmc68k" else 5)
        types = [t for t, n in counts.items() if n >= min_cells]
        print(f"{name}: {full.n_obs} cells; leaving out each of {len(types)} types; seeds {args.seeds}")
        start = time.perf_counter()
        if args.cost:
            cost(full)
            return
        if args.composition:
            with tempfile.TemporaryDirectory() as model_dir:
                composition(full, labels, types, args.seeds, args.shares, model_dir)
            print(f"\nTotal {time.perf_counter() - start:.0f}s.")
            return
        rows = []
        if args.hierarchy:
            with tempfile.TemporaryDirectory() as model_dir:
                for seed in args.seeds:
                    for t in types:
                        rows.append(one_fold_hierarchy(full, labels, t, seed, model_dir))
                        print(f"  seed {seed} {t}", flush=True)
            print(f"\nTotal {time.perf_counter() - start:.0f}s.")
            report_hierarchy(rows)
            return
        with tempfile.TemporaryDirectory() as model_dir:
            for seed in args.seeds:
                for t in types:
                    t0 = time.perf_counter()
                    rows.append(one_fold(full, x, labels, t, seed, model_dir, key, use_raw))
                    r = rows[-1]
                    print(
                        f"  seed {seed} {t:30s} AUROC ours {r['auroc_ours']:.3f} "
                        f"query-aware {r['auroc_ours_query']:.3f} LR {r['auroc_lr']:.3f} "
                        f"({time.perf_counter() - t0:.0f}s)",
                        flush=True,
                    )
        print(f"\nTotal {time.perf_counter() - start:.0f}s.", end=" ")
        summary.append({"data": name, "types": len(types), **report(pd.DataFrame(rows))})
    if len(summary) > 1:
        print(
            f"\nEvery set, seeds {args.seeds}: mean AUROC over the left-out types, and `reject='auto'` with the query"
        )
        print(
            "| data | types | reference only | `query_aware=True` | lowest type, with it | CellTypist's LR | "
            "`'auto'` with it: unseen rejected / seen kept |"
        )
        print("| --- | ---: | ---: | ---: | --- | ---: | --- |")
        for r in summary:
            print(
                f"| {r['data']} | {r['types']} | {r['ref']:.3f} | {r['query']:.3f} | {r['lowest']:.3f} "
                f"({r['lowest_type']}) | {r['lr']:.3f} | {r['auto_unseen']:.3f} / {r['auto_seen']:.3f} |"
            )


def report(df):
    """Print the tables of one set's leave-one-type-out folds; return its summary figures."""
    per_type = df.drop(columns="seed").groupby("type", sort=False).mean()

    print("Mean over seeds, per left-out type:\n")
    cols = ["n_unseen", "auroc_ours", "auroc_ours_query", "auroc_lr", "auroc_ours_confidence_only"]
    cols += ["auroc_ours_distance_only"]
    print(
        "| left-out type | cells | AUROC ours | ours, `query_aware=True` | AUROC LR (CellTypist) | ratio | "
        "ours, confidence only | ours, distance only |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t, r in per_type[cols].iterrows():
        print(
            f"| {t} | {int(r.n_unseen)} | {r.auroc_ours:.3f} | {r.auroc_ours_query:.3f} | {r.auroc_lr:.3f} | "
            f"{r.auroc_ours / r.auroc_lr:.2f} | {r.auroc_ours_confidence_only:.3f} | {r.auroc_ours_distance_only:.3f} |"
        )
    m = per_type.mean()
    print(
        f"| **mean** | | **{m.auroc_ours:.3f}** | **{m.auroc_ours_query:.3f}** | **{m.auroc_lr:.3f}** | "
        f"**{m.auroc_ours / m.auroc_lr:.2f}** | {m.auroc_ours_confidence_only:.3f} | {m.auroc_ours_distance_only:.3f} |"
    )
    seed_means = df.groupby("seed")[["auroc_ours", "auroc_lr"]].mean()
    print(
        "\nMean AUROC per seed: "
        + ", ".join(f"seed {s}: ours {r.auroc_ours:.3f} / LR {r.auroc_lr:.3f}" for s, r in seed_means.iterrows())
    )

    print("\nRejection (mean over types and seeds; held-out cells):\n")
    print("| rule | unseen cells rejected | seen cells kept |")
    print("| --- | ---: | ---: |")
    for r, level in RULES:
        what = f"`reject={r!r}`" + (", `reject_uncertainty=None`" if level is None else "")
        print(f"| ours, {what} | {m[f'rule_{r}_{level}_unseen']:.3f} | {m[f'rule_{r}_{level}_seen']:.3f} |")
    print(f"| ours, `reject='auto'`, `query_aware=True` | {m['auto_query_unseen']:.3f} | {m['auto_query_seen']:.3f} |")
    print(f"| LR, p_max < 0.5 (CellTypist default) | {m['unseen_rejected_lr_0.5']:.3f} | {m['seen_kept_lr_0.5']:.3f} |")
    print(f"| LR, p_max < 0.9 | {m['unseen_rejected_lr_0.9']:.3f} | {m['seen_kept_lr_0.9']:.3f} |")

    print("\nUnseen cells rejected at the threshold that keeps a given fraction of held-out seen cells:\n")
    print("| score | 90% of seen kept | 80% of seen kept |")
    print("| --- | ---: | ---: |")
    for name, label in (
        ("ours", "ours, `ag_uncertainty`"),
        ("query", "ours, `query_aware=True`"),
        ("lr", "LR, 1 - p_max"),
    ):
        print(f"| {label} | {m[f'unseen_rejected_{name}_at_0.9']:.3f} | {m[f'unseen_rejected_{name}_at_0.8']:.3f} |")

    print("\nCalibration on held-out seen cells (test split; mean over types and seeds):\n")
    print("| model | accuracy | ECE (15 bins) |")
    print("| --- | ---: | ---: |")
    print(f"| ours, before temperature scaling | {m['accuracy_ours']:.3f} | {m['ece_before']:.3f} |")
    print(f"| ours, after temperature scaling | {m['accuracy_ours']:.3f} | {m['ece_after']:.3f} |")
    print(f"| LR (CellTypist recipe) | {m['accuracy_lr']:.3f} | {m['ece_lr']:.3f} |")
    print(
        f"\nECE ratio after/before: {m['ece_after'] / m['ece_before']:.2f}; ours/LR: {m['ece_after'] / m['ece_lr']:.2f}"
    )
    return {
        "ref": m.auroc_ours,
        "query": m.auroc_ours_query,
        "lowest": per_type.auroc_ours_query.min(),
        "lowest_type": per_type.auroc_ours_query.idxmin(),
        "lr": m.auroc_lr,
        "auto_unseen": m["auto_query_unseen"],
        "auto_seen": m["auto_query_seen"],
    }


if __name__ == "__main__":
    main()
