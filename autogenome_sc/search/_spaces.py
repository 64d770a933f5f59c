"""Search spaces: a registry of modes, each turning an Optuna trial into an architecture.

A mode is registered once with :func:`register_mode`; ``ag.tl.search`` only looks modes up
here, so a new mode (ENAS, the Res-VAE) plugs in without touching the study driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import optuna

from .._names import MODES as _REGISTRY
from .._names import mode_names

if TYPE_CHECKING:
    import jax

    from ..config._schema import Config, LossConfig, ModelsConfig, SearchSpaces, TrainerConfig
    from ..data import TrainData
    from ..train import FitResult

#: ``report(epoch, metrics)``: called after every epoch of a trial (the pruner and the time budget act there).
Report = Callable[[int, dict], None]


class Suggest(Protocol):
    """A mode's search space: an Optuna trial, the config's ``search.spaces`` and ``models`` -> an architecture."""

    def __call__(self, trial: optuna.Trial, spaces: SearchSpaces, models: ModelsConfig, /) -> dict: ...


class Run(Protocol):
    """A mode's own training, for modes that do not train ``build_network(arch)`` with ``train.fit``.

    ``deadline`` is a ``time.perf_counter()`` time to return by (in a search with a timeout:
    ``search.enas_share`` of the time left, see :class:`~autogenome_sc.search._budget.Budget`),
    or ``None``; ``report`` is ``None`` outside a trial (retraining, cross-validation).
    """

    def __call__(
        self,
        data: TrainData,
        arch: dict,
        trainer: TrainerConfig,
        cfg: Config,
        key: jax.Array,
        report: Report | None,
        /,
        *,
        deadline: float | None,
    ) -> tuple[dict, FitResult]: ...


@dataclass(frozen=True)
class Mode:
    """A searchable family of networks.

    Attributes
    ----------
    name
        The mode's name in ``modes`` and in the config.
    supervised
        Whether the mode learns labels (``label_key`` given) or not.
    suggest
        ``suggest(trial, spaces, models_cfg) -> architecture dict`` (``{"model": ..., ...}``), see :class:`Suggest`.
    run
        ``run(data, arch, trainer, cfg, key, report, *, deadline) -> (architecture, FitResult)``
        (see :class:`Run`) for modes that do not train ``build_network(arch)`` with
        ``train.fit`` (ENAS, the Res-VAE); ``None`` for the plain networks. Every ``run`` takes
        ``deadline``: in a search with a timeout it is a ``time.perf_counter()`` time
        (``search.enas_share`` of the time left) by which it should return, else ``None``.
    prune
        Whether the pruner may stop the mode's trials. ``False`` for modes whose early
        epochs say nothing about their end and whose trials cost seconds: the linear mode
        (200 epochs on a one-cycle schedule, still warming up at the pruner's first rung)
        had its 0-1 scaled floor pruned there in most searches of the benchmark suite
        (docs/benchmarks.md). Such trials report nothing to the pruner either, so their slow
        start does not lower the bar for others.
    solved
        Whether the mode is solved to convergence on the whole training matrix in memory (the
        logistic regression and linear SVM): the search draws none of the trainer's
        hyperparameters (learning rate, batch, momentum, weight decay) nor a label smoothing for
        it, and offers it only where the preprocessed matrix is kept in memory (at most
        ``data._pipeline.CACHE_MB``, 256 MB: 5,000 cells of 13,000 genes, say). Its final model is
        refitted on train + validation (the boosted trees with the stages cross-validation chose).
    floor
        Whether the mode's best trial is always re-scored by cross-validation, before the others,
        whatever its rank on the validation split: the solved linear families, which cost seconds.
    tasks
        The tasks the mode learns (``None``: every task of its kind). A search by default leaves
        out the modes that cannot learn its problem, and refuses those asked for by name.
    """

    name: str
    supervised: bool
    suggest: Suggest
    run: Run | None = None
    prune: bool = True
    solved: bool = False
    floor: bool = False
    tasks: tuple[str, ...] | None = None

    def cannot_learn(self, data: TrainData) -> str | None:
        """Why this mode cannot learn ``data`` (a phrase), or ``None`` when it can."""
        if self.tasks is not None and data.task not in self.tasks:
            return f"learns {' or '.join(self.tasks)} only, and this problem is a {data.task}"
        if self.solved and not data.cache_rows():
            return "solves on the whole matrix in memory, and this problem's is too large (or backed on disk)"
        return None


#: Every registered mode by name: the same dict as ``autogenome_sc._names.MODES`` (the one registry).
MODES: dict[str, Mode] = _REGISTRY


def register_mode(mode: Mode) -> Mode:
    """Make ``mode`` available to ``ag.tl.search``, its ``modes`` argument and the config's ``search.modes``."""
    if not mode.name or not mode.name.replace("_", "").isalnum():
        raise ValueError(f"A search mode's name is a plain word; got {mode.name!r}.")
    MODES[mode.name] = mode
    return mode


def _common(trial: optuna.Trial, spaces, base) -> dict:
    return {
        "input_keep": trial.suggest_categorical("input_keep", spaces.input_keep),
        "dropout": trial.suggest_categorical("dropout", spaces.dropout),
        "activation": base.activation,
        "batch_norm": bool(trial.suggest_categorical("batch_norm", spaces.batch_norm)),
    }


def _linear(trial, spaces, models):
    return {"model": "linear", "input_keep": trial.suggest_categorical("input_keep", spaces.input_keep)}


def _mlp(trial, spaces, models):
    n = trial.suggest_categorical("mlp_layers", spaces.mlp_layers)
    width = trial.suggest_categorical("mlp_width", spaces.mlp_widths)
    return {"model": "mlp", "widths": [int(width)] * int(n), **_common(trial, spaces, models.mlp)}


def _resnet(trial, spaces, models):
    return {
        "model": "resnet",
        "width": int(trial.suggest_categorical("resnet_width", spaces.resnet_widths)),
        "n_blocks": int(trial.suggest_categorical("resnet_blocks", spaces.resnet_blocks)),
        **_common(trial, spaces, models.resnet),
    }


def block_name(blocks: list[int]) -> str:
    """A DenseNet block structure as a categorical choice: ``[2, 3, 4] -> "2-3-4"``."""
    return "-".join(str(int(b)) for b in blocks)


def _densenet(trial, spaces, models):
    blocks = trial.suggest_categorical("densenet_blocks", [block_name(b) for b in spaces.densenet_blocks])
    return {
        "model": "densenet",
        "block_structure": [int(b) for b in blocks.split("-")],
        "growth_rate": int(trial.suggest_categorical("densenet_growth_rate", spaces.densenet_growth_rates)),
        "compression": models.densenet.compression,
        **_common(trial, spaces, models.densenet),
    }


register_mode(Mode("linear", True, _linear, prune=False))
register_mode(Mode("mlp", True, _mlp))
register_mode(Mode("resnet", True, _resnet))
register_mode(Mode("densenet", True, _densenet))


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial trains: mode, architecture, trainer and loss sections, input choices."""

    mode: str
    arch: dict
    trainer: TrainerConfig
    loss: LossConfig
    scaling: str
    n_genes: int | None
    genes_by: str = "variance"


def gene_choices(spaces, n_vars: int) -> list[int | None]:
    """The ``n_genes`` choices for ``n_vars`` genes: those at or above it mean all (``None``)."""
    out: list[int | None] = []
    for n in spaces.n_genes:
        v = None if n is None or int(n) >= n_vars else int(n)
        if v not in out:
            out.append(v)
    return out


def suggest_trainer(trial: optuna.Trial, spaces, trainer: TrainerConfig, mode: str = "mlp") -> TrainerConfig:
    """The trainer section with the general hyperparameters drawn for this trial.

    The linear mode draws an L2 penalty (``l2``) instead of a weight decay.
    """
    lr_range = spaces.resvae_learning_rate if mode == "resvae" else spaces.learning_rate
    lr = trial.suggest_float("learning_rate", *lr_range, log=True)
    update = {
        "learning_rate": lr,
        "batch_size": int(trial.suggest_categorical("batch_size", spaces.batch_size)),
        "momentum": float(trial.suggest_categorical("momentum", spaces.momentum)),
    }
    if mode == "linear":
        update.update(weight_decay=0.0, l2=trial.suggest_float("l2", *spaces.linear_l2, log=True))
    else:
        update["weight_decay"] = trial.suggest_float("weight_decay", *spaces.weight_decay, log=True)
    return trainer.model_copy(update=update)


def suggest(
    trial: optuna.Trial, cfg: Config, modes: list[str], n_vars: int | None = None, task: str = "classification"
) -> TrialConfig:
    """Draw a mode, its architecture, the trainer and loss settings and the input choices for ``trial``."""
    spaces = cfg.search.spaces
    mode = trial.suggest_categorical("mode", list(modes))
    solved = MODES[mode].solved
    arch = MODES[mode].suggest(trial, spaces, cfg.models)
    trainer = cfg.trainer if solved else suggest_trainer(trial, spaces, cfg.trainer, mode)
    if mode == "linear":  # cheap epochs, slow convergence
        trainer = trainer.model_copy(update={"max_epochs": max(trainer.max_epochs, cfg.search.linear_epochs)})
    loss = cfg.loss
    scaling: str = cfg.data.scaling if cfg.data.scale else "none"
    n_genes = cfg.data.n_genes
    genes_by: str = cfg.data.genes_by
    if MODES[mode].supervised:
        if cfg.loss.name in ("auto", "cross_entropy"):
            if not solved:  # a solved family has its own loss
                smooth = float(trial.suggest_categorical("label_smoothing", spaces.label_smoothing))
                loss = cfg.loss.model_copy(update={"label_smoothing": smooth})
            if task == "classification":
                weight = trial.suggest_categorical("class_weight", list(spaces.class_weight))
                loss = loss.model_copy(update={"class_weight": weight})
        if cfg.data.scale:
            scaling = trial.suggest_categorical("scaling", list(spaces.scaling))
        if n_vars is not None:
            n_genes = cast(int | None, trial.suggest_categorical("n_genes", gene_choices(spaces, n_vars)))
            ranks = [r for r in spaces.genes_by if task == "classification" or r == "variance"] or ["variance"]
            genes_by = "variance" if n_genes is None else trial.suggest_categorical("genes_by", ranks)
    if task != "classification" and genes_by == "f_test":
        genes_by = "variance"
    return TrialConfig(mode, arch, trainer, loss, scaling, n_genes, genes_by)


def vae_portfolio(cfg: Config) -> list[dict]:
    """The first trial of a Res-VAE search: ``ag.tl.train_vae``'s defaults, where the spaces allow them."""
    sp, base, tr = cfg.search.spaces, cfg.models.resvae, cfg.trainer
    entry: dict[str, Any] = {
        "mode": "resvae", "n_layers": base.n_layers, "first_width": base.first_width, "decay": base.decay,
        "input_keep": base.input_keep, "learning_rate": tr.learning_rate, "weight_decay": tr.weight_decay,
        "batch_size": tr.batch_size, "momentum": tr.momentum,
    }  # fmt: skip
    offered: dict[str, list] = {
        "n_layers": sp.resvae_layers, "first_width": sp.resvae_first_widths, "decay": sp.resvae_decay,
        "input_keep": sp.input_keep, "batch_size": sp.batch_size, "momentum": sp.momentum,
    }  # fmt: skip
    if any(entry[k] not in v for k, v in offered.items()):
        return []
    ranges = {"learning_rate": sp.resvae_learning_rate, "weight_decay": sp.weight_decay}
    if any(not lo <= entry[k] <= hi for k, (lo, hi) in ranges.items()):
        return []
    return [entry]


def portfolio(cfg: Config, modes: list[str], n_vars: int, n_train: int, task: str = "classification") -> list[dict]:
    """Trials to run first, in order: the parameters of each entry of :func:`named_portfolio`."""
    return list(named_portfolio(cfg, modes, n_vars, n_train, task).values())


def named_portfolio(
    cfg: Config, modes: list[str], n_vars: int, n_train: int, task: str = "classification"
) -> dict[str, dict]:
    """Trials to run first, by name: settings known to do well on small and large data alike.

    The entries, by name and in the order they run (those of modes not searched are left out):

    ``linear_zscore``
        A logistic regression as CellTypist fits it (the linear mode on z-scores, L2 about
        ``1 / n_cells``; with balanced class weights where the spaces offer them, as for every
        linear entry).
    ``linear_f_test``
        On wide classification data (at least four times the offered ``n_genes`` nearest 500):
        the same on 0-1 scaled genes, the ones with the largest F statistic against the classes.
    ``svm``, ``svm_f_test``, ``logistic``
        The peers' exact recipes (``benchmarks/accuracy.py``), classification only: scikit-learn's
        ``LinearSVC(C=1)`` and ``LogisticRegression(C=1)`` on clipped 0-1 scaled genes, all of
        them, no class weights; on wide data also the SVM on the F-test genes of ``linear_f_test``.
    ``resnet``, ``mlp``
        A regularised RFCN-ResNet and a regularised 2-layer MLP.
    ``mlp_sklearn``
        A 2-layer MLP trained as scikit-learn's ``MLPClassifier`` trains it (no dropout, little
        weight decay, no BatchNorm).
    ``linear_minmax``
        The CellTypist-like logistic regression again on 0-1 scaled genes (as the usual
        scikit-learn pipeline fits it).
    ``trees``
        Classification only: scikit-learn's ``HistGradientBoostingClassifier`` with its defaults
        (learning rate 0.1, 31 leaves, no L2 penalty) but for a fifth of the genes drawn at each
        split (``max_features=0.2``: more accurate than all of them on 4 of 5 suite sets alone,
        docs/benchmarks.md) and 63 bins per gene (``max_bins``; as accurate as 255 on the suite, and
        four times faster on pbmc68k_reduced), on wide data on the F-test genes of ``linear_f_test``;
        last, as it costs the most of the entries.

    The networks read all genes up to 5000; above, the offered ``n_genes`` nearest 2000, those
    with the largest F statistic for the ResNet (classification) and the most variable for the
    MLPs. Each entry is kept only where the configured spaces allow its every choice (a value
    outside a range is moved inside it).
    """
    sp = cfg.search.spaces
    genes = gene_choices(sp, n_vars)
    offered = [g for g in genes if g is not None]
    wide = None  # all genes up to 5000; above, the offered number nearest 2000
    if n_vars > 5000 and offered:
        wide = min(offered, key=lambda g: abs(g - 2000))
    few = min(offered, key=lambda g: abs(g - 500)) if offered else None
    if task != "classification" or few is None or n_vars < 4 * few:
        few = None  # the class-separating entries only where a few hundred genes are a real choice
    out = {}
    for name, e in _named_entries(n_train, wide, few, task).items():
        if e["mode"] not in modes:
            continue
        _weigh_classes(e, sp.class_weight, task)
        fixed = _inside(e, sp, genes)
        if fixed is not None:
            out[name] = fixed
    return out


def _named_entries(n_train: int, wide: int | None, few: int | None, task: str) -> dict[str, dict]:
    """The portfolio's entries by name, in the order they run (see :func:`portfolio`), before the spaces' checks."""
    general = {
        "learning_rate": 3e-3,
        "batch_size": 64,
        "momentum": 0.9,
        "label_smoothing": 0.1,
        "scaling": "minmax",
        "class_weight": "none",
    }
    nets = {"weight_decay": 1e-2, "input_keep": 0.8, "dropout": 0.3, "n_genes": wide, "batch_norm": True}
    by_variance = {} if wide is None else {"genes_by": "variance"}
    linear = {"mode": "linear", **general, "learning_rate": 1e-2, "label_smoothing": 0.0, "input_keep": 1.0,
              "l2": 1.0 / max(n_train, 1), "n_genes": None}  # fmt: skip
    peer = {"C": 1.0, "scaling": "minmax", "n_genes": None, "class_weight": "none"}
    entries: dict[str, dict] = {"linear_zscore": {**linear, "scaling": "zscore"}}
    if few is not None:
        # a linear model on the ~500 genes with the largest F statistic: where a few genes carry the signal
        # (microarray subtypes, drivers among thousands of genes) it beat the same model on all genes and
        # XGBoost's implicit gene choice on the suite's wide data sets (docs/benchmarks.md)
        entries["linear_f_test"] = {**linear, "n_genes": few, "genes_by": "f_test"}
    if task == "classification":  # the peers' best models, solved as they solve them: cheap and strong on real data
        entries["svm"] = {"mode": "svm", **peer}
        if few is not None:
            entries["svm_f_test"] = {"mode": "svm", **peer, "n_genes": few, "genes_by": "f_test"}
        entries["logistic"] = {"mode": "logistic", **peer}
    entries["resnet"] = {"mode": "resnet", **general, **nets, "resnet_width": 256, "resnet_blocks": 3}
    if wide is not None:  # the ResNet reads the genes that separate the classes (classification)
        entries["resnet"]["genes_by"] = "f_test" if task == "classification" else "variance"
    entries["mlp"] = {"mode": "mlp", **general, **nets, **by_variance, "mlp_width": 256, "mlp_layers": 2}
    # scikit-learn's MLPClassifier defaults, a strong plain network on small data; without BatchNorm as
    # scikit-learn has it: with it, it was less accurate on the suite's small data sets (docs/benchmarks.md)
    entries["mlp_sklearn"] = {
        "mode": "mlp", **general, "learning_rate": 1e-3, "batch_size": 128, "label_smoothing": 0.0,
        "weight_decay": 1e-4, "input_keep": 1.0, "dropout": 0.0, "n_genes": wide, **by_variance, "mlp_width": 256,
        "mlp_layers": 2, "batch_norm": False,
    }  # fmt: skip
    # the same logistic regression on 0-1 scaled genes, which z-scores distort where genes are binary or mostly
    # zero (mutations, sparse FPKM): a second linear floor
    entries["linear_minmax"] = {**linear, "scaling": "minmax"}
    if (
        task == "classification"
    ):  # scikit-learn's boosted trees, a fifth of the genes per split (wide data: F-test genes)
        entries["trees"] = {
            "mode": "trees", "trees_learning_rate": 0.1, "trees_leaf_nodes": 31, "trees_l2": 0.0, "trees_max_features": 0.2,
            "trees_max_bins": 63, "scaling": "minmax",
            "class_weight": "none", "n_genes": few, **({} if few is None else {"genes_by": "f_test"}),
        }  # fmt: skip
    return entries


def _weigh_classes(entry: dict, offered: list, task: str) -> None:
    """Set ``entry``'s class weights: balanced for the linear mode's floors where offered, else an offered one."""
    if task != "classification":
        del entry["class_weight"]
    elif entry["mode"] == "linear" and "balanced" in offered:
        # Balanced class weights in the linear floors: with scikit-learn's logistic regression on the
        # suite's folds they raised macro-F1 on every imbalanced data set and left accuracy about where it
        # was (docs/benchmarks.md); on balanced classes they change nothing.
        entry["class_weight"] = "balanced"
    elif entry["class_weight"] not in offered:
        entry["class_weight"] = offered[0]


def _inside(entry: dict, spaces, genes: list) -> dict | None:
    """``entry`` with every value inside ``spaces``; ``None`` when a categorical choice is not offered."""
    choices = {
        "input_keep": spaces.input_keep,
        "dropout": spaces.dropout,
        "batch_norm": spaces.batch_norm,
        "batch_size": spaces.batch_size,
        "momentum": spaces.momentum,
        "label_smoothing": spaces.label_smoothing,
        "class_weight": spaces.class_weight,
        "scaling": spaces.scaling,
        "n_genes": genes,
        "genes_by": spaces.genes_by,
        "resnet_width": spaces.resnet_widths,
        "resnet_blocks": spaces.resnet_blocks,
        "mlp_width": spaces.mlp_widths,
        "mlp_layers": spaces.mlp_layers,
        "C": spaces.linear_C,
        "trees_learning_rate": spaces.trees_learning_rate,
        "trees_leaf_nodes": spaces.trees_leaf_nodes,
        "trees_l2": spaces.trees_l2,
        "trees_max_features": spaces.trees_max_features,
        "trees_max_bins": spaces.trees_max_bins,
    }
    ranges = {"learning_rate": spaces.learning_rate, "weight_decay": spaces.weight_decay, "l2": spaces.linear_l2}
    out = {}
    for k, v in entry.items():
        if k in ranges:
            lo, hi = ranges[k]
            out[k] = float(min(max(v, lo), hi))
        elif k in choices:
            opts = list(choices[k])
            if v not in opts:
                numeric = [o for o in opts if isinstance(o, int | float) and not isinstance(o, bool)]
                nearest = ("batch_size", "momentum", "label_smoothing", "input_keep", "dropout", "trees_max_bins")
                if k in nearest and numeric:
                    v = min(numeric, key=lambda o: abs(o - v))  # the nearest offered value
                else:
                    return None
            out[k] = v
        else:
            out[k] = v
    return out


def is_floor(mode: object) -> bool:
    """Whether the search mode named ``mode`` is a floor of the cross-validation (:class:`Mode`'s ``floor``)."""
    found = MODES.get(str(mode))
    return bool(found is not None and found.floor)


def is_solved(mode: object) -> bool:
    """Whether the search mode named ``mode`` is solved to convergence in seconds (:class:`Mode`'s ``solved``)."""
    found = MODES.get(str(mode))
    return bool(found is not None and found.solved)


def check_modes(modes: str | Iterable[str], supervised: bool) -> list[str]:
    """Validate ``modes`` against the registry and the task; one sentence on error."""
    if isinstance(modes, str):
        modes = [modes]
    modes = list(dict.fromkeys(modes))
    if not modes:
        raise ValueError("modes is empty; choose at least one of " + ", ".join(sorted(MODES)) + ".")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"Unknown search mode '{m}'; choose from {', '.join(mode_names())}.")
        if MODES[m].supervised != supervised:
            what = "needs a label_key" if MODES[m].supervised else "is unsupervised (pass label_key=None)"
            raise ValueError(f"Search mode '{m}' {what}.")
    return modes


def suggest_vae_arch(trial, spaces, arch: dict) -> dict:
    """Sample the paper's Res-VAE space with an Optuna ``trial``; return ``arch`` with the choices.

    Parameters
    ----------
    trial
        An ``optuna.Trial``.
    spaces
        The config's ``search.spaces`` (``resvae_layers``, ``resvae_first_widths``,
        ``resvae_decay``, ``input_keep``).
    arch
        The base architecture from :func:`~autogenome_sc.train.prepare_vae` (likelihood, latent size, ...).

    Returns
    -------
    A new architecture dict for :func:`~autogenome_sc.train.fit_vae_config`.
    """
    return {
        **arch,
        "n_layers": trial.suggest_categorical("n_layers", list(spaces.resvae_layers)),
        "first_width": trial.suggest_categorical("first_width", list(spaces.resvae_first_widths)),
        "decay": trial.suggest_categorical("decay", list(spaces.resvae_decay)),
        "input_keep": trial.suggest_categorical("input_keep", list(spaces.input_keep)),
    }
