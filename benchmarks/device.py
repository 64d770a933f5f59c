"""One command, a few minutes, on whatever device JAX sees: how well the accelerator is used.

Prints ratios, each against a peer measured in this process on the same device:

1. **Step rate**: our compiled RFCN-ResNet step (``lax.scan`` over 16 minibatches, data on the
   device) vs the same network in PyTorch eager on the same device, with PyTorch as it ships
   (TF32 off) and with TF32 allowed (so precision is compared fairly on NVIDIA GPUs).
2. **End to end**: ``ag.tl.train`` on synthetic counts held as CSR in memory (large enough not
   to be cached on the device), cells per second of an epoch vs the compiled step's rate at the
   same batch size (target on a GPU: >= 60%), with the chunks prepared on the device
   (``data.device_prepare="on"``) and on the host (``"off"``).
3. **Mixed precision**: the training step with ``trainer.precision="bf16"`` vs ``"float32"``
   at widths 1024 and 2048 (target on a GPU: >= 1.5x).
4. **ENAS**: seconds per shared-weight epoch of the CPU-sized and the paper-sized config on
   pbmc68k_reduced, and the whole paper-sized search extrapolated (target on an H200: <= 60 s).
5. **Explanations**: expected gradients for 700 cells x 765 genes x 10 classes, 200 samples.

Run: ``PYTHONPATH=. python benchmarks/device.py [--quick]`` (``--quick``: small sizes, for a
CPU check that the script works). PyTorch is optional (``pip install torch``; the peers are
skipped without it). Not run by CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import scanpy as sc

import autogenome_sc as ag

sys.path.insert(0, str(Path(__file__).parent))


def _median_time(fn, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours_step(genes: int, width: int, blocks: int, batch: int, k: int = 16, precision: str = "float32") -> float:
    """Seconds per minibatch of our scanned training step (data on the device), at ``precision``."""
    import optax

    from autogenome_sc._precision import to_bf16
    from autogenome_sc.nn import build_network
    from autogenome_sc.train import cross_entropy, make_optimizer

    arch = {"model": "resnet", "width": width, "n_blocks": blocks, "input_keep": 1.0, "dropout": 0.0}
    net = build_network(arch, 10)
    x = jax.random.uniform(jax.random.key(1), (k, batch, genes))
    y = jax.random.randint(jax.random.key(2), (k, batch), 0, 10)
    variables = net.init(jax.random.key(0), x[0], train=False)
    tx = make_optimizer(ag.config.Config().trainer, 10_000)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
    bf16 = precision == "bf16"

    def step(state, b):
        params, bstats, opt = state
        xb, yb = b

        def obj(p):
            pp, xx = (to_bf16(p), xb.astype(jax.numpy.bfloat16)) if bf16 else (p, xb)
            (out, _), upd = net.apply({"params": pp, "batch_stats": bstats}, xx, train=True, mutable=["batch_stats"])
            return cross_entropy(out.astype(jax.numpy.float32), yb), upd["batch_stats"]

        (loss, bstats), g = jax.value_and_grad(obj, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), bstats, opt), loss

    mode = "highest" if precision == "float32" else "default" if precision in ("bf16", "auto") else "tensorfloat32"
    with jax.default_matmul_precision(mode):
        chunk = jax.jit(lambda s, xs, ys: jax.lax.scan(step, s, (xs, ys)), donate_argnums=0)
        holder = {"s": state}

        def run():
            holder["s"], losses = chunk(holder["s"], x, y)
            losses.block_until_ready()

        run()
        return _median_time(run) / k


def torch_step(genes: int, width: int, blocks: int, batch: int, k: int = 16, tf32: bool = False) -> float | None:
    """Seconds per minibatch of the same network in PyTorch eager on the same kind of device (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    from train_speed import make_torch

    device = "cuda" if jax.devices()[0].platform == "gpu" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.set_default_device(device)
    try:
        run = make_torch(genes, width, blocks, 10, batch, k)

        def timed():
            run()
            if device == "cuda":
                torch.cuda.synchronize()

        return _median_time(timed) / k
    finally:
        torch.set_default_device("cpu")


def end_to_end(
    n_cells: int, genes: int, batch: int, device_prepare: str = "auto", width: int = 512, blocks: int = 6
) -> float:
    """Cells per second of ``ag.tl.train``'s epochs (after the first) on CSR counts in memory.

    ``device_prepare``: where the chunks are densified, normalised and scaled (``data.device_prepare``).
    """
    adata = ag.datasets.synthetic(n_cells, genes, n_types=8, rng=0)
    cfg = {
        "trainer": {"max_epochs": 4, "patience": 4, "batch_size": batch},
        "models": {"resnet": {"width": width, "n_blocks": blocks}},
        "data": {"split": [0.9, 0.05, 0.05], "device_prepare": device_prepare},
    }
    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = Path(tmp)
        from autogenome_sc.data import prepare

        data, _ = prepare(
            adata, "cell_type", layer=None, use_raw=False, split_key=None,
            data_cfg=ag.config.validate(cfg).data, loss="auto", rng=np.random.default_rng(0),
        )  # fmt: skip
        cached = data.cache_rows()
        ag.tl.train(adata, "cell_type", config=cfg, rng=0)
        train_s = np.asarray(adata.uns["ag"]["history"]["train_seconds"], float)
    n_train = int((adata.obs["ag_split"] == "train").sum())
    per_epoch = float(np.median(train_s[1:]))  # the training part of an epoch, after the first (which compiles)
    where = "cached on the device" if cached else "read from CSR by chunks"
    if not cached:
        where += f", prepared on the {'device' if data.prepares_on_device() else 'host'}"
    print(f"    ({where}; training part of an epoch after the first: {per_epoch:.2f}s)")
    return n_train / per_epoch


def enas_epoch_seconds(spec: str, epochs: int) -> tuple[float, int]:
    """Seconds per ENAS epoch (``spec``: "cpu", benchmarks/enas.py's config, or "paper", the defaults) and its epochs.

    On pbmc68k_reduced (``.raw``); the search only (no retraining), compilation included.
    """
    from enas import CFG

    from autogenome_sc.data import prepare
    from autogenome_sc.search import run_enas

    a = sc.datasets.pbmc68k_reduced()
    base = ag.config.validate(CFG if spec == "cpu" else None)
    full = base.models.enas.epochs
    cfg = base.model_copy(deep=True)
    cfg.models.enas.epochs = epochs
    data, _ = prepare(
        a, "bulk_labels", layer=None, use_raw=True, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    t = time.perf_counter()
    run_enas(data, cfg, jax.random.key(0), retrain=False)
    return (time.perf_counter() - t) / epochs, full


def explain_seconds(n_samples: int) -> float:
    a = sc.datasets.pbmc68k_reduced()
    with tempfile.TemporaryDirectory() as tmp:
        ag.settings.model_dir = Path(tmp)
        ag.tl.train(a, "bulk_labels", use_raw=True, config={"trainer": {"max_epochs": 3}}, rng=0)
        t = time.perf_counter()
        ag.tl.explain(a, max_cells=a.n_obs, n_samples=n_samples, n_background=100)
        return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: check that the script runs (CPU)")
    p.add_argument(
        "--sections", default="1,2,3,4,5", help="which to run, e.g. 3,4,5 (section 2 needs 1's step rate: runs 1 too)"
    )
    args = p.parse_args()
    want = {int(v) for v in args.sections.split(",")}
    if 2 in want:
        want.add(1)
    ag.settings.verbosity = 0
    ag.settings.progress_bar = False
    q = args.quick
    dev = jax.devices()[0]
    print(f"# {dev.platform}: {dev.device_kind} (jax {jax.__version__}){' [quick]' if q else ''}\n")

    batches = (64,) if q else (256, 4096)
    step_rate = {}
    if 1 in want:
        print("## 1. Training step, 2000 genes, RFCN-ResNet 512 x 6 (ms per minibatch)")
        print(
            "| batch | ours, float32 | ours, XLA default | torch eager | torch eager, TF32 allowed "
            "| ours vs torch (same precision) |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for b in batches:
            ours32 = ours_step(2000, 512, 2 if q else 6, b)
            ours_def = ours_step(2000, 512, 2 if q else 6, b, precision="auto")
            t32 = torch_step(2000, 512, 2 if q else 6, b)
            ttf = torch_step(2000, 512, 2 if q else 6, b, tf32=True)
            step_rate[b] = b / ours_def
            ratio = "" if t32 is None else f"{t32 / ours32:.2f}x (float32), {ttf / ours_def:.2f}x (TF32/default)"
            fmt = lambda v: "-" if v is None else f"{v * 1e3:.2f}"  # noqa: E731
            print(f"| {b} | {fmt(ours32)} | {fmt(ours_def)} | {fmt(t32)} | {fmt(ttf)} | {ratio} |", flush=True)

    if 2 in want:
        print("\n## 2. End to end: ag.tl.train epochs vs the compiled step (cells/s)")
        b = batches[-1] if q else 256
        n = 4000 if q else 200_000
        for mode in ("on", "off"):  # data.device_prepare: chunks densified and scaled on the device, or on the host
            rate = end_to_end(n, 2000, b, device_prepare=mode)
            print(
                f"ag.tl.train, {n:,} cells x 2000 genes CSR, batch {b}, device_prepare={mode!r}: {rate:,.0f} "
                f"cells/s; step alone {step_rate[b]:,.0f} cells/s -> {100 * rate / step_rate[b]:.0f}% of the "
                "step's rate (target on a GPU: >= 60%)",
                flush=True,
            )

    if 3 in want:
        print("\n## 3. Mixed precision: bf16 vs float32 step (2000 genes, 3 blocks, batch 1024)")
        for w in (256,) if q else (1024, 2048):
            f32 = ours_step(2000, w, 3, 256 if q else 1024)
            b16 = ours_step(2000, w, 3, 256 if q else 1024, precision="bf16")
            print(
                f"width {w}: float32 {f32 * 1e3:.2f} ms, bf16 {b16 * 1e3:.2f} ms -> {f32 / b16:.2f}x "
                "(target on a GPU: >= 1.5x)"
            )

    if 4 in want:
        print("\n## 4. ENAS on pbmc68k_reduced (shared-weight epochs, retraining excluded)")
        for spec in ("cpu",) if q else ("cpu", "paper"):
            per, full = enas_epoch_seconds(spec, 3 if q else 10)
            print(
                f"{spec}-sized config: {per:.2f} s per epoch (compilation included); {full} epochs -> "
                f"about {per * full:.0f} s"
            )

    if 5 in want:
        print("\n## 5. Expected gradients, 700 cells x 765 genes x 10 classes")
        n_samples = 20 if q else 200
        print(f"{n_samples} samples: {explain_seconds(n_samples):.2f} s")


if __name__ == "__main__":
    main()
