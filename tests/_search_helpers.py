"""Shared tiny budgets for the search tests (plumbing, not accuracy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tiny networks and few epochs: a trial takes about a second plus compilation.
TINY = {
    "trainer": {"max_epochs": 3, "patience": 3},
    "search": {
        "modes": ["mlp", "resnet"],
        "pruner": "none",
        "n_startup_trials": 2,
        "spaces": {"mlp_widths": [8, 16], "mlp_layers": [1], "resnet_widths": [8, 16], "resnet_blocks": [1]},
    },
}


def cli(*args, cwd, env_extra=None, wait=True):
    """Run ``python -m autogenome_sc.cli ARGS`` from the worktree (so its code is the one tested)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env_extra or {}))
    cmd = [sys.executable, "-m", "autogenome_sc.cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
