"""``ag.tl.explain``: SHAP values of a trained model by expected gradients, gene importance per class."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._checks import check_rng
from .._keys import Keys
from ..explain import SAMPLINGS, NetworkOutput, expected_gradients, model_output
from ..model import read_model

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

    The model stored by ``ag.tl.train`` or ``ag.tl.search`` is read from
    ``adata.uns[key]["model_path"]`` and applied to the same matrix it was trained on
    (preprocessed and 0-1 scaled as in training; the SHAP values refer to these scaled
    inputs). SHAP values are computed by expected gradients, the estimator of
    ``shap.GradientExplainer``, in one compiled JAX function: for each explained cell,
    ``n_samples`` draws of a background cell ``x'`` and a point ``t`` give the gradient of
    the model output at ``t x + (1 - t) x'`` times ``x - x'``; all classes share the same
    draws. The importance of a gene for a class is the sum of its absolute SHAP values
    for that class over the explained cells of that class (the AutoGenome paper's
    definition).

    Parameters
    ----------
    adata
        The annotated data the model was trained on (or cells with the same genes).
    key
        The ``key_added`` of the training call.
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
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    rng = check_rng(rng)
    keys = Keys(key)
    if key not in adata.uns or "model_path" not in adata.uns[key]:
        raise KeyError(f"Did not find adata.uns['{key}']['model_path']. Run `ag.tl.train` (or `ag.tl.search`) first.")
    _check_positive(n_background=n_background, n_samples=n_samples, max_cells=max_cells, chunk_size=chunk_size)
    if output not in OUTPUTS:
        raise ValueError(f"Unknown output '{output}'; choose one of {', '.join(OUTPUTS)}.")
    if sampling not in SAMPLINGS:
        raise ValueError(f"Unknown sampling '{sampling}'; choose one of {', '.join(SAMPLINGS)}.")
    uns = adata.uns[key]
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
    layer, use_raw = _matrix(uns)
    pipe, _, _ = model.pipeline(adata, layer=layer, use_raw=use_raw)
    gen = np.random.default_rng(rng)

    classification = model.task == "classification"
    labels, label_source = _labels(adata, uns, keys, model) if classification else (None, None)
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

    pool = np.arange(adata.n_obs)
    if keys.split in adata.obs and (adata.obs[keys.split] == "train").any():
        pool = np.flatnonzero(adata.obs[keys.split].to_numpy() == "train")
    bg_idx = np.sort(gen.choice(pool, min(int(n_background), len(pool)), replace=False))

    start = logg.info(
        f"explaining {len(cells)} cells with {model!r}: expected gradients, {n_samples} {sampling} draws per cell "
        f"over {len(bg_idx)} background cells"
    )
    f = NetworkOutput(
        model.net,
        output=output if classification else "logit",
        scale=1.0 if classification else float(model.target_std_),
        shift=0.0 if classification else float(model.target_mean_),
        temperature=model.temperature if classification else 1.0,
    )
    x = pipe.block(cells)
    background = pipe.block(bg_idx)
    phi = expected_gradients(
        f,
        model.variables,
        x,
        background,
        n_samples=n_samples,
        sampling=sampling,
        chunk_size=chunk_size,
        rng=int(gen.integers(2**31)),
    )
    base = model_output(f, model.variables, background).mean(axis=0)
    genes = np.asarray(model.var_names_, dtype=str)
    if classification:
        assert model.classes_ is not None  # a classification model has its classes
        outputs = list(model.classes_)
    else:
        outputs = [str(uns.get("params", {}).get("label_key", "prediction"))]

    cell_labels = labels[cells] if labels is not None else np.full(len(cells), "", dtype=object)
    importance, n_cells, columns = _importance(phi, cell_labels, outputs, classification)
    params = {
        "n_samples": int(n_samples),
        "n_background": len(bg_idx),
        "max_cells": -1 if max_cells is None else int(max_cells),
        "output": f.output,
        "sampling": sampling,
        "rng": int(rng),
        "label_source": label_source or "",
    }
    uns["importance"] = {
        "values": importance.astype(np.float32),
        "genes": genes,
        "groups": np.asarray(columns, dtype=str),
        "n_cells": n_cells,
    }
    uns["shap"] = {
        "obs_names": np.asarray(adata.obs_names[cells], dtype=str),
        "labels": np.asarray([str(v) for v in cell_labels], dtype=str),
        "values": phi.astype(np.float16),
        "data": x.astype(np.float16),
        "base_values": base.astype(np.float32),
        "feature_names": genes,
        "output_names": np.asarray(outputs, dtype=str),
        "params": params,
    }
    adata.uns[key] = uns
    logg.info(
        "    finished",
        time=start,
        deep=f"added 'importance' and 'shap' (adata.uns['{key}']); read them with ag.get.importance_df / ag.get.explanation",
    )
    if not return_explanation:
        return None
    import shap

    return shap.Explanation(
        values=phi,
        base_values=np.broadcast_to(base, (len(cells), len(outputs))).copy(),
        data=x,
        feature_names=list(genes),
        output_names=outputs,
    )


def _check_positive(**kwargs) -> None:
    for name, value in kwargs.items():
        if value is None and name in ("max_cells", "chunk_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _matrix(uns) -> tuple[str | None, bool]:
    """The ``layer``/``use_raw`` the model was trained on, from ``uns["preprocessing"]["matrix"]``."""
    where = str(uns.get("preprocessing", {}).get("matrix", "X"))
    if where == "raw.X":
        return None, True
    m = re.fullmatch(r"layers\['(.*)'\]", where)
    return (m.group(1), False) if m else (None, False)


def _labels(adata: AnnData, uns, keys: Keys, model) -> tuple[np.ndarray, str]:
    """Each cell's class (true label if known, else predicted), as strings ('' when unknown)."""
    label_key = uns.get("params", {}).get("label_key")
    if label_key is not None and label_key in adata.obs:
        col, source = adata.obs[label_key], f"adata.obs['{label_key}']"
    elif keys.prediction in adata.obs:
        col, source = adata.obs[keys.prediction], f"adata.obs['{keys.prediction}']"
    else:
        layer, use_raw = _matrix(uns)
        pred = model.predict(adata, layer=layer, use_raw=use_raw)
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
