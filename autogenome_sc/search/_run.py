"""Opening a study on prepared data: shared by ``ag.tl.search`` and ``autogenome-sc worker``."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from anndata import AnnData

from .. import _logging as logg
from .._checks import check_count, check_file_name, check_rng, check_timeout
from ..data import TrainData, prepare
from ._continue import check_same_space, space_of
from ._driver import DEFAULT_N_TRIALS, DEFAULT_TIMEOUT, DEFAULT_VAE_TIMEOUT, Searcher, direction
from ._record import TrialRecord
from ._spaces import MODES, check_modes, portfolio, vae_portfolio
from ._study import check_storage, make_pruner, make_sampler, make_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from ..config._schema import Config

DATA_ATTR = "ag_data"
_AUTO_NAMES = itertools.count()  # the automatic study names this process gave
N_TRIALS_ATTR = "ag_n_trials"


@dataclass
class Opened:
    """A study joined by this process, with the data prepared once."""

    searcher: Searcher
    data: TrainData
    kind: str
    cfg: Config
    n_trials: int | None
    timeout: float | None
    storage_name: str


def auto_study_name(label_key: str | None) -> str:
    """A new study's name: the label column (as a file name), the time and the process, unique within the process."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", label_key or "resvae").lstrip(".") or "study"
    name = f"{stem}_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}"
    n = next(_AUTO_NAMES)
    return name if n == 0 else f"{name}-{n}"


def default_modes() -> list[str]:
    """The supervised modes searched by default: ENAS joins them on an accelerator.

    ``logistic``, ``svm`` and ``trees`` are left out again where they cannot learn the problem (see :func:`modes_for`).
    """
    import jax

    accelerated = jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")
    return ["linear", "logistic", "svm", "trees", "mlp", "resnet", "densenet"] + (["enas"] if accelerated else [])


def resolve_modes(label_key: str | None, modes: str | Sequence[str] | None, cfg: Config) -> list[str]:
    """The modes to search; ``label_key=None`` means the unsupervised Res-VAE."""
    supervised = label_key is not None
    if modes is None:
        modes = (cfg.search.modes or default_modes()) if supervised else ["resvae"]
    return check_modes(modes, supervised)


def resolve_budget(
    n_trials: int | None, timeout: float | None, cfg: Config, *, supervised: bool = True
) -> tuple[int | None, float | None]:
    """Arguments first, then the config; with neither, the default budget.

    That is :data:`DEFAULT_TIMEOUT` seconds for a supervised search, and :data:`DEFAULT_N_TRIALS`
    trials or :data:`DEFAULT_VAE_TIMEOUT` seconds for the Res-VAE's.
    """
    n_trials = n_trials if n_trials is not None else cfg.search.n_trials
    timeout = timeout if timeout is not None else cfg.search.timeout
    if n_trials is not None and (not isinstance(n_trials, int | np.integer) or n_trials < 1):
        raise ValueError(f"n_trials must be a positive integer, not {n_trials!r}.")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}.")
    if n_trials is None and timeout is None:
        return (None, DEFAULT_TIMEOUT) if supervised else (DEFAULT_N_TRIALS, DEFAULT_VAE_TIMEOUT)
    return n_trials, timeout


def modes_for(modes: list[str], data: TrainData, asked: bool) -> list[str]:
    """The ``modes`` that can learn ``data``: the others are left out, or refused when ``asked`` for by name.

    A regression leaves out the classifiers (``logistic``, ``svm``), and so does a matrix too large to
    be kept in memory (see :class:`~autogenome_sc.search.Mode`'s ``solved``).
    """
    kept = []
    for name in modes:
        why = MODES[name].cannot_learn(data)
        if why is None:
            kept.append(name)
        elif asked:
            raise ValueError(f"Search mode '{name}' {why}; leave it out of modes.")
    if not kept:
        raise ValueError(f"None of the search modes {', '.join(modes)} can learn this problem.")
    return kept


