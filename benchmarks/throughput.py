"""Trials per minute and time to a good model: ``ag.tl.search`` with and without JAX's compilation cache.

Each run is one search of ``--timeout`` seconds (default 60) in a fresh Python process, as a user
starts one, on a data set of ``benchmarks/accuracy.py`` (the search's own split: the same cells in every run). Three conditions, in this order, per data set:

``off``
    ``AG_COMPILE_CACHE=off``: every process compiles everything (the package before issue 29).
``cold``
    The cache on, in an empty folder: the first process of a user.
``warm``
    The same folder again: every later process.

Printed per run: the trials that ran, the trials per 60 s, the seconds until the first trial
whose validation accuracy is within 0.01 of the search's best trial's (the trials' own times,
in the order they ran), the test accuracy; then the ratios of ``cold`` and ``warm`` to ``off``.
The same ``rng`` throughout: a run with the cache must choose what the run without it chose
when the same trials ran (the cache changes the time, never a number). Printed figures are ratios
within one process's measurements, as docs/benchmarks.md asks; the machine's noise is not
removed, run it on a quiet machine.

Run: ``PYTHONPATH=. python benchmarks/throughput.py [--datasets pbmc68k,hsmm] [--timeout 60] [--out X.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_RUN = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {here!r})
from accuracy import DATASETS
import autogenome_sc as ag

adata, key, _ = DATASETS[{name!r}]()
ag.settings.verbosity = 0
t0 = time.perf_counter()
ag.tl.search(adata, label_key=key, timeout={timeout}, rng=0, config={{"save": {{"path": {path!r}}}}})
wall = time.perf_counter() - t0
board = adata.uns["ag"]["leaderboard"]
done = board[board["state"] == "complete"]
acc = done["val_accuracy"].to_numpy(float)
secs = board["seconds"].to_numpy(float)
order = np.argsort(board["trial"].to_numpy())
elapsed = np.cumsum(np.nan_to_num(secs[order]))
good = np.nan if not len(acc) else np.nanmax(acc) - 0.01
reached = [e for e, a in zip(elapsed, board["val_accuracy"].to_numpy(float)[order]) if a >= good]
test = adata.obs["ag_split"] == "test"
print("RESULT " + json.dumps({{
    "trials": int(len(board)), "complete": int(len(done)), "search_seconds": float(adata.uns["ag"]["selection"]["search_seconds"]),
    "wall": wall, "first_good": float(reached[0]) if reached else None,
    "test_accuracy": float((adata.obs["ag_prediction"][test].astype(str) == adata.obs[key][test].astype(str)).mean()),
    "chosen": str(adata.uns["ag"]["selection"]["table"].sort_values("weight").iloc[-1]["mode"]),
}}))
"""


def run(name: str, condition: str, cache: str, timeout: int) -> dict:
    """One search in a fresh process under ``condition`` (cache ``off``, or the folder ``cache``)."""
    env = dict(os.environ, AG_COMPILE_CACHE="off" if condition == "off" else cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory() as tmp:
        code = _RUN.format(here=str(HERE), name=name, timeout=timeout, path=str(Path(tmp) / "model"))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"{name} {condition} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="pbmc68k,hsmm")
    p.add_argument("--timeout", type=int, default=60)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    results: dict[str, dict] = {}
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix="ag-throughput-cache-") as cache:
            os.chmod(cache, 0o700)
            got = {c: run(name, c, cache, args.timeout) for c in ("off", "cold", "warm")}
        results[name] = got
        print(f"\n## {name}, {args.timeout} s searches")
        for c, r in got.items():
            per_min = r["trials"] * 60.0 / max(r["search_seconds"], 1e-9)
            first = "-" if r["first_good"] is None else f"{r['first_good']:.1f}s"
            print(
                f"  {c:5s} {r['trials']:3d} trials ({per_min:5.1f} per 60 s); first within 0.01 of the best: "
                f"{first}; test accuracy {r['test_accuracy']:.3f} ({r['chosen']}); wall {r['wall']:.0f}s"
            )
        off = got["off"]["trials"] / max(got["off"]["search_seconds"], 1e-9)
        for c in ("cold", "warm"):
            ratio = got[c]["trials"] / max(got[c]["search_seconds"], 1e-9) / max(off, 1e-9)
            print(f"  {c} / off: {ratio:.2f}x the trials per minute")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
