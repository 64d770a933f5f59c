"""One of two processes of a multi-process run (jax.distributed), started by tests/test_parallel.py."""

import json
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives between processes
port, pid, model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import autogenome_sc as ag  # noqa: E402 - after jax.distributed.initialize

ag.settings.verbosity = 0
ag.settings.model_dir = model_dir
adata = ag.datasets.synthetic(3000, 300, n_types=5, rng=3)
cfg = {
    "models": {"resnet": {"width": 32, "n_blocks": 1}},
    "data": {"chunk_mb": 0.25},
    "trainer": {"max_epochs": 8, "patience": 8},
}
ag.tl.train(adata, "cell_type", config=cfg, rng=0)
out = {
    "process_count": jax.process_count(),
    "local_devices": len(jax.local_devices()),
    "n_devices": int(adata.uns["ag"]["params"]["n_devices"]),
    "val_loss": adata.uns["ag"]["history"]["val_loss"].tolist(),
}
print(json.dumps(out))
