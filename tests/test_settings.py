from conftest import FAST

import autogenome_sc as ag
from autogenome_sc import _logging as logg


def test_progress_bar_follows_verbosity():
    ag.settings.verbosity = 0
    assert logg.progress(range(3)).disable
    ag.settings.verbosity = 1
    assert not logg.progress(range(3)).disable
    ag.settings.progress_bar = False
    try:
        assert logg.progress(range(3)).disable
    finally:
        ag.settings.progress_bar = True


def test_verbosity_controls_messages(counts, ag_log):
    ag.settings.verbosity = 1
    ag.tl.train(counts, "cell_type", config=FAST)
    assert "training resnet" not in ag_log.text  # info hidden at verbosity 1
    ag.settings.verbosity = 2
    ag.tl.train(counts, "cell_type", config=FAST)
    assert "training resnet on adata.obs['cell_type']" in ag_log.text
    assert "added 'ag_prediction', 'ag_confidence', 'ag_uncertainty' (adata.obs)" in ag_log.text
    import jax

    assert ag.settings.device.startswith(jax.default_backend())


# ---------------------------------------------------------------------------- JAX's compilation cache
_TRAIN = """
import json, os, sys
sys.path.insert(0, {tests!r})
from conftest import FAST, synthetic_counts
import autogenome_sc as ag, jax
a = synthetic_counts(n_cells=200, n_genes=30, n_types=3)
ag.settings.verbosity = 0
ag.tl.train(a, "cell_type", config=FAST, rng=3)
print("RESULT " + json.dumps({{
    "cache": None if ag.settings.compile_cache is None else str(ag.settings.compile_cache),
    "jax": jax.config.jax_compilation_cache_dir,
    "confidence": a.obs["ag_confidence"].astype(float).round(7).tolist(),
}}))
"""


def _train_in_a_process(env: dict, cwd) -> dict:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None and not k.startswith("JAX_COMPILATION")}
    env = {k: v for k, v in env.items() if k.upper() != "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"}
    code = _TRAIN.format(tests=str(Path(__file__).parent))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )  # models saved there
    return json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def test_the_compilation_cache_is_the_users_own_and_changes_no_number(tmp_path):
    import stat

    # on by default, in a folder of the user's own under XDG_CACHE_HOME, created for the user only
    home = tmp_path / "xdg"
    default = _train_in_a_process({"XDG_CACHE_HOME": str(home), "AG_COMPILE_CACHE": None}, tmp_path)
    folder = home / "autogenome_sc" / "jax"
    assert default["cache"] == default["jax"] == str(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and any(folder.iterdir())  # executables written there
    # a second process reads them back: the same numbers as the first, and as a process without the cache
    warm = _train_in_a_process({"XDG_CACHE_HOME": str(home), "AG_COMPILE_CACHE": None}, tmp_path)
    off = _train_in_a_process({"AG_COMPILE_CACHE": "off"}, tmp_path)
    assert off["cache"] is None and off["jax"] is None
    assert default["confidence"] == warm["confidence"] == off["confidence"]


def test_a_cache_folder_others_can_write_to_is_refused(tmp_path):
    import os

    import pytest

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    before = ag.settings.compile_cache
    with pytest.raises(ValueError, match=r"writable by other users or owned by another: JAX runs the code"):
        ag.settings.compile_cache = shared
    assert ag.settings.compile_cache == before
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises((ValueError, OSError)):
        ag.settings.compile_cache = file
