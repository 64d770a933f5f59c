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

Also printed: XLA's backend compile seconds (JAX's own events, every thread) and the seconds of
the first 8 trials (the portfolio's). ``--config`` passes an expert config to every search, e.g. the
A/B of compiling ahead: ``--conditions off --config '{"search": {"compile_ahead": true}}'`` against
the same with ``false`` (docs/benchmarks.md).

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
import jax.monitoring
import numpy as np
compiling = [0.0]  # XLA's backend compile time, every thread (JAX's own event)
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiling.__setitem__(0, compiling[0] + secs)
    if event == "/jax/core/compile/backend_compile_duration" else None
)
sys.path.insert(0, {here!r})
from accuracy import DATASETS
import autogenome_sc as ag

adata, key, _ = DATASETS[{name!r}]()
ag.settings.verbosity = 0
t0 = time.perf_counter()
config = {{**json.loads({config!r}), "save": {{"path": {path!r}}}}}
ag.tl.search(adata, label_key=key, timeout={timeout}, rng=0, config=config)
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
    "wall": wall, "first_good": float(reached[0]) if reached else None, "compiling": compiling[0],
    "portfolio_seconds": float(elapsed[7]) if len(elapsed) >= 8 else None,
    "test_accuracy": float((adata.obs["ag_prediction"][test].astype(str) == adata.obs[key][test].astype(str)).mean()),
    "chosen": str(adata.uns["ag"]["selection"]["table"].sort_values("weight").iloc[-1]["mode"]),
}}))
"""


def run(name: str, condition: str, cache: str, timeout: int, config: str = "{}") -> dict:
    """One search in a fresh process under ``condition`` (cache ``off``, or the folder ``cache``), with ``config`` (JSON)."""
    env = dict(os.environ, AG_COMPILE_CACHE="off" if condition == "off" else cache)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    with tempfile.TemporaryDirectory() as tmp:
        code = _RUN.format(here=str(HERE), name=name, timeout=timeout, path=str(Path(tmp) / "model"), config=config)
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
    p.add_argument("--config", default="{}", help="an expert config (JSON) for every search")
    p.add_argument("--conditions", default="off,cold,warm", help="a subset of off,cold,warm, run in this order")
    args = p.parse_args()
    try:  # a malformed config fails here, not in every subprocess
        json.loads(args.config)
    except json.JSONDecodeError as e:
        p.error(f"--config is not JSON: {e}")
    if not set(args.conditions.split(",")) <= {"off", "cold", "warm"}:
        p.error(f"--conditions takes off, cold and warm; got {args.conditions!r}")
    conditions = args.conditions.split(",")
    results: dict[str, dict] = {}
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix="ag-throughput-cache-") as cache:
            os.chmod(cache, 0o700)
            got = {c: run(name, c, cache, args.timeout, args.config) for c in conditions}
        results[name] = got
        print(f"\n## {name}, {args.timeout} s searches")
        for c, r in got.items():
            per_min = r["trials"] * 60.0 / max(r["search_seconds"], 1e-9)
            first = "-" if r["first_good"] is None else f"{r['first_good']:.1f}s"
            print(
                f"  {c:5s} {r['trials']:3d} trials ({per_min:5.1f} per 60 s); first within 0.01 of the best: "
                f"{first}; test accuracy {r['test_accuracy']:.3f} ({r['chosen']}); wall {r['wall']:.0f}s; "
                f"XLA compiling {r['compiling']:.1f}s; the first 8 trials {r['portfolio_seconds'] or float('nan'):.1f}s"
            )
        if "off" not in got:
            continue
        off = got["off"]["trials"] / max(got["off"]["search_seconds"], 1e-9)
        for c in [c for c in ("cold", "warm") if c in got]:
            ratio = got[c]["trials"] / max(got[c]["search_seconds"], 1e-9) / max(off, 1e-9)
            print(f"  {c} / off: {ratio:.2f}x the trials per minute")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
