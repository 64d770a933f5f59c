"""The trees mode alone: accuracy and fit time of scikit-learn's boosted trees as the portfolio sets them, per setting.

On every data set of ``benchmarks/accuracy.py``'s suite, 5-fold stratified cross-validation (seed 0),
the peers' input (``peer_input``), clipped 0-1 scaling fitted on the training fold, and on wide
data (at least 2,000 genes) the 500 genes with the largest F statistic on the training fold, as the
portfolio's trees entry reads them. ``HistGradientBoostingClassifier`` with the portfolio's entry
(learning rate 0.1, 31 leaves, no L2 penalty, a fifth of the genes per split, up to 200 stages, its
own early stopping on a ninth of the training fold after 20 stages without gain), one setting
changed to each value of ``--values``. Printed per data set: mean accuracy / macro-F1 and the
seconds of the five fits, per value; then the means over the data sets.

Run: ``PYTHONPATH=. python benchmarks/trees.py --param max_bins --values 255,63,31 [--datasets ...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_selection import f_classif
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import MinMaxScaler

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from accuracy import DATASETS, peer_input

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--param", default="max_bins", help="a HistGradientBoostingClassifier argument")
    p.add_argument("--values", default="255,63,31", help="comma-separated values of --param (numbers)")
    args = p.parse_args()
    values = [float(v) if "." in v else int(v) for v in args.values.split(",")]
    base = {"learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 0.0, "max_features": 0.2, "max_bins": 63}
    means = []
    for name in args.datasets.split(","):
        got = DATASETS[name]()
        if got is None:
            print(f"{name}: not found (run ../shared/devdata/make_devdata.sh); skipped")
            continue
        adata, key, kind = got
        y = adata.obs[key].astype(str).to_numpy()
        x = peer_input(adata.X, kind)
        res = {v: ([], [], 0.0) for v in values}
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
            scale = MinMaxScaler(clip=True).fit(x[train])
            xtr, xte = scale.transform(x[train]), scale.transform(x[test])
            if x.shape[1] >= 2000:
                with warnings.catch_warnings():  # constant genes: their F statistic is NaN, read as 0
                    warnings.simplefilter("ignore")
                    f = np.nan_to_num(f_classif(xtr, y[train])[0])
                keep = np.argsort(-f)[:500]
                xtr, xte = xtr[:, keep], xte[:, keep]
            for v in values:
                model = HistGradientBoostingClassifier(
                    **{**base, args.param: v}, max_iter=200, early_stopping=True, validation_fraction=1 / 9,
                    n_iter_no_change=20, random_state=0,
                )  # fmt: skip
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.fit(xtr.astype(np.float32), y[train])
                seconds = time.perf_counter() - t
                pred = model.predict(xte.astype(np.float32))
                acc, f1, s = res[v]
                res[v] = (
                    acc + [accuracy_score(y[test], pred)],
                    f1 + [f1_score(y[test], pred, average="macro")],
                    s + seconds,
                )
        row = {v: (np.mean(a), np.mean(f), s) for v, (a, f, s) in res.items()}
        means.append([row[v][:2] for v in values])
        cells = " | ".join(f"{a:.3f} / {f:.3f} ({s:.1f} s)" for a, f, s in row.values())
        print(f"| {name} | {cells} |", flush=True)
    if means:
        m = np.mean(np.asarray(means), axis=0)
        print(f"| mean | {' | '.join(f'{a:.3f} / {f:.3f}' for a, f in m)} |")
        print(f"({args.param}: {', '.join(map(str, values))})")


if __name__ == "__main__":
    main()
