#!/usr/bin/env bash
# The minimum-versions check: install the lowest version pyproject.toml allows of every direct dependency
# into a fresh virtual environment, then run the fast tests there.
#
# Every `name>=floor` of [project.dependencies] is pinned to `name==floor` (a constraints file), and uv
# resolves the rest with --resolution lowest-direct; a floor that cannot be installed with the others fails
# here, so the floors pyproject.toml states are the versions tested. The test tools of the `test` extra are
# installed at their newest (they are not the package's dependencies).
#
# Too slow for .ci/run (a second environment of about 160 packages, then the fast tier: minutes even from
# uv's cache): run it by hand after changing a floor and before a release. Extra arguments go to pytest:
#   scripts/lowest_versions.sh                           # the fast tier
#   scripts/lowest_versions.sh tests/test_data.py -q     # one file
# LOWEST_VENV names the environment (default /tmp/lowest-venv), LOWEST_PYTHON the interpreter (python3.11,
# the oldest Python pyproject.toml allows).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LOWEST_VENV:-/tmp/lowest-venv}"
python="${LOWEST_PYTHON:-python3.11}"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q uv
floors="$venv/floors.txt"
"$venv/bin/python" - "$floors" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pins = []
for dep in deps:
    m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*>=\s*([^,;\s]+)", dep)
    if m:
        pins.append(f"{m.group(1)}=={m.group(3)}")
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
print("lowest-versions: pinned", ", ".join(pins))
PY
"$venv/bin/uv" pip install --python "$venv/bin/python" --resolution lowest-direct -c "$floors" -e .
# zarr: the round-trip tests write zarr; anndata 0.12 brings it, 0.11 does not and reads zarr<3 only.
"$venv/bin/uv" pip install --python "$venv/bin/python" -c "$floors" pytest pytest-xdist hypothesis "zarr<3"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md, re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name = re.match(r"^[A-Za-z0-9_.-]+", dep).group(0)
    print(f"lowest-versions: {name} {md.version(name)} ({dep.split('#')[0].strip()})")
PY
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" MPLBACKEND=Agg
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
"$venv/bin/python" -m pytest -p no:cacheprovider -n 0 "$@"
