"""``ag.tl.explain``: SHAP values of a trained model by expected gradients, gene importance per class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._checks import check_rng
from .._keys import Keys
from ..data import matrix_name
from ..explain import SAMPLINGS, NetworkOutput, expected_gradients, model_output
from ..explain._trees import is_trees, stacked_trees_shap, tree_shap
from ..model import Model, read_model

if TYPE_CHECKING:
    import shap

OUTPUTS = ("probability", "logit")


def explain(
    adata: AnnData,
    *,
    key: str = "ag",
    groups: str | list[str] | None = None,
    n_background: int = 200,
    n_samples: int = 200,
    max_cells: int | None = 1000,
    output: str = "probability",
    sampling: str = "stratified",
    chunk_size: int | None = None,
    return_explanation: bool = False,
    rng: int = 0,
) -> shap.Explanation | None:
    """Explain a trained model's predictions with SHAP values (expected gradients) and rank genes per class.

    The model stored by ``ag.tl.train`` or ``ag.tl.search`` is read from ``adata.uns[key]["model_path"]``
    (on a query labelled by ``ag.tl.predict``: ``adata.uns[key]["prediction"]["model_path"]``) and applied to
    the matrix it was trained on when ``adata`` has it (``.raw`` or the layer, else ``.X``; the log says which;
    preprocessed and 0-1 scaled as in training; the SHAP values refer to these scaled inputs). SHAP values are computed by expected gradients, the
    estimator of ``shap.GradientExplainer``, in one compiled JAX function: for each explained cell,
    ``n_samples`` draws of a background cell ``x'`` and a point ``t`` give the gradient of the model
    output at ``t x + (1 - t) x'`` times ``x - x'``; all classes share the same draws. The importance
    of a gene for a class is the sum of its absolute SHAP values for that class over the explained
    cells of that class (the AutoGenome paper's definition).

    Parameters
    ----------
    adata
        The annotated data the model was trained on, or a query ``ag.tl.predict`` labelled.
    key
        The ``key_added`` of the training (or prediction) call.
    groups
        Explain only the cells of these classes (by the label column used for training
        if present in ``adata.obs``, else by ``adata.obs[f"{key}_prediction"]``).
    n_background
        Background cells (drawn from the training split when known, else from all cells);
        base values are the mean model output over them.
    n_samples
        Monte-Carlo draws per explained cell.
    max_cells
        Explain at most this many cells (a random subset); ``None`` explains all. The
        stored values take ``cells x genes x classes x 2`` bytes (float16).
    output
        ``"probability"`` explains the softmax class probabilities (what
        ``shap.GradientExplainer`` explains for a classifier ending in a softmax);
        ``"logit"`` the raw network outputs. Regression models are explained in the
        target's units either way.
    sampling
        ``"stratified"`` (stratified ``t``, background cells without replacement: lower
        Monte-Carlo error) or ``"iid"`` (shap's independent draws).
    chunk_size
        Cells per compiled call (bounds memory); chosen automatically by default.
    return_explanation
        Also return a ``shap.Explanation`` (full precision) for ``shap.plots``.
    rng
        Seed of the cell subset, the background and the draws.

    Returns
    -------
    A ``shap.Explanation`` with ``values`` (cells, genes, classes), ``base_values`` (cells,
    classes), ``data`` (the model's scaled inputs), ``feature_names`` and ``output_names``
    when ``return_explanation=True``, else ``None``. Writes

    ``.uns[key]["importance"]``
        ``values`` (genes x groups, float32), ``genes``, ``groups`` (the classes and
        ``"overall"``, their sum) and ``n_cells`` per group; read it as a DataFrame with
        :func:`autogenome_sc.get.importance_df`.
    ``.uns[key]["shap"]``
        The explained cells' ``obs_names``, their ``labels``, ``values`` (cells x genes x
        outputs, float16), ``data`` (float16), ``base_values``, ``feature_names``,
        ``output_names`` and ``params``; :func:`autogenome_sc.get.explanation` rebuilds
        the ``shap.Explanation`` from them.
    """
    opts = _Options(n_background, n_samples, max_cells, output, sampling, chunk_size, rng)
    _check_arguments(adata, key, opts)
    model = _trained_model(adata, key)
    result = _explain_cells(adata, key, model, groups, opts)
    _write(adata, key, result)
    return result.explanation() if return_explanation else None


@dataclass(frozen=True)
class _Options:
    """How many cells, background cells and draws; the explained output; the seed."""

    n_background: int
    n_samples: int
    max_cells: int | None
    output: str
    sampling: str
    chunk_size: int | None
    rng: int


@dataclass
class _Explained:
    """What ``explain`` computed: the explained cells, their SHAP values and the gene importance per class."""

    obs_names: np.ndarray
    labels: np.ndarray  # each explained cell's class ('' when unknown)
    phi: np.ndarray  # cells x genes x outputs
    x: np.ndarray  # the cells' scaled inputs
    base: np.ndarray  # the mean output over the background cells
    genes: np.ndarray
    outputs: list[str]
    importance: np.ndarray  # genes x groups
    n_cells: np.ndarray  # per group
    groups: list[str]  # the classes and "overall"
    params: dict[str, Any]
    start: float  # when the computation was logged

    def explanation(self) -> shap.Explanation:
        """The full-precision ``shap.Explanation`` for ``shap.plots``."""
        import shap

        return shap.Explanation(
            values=self.phi,
            base_values=np.broadcast_to(self.base, (len(self.phi), len(self.outputs))).copy(),
            data=self.x,
            feature_names=list(self.genes),
            output_names=self.outputs,
        )


def _check_arguments(adata: AnnData, key: str, opts: _Options) -> None:
    """Every argument, before any model is read; one sentence each."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    check_rng(opts.rng)
    if key not in adata.uns or not _model_record(adata.uns[key]):
        raise KeyError(
            f"Did not find adata.uns['{key}']['model_path']. Run `ag.tl.train` (or `ag.tl.search`, or `ag.tl.predict` "
            "on a query) first."
        )
    _check_positive(
        n_background=opts.n_background, n_samples=opts.n_samples, max_cells=opts.max_cells, chunk_size=opts.chunk_size
    )
    if opts.output not in OUTPUTS:
        raise ValueError(f"Unknown output '{opts.output}'; choose one of {', '.join(OUTPUTS)}.")
    if opts.sampling not in SAMPLINGS:
        raise ValueError(f"Unknown sampling '{opts.sampling}'; choose one of {', '.join(SAMPLINGS)}.")


def _check_positive(**kwargs) -> None:
    for name, value in kwargs.items():
        if value is None and name in ("max_cells", "chunk_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _model_record(uns) -> dict:
    """Where ``uns[key]`` names its model: itself (a training) or its ``prediction`` (a query); empty if neither."""
    if "model_path" in uns:
        return uns
    prediction = uns.get("prediction", {})
    return prediction if "model_path" in prediction else {}


def _trained_model(adata: AnnData, key: str) -> Model:
    """The model ``adata.uns[key]`` was written with, checked to be that one and to have predictions to explain."""
    uns = _model_record(adata.uns[key])
    path = Path(str(uns["model_path"]))
    if not path.exists():
        raise FileNotFoundError(
            f"The model of adata.uns['{key}'] ('{path}') no longer exists; run `ag.tl.train` again or restore it."
        )
    model = read_model(path)
    if uns.get("model_id") and model.id_ != uns["model_id"]:
        raise ValueError(
            f"The model at '{path}' is not the one adata.uns['{key}'] was written with (its id differs): it was "
            "replaced or overwritten since. Train again, or restore the model that was saved there."
        )
    if not model.task_type.explains:  # an embedding model: nothing is predicted
        raise ValueError(
            f"The model of adata.uns['{key}'] is an embedding model ({model.architecture.get('model')}): it has no "
            "predictions to explain. Explain a classifier (ag.tl.train or ag.tl.search with a label_key), for "
            "example one trained on clusters of its latent space."
        )
    if not model.input_recorded:  # saved before models recorded their input: the run's record in adata names it
        model.layer, model.use_raw = _recorded_matrix(adata, key)
    return model


def _recorded_matrix(adata: AnnData, key: str) -> tuple[str | None, bool]:
    """``layer``/``use_raw`` of the matrix ``uns[key]["preprocessing"]["matrix"]`` names (``"X"`` when absent)."""
    where = str(adata.uns[key].get("preprocessing", {}).get("matrix", "X"))
    choices = [(None, False), (None, True), *((name, False) for name in adata.layers)]
    for layer, use_raw in choices:
        if matrix_name(layer, use_raw) == where:
            return layer, use_raw
    raise KeyError(
        f"The model of adata.uns['{key}'] was trained on adata.{where}, which adata does not have "
        f"(layers: {', '.join(map(repr, adata.layers.keys())) or 'none'})."
    )


def _explain_cells(adata: AnnData, key: str, model: Model, groups, opts: _Options) -> _Explained:
    """SHAP values of the chosen cells against background cells of the training split, and the importance table."""
    layer, use_raw, gene_symbols, why = model.read_input(adata)
    pipe, _, _ = model.pipeline(adata, layer=layer, use_raw=use_raw, gene_symbols=gene_symbols)
    logg.info(f"    reading adata.{pipe.source.where} ({why})")
    gen = np.random.default_rng(opts.rng)
    cells, labels, label_source = _cells(adata, key, model, groups, opts.max_cells, gen)
    bg_idx = _background_cells(adata, Keys(key), opts.n_background, gen)
    x = pipe.block(cells)
    background = pipe.block(bg_idx)
    draws = int(gen.integers(2**31))
    with_trees = _has_trees(model.architecture)
    if is_trees(model.architecture):
        output, method = "logit", "exact Tree SHAP (shap.TreeExplainer, interventional)"
    elif with_trees:
        output = "logit"
        method = (
            f"expected gradients, {opts.n_samples} {opts.sampling} draws per cell, and exact Tree SHAP for the "
            "stacked boosted trees"
        )
    else:
        output, method = opts.output, f"expected gradients, {opts.n_samples} {opts.sampling} draws per cell"
    start = logg.info(f"explaining {len(cells)} cells with {model!r}: {method} over {len(bg_idx)} background cells")
    if with_trees and opts.output != "logit":
        logg.warn(
            "a model with boosted trees is explained in logits: Tree SHAP has no exact values of multiclass "
            "probabilities (output='logit' says so and silences this)"
        )
    if is_trees(model.architecture):
        phi, base = tree_shap(model.variables["params"], x, background)  # the raw logits, as for any network
    else:
        f = _explained_function(model, output)
        phi = expected_gradients(
            f, model.variables, x, background, n_samples=opts.n_samples, sampling=opts.sampling,
            chunk_size=opts.chunk_size, rng=draws,
        )  # fmt: skip
        base = model_output(f, model.variables, background).mean(axis=0)
        if with_trees:  # a stack's trees: their share, exactly (expected gradients gave them nothing)
            trees_part = stacked_trees_shap(model.architecture, model.variables, x, background)
            assert trees_part is not None  # has_trees: a stack with a trees group
            phi = phi + trees_part
    outputs = _output_names(model, adata.uns[key])
    importance, n_cells, columns = _importance(phi, labels, outputs, model.task == "classification")
    params = {
        "n_samples": int(opts.n_samples),
        "n_background": len(bg_idx),
        "max_cells": -1 if opts.max_cells is None else int(opts.max_cells),
        "output": output,
        "sampling": opts.sampling,
        "rng": int(opts.rng),
        "label_source": label_source or "",
    }
    genes = np.asarray(model.var_names_, dtype=str)
    obs_names = np.asarray(adata.obs_names[cells], dtype=str)
    return _Explained(obs_names, labels, phi, x, base, genes, outputs, importance, n_cells, columns, params, start)


def _cells(
    adata: AnnData, key: str, model: Model, groups: str | list[str] | None, max_cells: int | None, gen
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """The explained cells (of ``groups``, at most ``max_cells``), their classes and where these were read."""
    classification = model.task == "classification"
    labels, label_source = _labels(adata, adata.uns[key], Keys(key), model) if classification else (None, None)
    cells = np.arange(adata.n_obs)
    if groups is not None:
        if not classification:
            raise ValueError("groups selects cells by class; this model does regression.")
        assert model.classes_ is not None  # a classification model has its classes
        groups = [groups] if isinstance(groups, str) else list(groups)
        unknown = [g for g in groups if g not in model.classes_]
        if unknown:
            raise ValueError(f"Unknown groups {unknown}; the model's classes are {model.classes_}.")
        assert labels is not None  # read above for classification
        cells = np.flatnonzero(np.isin(labels, groups))
        if len(cells) == 0:
            raise ValueError(f"No cell of adata is labelled {groups} (by {label_source}).")
    if max_cells is not None and len(cells) > max_cells:
        cells = np.sort(gen.choice(cells, int(max_cells), replace=False))
    cell_labels = labels[cells] if labels is not None else np.full(len(cells), "", dtype=object)
    return cells, cell_labels, label_source


def _background_cells(adata: AnnData, keys: Keys, n_background: int, gen) -> np.ndarray:
    """``n_background`` cells of the training split when ``adata`` records it, else of all cells."""
    pool = np.arange(adata.n_obs)
    if keys.split in adata.obs and (adata.obs[keys.split] == "train").any():
        pool = np.flatnonzero(adata.obs[keys.split].to_numpy() == "train")
    return np.sort(gen.choice(pool, min(int(n_background), len(pool)), replace=False))


def _has_trees(arch: dict) -> bool:
    """Whether a model is boosted trees or a stack holding some: explained in logits only."""
    return is_trees(arch) or (arch.get("average") == "stack" and any(is_trees(m) for m in arch.get("members", [])))


def _explained_function(model: Model, output: str) -> NetworkOutput:
    """The network's output that is explained: class probabilities or logits, or a regression in the target's units."""
    if model.task == "classification":
        return NetworkOutput(model.net, output=output, temperature=model.temperature)
    return NetworkOutput(
        model.net, output="logit", scale=float(model.target_std_), shift=float(model.target_mean_), temperature=1.0
    )


def _output_names(model: Model, uns) -> list[str]:
    """The classes, or the regression's target (its ``label_key``)."""
    if model.task == "classification":
        assert model.classes_ is not None  # a classification model has its classes
        return list(model.classes_)
    return [str(uns.get("params", {}).get("label_key", "prediction"))]


def _write(adata: AnnData, key: str, r: _Explained) -> None:
    """``uns[key]["importance"]`` and ``uns[key]["shap"]`` (float16 values and inputs), and the closing log line."""
    uns = adata.uns[key]
    uns["importance"] = {
        "values": r.importance.astype(np.float32),
        "genes": r.genes,
        "groups": np.asarray(r.groups, dtype=str),
        "n_cells": r.n_cells,
    }
    uns["shap"] = {
        "obs_names": r.obs_names,
        "labels": np.asarray([str(v) for v in r.labels], dtype=str),
        "values": r.phi.astype(np.float16),
        "data": r.x.astype(np.float16),
        "base_values": r.base.astype(np.float32),
        "feature_names": r.genes,
        "output_names": np.asarray(r.outputs, dtype=str),
        "params": r.params,
    }
    adata.uns[key] = uns
    logg.info(
        "    finished",
        time=r.start,
        deep=f"added 'importance' and 'shap' (adata.uns['{key}']); read them with ag.get.importance_df / ag.get.explanation",
    )


def _labels(adata: AnnData, uns, keys: Keys, model) -> tuple[np.ndarray, str]:
    """Each cell's class (true label if known, else predicted), as strings ('' when unknown)."""
    label_key = uns.get("params", {}).get("label_key")
    if label_key is not None and label_key in adata.obs:
        col, source = adata.obs[label_key], f"adata.obs['{label_key}']"
    elif keys.prediction in adata.obs:
        col, source = adata.obs[keys.prediction], f"adata.obs['{keys.prediction}']"
    else:
        pred = model.predict(adata)  # the model's input when adata has it
        col, source = pred["prediction"], "the model's predictions"
    labels = np.asarray([("" if pd.isna(v) else str(v)) for v in col], dtype=object)
    return labels, source


def _importance(phi: np.ndarray, labels: np.ndarray, outputs: list[str], classification: bool):
    """Sum of |SHAP| for class c over the cells of class c; ``overall`` = sum over classes."""
    a = np.abs(phi)
    if not classification:
        return a[:, :, 0].sum(axis=0)[:, None], np.asarray([len(phi)]), ["overall"]
    onehot = (labels[:, None] == np.asarray(outputs, dtype=object)[None, :]).astype(np.float32)  # cells x classes
    per_class = np.einsum("ngc,nc->gc", a, onehot)
    table = np.concatenate([per_class, per_class.sum(axis=1, keepdims=True)], axis=1)
    n_cells = np.concatenate([onehot.sum(axis=0), [onehot.sum()]]).astype(np.int64)
    return table, n_cells, [*outputs, "overall"]
