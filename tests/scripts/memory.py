"""Peak memory of ag.tl.train on a backed file, run by tests/test_scale.py in a fresh process.

Prints JSON: the RSS after imports and a JAX warm-up (the baseline), the peak RSS of the
whole ag.tl.train call, and the size the dense float32 matrix would take.
"""

import json
import resource
import sys

import anndata as ad
import jax.numpy as jnp

import autogenome_sc as ag


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def peak_rss_gib() -> float:
    """This process's high-water mark (VmHWM). Not ru_maxrss: Linux carries the parent's
    RSS at fork over into a child's ru_maxrss across exec, so under pytest it reported 2 GiB."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


path, model_dir = sys.argv[1], sys.argv[2]
ag.settings.verbosity = 0
ag.settings.progress_bar = False
ag.settings.model_dir = model_dir
adata = ad.read_h5ad(path, backed="r")
float(jnp.ones(8).sum())  # start the XLA runtime before the baseline
base = rss_gib()
cfg = {"trainer": {"max_epochs": 1, "patience": 1}, "models": {"mlp": {"widths": [32]}}, "data": {"chunk_mb": 16}}
ag.tl.train(adata, "cell_type", model="mlp", config=cfg, rng=0)
print(
    json.dumps(
        {
            "baseline_gib": base,
            "peak_gib": peak_rss_gib(),
            "dense_gib": adata.n_obs * adata.n_vars * 4 / 2**30,
            "accuracy": float(adata.uns["ag"]["metrics"]["accuracy"]),
            "backed": adata.isbacked,
        }
    )
)