def fingerprint(data: TrainData, label_key: str | None) -> dict:
    """What must agree between the workers (and runs) of one study."""
    digest = hashlib.sha1(np.asarray(data.split).astype("U5").tobytes()).hexdigest()[:16]
    return {
        "label_key": label_key,
        "n_obs": int(len(data.y)),
        "n_vars": int(data.pipeline.n_features),
        "classes": "|".join(data.classes) if data.classes is not None else "",
        "split": digest,
        "batch_key": data.pipeline.batches.key if data.pipeline.batches is not None else "",
    }


def open_study(
    adata: AnnData,
    label_key: str | None,
    *,
    cfg: Config,
    modes: str | Sequence[str] | None,
    n_trials: int | None,
    timeout: float | None,
    layer: str | None,
    use_raw: bool,
    split_key: str | None,
    storage: str | Path | BaseStorage | None,
    study_name: str | None,
    run_dir: str | Path | None,
    rng: int,
    worker_index: int = 0,
    keep: int = 1,
    batch_key: str | None = None,
    gene_symbols: str | None = None,
    genes: Any = None,
    preset_modes: Sequence[str] | None = None,
) -> Opened:
    """Prepare the data once, create or join the study, and return a ready :class:`Searcher`.

    ``preset_modes``: a preset's model families (see :func:`autogenome_sc.config.with_preset`),
    which narrow the default modes where neither ``modes`` nor ``search.modes`` names any.
    """
    study_name = check_file_name(study_name, "study_name")
    rng = check_rng(rng)
    n_trials, timeout = check_count(n_trials, "n_trials"), check_timeout(timeout)
    check_storage(storage)  # before the data are prepared
    asked = modes is not None or cfg.search.modes is not None
    modes = resolve_modes(label_key, modes, cfg)
    if not asked and preset_modes is not None and label_key is not None:
        modes = [m for m in modes if m in preset_modes]
    data, kind, cfg = _prepare(
        adata, label_key, cfg, layer, use_raw, split_key, batch_key, rng, gene_symbols=gene_symbols, genes=genes
    )
    modes = modes_for(modes, data, asked)
    if study_name is None:
        study_name = auto_study_name(label_key)
    run_dir = Path("ag_runs") if run_dir is None else Path(run_dir)
    study = _create_study(make_storage(storage, run_dir, study_name, cfg.search), study_name, cfg)
    _check_same_data(study, fingerprint(data, label_key))
    check_same_space(study, space_of(cfg, modes, int(data.base.pipeline.n_features), data.task))  # before any trial
    if n_trials is None and timeout is None and N_TRIALS_ATTR in study.user_attrs:
        n_trials = int(study.user_attrs[N_TRIALS_ATTR])
    n_trials, timeout = resolve_budget(n_trials, timeout, cfg, supervised=label_key is not None)
    if n_trials is not None and N_TRIALS_ATTR not in study.user_attrs:
        study.set_user_attr(N_TRIALS_ATTR, int(n_trials))
    # Workers must not repeat each other's random draws, nor a resumed run its first run's.
    seed = int(rng) + 1_000_003 * int(worker_index) + len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(seed % (2**32), cfg.search)
    n_before = len(study.get_trials(deepcopy=False))
    if n_before == 0 and worker_index == 0:  # a new study starts from known-good settings
        first = (
            portfolio(cfg, modes, int(data.base.pipeline.n_features), len(data.idx["train"]), data.task)
            if label_key is not None
            else vae_portfolio(cfg)
        )
        for params in first:
            study.enqueue_trial(params, user_attrs=TrialRecord(portfolio=True).to_attrs(), skip_if_exists=True)
    where = "a journal file in " + str(run_dir) if storage is None else "the given storage"
    logg.info(
        f"    study '{study_name}' in {where}: {n_before} earlier trials; modes {', '.join(modes)}; "
        f"budget {n_trials if n_trials is not None else 'unlimited'} trials"
        + (f", {timeout:.0f}s" if timeout is not None else "")
    )
    searcher = Searcher(study=study, data=data, cfg=cfg, modes=modes, rng=int(rng), keep=keep)
    storage_name = str(_journal_or_url(storage, run_dir, study_name))
    return Opened(searcher, data, kind, cfg, n_trials, timeout, storage_name)


