#!/usr/bin/env bash
# The GPU check (issue 32), as one prepared command for a lent accelerator machine. Not run by CI.
#
# Prepare here (needs the package registry):  bash ../shared/device/fetch_wheels.sh   (wheels in .whl/)
# Then, through the device tool, carrying .whl:  bash scripts/device_check.sh
# It writes logs to $OUT (or ./device_out): env.txt, device.txt (benchmarks/device.py),
# search.txt (a 60 s ag.tl.search on pbmc68k_reduced, timed end to end), tests.txt (the fast
# tier), ahead.txt (the portfolio's 8 trials with search.compile_ahead on and off: the values must agree).
# Each part has its own time limit, so a slow part cannot eat the others' time. On the first H200 run
# the device benchmark's sections 1-2 took the whole 180 s: AG_DEVICE_ARGS="--sections 3,4,5" runs the rest.
# Set AG_CHECK_PARTS to a subset of "device search ahead tests" to rerun only what failed. A CPU dry run:
#   AG_NO_WHEELS=1 PY=.venv/bin/python AG_DEVICE_ARGS=--quick AG_TESTS_S=60 OUT=/tmp/dc bash scripts/device_check.sh
set -uo pipefail
OUT="${OUT:-$PWD/device_out}"
mkdir -p "$OUT"
PARTS="${AG_CHECK_PARTS:-device search ahead tests}"
if [ -d .whl ] && [ -z "${AG_NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tail -3
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export MPLBACKEND=Agg PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
PY="${PY:-python3}"

{
  date -u
  nvidia-smi -L 2>&1 || true
  $PY -c "import jax, flax, optax, anndata, scanpy, optuna; print('jax', jax.__version__, jax.devices()); print('flax', flax.__version__, 'optax', optax.__version__, 'anndata', anndata.__version__, 'scanpy', scanpy.__version__, 'optuna', optuna.__version__)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

for part in $PARTS; do
  start=$(date +%s)
  case "$part" in
    device)
      timeout "${AG_DEVICE_S:-180}" $PY benchmarks/device.py ${AG_DEVICE_ARGS:-} > "$OUT/device.txt" 2>&1
      ;;
    search)
      timeout "${AG_SEARCH_S:-120}" $PY - > "$OUT/search.txt" 2>&1 <<'EOF'
import tempfile, time
import scanpy as sc
import autogenome_sc as ag
ag.settings.model_dir = tempfile.mkdtemp()
ag.settings.verbosity = 0
adata = sc.datasets.pbmc68k_reduced()
t = time.perf_counter()
ag.tl.search(adata, label_key="bulk_labels", use_raw=True, timeout=60, rng=0)
wall = time.perf_counter() - t
info = adata.uns["ag"]
print(f"search timeout=60: {wall:.1f} s end to end ({wall / 60:.2f}x the timeout)")
print("uns keys:", sorted(info))
print("metrics:", info.get("metrics"))
print("best:", info.get("best"))
print("chosen:", info.get("selection", {}).get("chosen") if isinstance(info.get("selection"), dict) else None)
EOF
      ;;
    ahead)
      # search.compile_ahead on an accelerator (issue 29): the portfolio's 8 trials, each condition in a fresh process
      for on in true false; do
        timeout "${AG_AHEAD_S:-90}" $PY - "$on" >> "$OUT/ahead.txt" 2>&1 <<'EOF'
import sys, tempfile, time
import scanpy as sc
import autogenome_sc as ag
on = sys.argv[1] == "true"
ag.settings.model_dir = tempfile.mkdtemp()
ag.settings.verbosity = 0
adata = sc.datasets.pbmc68k_reduced()
t = time.perf_counter()
ag.tl.search(adata, label_key="bulk_labels", use_raw=True, n_trials=8, rng=0, config={"search": {"compile_ahead": on}})
board = adata.uns["ag"]["leaderboard"].sort_values("trial")
print(f"compile_ahead={on}: {time.perf_counter() - t:.1f} s end to end; the 8 trials {board['seconds'].sum():.1f} s;",
      "per trial", [round(float(x), 1) for x in board["seconds"]], "values", [round(float(v), 4) for v in board["value"]])
EOF
      done
      ;;
    tests)
      per_test=""; $PY -c "import pytest_timeout" 2>/dev/null && per_test="--timeout 120"
      timeout "${AG_TESTS_S:-220}" $PY -m pytest -m "not slow" -n 4 --dist loadscope -q -p no:cacheprovider \
        $per_test --maxfail 20 > "$OUT/tests.txt" 2>&1
      ;;
  esac
  rc=$?
  echo "== $part: exit $rc after $(( $(date +%s) - start )) s (124: its time limit)" | tee -a "$OUT/env.txt"
  tail -n 40 "$OUT/$part.txt"
done
