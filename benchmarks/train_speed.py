"""Training-step speed: our compiled RFCN-ResNet step vs the same network in PyTorch eager, and vs peak.

Measured in one process, interleaved (ours, torch, ours, torch, ...), medians reported:
- the issue's case: 2000 genes, width 512, 6 residual blocks, batch 256, 10 classes, AdamW;
- the small widths a search visits most (765 genes, batch 128);
- the machine's peak float32 matmul rate (jitted 2048 x 2048 matmul, and torch's), so that the
  achieved rate of a step is a fraction of what this machine can do.
Our time per step is given two ways: one jitted step per call (like PyTorch's loop), and the
trainer's real path, a `lax.scan` over a chunk of K steps per call (data already on the device).

Run: python benchmarks/train_speed.py   (needs torch: pip install torch)
"""

from __future__ import annotations

import statistics
import time

import jax
import optax
import torch

from autogenome_sc import config
from autogenome_sc.nn import build_network
from autogenome_sc.train import cross_entropy, make_optimizer

ROUNDS = 7


def flops_per_step(genes, width, blocks, n_out, batch):
    fwd = 2 * batch * (genes * width + blocks * width * width + width * n_out)
    return 3 * fwd  # backward is about twice the forward


def peak_gflops():
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t_jax = min(_time(lambda: f(a).block_until_ready()) for _ in range(10))
    ta = torch.randn(n, n)
    t_torch = min(_time(lambda: ta @ ta) for _ in range(10))
    return 2 * n**3 / t_jax / 1e9, 2 * n**3 / t_torch / 1e9


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def make_jax(genes, width, blocks, n_out, batch, k):
    cfg = config.Config().trainer
    net = build_network(
        {"model": "resnet", "width": width, "n_blocks": blocks, "input_keep": 1.0, "dropout": 0.0}, n_out
    )
    x = jax.random.uniform(jax.random.key(1), (k, batch, genes))
    y = jax.random.randint(jax.random.key(2), (k, batch), 0, n_out)
    variables = net.init(jax.random.key(0), x[0], train=False)
    tx = make_optimizer(cfg, 10_000)
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def step(state, xb, yb):
        params, bstats, opt = state

        def obj(p):
            (out, _), upd = net.apply({"params": p, "batch_stats": bstats}, xb, train=True, mutable=["batch_stats"])
            return cross_entropy(out, yb), upd["batch_stats"]

        (loss, bstats), g = jax.value_and_grad(obj, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), bstats, opt), loss

    one = jax.jit(step, donate_argnums=0)
    chunk = jax.jit(lambda s, xs, ys: jax.lax.scan(lambda c, b: step(c, *b), s, (xs, ys)), donate_argnums=0)
    holder = {"s": state}

    def run_one():
        for i in range(k):
            holder["s"], loss = one(holder["s"], x[i], y[i])
        loss.block_until_ready()

    def run_chunk():
        holder["s"], losses = chunk(holder["s"], x, y)
        losses.block_until_ready()

    run_one()
    run_chunk()  # compile both
    return run_one, run_chunk


def make_torch(genes, width, blocks, n_out, batch, k):
    class Unit(torch.nn.Sequential):
        def __init__(self, i, o):
            super().__init__(torch.nn.Linear(i, o), torch.nn.BatchNorm1d(o, momentum=0.1), torch.nn.ReLU())

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Unit(genes, width)
            self.blocks = torch.nn.ModuleList(Unit(width, width) for _ in range(blocks))
            self.head = torch.nn.Linear(width, n_out)

        def forward(self, x):
            h = self.stem(x)
            for b in self.blocks:
                h = h + b(h)
            return self.head(h)

    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    lossf = torch.nn.CrossEntropyLoss()
    xs = torch.rand(k, batch, genes)
    ys = torch.randint(0, n_out, (k, batch))

    def run():
        for i in range(k):
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(xs[i]), ys[i])
            loss.backward()
            opt.step()

    run()
    return run


def compare(genes, width, blocks, batch, n_out=10, k=16):
    j_one, j_chunk = make_jax(genes, width, blocks, n_out, batch, k)
    t_fn = make_torch(genes, width, blocks, n_out, batch, k)
    times = {"jax_step": [], "jax_scan": [], "torch": []}
    for _ in range(ROUNDS):
        times["jax_step"].append(_time(j_one) / k)
        times["torch"].append(_time(t_fn) / k)
        times["jax_scan"].append(_time(j_chunk) / k)
    return {name: statistics.median(v) for name, v in times.items()}


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    peak_j, peak_t = peak_gflops()
    peak = max(peak_j, peak_t)
    print(f"peak float32 matmul 2048^3: jax {peak_j:.0f} GFLOP/s, torch {peak_t:.0f} GFLOP/s -> peak {peak:.0f}")
    cases = [(2000, 512, 6, 256)] + [
        (765, w, b, 128) for w, b in [(64, 2), (128, 3), (256, 3), (256, 6), (512, 6), (1024, 3)]
    ]
    print(
        "\n| genes | width x blocks | batch | torch eager ms | ours, jit step ms | ours, scanned ms "
        "| speed-up step | speed-up scanned | % of peak (scanned) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for genes, width, blocks, batch in cases:
        t = compare(genes, width, blocks, batch)
        gf = flops_per_step(genes, width, blocks, 10, batch) / t["jax_scan"] / 1e9
        print(
            f"| {genes} | {width} x {blocks} | {batch} | {t['torch'] * 1e3:.2f} | {t['jax_step'] * 1e3:.2f} | "
            f"{t['jax_scan'] * 1e3:.2f} | {t['torch'] / t['jax_step']:.2f}x | {t['torch'] / t['jax_scan']:.2f}x | "
            f"{100 * gf / peak:.0f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
