"""Shared tiny budgets for the search tests (plumbing, not accuracy)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]

# Tiny networks and few epochs: a trial takes about a second plus compilation.
TINY = {
    "trainer": {"max_epochs": 3, "patience": 3},
    "search": {
        "modes": ["mlp", "resnet"],
        "pruner": "none",
        "n_startup_trials": 2,
        "cv_folds": 0,  # plumbing: choose on the validation split (tests/test_select.py covers cross-validation)
        "spaces": {"mlp_widths": [8, 16], "mlp_layers": [1], "resnet_widths": [8, 16], "resnet_blocks": [1]},
    },
}


FOUR_TYPES = ["CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic"]


def four_types(pbmc):
    """pbmc68k_reduced's cells of :data:`FOUR_TYPES` (about 300), a copy: a small problem whose searches end in seconds."""
    return pbmc[pbmc.obs["bulk_labels"].isin(FOUR_TYPES).to_numpy()].copy()


def cli(*args, cwd, env_extra=None, wait=True, log=None):
    """Run ``python -m autogenome_sc.cli ARGS`` from the worktree (so its code is the one tested).

    With ``wait=False`` return the Popen; with ``log`` its output goes to that file (for
    processes nobody reads from, whose progress bars would otherwise fill the pipe).
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **(env_extra or {}))
    cmd = [sys.executable, "-m", "autogenome_sc.cli", *map(str, args)]
    if not wait:
        out = subprocess.PIPE if log is None else open(log, "w")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if log else out, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def wait_for_running_trial(load, proc, log, limit=200):
    """Poll the study until a trial of ``proc`` is RUNNING and has reported an epoch; its number."""
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            raise AssertionError("worker exited early: " + Path(log).read_text()[-2000:])
        try:
            study = load()
        except Exception:  # noqa: BLE001 - the study may not exist yet
            study = None
        if study is not None:
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                if t.intermediate_values:  # training has started
                    return t.number
        time.sleep(0.5)
    raise AssertionError("no trial started in time")
