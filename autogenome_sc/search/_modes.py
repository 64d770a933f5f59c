"""The search modes that bring their own training: ENAS (RRFCN), the Res-VAE, the solved linear families, the trees.

Their ``run`` functions follow :class:`~autogenome_sc.search._spaces.Run` (the types are there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._spaces import Mode, register_mode, suggest_vae_arch

if TYPE_CHECKING:
    from ..config._schema import Config
    from ..data import TrainData
    from ..train import FitResult


def _enas_suggest(trial, spaces, models) -> dict:
    # ENAS searches the architecture itself; the trial chooses only the general hyperparameters
    return {"model": "enas"}


def _enas_run(data: TrainData, arch: dict, trainer, cfg: Config, key, report, /, *, deadline) -> tuple[dict, FitResult]:
    """One trial = one ENAS search (shared weights, controller) and the retraining of its winner.

    With ``deadline`` (a search with a timeout gives one: ``search.enas_share`` of the time
    left), the search runs the epochs that fit and the retraining stops there.
    """
    from ._enas import run_enas

    found = run_enas(data, cfg.model_copy(update={"trainer": trainer}), key, deadline=deadline)
    assert found.fit is not None  # run_enas retrains by default
    found.fit.stopped_at_deadline = found.stopped_at_deadline
    return found.network, found.fit


def _resvae_suggest(trial, spaces, models) -> dict:
    base = {"model": "resvae", **models.resvae.model_dump(mode="json")}
    return suggest_vae_arch(trial, spaces, base)


def _resvae_run(
    data: TrainData, arch: dict, trainer, cfg: Config, key, report, /, *, deadline
) -> tuple[dict, FitResult]:
    """Train one Res-VAE configuration; its validation loss is the negative validation ELBO.

    It keeps no time of its own (``deadline`` is not used): the search's budget stops it at an
    epoch boundary through ``report``, like any trial.
    """
    import jax

    from ..train import fit_vae_config

    rng = int(jax.random.randint(key, (), 0, 2**31 - 1))
    return arch, fit_vae_config(data, arch, cfg.model_copy(update={"trainer": trainer}), rng=rng, callback=report)


def _logistic_suggest(trial, spaces, models) -> dict:
    return {"model": "logistic", "C": float(trial.suggest_categorical("C", list(spaces.linear_C)))}


def _svm_suggest(trial, spaces, models) -> dict:
    return {"model": "svm", "C": float(trial.suggest_categorical("C", list(spaces.linear_C)))}


def _solved_run(
    data: TrainData, arch: dict, trainer, cfg: Config, key, report, /, *, deadline
) -> tuple[dict, FitResult]:
    """Solve the trial's linear family (``arch["model"]``: logistic or svm) at its ``C``; one epoch to report.

    The weights are those of the network ``{"model": "linear", "input_keep": 1.0}``, which is what the
    trial returns: saving, predicting, ensembles and explanations treat it as any linear model. A solve
    takes seconds and cannot stop midway (``deadline`` is not used); its one report lets the search's
    budget stop what follows, as at any trial's epoch.
    """
    import jax

    from ..train import fit_solved

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    result = fit_solved(data, arch["model"], float(arch["C"]), class_weight=cfg.loss.class_weight, seed=seed)
    if report is not None:
        report(0, {k: float(result.history[k][0]) for k in ("train_loss", "val_loss", "val_accuracy")})
    return {"model": "linear", "input_keep": 1.0}, result


def _trees_suggest(trial, spaces, models) -> dict:
    return {
        "model": "trees",
        "learning_rate": float(trial.suggest_categorical("trees_learning_rate", list(spaces.trees_learning_rate))),
        "max_leaf_nodes": int(trial.suggest_categorical("trees_leaf_nodes", list(spaces.trees_leaf_nodes))),
        "l2_regularization": float(trial.suggest_categorical("trees_l2", list(spaces.trees_l2))),
        "max_features": float(trial.suggest_categorical("trees_max_features", list(spaces.trees_max_features))),
        "max_bins": int(trial.suggest_categorical("trees_max_bins", list(spaces.trees_max_bins))),
        "max_iter": int(spaces.trees_stages),
    }


def _trees_run(
    data: TrainData, arch: dict, trainer, cfg: Config, key, report, /, *, deadline
) -> tuple[dict, FitResult]:
    """Boost the trial's trees (scikit-learn's, read into :class:`~autogenome_sc.nn.Trees`); one report, at the end.

    Each boosting stage is an epoch of the result's history, so the validation loss chooses the
    number of stages and cross-validation chooses it again, as for a network's epochs. A fit
    adds no stage after ``deadline``.
    """
    import jax

    from ..train import fit_trees

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    net, result = fit_trees(data, arch, class_weight=cfg.loss.class_weight, seed=seed, deadline=deadline)
    if report is not None:
        best = result.best_epoch
        report(0, {k: float(result.history[k][best]) for k in ("train_loss", "val_loss", "val_accuracy")})
    return net, result


register_mode(Mode("enas", supervised=True, suggest=_enas_suggest, run=_enas_run))
register_mode(Mode("resvae", supervised=False, suggest=_resvae_suggest, run=_resvae_run))
for _name, _suggest in (("logistic", _logistic_suggest), ("svm", _svm_suggest)):
    # solved in seconds, never pruned (one report, at the end), classification only
    register_mode(Mode(_name, True, _suggest, run=_solved_run, prune=False, solved=True, floor=True,
                       tasks=("classification",)))  # fmt: skip
# fitted by scikit-learn on the whole matrix in memory like the solved families, refitted the same way
register_mode(Mode("trees", True, _trees_suggest, run=_trees_run, prune=False, solved=True, tasks=("classification",)))
