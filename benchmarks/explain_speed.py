"""Expected gradients: autogenome_sc (JAX) vs shap.GradientExplainer (PyTorch) and shap.KernelExplainer.

Same process, same trained network (an RFCN-ResNet trained by ``ag.tl.train`` on
pbmc68k_reduced, its weights copied into an identical PyTorch module), same explained
cells, same background cells, same n_samples. Timings are interleaved and the best of
``--repeats`` is reported.

1. Equal n_samples: shap.GradientExplainer(nsamples=N) vs ours with i.i.d. draws (shap's
   scheme) and with stratified draws. Ours is also run on shap's exact draws (rseed) to
   show that both compute the same numbers.
2. Equal error: the relative error ||phi - ref|| / ||ref|| against a many-sample reference
   (ours, stratified, ``--ref-samples``); ours stratified with the fewest samples that
   reach shap's error at N, timed against shap at N.
3. shap.KernelExplainer (model-agnostic, same background) on a few cells.

On a machine shared with other jobs, pass ``--threads 1``: multi-threaded PyTorch slows
down badly when its threads are descheduled, which would flatter the ratio.

Needs ``torch`` (``pip install torch``) for 1 and 2; run from the repository root:
``python benchmarks/explain_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--background", type=int, default=100)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--ref-samples", type=int, default=4000)
    ap.add_argument("--sweep", type=int, nargs="+", default=[25, 50, 75, 100, 150, 200])
    ap.add_argument("--kernel-cells", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads of PyTorch and XLA (0: their defaults)")
    return ap.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:  # before jax is imported
    multi = "true" if ARGS.threads > 1 else "false"
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen={multi} "
        f"intra_op_parallelism_threads={ARGS.threads}"
    )

import jax  # noqa: E402
import scanpy as sc  # noqa: E402
import shap  # noqa: E402

import autogenome_sc as ag  # noqa: E402
from autogenome_sc.explain import NetworkOutput, expected_gradients, model_output  # noqa: E402


def torch_copy(model):
    """The same RFCN-ResNet in PyTorch (eval mode), weights copied from the Flax model."""
    import torch
    from torch import nn

    arch = model.architecture
    assert arch["model"] == "resnet", "the benchmark copies RFCN-ResNet weights"
    p, s = model.variables["params"], model.variables["batch_stats"]

    def unit(i, n_in, n_out):
        lin, bn = nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out, eps=1e-5)
        name = f"FCUnit_{i}"
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(np.asarray(p[name]["Dense_0"]["kernel"]).T))
            lin.bias.copy_(torch.tensor(np.asarray(p[name]["Dense_0"]["bias"])))
            bn.weight.copy_(torch.tensor(np.asarray(p[name]["BatchNorm_0"]["scale"])))
            bn.bias.copy_(torch.tensor(np.asarray(p[name]["BatchNorm_0"]["bias"])))
            bn.running_mean.copy_(torch.tensor(np.asarray(s[name]["BatchNorm_0"]["mean"])))
            bn.running_var.copy_(torch.tensor(np.asarray(s[name]["BatchNorm_0"]["var"])))
        return nn.Sequential(lin, bn, nn.ReLU())

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = arch["width"]
            self.stem = unit(0, len(model.var_names_), w)
            self.blocks = nn.ModuleList([unit(i + 1, w, w) for i in range(arch["n_blocks"])])
            self.head = nn.Linear(w, model.n_out)
            with torch.no_grad():
                self.head.weight.copy_(torch.tensor(np.asarray(p["head"]["kernel"]).T))
                self.head.bias.copy_(torch.tensor(np.asarray(p["head"]["bias"])))

        def forward(self, x):
            h = self.stem(x)
            for b in self.blocks:
                h = h + b(h)
            return torch.softmax(self.head(h), dim=-1)

    return ResNet().eval()


def shap_draws(n_cells, n_samples, n_background, rseed):
    """The (background index, t) draws of GradientExplainer.shap_values(rseed=...) (same for every class)."""
    rs = np.random.RandomState(rseed)
    idx, t = np.zeros((n_cells, n_samples), np.int64), np.zeros((n_cells, n_samples))
    for j in range(n_cells):
        for k in range(n_samples):
            idx[j, k] = rs.choice(n_background)
            t[j, k] = rs.uniform()
    return idx, t


def rel_err(phi, ref):
    return float(np.linalg.norm(phi - ref) / np.linalg.norm(ref))


def best(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    args = ARGS

    ag.settings.verbosity = 0
    adata = sc.datasets.pbmc68k_reduced()
    ag.tl.train(adata, "bulk_labels", use_raw=True, config={"save": {"path": "/tmp/ag_explain_bench_model"}}, rng=0)
    model = ag.read_model(adata.uns["ag"]["model_path"])
    pipe, _, _ = model.pipeline(adata, use_raw=True)
    gen = np.random.default_rng(0)
    train = np.flatnonzero(adata.obs["ag_split"] == "train")
    bg_idx = np.sort(gen.choice(train, args.background, replace=False))
    cells = np.sort(gen.choice(np.setdiff1d(np.arange(adata.n_obs), bg_idx), args.cells, replace=False))
    x, bg = pipe.block(cells), pipe.block(bg_idx)
    f = NetworkOutput(model.net)
    n, S = len(cells), args.samples
    arch = model.architecture
    print(
        f"network: RFCN-ResNet width {arch['width']} x {arch['n_blocks'] + 1} units, {x.shape[1]} genes, "
        f"{model.n_out} classes; {n} cells, {len(bg)} background cells, n_samples={S}; "
        f"devices {jax.devices()}"
    )

    def ours(samples, sampling, rng=0, draws=None):
        return expected_gradients(f, model.variables, x, bg, n_samples=samples, sampling=sampling, rng=rng, draws=draws)

    t0 = time.perf_counter()
    ours(S, "iid")
    cold = time.perf_counter() - t0
    ours(S, "stratified")

    rows, t_shap = [], np.nan
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"threads: torch {torch.get_num_threads()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
        tm = torch_copy(model)
        with torch.no_grad():
            diff = np.abs(tm(torch.tensor(x)).numpy() - np.asarray(f(model.variables, x))).max()
        print(f"PyTorch copy reproduces the Flax model: max |p_torch - p_jax| = {diff:.1e}")
        explainer = shap.GradientExplainer(tm, torch.tensor(bg))
        xt = torch.tensor(x)

        def run_shap():
            return np.asarray(explainer.shap_values(xt, nsamples=S, rseed=0))

        # equal n_samples, interleaved
        t_shap = t_iid = t_strat = np.inf
        for _ in range(args.repeats):
            t, phi_shap = best(run_shap, 1)
            t_shap = min(t_shap, t)
            t, phi_iid = best(lambda: ours(S, "iid"), 1)
            t_iid = min(t_iid, t)
            t, phi_strat = best(lambda: ours(S, "stratified"), 1)
            t_strat = min(t_strat, t)
        same = ours(S, "iid", draws=shap_draws(n, S, len(bg), 0))
        print(
            f"ours on shap's own draws (rseed=0) vs shap.GradientExplainer: max |diff| = "
            f"{np.abs(same - phi_shap).max():.1e} (max |phi| {np.abs(phi_shap).max():.2e})"
        )
        rows.append(("shap.GradientExplainer (PyTorch)", S, t_shap, 1.0))
        rows.append(("ours, i.i.d. draws (JAX)", S, t_iid, t_shap / t_iid))
        rows.append(("ours, stratified draws (JAX)", S, t_strat, t_shap / t_strat))
        print(f"ours, first call including compilation: {cold:.2f} s")

        # equal error against a many-sample reference
        t0 = time.perf_counter()
        ref = ours(args.ref_samples, "stratified", rng=12345)
        print(f"reference: ours, stratified, {args.ref_samples} samples ({time.perf_counter() - t0:.1f} s)")
        e_shap = rel_err(phi_shap, ref)
        print(
            f"relative error vs reference: shap.GradientExplainer at {S}: {e_shap:.3f}; ours i.i.d. at {S}: "
            f"{rel_err(phi_iid, ref):.3f}; ours stratified at {S}: {rel_err(phi_strat, ref):.3f}"
        )
        errs = {}
        for m in args.sweep:
            ours(m, "stratified", rng=1)  # compile
            t, phi = best(lambda m=m: ours(m, "stratified", rng=1), args.repeats)
            errs[m] = (rel_err(phi, ref), t)
            print(f"  ours stratified n_samples={m}: error {errs[m][0]:.3f}, {t:.2f} s")
        ok = [m for m, (e, _) in errs.items() if e <= e_shap]
        if ok:
            m = min(ok)
            rows.append(
                (
                    f"ours, stratified, equal error ({errs[m][0]:.3f} <= {e_shap:.3f})",
                    m,
                    errs[m][1],
                    t_shap / errs[m][1],
                )
            )
    except ImportError:
        print("torch is not installed: skipping the shap.GradientExplainer comparison (pip install torch)")
        ref = None

    # KernelExplainer on a few cells, same background
    k = args.kernel_cells

    def predict(z):
        return model_output(f, model.variables, np.asarray(z, np.float32), batch_size=4096)

    kex = shap.KernelExplainer(predict, bg)
    t_kernel, phi_k = best(lambda: np.asarray(kex.shap_values(x[:k], silent=True)), 1)
    t_ours, _ = best(lambda: ours(S, "stratified"), args.repeats)
    per_kernel, per_ours = t_kernel / k, t_ours / n
    # Kernel SHAP estimates the Shapley values of the interventional game, not expected
    # gradients: for a non-linear network the two differ, so this is a difference, not an error
    extra = (
        f"; relative difference from the expected-gradients reference {rel_err(phi_k, ref[:k]):.2f}"
        if ref is not None
        else ""
    )
    print(f"shap.KernelExplainer (default nsamples, {k} cells): {per_kernel:.2f} s per cell{extra}")
    rows.append(
        (f"shap.KernelExplainer (timed on {k} cells, scaled to {n})", "auto", per_kernel * n, t_shap / (per_kernel * n))
    )

    print()
    print(f"| method | n_samples | time for {n} cells (s) | speed-up vs shap.GradientExplainer |")
    print("| --- | --- | --- | --- |")
    for name, m, t, r in rows:
        print(f"| {name} | {m} | {t:.2f} | {r:.3g}x |")
    print(f"\nours (stratified, n_samples={S}) vs shap.KernelExplainer per cell: {per_kernel / per_ours:.0f}x")


if __name__ == "__main__":
    main()