def _prepare(
    adata: AnnData,
    label_key: str | None,
    cfg: Config,
    layer: str | None,
    use_raw: bool,
    split_key: str | None,
    batch_key: str | None,
    rng: int,
    *,
    gene_symbols: str | None = None,
    genes: Any = None,
) -> tuple[TrainData, str, Config]:
    """The prepared problem, the input kind, and the config the study runs (the Res-VAE's choices resolved)."""
    if label_key is None:  # the Res-VAE: an unlabelled problem, judged by the validation ELBO
        from ..train import prepare_vae

        if gene_symbols is not None or genes is not None:
            raise ValueError("gene_symbols and genes are for supervised search (with a label_key) for now.")
        if cfg.search.metric != "val_loss":
            raise ValueError("Unsupervised search is judged by the validation ELBO; use search.metric 'val_loss'.")
        data, kind, base = prepare_vae(
            adata, model="resvae", layer=layer, use_raw=use_raw, split_key=split_key, cfg=cfg, rng=rng
        )
        cfg = cfg.model_copy(deep=True)
        cfg.models.resvae.likelihood = base["likelihood"]  # resolved once ('auto' -> 'nb', 'gaussian' or 'mse')
        cfg.models.resvae.latent = base["latent"]  # and the latent size ('auto' -> from the data's shape)
        return data, kind, cfg
    data, kind = prepare(
        adata,
        label_key,
        layer=layer,
        use_raw=use_raw,
        split_key=split_key,
        data_cfg=cfg.data,
        loss=cfg.loss.name,
        rng=np.random.default_rng(rng),
        batch_key=batch_key,
        gene_symbols=gene_symbols,
        genes=genes,
    )
    # the config's own rules are checked when it is validated (Config); this one needs the data
    if cfg.search.metric == "val_accuracy" and data.task != "classification":
        raise ValueError("search.metric 'val_accuracy' is for classification; use 'val_loss' for regression.")
    return data, kind, cfg


def _create_study(store: BaseStorage, study_name: str, cfg: Config) -> optuna.Study:
    """Create the study, or load it when it exists (it must optimise in the direction of ``search.metric``)."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=store,
            direction=direction(cfg.search.metric),
            pruner=make_pruner(cfg.search, cfg.trainer.max_epochs),
            load_if_exists=True,
        )
    finally:
        optuna.logging.set_verbosity(old)
    if study.direction.name.lower() != direction(cfg.search.metric):
        raise ValueError(
            f"Study '{study_name}' was created to {study.direction.name.lower()} its metric; "
            f"search.metric '{cfg.search.metric}' needs {direction(cfg.search.metric)}. Use another study_name."
        )
    return study


def _check_same_data(study: optuna.Study, fp: dict) -> None:
    """Record the data's fingerprint in a new study; refuse other data in an existing one."""
    known = study.user_attrs.get(DATA_ATTR)
    if known is None:
        study.set_user_attr(DATA_ATTR, fp)
    elif known != fp:
        diff = ", ".join(k for k in fp if fp[k] != known.get(k))
        raise ValueError(
            f"Study '{study.study_name}' was run on different data ({diff} differ); "
            "give every worker the same data, label_key, split and rng, or use another study_name."
        )


def _journal_or_url(storage: str | Path | BaseStorage | None, run_dir: str | Path, study_name: str) -> str:
    from ._study import _redact, journal_path

    if storage is None:
        return str(journal_path(run_dir, study_name))
    if isinstance(storage, str | Path):
        return _redact(str(storage))
    return type(storage).__name__
