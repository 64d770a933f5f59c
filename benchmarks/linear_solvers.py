"""The JAX-solved logistic regression and linear SVM against scikit-learn's, on the same folds and input.

For each data set, the 5 folds of ``benchmarks/accuracy.py`` (stratified, seed 0) and the
peers' input (``peer_input``: log1p for counts and FPKM, then ``MinMaxScaler(clip=True)``
fitted on the training fold) are given to scikit-learn's ``LogisticRegression(C)`` (lbfgs,
``max_iter=2000``) and ``LinearSVC(C)`` (``max_iter=5000``), the peers' settings; to the same
two solved to our tolerance (``tol=1e-6``, the logistic regression by Newton-CG: scikit-learn's
lbfgs stops at 1e-4, on the gradient of the same scaled objective, short of the optimum); and to
:func:`autogenome_sc.train._solvers.solve_linear` (float32, every row of the data set with the
test rows weighted 0, as the search's fits are). Reported per data set and model, means over
the folds: test accuracy of each, the share of test cells ours labels as each of the other
two, the objective values (scikit-learn's objective, computed in float64 from each one's
weights: ``0.5 ||W||^2 + C sum CE`` and ``sum_k 0.5 (||w_k||^2 + b_k^2) + C sum squared
hinge``), the iterations and the seconds of a fit (ours without compiling; the compilations are
counted once per data set: one serves both models and every fold).

Data: HSMM (271 cells x 47,192 genes, FPKM, obs["Hours"]) and ALL (128 x 12,625, RMA log2,
obs["mol.biol"], classes of fewer than 5 samples dropped) from ``~/.cache/ag-devdata``, and
scanpy's pbmc68k_reduced (``.raw``, bulk_labels).

Run: ``PYTHONPATH=. python benchmarks/linear_solvers.py [--datasets hsmm,all,pbmc68k] [--C 1]``;
``--optax`` instead compiles and solves the first fold with our L-BFGS and with ``optax.lbfgs``
(its zoom line search, the same objective and stopping rule), one after the other.
Not run by CI; figures in docs/benchmarks.md ("Linear families solved in JAX").
"""

from __future__ import annotations

import argparse
import time
import warnings

import anndata as ad
import numpy as np
import scanpy as sc
from accuracy import DEVDATA, peer_input
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import LinearSVC

from autogenome_sc.train._solvers import TOL, _compiled, solve_linear, watch_traces


def _hsmm():
    a = ad.read_h5ad(DEVDATA / "hsmm.h5ad")
    return peer_input(a.X, "normalized"), a.obs["Hours"].astype(str).to_numpy()


def _all():
    a = ad.read_h5ad(DEVDATA / "all.h5ad")
    y = a.obs["mol.biol"].astype(str).to_numpy()
    names, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, names[counts >= 5])
    return peer_input(a.X, "log")[keep], y[keep]


def _pbmc():
    a = sc.datasets.pbmc68k_reduced()
    return peer_input(a.raw.X, "log"), a.obs["bulk_labels"].astype(str).to_numpy()


DATASETS = {"hsmm": _hsmm, "all": _all, "pbmc68k": _pbmc}


def sklearn_objective(loss: str, coef: np.ndarray, intercept: np.ndarray, x: np.ndarray, y: np.ndarray, C: float):
    """scikit-learn's objective of ``coef`` (classes x genes) and ``intercept`` on ``x``, ``y`` (class indices)."""
    coef, intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    logits = x @ coef.T + intercept
    if loss == "logistic":
        if coef.shape[0] == 1:  # binary: one vector for the logit of class 1
            z = logits[:, 0]
            ce = np.logaddexp(0.0, z) - (y == 1) * z
        else:
            ce = logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]
        return 0.5 * float((coef**2).sum()) + C * float(ce.sum())
    if coef.shape[0] == 1:
        t = np.where(y == 1, 1.0, -1.0)[:, None]
    else:
        t = np.where(np.arange(coef.shape[0])[None, :] == y[:, None], 1.0, -1.0)
    hinge = np.maximum(0.0, 1.0 - t * logits)
    return 0.5 * float((coef**2).sum() + (intercept**2).sum()) + C * float((hinge**2).sum())


