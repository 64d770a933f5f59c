"""ENAS for RRFCN: shared-weight training, REINFORCE controller, derive and retrain.

Each epoch trains the supernet's shared weights on the training split, a freshly sampled
child per minibatch (``lax.scan`` over a chunk of minibatches with a per-step architecture
array, so one compiled call per chunk), then updates the controller ``controller_steps``
times in one compiled loop (``lax.scan``, no host round-trip per step): ``M`` children are
sampled, scored on one validation minibatch in a single vmapped call (reward = accuracy +
entropy bonus), the baseline moves ``b <- b - (1 - decay)(b - R)``
and the REINFORCE gradient, averaged over the ``M`` children, takes one Adam step. At the
end ``K`` candidates are scored on the whole validation split with the shared weights; the
best is retrained from scratch as a standalone :class:`~autogenome_sc.nn.RRFCN` by
:func:`autogenome_sc.train.fit`. The test split is never read here.

Every compiled function is traced once for the whole search (the architecture is a traced
array); :attr:`EnasResult.n_traces` records it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from .. import _logging as logg
from .._traces import Traces
from ..data import Pipeline, TrainData
from ..data._matrix import rows_per_chunk
from ..nn import build_network
from ..nn._enas import Controller, SuperNet, sample_uniform, to_architecture
from ..train import LOSSES, FitResult, fit, make_optimizer
from ..train._epochs import EarlyStopping, EpochClock, Epochs, Evaluate, run_epochs, variables_of
from ..train._loop import masked_scan

if TYPE_CHECKING:
    from ..config._schema import Config, EnasConfig, LossConfig, TrainerConfig


#: With a deadline, the share of the time left that the shared-weight search may take (the rest: deriving, retraining).
SEARCH_SHARE = 0.6


@dataclass
class EnasResult:
    """What :func:`run_enas` returns."""

    architecture: dict  # {"widths": [...], "edges": [[source, target], ...]}
    network: dict  # the architecture dict of the retrained model ({"model": "rrfcn", ...})
    fit: FitResult | None  # the retrained standalone RRFCN (None when retrain=False)
    history: dict[str, np.ndarray]  # per search epoch
    candidates: pd.DataFrame  # distinct derived candidates: validation accuracy (shared weights), n_sampled
    n_traces: dict[str, int] = field(default_factory=dict)
    search_seconds: float = 0.0
    controller_params: dict | None = None
    shared_variables: dict | None = None  # the supernet's weights at the end of the search
    search: EnasSearch | None = None  # the compiled pieces (to score more children)
    epochs_run: int = 0  # search epochs run (fewer than models.enas.epochs when the deadline cut them)
    stopped_at_deadline: bool = False  # the search or the retraining ended at the deadline


def reinforce_update(ctrl, ctx, params, opt_state, baseline, ws, ss, acc, ent, key, entropy_weight, decay):
    """One REINFORCE step of the controller from M sampled architectures and their accuracies.

    Reward ``R = acc + entropy_weight * entropy``; the baseline moves toward the mean reward,
    ``b <- b - (1 - decay)(b - mean R)``; the loss ``-mean(log p(arch) (R - b))`` is averaged
    over the M architectures (teacher-forced log-probabilities) and takes one ``ctx`` step.
    Returns ``(params, opt_state, baseline, mean accuracy, mean entropy)``.
    """
    reward = acc + entropy_weight * ent
    baseline = baseline - (1.0 - decay) * (baseline - reward.mean())
    adv = jax.lax.stop_gradient(reward - baseline)

    def objective(p):
        logp = jax.vmap(lambda w, s: ctrl.apply(p, key, w, s)[2])(ws, ss)
        return -jnp.mean(logp * adv)

    grads = jax.grad(objective)(params)
    updates, opt_state = ctx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, baseline, acc.mean(), ent.mean()


def _sampler(ctrl: Controller, sampler: str, n_nodes: int, n_widths: int) -> Callable:
    """``sample(ctrl_params, key, m) -> (widths, skips, log-probabilities, entropies)`` of ``m`` children.

    ``"random"`` draws uniform widths and skip bits (zero log-probabilities and entropies).
    """

    def sample(ctrl_params, key, m):
        keys = jax.random.split(key, m)
        if sampler == "random":
            w, s = jax.vmap(lambda k: sample_uniform(k, n_nodes, n_widths))(keys)
            return w, s, jnp.zeros(m), jnp.zeros(m)
        return jax.vmap(lambda k: ctrl.apply(ctrl_params, k))(keys)

    return sample


def _shared_chunk(net: SuperNet, tx: optax.GradientTransformation, sample: Callable, smoothing: float) -> Callable:
    """The supernet's chunk step ``(state, ctrl_params, xs, ys, valid, key) -> (state, mean loss)``.

    A freshly sampled child per minibatch: the children's architectures are a per-step
    input of the shared :func:`~autogenome_sc.train._loop.masked_scan`.
    """
    loss_fn = LOSSES["cross_entropy"]

    def train_chunk(state, ctrl_params, xs, ys, valid, key):
        k_arch, k_drop = jax.random.split(key)
        ws, ss, _, _ = sample(ctrl_params, k_arch, xs.shape[0])

        def step(carry, inp, k):
            params, bstats, opt_state = carry
            x, yb, w, s = inp

            def objective(p):
                (out, _), upd = net.apply(
                    {"params": p, "batch_stats": bstats},
                    x,
                    w,
                    s,
                    train=True,
                    rngs={"dropout": k},
                    mutable=["batch_stats"],
                )
                return loss_fn(out, yb, smoothing), upd["batch_stats"]

            (loss, new_bstats), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, new_opt = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), new_bstats, new_opt), loss

        return masked_scan(step, state, (xs, ys, ws, ss), valid, jax.random.split(k_drop, xs.shape[0]))

    return train_chunk


def _child_scorer(net: SuperNet) -> Callable:
    """``correct_one(variables, w, s, *, x, y, n_valid)``: correct predictions of one child on one batch.

    BatchNorm uses the batch's statistics; no dropout.
    """

    def correct_one(variables, w, s, *, x, y, n_valid):
        (out, _), _ = net.apply(variables, x, w, s, train=True, deterministic=True, mutable=["batch_stats"])
        return ((out.argmax(-1) == y) & (jnp.arange(x.shape[0]) < n_valid)).sum()

    return correct_one


def _controller_steps(
    ctrl: Controller,
    ctx: optax.GradientTransformation,
    sample: Callable,
    correct_one: Callable,
    e: EnasConfig,
    sampler: str,
) -> Callable:
    """``ctrl_steps(ctrl_params, opt_state, baseline, variables, xs, ys, valid, key)``: controller steps in one loop.

    Steps ``xs[S, B, G]``, ``ys[S, B]`` in one compiled loop (no host round-trip per step).
    Each valid step draws its key from the chain ``key, sub = split(key)``, as a Python loop
    of single steps would; padding steps (``valid`` False) change nothing, the key included.
    Returns the new state, the key, and each step's reward and entropy. ``"random"`` samples
    children and scores them, and learns nothing.
    """
    ew, decay = e.entropy_weight, e.baseline_decay

    def correct(variables, ws, ss, x, y, n_valid):
        """Correct predictions of each of M children on one batch (BatchNorm batch statistics)."""
        return jax.vmap(lambda w, s: correct_one(variables, w, s, x=x, y=y, n_valid=n_valid))(ws, ss)

    def ctrl_step(ctrl_params, opt_state, baseline, variables, x, y, key):
        ws, ss, _, ent = sample(ctrl_params, key, e.n_arch_per_step)
        acc = correct(variables, ws, ss, x, y, x.shape[0]) / x.shape[0]
        if sampler == "random":
            return ctrl_params, opt_state, baseline, acc.mean(), ent.mean()
        return reinforce_update(ctrl, ctx, ctrl_params, opt_state, baseline, ws, ss, acc, ent, key, ew, decay)

    def ctrl_steps(ctrl_params, opt_state, baseline, variables, xs, ys, valid, key):
        def body(carry, inp):
            x, y, ok = inp
            k, sub = jax.random.split(carry[3])
            p, o, b, acc, ent = ctrl_step(carry[0], carry[1], carry[2], variables, x, y, sub)
            keep = jax.tree.map(lambda new, old: jnp.where(ok, new, old), (p, o, b, k), carry)
            return keep, (acc, ent)

        carry, (acc, ent) = jax.lax.scan(body, (ctrl_params, opt_state, baseline, key), (xs, ys, valid))
        return (*carry, acc, ent)

    return ctrl_steps


def _score_all(correct_one: Callable, n_arch_per_step: int) -> Callable:
    """``score_all(variables, ws, ss, x, y, n_valid)``: correct predictions of every candidate on one batch.

    Candidates are evaluated in groups of ``n_arch_per_step`` (vmapped).
    """

    def score_all(variables, ws, ss, x, y, n_valid):
        group = min(n_arch_per_step, ws.shape[0])
        one = functools.partial(correct_one, variables, x=x, y=y, n_valid=n_valid)
        return jax.lax.map(lambda a: one(*a), (ws, ss), batch_size=group)

    return score_all


class EnasSearch:
    """The compiled pieces of one search: supernet, controller and their steps.

    Parameters
    ----------
    enas_cfg
        The ``models.enas`` config section.
    trainer, loss_cfg
        The ``trainer`` and ``loss`` config sections (shared-weight optimiser, label smoothing).
    n_features, n_out
        Input genes and classes.
    steps_total
        Shared-weight steps of the whole search (length of the one-cycle schedule).
    sampler
        ``"controller"`` (ENAS) or ``"random"`` (uniform widths, skip bits with p = 0.5;
        the same budget of shared training and scoring, no controller learning).
    """

    def __init__(
        self,
        enas_cfg: EnasConfig,
        trainer: TrainerConfig,
        loss_cfg: LossConfig,
        n_features: int,
        n_out: int,
        steps_total: int,
        sampler: str,  # checked by get_search, the one way in
    ):
        e = self.cfg = enas_cfg
        self.sampler = sampler
        self.n_nodes, self.options = e.n_nodes, tuple(e.widths)
        self.net = SuperNet(
            n_out=n_out,
            n_nodes=e.n_nodes,
            first_width=e.first_width,
            widths=self.options,
            input_keep=e.input_keep,
            activation=e.activation,
            dropout=e.dropout,
        )
        self.ctrl = Controller(n_nodes=e.n_nodes, n_widths=len(self.options), hidden=e.controller_hidden)
        self.n_features = n_features
        self.tx = make_optimizer(trainer, steps_total)
        self.ctx = optax.adam(e.controller_lr)
        self.counts = Traces()  # traces of this search's compiled steps, by name
        sample = _sampler(self.ctrl, sampler, e.n_nodes, len(self.options))
        correct_one = _child_scorer(self.net)
        train_chunk = _shared_chunk(self.net, self.tx, sample, loss_cfg.label_smoothing)
        ctrl_steps = _controller_steps(self.ctrl, self.ctx, sample, correct_one, e, sampler)
        self.sample = jax.jit(self.counts.counted(sample, "sample"), static_argnums=2)
        self.train_chunk = jax.jit(self.counts.counted(train_chunk, "train_chunk"))
        self.ctrl_steps = jax.jit(self.counts.counted(ctrl_steps, "ctrl_steps"))
        self.score_all = jax.jit(self.counts.counted(_score_all(correct_one, e.n_arch_per_step), "score_all"))
        self._init = jax.jit(self.counts.counted(self._init_variables, "init"), static_argnums=1)

    def init(self, key: jax.Array, batch: int) -> tuple[tuple[Any, Any, optax.OptState], Any, optax.OptState]:
        """Initial ``(supernet state, controller params, controller optimiser state)``.

        One compiled call (eager Flax init dispatches hundreds of small ops), compiled once per
        search object and batch size: compiling it takes as long as many epochs of a small
        search, and every ENAS trial of a search used to pay it again.
        """
        return self._init(key, batch)

    def _init_variables(self, key: jax.Array, batch: int):
        k_net, k_ctrl = jax.random.split(key)
        n = self.n_nodes
        x = jnp.zeros((batch, self.n_features), jnp.float32)
        v = self.net.init(k_net, x, jnp.zeros(n, jnp.int32), jnp.zeros((n, n), jnp.int32), train=False)
        ctrl_params = self.ctrl.init(k_ctrl, jax.random.key(0))
        return (v["params"], v["batch_stats"], self.tx.init(v["params"])), ctrl_params, self.ctx.init(ctrl_params)

    def score(
        self,
        variables: Mapping[str, Any],
        ws: jax.Array,
        ss: jax.Array,
        pipeline: Pipeline,
        y: np.ndarray,
        idx: np.ndarray,
        batch: int,
    ) -> np.ndarray:
        """Accuracy of each child (rows of ``ws, ss``) on rows ``idx``: one compiled call per batch of rows.

        Batches have a fixed size; the last is filled with rows from the start (counted once),
        so BatchNorm statistics come from real cells and the compiled shape never changes.
        Children are evaluated ``n_arch_per_step`` at a time (vmapped) inside that call.
        """
        total = np.zeros(ws.shape[0])
        for s in range(0, len(idx), batch):
            sel = idx[s : s + batch]
            n_valid = len(sel)
            rows = np.concatenate([sel, idx[: batch - n_valid]]) if n_valid < batch else sel
            x = jnp.asarray(pipeline.block(rows))
            total += np.asarray(self.score_all(variables, ws, ss, x, jnp.asarray(y[rows]), n_valid))
        return total / len(idx)


@functools.lru_cache(maxsize=4)
def _cached_search(enas_json: str, trainer_json: str, loss_json: str, n_features, n_out, steps_total, sampler):
    from ..config._schema import EnasConfig, LossConfig, TrainerConfig

    return EnasSearch(
        EnasConfig.model_validate_json(enas_json),
        TrainerConfig.model_validate_json(trainer_json),
        LossConfig.model_validate_json(loss_json),
        n_features,
        n_out,
        steps_total,
        sampler,
    )


def get_search(
    enas_cfg: EnasConfig,
    trainer: TrainerConfig,
    loss_cfg: LossConfig,
    n_features: int,
    n_out: int,
    steps_total: int,
    sampler: str,
):
    """An :class:`EnasSearch`, reused (with its compiled steps) when the same problem shape comes again."""
    if sampler not in ("controller", "random"):
        raise ValueError(f"Unknown ENAS sampler '{sampler}'; choose 'controller' or 'random'.")
    return _cached_search(
        enas_cfg.model_dump_json(),
        trainer.model_dump_json(),
        loss_cfg.model_dump_json(),
        n_features,
        n_out,
        steps_total,
        sampler,
    )


def run_enas(
    data: TrainData,
    cfg: Config,
    key: jax.Array,
    *,
    callback: Callable[[int, dict], None] | None = None,
    sampler: str = "controller",
    retrain: bool = True,
    deadline: float | None = None,
) -> EnasResult:
    """Search an RRFCN architecture with ENAS and retrain the winner from scratch.

    Parameters
    ----------
    data
        The prepared classification problem (see :func:`autogenome_sc.data.prepare`).
    cfg
        The whole validated config; reads ``models.enas``, ``trainer`` and ``loss``.
    key
        PRNG key of everything random in the search and the retraining.
    callback
        Called after each search epoch with ``(epoch, metrics)``; may raise to stop.
    sampler
        ``"controller"`` (ENAS) or ``"random"`` (the same budget with uniformly sampled children).
    retrain
        Retrain the derived architecture as a standalone RRFCN (``False``: search only).
    deadline
        A ``time.perf_counter()`` time to be done by: the search runs the epochs that fit in
        ``SEARCH_SHARE`` of the time until then (measured from its own epochs), the
        retraining stops at the deadline (keeping its best epoch). Without one, the time a
        long search will take is logged after its second epoch.

    Returns
    -------
    An :class:`EnasResult`.
    """
    if data.task != "classification":
        raise ValueError("ENAS rewards children by validation accuracy, so it needs a categorical label.")
    if len(data.idx["val"]) == 0 or len(data.idx["train"]) < 2:
        raise ValueError("ENAS needs at least 2 training cells and 1 validation cell.")
    e = cfg.models.enas
    t0 = time.perf_counter()
    batch = data.batch_size_for(cfg.trainer.batch_size)
    steps, _ = data.steps_per_chunk(batch)
    search = get_search(e, cfg.trainer, cfg.loss, data.pipeline.n_features, data.n_out, e.epochs * steps, sampler)
    n_traces = search.counts.watch()
    k_init, k_shuffle, k_loop, k_derive, k_retrain = jax.random.split(key, 5)
    vbatch = int(min(batch, len(data.idx["val"])))
    search_end = None if deadline is None else t0 + SEARCH_SHARE * max(deadline - t0, 0.0)
    run = _search_epochs(search, data, batch, vbatch, (k_init, k_shuffle, k_loop), callback, search_end)
    variables, ctrl_params = variables_of(run.carry), run.carry[1]
    arch, table = _derive(search, ctrl_params, variables, k_derive, data, vbatch)
    search_seconds = time.perf_counter() - t0
    network = _network(arch, e)
    fitted = None
    if retrain:
        trainer = cfg.trainer if deadline is None else _retrain_sized(cfg.trainer, deadline, run.clock)
        net = build_network(network, data.n_out)
        fitted = fit(net, data, trainer, cfg.loss, k_retrain, desc="retraining RRFCN", deadline=deadline)
    return EnasResult(
        architecture=arch,
        network=network,
        fit=fitted,
        history={k_: np.asarray(v) for k_, v in run.history.items()},
        candidates=_count_duplicates(table),
        n_traces=n_traces(),
        search_seconds=search_seconds,
        controller_params=jax.device_get(ctrl_params),
        shared_variables=jax.device_get(variables),
        search=search,
        epochs_run=len(run.clock.walls),
        stopped_at_deadline=run.stopped_at_deadline or bool(fitted is not None and fitted.stopped_at_deadline),
    )


def _search_epochs(
    search: EnasSearch,
    data: TrainData,
    batch: int,
    vbatch: int,
    keys: tuple[jax.Array, jax.Array, jax.Array],
    callback: Callable[[int, dict], None] | None,
    search_end: float | None,
) -> Epochs:
    """The search's epochs: the shared weights on the training split, then the controller's steps.

    ``keys`` are those of the initial weights, the shuffling, and the chain the chunks and the
    controller's steps draw from in turn. No early stopping; a non-finite training loss ends
    the search with an error. With ``search_end``, only the epochs that fit before it run.
    """
    e = search.cfg
    k_init, k_shuffle, k_loop = keys
    state, ctrl_params, ctrl_opt = search.init(k_init, batch)
    np_rng = np.random.default_rng(int(jax.random.randint(k_shuffle, (), 0, 2**31 - 1)))
    ctrl_group = max(1, rows_per_chunk(data.pipeline.n_features, data.chunk_mb) // vbatch)  # steps per compiled loop
    clock = EpochClock()

    def step(carry, xs, ys, valid):
        state, ctrl_params, ctrl_opt, baseline, key = carry
        key, sub = jax.random.split(key)
        state, loss = search.train_chunk(state, ctrl_params, jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(valid), sub)
        return (state, ctrl_params, ctrl_opt, baseline, key), loss

    def after_epoch(epoch: int, metrics: dict) -> None:
        if callback is not None:
            callback(epoch, metrics)
        rest = clock.per_epoch * (e.epochs - 2)
        if epoch == 1 and search_end is None and np.isfinite(metrics["train_loss"]) and rest > 60:
            logg.info(
                f"    ENAS: {clock.per_epoch:.1f}s per search epoch, about {rest / 60:.0f} more minutes for "
                f"{e.epochs} epochs (models.enas.epochs sets fewer; a search's timeout sizes it)"
            )

    stopper = EarlyStopping(keep_last=True)
    run = run_epochs(
        step,
        (state, ctrl_params, ctrl_opt, jnp.zeros(()), k_loop),
        functools.partial(data.train_chunks, batch, np_rng),
        _controller_phase(search, data, np_rng, vbatch, ctrl_group),
        stopper,
        n_epochs=e.epochs,
        desc=f"ENAS search ({search.sampler})",
        callback=after_epoch,
        deadline=search_end,
        lookahead=True,
        clock=clock,
    )
    if stopper.failure is not None:
        raise FloatingPointError("ENAS shared-weight training diverged; lower the learning rate.")
    if run.stopped_at_deadline:
        logg.info(
            f"    ENAS: {len(clock.walls)} of {e.epochs} search epochs fit the time budget ({clock.per_epoch:.1f}s "
            f"each on {jax.default_backend().upper()}); the architecture is derived from them"
        )
    return run


def _controller_phase(
    search: EnasSearch, data: TrainData, np_rng: np.random.Generator, vbatch: int, group: int
) -> Evaluate:
    """The evaluation after each shared-weight epoch: ``controller_steps`` steps of the controller.

    Every step's validation rows are drawn first (the same draws as one at a time), then the
    steps run ``group`` to a compiled loop. The metrics: the mean reward and entropy of the
    sampled children, and the baseline.
    """
    e, val_idx = search.cfg, data.idx["val"]

    def evaluate(carry: Any) -> tuple[Any, dict[str, float]]:
        state, ctrl_params, ctrl_opt, baseline, key = carry
        variables = variables_of(carry)
        rewards: list[float] = []
        ents: list[float] = []
        if e.controller_steps:
            rows = np.stack([np_rng.choice(val_idx, vbatch, replace=False) for _ in range(e.controller_steps)])
            for steps, valid in _step_groups(e.controller_steps, group):
                sel = rows[np.minimum(steps, e.controller_steps - 1)]
                xs = data.pipeline.block(sel.ravel()).reshape(*sel.shape, -1)
                ctrl_params, ctrl_opt, baseline, key, r, h = search.ctrl_steps(
                    ctrl_params, ctrl_opt, baseline, variables, jnp.asarray(xs), data.y[sel], valid, key
                )
                rewards.extend(np.asarray(r, np.float64)[valid])
                ents.extend(np.asarray(h, np.float64)[valid])
        metrics = {
            "mean_reward": float(np.mean(rewards)) if rewards else np.nan,
            "baseline": float(baseline),
            "entropy": float(np.mean(ents)) if ents else np.nan,
        }
        return (state, ctrl_params, ctrl_opt, baseline, key), metrics

    return evaluate


def _derive(
    search: EnasSearch, ctrl_params: Any, variables: Mapping[str, Any], key: jax.Array, data: TrainData, vbatch: int
) -> tuple[dict, pd.DataFrame]:
    """The best of ``n_candidates`` children, scored on the whole validation split with the shared weights.

    Returns its architecture and the table of every candidate.
    """
    e = search.cfg
    ws, ss, logp, _ = search.sample(ctrl_params, key, e.n_candidates)
    acc = search.score(variables, ws, ss, data.pipeline, data.y, data.idx["val"], vbatch)
    archs = [
        to_architecture(w, s, search.options, e.first_width)
        for w, s in zip(np.asarray(ws), np.asarray(ss), strict=True)
    ]
    table = pd.DataFrame(
        {
            "widths": [" ".join(map(str, a["widths"])) for a in archs],
            "edges": [" ".join(f"{s}-{t}" for s, t in a["edges"]) for a in archs],
            "n_skips": [len(a["edges"]) - (e.n_nodes - 1) for a in archs],
            "log_prob": np.asarray(logp, dtype=float),
            "val_accuracy": acc,
        }
    )
    best = int(np.argmax(acc))
    arch = archs[best]
    logg.info(f"    ENAS picked widths {arch['widths']}, edges {arch['edges']} (val accuracy {acc[best]:.3f})")
    return arch, table


def _network(arch: dict, e: EnasConfig) -> dict:
    """The architecture dict of the standalone RRFCN of ``arch``."""
    return {
        "model": "rrfcn",
        "widths": arch["widths"],
        "edges": arch["edges"],
        "input_keep": e.input_keep,
        "dropout": e.dropout,
        "activation": e.activation,
    }


def _step_groups(n_steps: int, most: int):
    """``(steps[G], valid[G])`` groups of at most ``most`` steps, all of one size (the last padded, invalid)."""
    n_groups = -(-n_steps // most)
    size = -(-n_steps // n_groups)
    for start in range(0, n_steps, size):
        steps = np.arange(start, start + size)
        yield steps, steps < n_steps


def _retrain_sized(trainer: TrainerConfig, deadline: float, clock: EpochClock) -> TrainerConfig:
    """The retraining's trainer with the epochs that fit before ``deadline`` (its one-cycle schedule then completes).

    A search epoch (the supernet, plus the controller's steps) bounds a child's epoch from
    above; the first search epoch's excess over the others is what compiling costs.
    """
    per = clock.per_epoch
    compiling = max(clock.walls[0] - per, 0.0)
    fits = int((deadline - time.perf_counter() - compiling) / max(per, 1e-3))
    n = max(1, min(trainer.max_epochs, fits))
    if n >= trainer.max_epochs:
        return trainer
    logg.info(f"    ENAS: retraining for {n} of {trainer.max_epochs} epochs, what fits the time budget")
    return trainer.model_copy(update={"max_epochs": n, "patience": min(trainer.patience, n)})


def _count_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct candidate, with ``n_sampled`` (how often the controller drew it), best first."""
    n = table.groupby(["widths", "edges"], sort=False)["val_accuracy"].transform("size")
    out = table.assign(n_sampled=n.to_numpy()).drop_duplicates(["widths", "edges"])
    return out.sort_values(["val_accuracy", "n_sampled"], ascending=False).reset_index(drop=True)


def enas_uns(result: EnasResult) -> dict:
    """The h5ad-safe ``.uns`` entries of a search: ``best["architecture"]`` and ``enas``."""
    arch = result.architecture
    return {
        "best": {
            "architecture": {
                "nodes": np.arange(len(arch["widths"]), dtype=np.int64),
                "widths": np.asarray(arch["widths"], dtype=np.int64),
                "edges": np.asarray(arch["edges"], dtype=np.int64).reshape(-1, 2),
            }
        },
        "enas": {
            "history": {k: np.asarray(v) for k, v in result.history.items()},
            "candidates": result.candidates.reset_index(drop=True),
            "search_seconds": float(result.search_seconds),
            "epochs_run": int(result.epochs_run),
            "stopped_at_deadline": bool(result.stopped_at_deadline),
        },
    }
