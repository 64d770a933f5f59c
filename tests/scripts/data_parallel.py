"""Run by tests/test_parallel.py in a fresh process with 2 CPU devices (XLA_FLAGS set by the test)."""

import json
import sys

import jax
import numpy as np

import autogenome_sc as ag

out = {"devices": len(jax.devices())}
ag.settings.verbosity = 0
ag.settings.model_dir = sys.argv[1]
adata = ag.datasets.synthetic(3000, 300, n_types=5, rng=3)
trainer = {"max_epochs": 8, "patience": 8}
cfg = {"models": {"resnet": {"width": 32, "n_blocks": 1}}, "data": {"chunk_mb": 0.25}}
runs = {}
for dp in (False, True):
    b = adata.copy()
    ag.tl.train(b, "cell_type", config={**cfg, "trainer": {**trainer, "data_parallel": dp}}, rng=0)
    runs[dp] = b
    out[f"n_devices_{dp}"] = int(b.uns["ag"]["params"]["n_devices"])
out["val_loss"] = [runs[dp].uns["ag"]["history"]["val_loss"].tolist() for dp in (False, True)]
out["x_ag_max_diff"] = float(np.abs(runs[False].obsm["X_ag"] - runs[True].obsm["X_ag"]).max())
out["x_ag_scale"] = float(np.abs(runs[False].obsm["X_ag"]).max())
out["agree"] = float((runs[False].obs["ag_prediction"] == runs[True].obs["ag_prediction"]).mean())

vae = {"trainer": {"max_epochs": 3, "patience": 3, "batch_size": 100}, "models": {"resvae": {"first_width": 64}}}
emb = {}
for dp in (False, True):
    b = adata.copy()
    ag.tl.train_vae(b, config={**vae, "trainer": {**vae["trainer"], "data_parallel": dp}}, rng=0)
    emb[dp] = b.obsm["X_ag"]
    out.setdefault("vae_val_loss", []).append(b.uns["ag"]["history"]["val_loss"].tolist())
    out[f"vae_n_devices_{dp}"] = int(b.uns["ag"]["params"]["n_devices"])
out["vae_corr"] = float(np.corrcoef(emb[False].ravel(), emb[True].ravel())[0, 1])
# An odd batch is rounded down to a multiple of the device count.
b = adata.copy()
ag.tl.train_vae(b, config={**vae, "trainer": {**vae["trainer"], "batch_size": 101}}, rng=0)
out["odd_batch_n_devices"] = int(b.uns["ag"]["params"]["n_devices"])
print(json.dumps(out))