def _ours_as_sklearn(loss: str, kernel: np.ndarray, bias: np.ndarray):
    """Our solution in scikit-learn's shapes (two classes: the one vector scikit-learn fits)."""
    coef, intercept = kernel.T, bias
    if coef.shape[0] == 2:
        if loss == "logistic":
            return coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        return coef[1:], intercept[1:]
    return coef, intercept


def _fit_sklearn(loss: str, x, y, C: float, tol: float = 1e-4):
    loose = tol >= 1e-4  # the peers' settings (benchmarks/accuracy.py)
    if loss == "logistic" and loose:
        model = LogisticRegression(C=C, max_iter=2000)
    elif loss == "logistic":  # to a tight tolerance lbfgs took more than an hour on one HSMM fold; Newton-CG does not
        model = LogisticRegression(C=C, solver="newton-cg", max_iter=1000, tol=tol)
    else:
        model = LinearSVC(C=C, max_iter=5000 if loose else 100_000, tol=tol)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    return model, time.perf_counter() - t


def run(name: str, C: float) -> list[dict]:
    x_all, labels = DATASETS[name]()
    classes, y = np.unique(labels, return_inverse=True)
    rows = []
    traces = watch_traces()
    t = time.perf_counter()
    _compiled(len(y), x_all.shape[1], len(classes))
    print(
        f"{name}: {x_all.shape[0]} x {x_all.shape[1]}, {len(classes)} classes; compiled in {time.perf_counter() - t:.1f}s"
    )
    for loss in ("logistic", "svm"):
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(x_all, y)
        for f, (train, test) in enumerate(folds):
            scaler = MinMaxScaler(clip=True).fit(x_all[train])
            xtr, xte = scaler.transform(x_all[train]), scaler.transform(x_all[test])
            theirs, their_s = _fit_sklearn(loss, xtr, y[train], C)
            # every row, the test rows with weight 0: all folds share one compiled solver (as fit_solved does)
            weights = np.zeros(len(y), np.float32)
            weights[train] = 1.0
            x_scaled = scaler.transform(x_all).astype(np.float32)
            ours = solve_linear(x_scaled, y, len(classes), loss, C, weights=weights)
            pred_theirs = theirs.predict(xte)
            pred_ours = (xte @ ours.kernel.astype(np.float64) + ours.bias).argmax(1)
            # scikit-learn stops at tol=1e-4 (lbfgs: on the gradient of the same scaled objective as ours), short of
            # the optimum: also solved to our tolerance
            tight, _ = _fit_sklearn(loss, xtr, y[train], C, tol=TOL)
            coef, icpt = _ours_as_sklearn(loss, ours.kernel, ours.bias)
            rows.append(
                {
                    "data": name, "loss": loss, "fold": f + 1,
                    "acc_ours": float((pred_ours == y[test]).mean()),
                    "acc_sklearn": float((pred_theirs == y[test]).mean()),
                    "same": float((pred_ours == pred_theirs).mean()),
                    "acc_tight": float((tight.predict(xte) == y[test]).mean()),
                    "same_tight": float((pred_ours == tight.predict(xte)).mean()),
                    "obj_tight": sklearn_objective(loss, tight.coef_, tight.intercept_, xtr, y[train], C),
                    "obj_ours": sklearn_objective(loss, coef, icpt, xtr, y[train], C),
                    "obj_sklearn": sklearn_objective(loss, theirs.coef_, theirs.intercept_, xtr, y[train], C),
                    "iter_ours": ours.n_iter, "iter_sklearn": int(np.max(theirs.n_iter_)),
                    "s_ours": ours.seconds, "s_sklearn": their_s,
                }
            )  # fmt: skip
            r = rows[-1]
            print(
                f"{name:8s} {loss:8s} fold {f + 1}: accuracy {r['acc_ours']:.3f} vs {r['acc_sklearn']:.3f} / "
                f"{r['acc_tight']:.3f} (same {r['same']:.3f} / {r['same_tight']:.3f}); objective "
                f"{r['obj_ours']:.6g} vs {r['obj_sklearn']:.6g} / {r['obj_tight']:.6g}; "
                f"iterations {r['iter_ours']} vs {r['iter_sklearn']}; {r['s_ours']:.2f}s vs {r['s_sklearn']:.2f}s",
                flush=True,
            )
    print(f"{name}: compilations for both models and all folds: {traces()}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """Means over the folds, as markdown."""
    out = [
        "| data | model | test accuracy: ours / scikit-learn / scikit-learn to tol 1e-6 | same test labels as each "
        "| objective: ours / scikit-learn / to 1e-6 | iterations, ours / scikit-learn | seconds per fit, ours "
        "/ scikit-learn |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({(r["data"], r["loss"]) for r in rows}, key=lambda k: (list(DATASETS).index(k[0]), k[1]))
    for data, loss in keys:
        sel = [r for r in rows if r["data"] == data and r["loss"] == loss]

        def m(k, sel=sel):
            return float(np.mean([r[k] for r in sel]))

        out.append(
            f"| {data} | {loss} | {m('acc_ours'):.3f} / {m('acc_sklearn'):.3f} / {m('acc_tight'):.3f} "
            f"| {m('same'):.3f} / {m('same_tight'):.3f} | {m('obj_ours'):.4f} / {m('obj_sklearn'):.4f} / "
            f"{m('obj_tight'):.4f} | {m('iter_ours'):.0f} / {m('iter_sklearn'):.0f} | {m('s_ours'):.2f} / "
            f"{m('s_sklearn'):.2f} |"
        )
    return "\n".join(out)


def _optax_solve(x, y, s, c, svm, tol, max_iter, w0):
    """The same objective and stopping rule, minimised by ``optax.lbfgs`` with its zoom line search."""
    import jax
    import jax.numpy as jnp
    import optax

    from autogenome_sc.train._solvers import _objective

    y1h = jax.nn.one_hot(y, w0.shape[0] // (x.shape[1] + 1), dtype=x.dtype)

    def f(w):
        return _objective(w, x, y1h, s, 1.0 / c, svm)

    opt = optax.lbfgs(memory_size=20)
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry):
        w, state = carry
        value, grad = value_and_grad(w, state=state)
        updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(w, updates), state

    def going(carry):
        count = optax.tree_utils.tree_get(carry[1], "count")
        grad = optax.tree_utils.tree_get(carry[1], "grad")
        return (count == 0) | ((count < max_iter) & (jnp.max(jnp.abs(grad)) > tol))

    w, state = jax.lax.while_loop(going, step, (w0, opt.init(w0)))
    return w, optax.tree_utils.tree_get(state, "count"), f(w)


def compare_optax(name: str, C: float) -> None:
    """Compiling and solving fold 1 with ours and with ``optax.lbfgs`` (zoom line search), interleaved."""
    import jax
    import jax.numpy as jnp

    from autogenome_sc.train._solvers import _solve

    x_all, labels = DATASETS[name]()
    classes, y = np.unique(labels, return_inverse=True)
    train, _ = next(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(x_all, y))
    x = MinMaxScaler(clip=True).fit(x_all[train]).transform(x_all).astype(np.float32)
    s = np.zeros(len(y), np.float32)
    s[train] = 1.0
    w0 = np.zeros((x.shape[1] + 1) * len(classes), np.float32)
    for loss in ("logistic", "svm"):
        args = (jnp.asarray(x), y.astype(np.int32), s, np.float32(C), np.bool_(loss == "svm"))
        args = (*args, np.float32(TOL), np.int32(3000), w0)
        for label, fn in (("optax.lbfgs", _optax_solve), ("ours", _solve)):
            t = time.perf_counter()
            with jax.default_matmul_precision("highest"):
                compiled = jax.jit(fn).lower(*args).compile()
            compile_s = time.perf_counter() - t
            t = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            print(
                f"{name:8s} {loss:8s} {label:12s} compile {compile_s:.1f}s, solve {time.perf_counter() - t:.2f}s, "
                f"{int(out[1])} iterations, objective {float(out[2]) * C * s.sum():.6g}",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--optax", action="store_true", help="compare compiling and solving with optax.lbfgs instead")
    args = p.parse_args()
    if args.optax:
        for name in args.datasets.split(","):
            compare_optax(name, args.C)
        return
    rows = []
    for name in args.datasets.split(","):
        rows += run(name, args.C)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
