#!/usr/bin/env bash
# The minimum-versions check: install the lowest versions pyproject.toml allows for every direct
# dependency (uv's --resolution lowest-direct) into a fresh virtual environment, then run the fast tests.
# Too slow for .ci/run (a full install from an empty cache, then the fast tier): run it by hand before a
# release and after raising or lowering a floor. Extra arguments go to pytest, e.g.
#   scripts/lowest_versions.sh tests/test_data.py -k align
# LOWEST_VENV names the environment (default /tmp/lowest-venv); LOWEST_PYTHON the interpreter (python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LOWEST_VENV:-/tmp/lowest-venv}"
python="${LOWEST_PYTHON:-python3.11}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q uv
"$venv/bin/uv" pip install --python "$venv/bin/python" --resolution lowest-direct -e ".[test]"
echo "lowest-versions: installed"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ["anndata", "flax", "igraph", "jax", "jaxlib", "matplotlib", "numpy", "optax", "optuna",
             "pandas", "pydantic", "scanpy", "scikit-learn", "scipy", "shap", "tqdm"]:
    print(f"  {name} {md.version(name)}")
PY
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" MPLBACKEND=Agg
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
"$venv/bin/python" -m pytest -p no:cacheprovider "$@"
