"""ENAS (RRFCN) on pbmc68k_reduced (``.raw``, bulk_labels), CPU-sized config.

1. Whole ENAS search time vs training one child (the derived RRFCN) to convergence with
   ``autogenome_sc.train.fit`` (early stopping), both in this process, cold (compilation
   included) and warm (the search's compiled steps reused; a fit always compiles its own).
   Target: search <= 5x one child.
2. ENAS vs random sampling with shared weights at equal budget (same epochs of shared
   training, same number of scored children, same K candidates): validation accuracy of the
   derived architecture, with the shared weights and after retraining from scratch.
   Seeds interleaved (controller, random, controller, random, ...).

Run: ``PYTHONPATH=$PWD python benchmarks/enas.py``. The machine is shared with other
workers, so timings are noisy; the script repeats and prints every figure.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import scanpy as sc

import autogenome_sc as ag
from autogenome_sc import config
from autogenome_sc.data import prepare
from autogenome_sc.nn import build_network
from autogenome_sc.search import run_enas
from autogenome_sc.train import fit

CFG = {
    "models": {
        "enas": {
            "n_nodes": 4,
            "first_width": 256,
            "widths": [16, 32, 64, 128, 256],
            "epochs": 20,
            "controller_steps": 10,
            "n_arch_per_step": 10,
            "n_candidates": 20,
            "controller_lr": 5e-3,
        }
    },
    "trainer": {"max_epochs": 60, "patience": 20},
}
# A sanity check where the architecture matters: width-2 nodes are bottlenecks for 10 classes
# unless skip connections route around them.
BOTTLENECK = {
    "models": {
        "enas": {
            "n_nodes": 4,
            "first_width": 128,
            "widths": [2, 16, 128],
            "epochs": 20,
            "controller_steps": 10,
            "n_arch_per_step": 10,
            "n_candidates": 20,
            "controller_lr": 5e-3,
        }
    },
    "trainer": {"max_epochs": 60, "patience": 20},
}
SEEDS = [int(s) for s in os.environ.get("ENAS_SEEDS", "0,1,2").split(",")]


def child_fit(data, cfg, network, seed):
    t = time.perf_counter()
    res = fit(build_network(network, data.n_out), data, cfg.trainer, cfg.loss, jax.random.key(seed + 100), desc="child")
    secs = time.perf_counter() - t
    val_acc = float(res.history["val_accuracy"][res.best_epoch])
    return secs, val_acc, res.best_epoch


def main():
    ag.settings.verbosity = 0
    adata = sc.datasets.pbmc68k_reduced()
    for name, spec in (("CPU-sized paper space", CFG), ("bottleneck space (sanity check)", BOTTLENECK)):
        print(f"\n=== {name} ===")
        compare(adata, spec)


def compare(adata, spec):
    cfg = config.validate(spec)
    data, _ = prepare(
        adata,
        "bulk_labels",
        layer=None,
        use_raw=True,
        split_key=None,
        data_cfg=cfg.data,
        loss="auto",
        rng=np.random.default_rng(0),
    )
    print(
        f"pbmc68k_reduced .raw: {len(data.idx['train'])} train / {len(data.idx['val'])} val cells, "
        f"{data.pipeline.n_features} genes; config {spec['models']['enas']}"
    )
    print(f"jax devices: {jax.devices()}; load average {os.getloadavg()}")

    rows = []
    for seed in SEEDS:
        for sampler in ("controller", "random"):
            t = time.perf_counter()
            res = run_enas(data, cfg, jax.random.key(seed), sampler=sampler, retrain=False)
            search_s = time.perf_counter() - t
            cold = any(v > 0 for v in res.n_traces.values())
            best = res.candidates.iloc[0]
            fit_s, val_acc, best_epoch = child_fit(data, cfg, res.network, seed)
            rows.append(
                (
                    seed,
                    sampler,
                    search_s,
                    cold,
                    fit_s,
                    float(best["val_accuracy"]),
                    val_acc,
                    float(res.history["mean_reward"][-3:].mean()),
                    res.architecture,
                )
            )
            print(
                f"seed {seed} {sampler:10s} search {search_s:6.1f} s ({'cold' if cold else 'warm'}), "
                f"child fit {fit_s:5.1f} s (best epoch {best_epoch}), ratio {search_s / fit_s:4.1f}x | "
                f"derived val acc shared {best['val_accuracy']:.3f}, retrained {val_acc:.3f} | "
                f"mean reward last 3 epochs {rows[-1][7]:.3f} | {res.architecture}",
                flush=True,
            )

    print("\nsummary")
    for sampler in ("controller", "random"):
        r = [x for x in rows if x[1] == sampler]
        warm = [x[2] / x[4] for x in r if not x[3]]
        cold = [x[2] / x[4] for x in r if x[3]]
        print(
            f"{sampler:10s} search/child time ratio: cold {np.round(cold, 2).tolist()}, warm {np.round(warm, 2).tolist()}; "
            f"derived val acc (shared) {np.mean([x[5] for x in r]):.3f} +- {np.std([x[5] for x in r]):.3f}; "
            f"retrained {np.mean([x[6] for x in r]):.3f} +- {np.std([x[6] for x in r]):.3f}; "
            f"mean reward (last 3 epochs) {np.mean([x[7] for x in r]):.3f}"
        )
    c = [x for x in rows if x[1] == "controller"]
    q = [x for x in rows if x[1] == "random"]
    print(
        f"ENAS / random, retrained val acc: {np.mean([x[6] for x in c]) / np.mean([x[6] for x in q]):.3f}x; "
        f"shared-weight val acc: {np.mean([x[5] for x in c]) / np.mean([x[5] for x in q]):.3f}x"
    )


if __name__ == "__main__":
    main()
