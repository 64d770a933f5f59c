"""Hashes of results for fixed seeds: a train, a search, a VAE and an ENAS run on pbmc68k_reduced.

A refactor that promises no change in behaviour must leave these bit-identical. Run it on the
commit before and on the change, on the same machine (XLA's CPU code differs between CPU
types, so the hashes are not stored in the repository):

    JAX_PLATFORMS=cpu PYTHONPATH=. .venv/bin/python scripts/fingerprint.py   # about 1 minute
"""

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import scanpy as sc

import autogenome_sc as ag

ENAS = Path(__file__).with_name("fingerprint_enas.json")
ag.settings.verbosity = 0
ag.settings.progress_bar = False
tmp = Path(tempfile.mkdtemp())
ag.settings.model_dir = tmp / "models"
out = {}


def h(*arrays):
    """A short hash of the arrays' bytes."""
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return m.hexdigest()[:16]


base = sc.datasets.pbmc68k_reduced()
a = base.copy()
ag.tl.train(a, "bulk_labels", use_raw=True, rng=3, config={"trainer": {"max_epochs": 4}})
out["train"] = h(a.obsm["X_ag"], a.obs["ag_confidence"].to_numpy())
a = base.copy()
cfg = {
    "trainer": {"max_epochs": 3, "patience": 3},
    "search": {
        "modes": ["linear", "mlp", "resnet"],
        "pruner": "none",
        "n_startup_trials": 2,
        "cv_folds": 3,
        "cv_max_cells": 300,
        "spaces": {"mlp_widths": [8, 16], "mlp_layers": [1], "resnet_widths": [8, 16], "resnet_blocks": [1]},
    },
}
ag.tl.search(a, "bulk_labels", use_raw=True, n_trials=6, timeout=None, rng=1, config=cfg, run_dir=tmp / "runs")
out["search"] = h(a.obsm["X_ag"], a.obs["ag_confidence"].to_numpy())
a = base.copy()
ag.tl.train_vae(a, use_raw=True, rng=2, config={"trainer": {"max_epochs": 3}})
out["vae"] = h(a.obsm["X_ag"])
a = base.copy()
ag.tl.train(
    a,
    "bulk_labels",
    model="enas",
    use_raw=True,
    rng=0,
    config=json.loads(sys.argv[1] if len(sys.argv) > 1 else ENAS.read_text()),
)
out["enas"] = h(a.obsm["X_ag"], a.obs["ag_confidence"].to_numpy())
print(json.dumps(out))
