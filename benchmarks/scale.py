"""Scale: training on 10k, 100k and 1M cells x 2000 genes on disk; epoch time and peak memory.

For each size, a synthetic negative-binomial data set (``ag.datasets.synthetic``) is written
to an h5ad file once, then each run happens in a fresh process so its peak RSS is its own:

- ``backed``: ``anndata.read_h5ad(path, backed="r")`` -> ``ag.tl.train`` (default ResNet,
  two epochs; the second is timed, the first includes compilation): the matrix stays on disk.
- ``memory`` (the peer): the same file read into memory (``anndata.read_h5ad(path)``, CSR)
  -> the same call. Skipped at sizes whose CSR matrix would not fit in ``--memory-limit-gb``.

Reported per run: the training epoch's time (``uns["ag"]["history"]["train_seconds"]``),
throughput in cells per second, the whole ``ag.tl.train`` call's time (input checks, scaling
pass, epoch, validation, predictions for every cell, calibration, saving), the process's peak
RSS and the size the dense float32 matrix would take. Then the ratios backed / memory at each
size, and the slope of epoch time against cells (least squares), to check it is linear.

    python benchmarks/scale.py                      # 10k, 100k, 1M (about 25 min, 7 GB of disk)
    python benchmarks/scale.py --sizes 10000 100000 --dir /tmp/ag_scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_gib() -> float:
    """This process's high-water mark (VmHWM; ru_maxrss would include the parent's RSS at fork)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20


def child(path: str, mode: str, model_dir: str) -> dict:
    """One run in this (fresh) process; returns the measurements."""
    import anndata as ad

    import autogenome_sc as ag

    ag.settings.verbosity = 1
    ag.settings.progress_bar = False
    ag.settings.model_dir = model_dir
    rss_start = peak_rss_gib()
    t0 = time.perf_counter()
    adata = ad.read_h5ad(path, backed="r") if mode == "backed" else ad.read_h5ad(path)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    ag.tl.train(adata, "cell_type", config={"trainer": {"max_epochs": 2, "patience": 2}}, rng=0)
    t_call = time.perf_counter() - t0
    uns = adata.uns["ag"]
    n_train = int((adata.obs["ag_split"] == "train").sum())
    epoch = float(uns["history"]["train_seconds"][1])  # the second epoch: no compilation in it
    return {
        "mode": mode,
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "n_train": n_train,
        "read_s": t_read,
        "epoch_s": epoch,
        "cells_per_s": n_train / epoch,
        "call_s": t_call,
        "peak_rss_gib": peak_rss_gib(),
        "rss_after_import_gib": rss_start,
        "dense_gib": adata.n_obs * adata.n_vars * 4 / 2**30,
        "accuracy": float(uns["metrics"]["accuracy"]),
    }


def run(path: Path, mode: str, model_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), mode, str(model_dir)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--n-vars", type=int, default=2000)
    p.add_argument("--dir", default="/tmp/ag_scale", help="where the h5ad files are written (kept for reruns)")
    p.add_argument("--memory-limit-gb", type=float, default=12.0, help="skip in-memory runs whose CSR exceeds this")
    args = p.parse_args()
    import autogenome_sc as ag

    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        path = out_dir / f"synthetic_{n}x{args.n_vars}.h5ad"
        if not path.exists():
            t0 = time.perf_counter()
            ag.datasets.synthetic(n, args.n_vars, path=path, rng=0).file.close()
            print(f"wrote {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        csr_gib = path.stat().st_size / 2**30  # about the in-memory CSR size
        modes = ["backed"] + (["memory"] if csr_gib * 1.5 < args.memory_limit_gb else [])
        for mode in modes:
            r = run(path, mode, out_dir / "models")
            rows.append(r)
            print(
                f"{n:>9,} cells {mode:>6}: epoch {r['epoch_s']:7.1f} s ({r['cells_per_s']:8,.0f} cells/s), "
                f"ag.tl.train {r['call_s']:7.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB "
                f"(dense matrix {r['dense_gib']:.1f} GiB), test accuracy {r['accuracy']:.3f}",
                flush=True,
            )
    print("\n| cells | input | epoch (s) | cells/s | ag.tl.train (s) | peak RSS (GiB) | dense matrix (GiB) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['n_obs']:,} | {r['mode']} | {r['epoch_s']:.1f} | {r['cells_per_s']:,.0f} | {r['call_s']:.1f} | "
            f"{r['peak_rss_gib']:.2f} | {r['dense_gib']:.1f} |"
        )
    print()
    for n in args.sizes:
        by = {r["mode"]: r for r in rows if r["n_obs"] == n}
        if "memory" in by:
            b, m = by["backed"], by["memory"]
            print(
                f"{n:,} cells: backed / in-memory epoch time {b['epoch_s'] / m['epoch_s']:.2f}x, "
                f"peak RSS {b['peak_rss_gib'] / m['peak_rss_gib']:.2f}x"
            )
    import numpy as np

    backed = [r for r in rows if r["mode"] == "backed"]
    if len(backed) >= 2:
        x = np.array([r["n_train"] for r in backed], float)
        y = np.array([r["epoch_s"] for r in backed])
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (slope * x + intercept)
        print(
            f"backed epoch time = {slope * 1e6:.1f} s per million training cells + {intercept:.2f} s "
            f"(max residual {np.abs(resid).max():.2f} s); per-cell time at each size: "
            + ", ".join(f"{r['epoch_s'] / r['n_train'] * 1e6:.1f} us" for r in backed)
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:5])))
    else:
        main()
