"""``ag.tl.predict``: label a query with a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from ..io import Model, read_model
from ._keys import Keys
from ._results import write_predictions


def predict(
    query: AnnData,
    model: Model | str | Path,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    key_added: str = "ag",
    copy: bool = False,
) -> AnnData | None:
    """Label the cells of ``query`` with a trained model.

    The query's genes are matched to the model's by name: reordered, missing ones set to
    zero (with a warning giving the fraction), and the call refuses when fewer than the
    config's ``data.min_gene_overlap`` (default half) are shared. The query gets the same
    preprocessing as the training data (detected from its values) and the model's
    training-split scaling.

    Parameters
    ----------
    query
        Cells to label.
    model
        An :class:`autogenome_sc.Model` or the path of a saved model directory.
    layer
        Read ``query.layers[layer]`` instead of ``query.X``.
    use_raw
        Read ``query.raw.X``.
    key_added
        Prefix of the keys written.
    copy
        Return a copy instead of writing to ``query``.

    Returns
    -------
    ``None``, or a copy when ``copy=True``, with

    ``.obs["ag_prediction"]``
        Predicted class or value.
    ``.obs["ag_confidence"]``
        Largest class probability (classification).
    ``.obsm["X_ag"]``
        The model's embedding (for an embedding model, the posterior mean; nothing else
        but ``.uns`` is written then).
    ``.uns["ag"]["prediction"]``
        ``model_path`` and ``genes_missing_fraction``.
    """
    if not isinstance(model, Model):
        model = read_model(model)
    if not isinstance(query, AnnData):
        raise TypeError(f"Expected an AnnData object as query, got {type(query).__name__}.")
    query = query.copy() if copy else query
    start = logg.info(f"predicting {query.n_obs} cells with {model!r}")
    keys = Keys(key_added)
    if model.task == "embedding":  # a Res-VAE/VAE: only the latent means
        pipe, alignment, kind = model.pipeline(query, layer=layer, use_raw=use_raw)
        query.obsm[keys.obsm] = model._embed_rows(pipe, np.arange(query.n_obs)).astype(np.float32)
        info = {"genes_missing_fraction": alignment.fraction_missing, "input": kind}
        added = [f"'{keys.obsm}' (adata.obsm)"]
    else:
        out, emb, info = model.outputs(query, layer=layer, use_raw=use_raw)
        added = write_predictions(query, model, out, emb, keys)
    uns = dict(query.uns.get(keys.uns, {}))
    uns["prediction"] = {"model_path": str(model.path or ""), **info}
    query.uns[keys.uns] = uns
    logg.info("    finished", time=start, deep="added " + ", ".join(added))
    return query if copy else None
