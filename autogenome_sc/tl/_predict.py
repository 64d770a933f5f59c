"""``ag.tl.predict``: label a query with a trained model."""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._checks import check_flag, check_key_added, writable
from .._keys import UNASSIGNED, Keys
from ..model import Model, read_model
from ._results import probability_classes, write_predictions

REJECT_UNCERTAINTY = 0.95
#: ``reject="auto"``: reject by ``ag_uncertainty`` alone, at ``reject_uncertainty``.
AUTO = "auto"


def predict(
    query: AnnData,
    model: Model | str | Path,
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    gene_symbols: str | None = None,
    batch_key: str | None = None,
    reject: float | Literal["auto"] | None = None,
    reject_uncertainty: float | None = REJECT_UNCERTAINTY,
    query_aware: bool = False,
    key_added: str = "ag",
    copy: bool = False,
) -> AnnData | None:
    """Label the cells of ``query`` with a trained model, with calibrated confidence and rejection.

    The query's genes are matched to the model's by name (Ensembl IDs with or without their
    version suffix): reordered, missing ones set to zero (with a warning giving the
    fraction), and the call refuses when fewer than the config's ``data.min_gene_overlap``
    (default half) are shared; one log line says how many were found and how. The query is
    read from the matrix the model was trained on (``.raw`` or the layer) when it has it,
    gets the same preprocessing as the training data (detected from its values) and the
    model's training-split scaling.

    ``ag_confidence`` is the largest class probability after temperature scaling (fitted
    on the reference's validation split), so among cells with confidence 0.9 about 90%
    are labelled correctly, as long as the query resembles the reference.
    ``ag_uncertainty`` also rises for cells unlike anything in the reference: it combines
    the cell's distances to the reference in input space (the principal components of the
    model's input, z-scored on the training split: the mean distance to its nearest training
    cells and the Mahalanobis distance to the nearest class mean, half each) with
    ``1 - confidence``, and is expressed as the fraction of held-out reference cells that
    look more typical. See ``docs/confidence.md``.

    Parameters
    ----------
    query
        Cells to label.
    model
        An :class:`autogenome_sc.Model` or the path of a saved model directory.
    layer
        Read ``query.layers[layer]``.
    use_raw
        ``True`` reads ``query.raw.X``, ``False`` ``query.X`` (or the ``layer``). Default
        (``None``, with no ``layer``): the matrix the model was trained on when the query has
        it (``query.raw.X`` or the same layer), else ``query.X``; the log line says which.
    gene_symbols
        Column of ``query.var`` (``query.raw.var`` when reading ``.raw``) whose names match the
        model's genes instead of ``var_names``. Default: the column the model was trained with
        (``ag.tl.train(gene_symbols=)``) when the query has it, else ``var_names``.
    batch_key
        For a model trained with a ``batch_key``: the column of ``query.obs`` naming the
        query's batches, each standardised gene by gene on its own cells before the model's
        scaling. Default: the column the model was trained with; a query without it is one
        batch (with a warning). A model trained without one refuses it.
    reject
        A probability in (0, 1), ``"auto"``, or ``None`` (default) to label every cell. Cells
        with ``ag_confidence`` below the probability, or with ``ag_uncertainty`` above
        ``reject_uncertainty``, are labelled ``"Unassigned"``. ``"auto"``: by
        ``ag_uncertainty`` alone, at ``reject_uncertainty``, so that about ``1 -
        reject_uncertainty`` of cells like the reference's held-out cells (5% by default) are
        rejected, and no confidence threshold is needed (see docs/confidence.md).
    reject_uncertainty
        Used with ``reject``: cells with ``ag_uncertainty`` above it are ``"Unassigned"``
        too, in (0, 1]. The default 0.95 rejects cells more unusual than 95% of held-out
        reference cells: about 5% of cells like the reference, and many cells of types the
        reference lacks, even when the network is confidently wrong about them. ``None``
        turns this part off (not with ``reject="auto"``).
    query_aware
        ``ag_uncertainty`` also reads the query as a whole: a cell whose nearest query cells are
        much nearer than its nearest reference cells (the density ratio; the neighbour counts
        matched to the two sets' sizes, the reference weighted to the query's composition)
        scores higher. Cells of a type the reference lacks gather together away from the
        reference, so they are told apart better (leave-one-type-out AUROC on pbmc68k_reduced
        0.86 -> 0.92; ``reject="auto"`` rejects 61% of unseen cells instead of 41%). Held-out
        reference cells kept in the model are read in the same query and rank its cells, so
        ``"auto"`` still rejects about 5% of cells like the reference. But a cell's score then
        depends on the cells predicted with it, and a known type far more common in the query
        than in the reference loses a few more of its cells (docs/confidence.md). Needs at
        least 50 query cells and a model that kept held-out cells (trained since it was added,
        with at least 10 held-out cells); otherwise a warning says so and the score reads the
        reference alone.
    key_added
        Prefix of the keys written.
    copy
        Return a copy instead of writing to ``query``.

    Returns
    -------
    ``None``, or a copy when ``copy=True``, with

    ``.obs["ag_prediction"]``
        Predicted class (with the category ``"Unassigned"`` when ``reject`` is set) or value.
    ``.obs["ag_confidence"]``
        Largest calibrated class probability (classification).
    ``.obs["ag_uncertainty"]``
        Novelty score between 0 and 1 (classification).
    ``.obsm["ag_probabilities"]``
        Calibrated class probabilities, cells x classes (classification); the class of each
        column in ``.uns["ag"]["probabilities"]["ag_probabilities"]``. With a label hierarchy
        also ``.obsm["ag_probabilities_<level>"]`` for each coarser level.
    ``.obsm["X_ag"]``
        The model's embedding (for an embedding model, the posterior mean; nothing else
        but ``.uns`` is written then).
    ``.uns["ag"]["probabilities"]``
        The class names of each ``.obsm`` table of probabilities, by its key (classification).
    ``.uns["ag"]["prediction"]``
        ``model_path``, ``model_id``, ``matrix`` (the matrix read), ``genes`` (``matched_by``,
        ``n_model``, ``n_found``, ``n_exact``, ``n_unversioned``: found once Ensembl version
        suffixes were removed, ``n_missing``), ``genes_missing_fraction``, ``temperature``, ``reject``,
        ``reject_uncertainty``, ``n_unassigned``, ``query_aware`` (whether ``ag_uncertainty`` read
        the query as a whole), ``n_batches`` (the query's batches, 0 for a
        model without a batch key) and, for a model with one, ``batch_key``.
    """
    if not isinstance(model, Model):
        model = read_model(model)
    if not isinstance(query, AnnData):
        raise TypeError(f"Expected an AnnData object as query, got {type(query).__name__}.")
    keys = Keys(check_key_added(key_added))
    _check_reject(model, reject, reject_uncertainty)
    check_flag(query_aware, "query_aware")
    model.check_batch_key(batch_key)
    query = writable(query, copy, "query")
    layer, use_raw, gene_symbols, why = model.read_input(query, layer=layer, use_raw=use_raw, gene_symbols=gene_symbols)
    start = logg.info(f"predicting {query.n_obs} cells with {model!r}")
    pipe, alignment, kind = model.pipeline(
        query, layer=layer, use_raw=use_raw, batch_key=batch_key, gene_symbols=gene_symbols
    )  # every input check before the log line that reports it
    logg.info(f"    reading query.{pipe.source.where} ({why})")
    logg.info(alignment.describe(f"query.{pipe.source.matched_by}"))
    info = model.input_info(pipe, alignment, kind)
    if model.task == "embedding":  # a Res-VAE/VAE: only the latent means
        query.obsm[keys.obsm] = model.embed_rows(pipe, np.arange(query.n_obs)).astype(np.float32)
        added = [f"'{keys.obsm}' (adata.obsm)"]
    else:
        out, emb = model.outputs_of(pipe, query.n_obs)
        below = 0.0 if isinstance(reject, str) else reject  # "auto": no confidence threshold, the uncertainty's alone
        evidence = model.input_evidence(pipe, query.n_obs, query=query_aware)
        info["query_aware"] = evidence is not None and len(evidence) == 4
        if query_aware and not info["query_aware"]:
            logg.warn(
                "query_aware=True needs at least 50 query cells and a model trained with the density ratio's "
                "statistics; ag_uncertainty reads the reference alone."
            )
        added = write_predictions(
            query, model, out, emb, keys, reject=below, reject_uncertainty=reject_uncertainty, evidence=evidence
        )
    added += _record(
        query, model, keys, info, batch_key=batch_key, reject=reject, reject_uncertainty=reject_uncertainty
    )
    logg.info("    finished", time=start, deep="added " + ", ".join(added))
    return query if copy else None


def _record(
    query: AnnData,
    model: Model,
    keys: Keys,
    info: dict[str, Any],
    *,
    batch_key: str | None,
    reject: float | str | None,
    reject_uncertainty: float | None,
) -> list[str]:
    """``uns[key]["prediction"]``: the model, the input, the batches and the rejection; the count of rejected cells."""
    uns = dict(query.uns.get(keys.uns, {}))
    uns["prediction"] = {"model_path": str(model.path or ""), "model_id": model.id_ or "", **info}
    if model.batch_key is not None:
        uns["prediction"]["batch_key"] = batch_key or model.batch_key
    if model.task == "classification":
        uns["prediction"]["temperature"] = model.temperature
        uns["probabilities"] = probability_classes(model, keys)
    added = []
    if reject is not None:
        n_unassigned = int((query.obs[keys.prediction] == UNASSIGNED).sum())
        level = 1.0 if reject_uncertainty is None else float(reject_uncertainty)
        rule = reject if isinstance(reject, str) else float(reject)
        uns["prediction"].update(reject=rule, reject_uncertainty=level, n_unassigned=n_unassigned)
        added.append(f"{n_unassigned} of {query.n_obs} cells '{UNASSIGNED}'")
    query.uns[keys.uns] = uns
    return added


def _check_reject(model: Model, reject, reject_uncertainty) -> None:
    if reject is None:
        if reject_uncertainty not in (None, REJECT_UNCERTAINTY):
            raise ValueError("reject_uncertainty needs reject; pass reject=<probability> as well.")
        return
    if model.task != "classification":
        raise ValueError(f"reject applies to classification models; this model does {model.task}.")
    if isinstance(reject, str) and reject == AUTO:
        if reject_uncertainty is None:
            raise ValueError(
                "reject='auto' rejects by ag_uncertainty alone; give reject_uncertainty in (0, 1] "
                "(default 0.95), or reject=<probability>."
            )
    # typeshed's numbers.Real has no __gt__, so mypy rejects ``0 < real`` (int.__lt__ takes ints only)
    elif isinstance(reject, bool) or not isinstance(reject, Real) or not 0 < reject < 1:  # type: ignore[operator]
        raise ValueError(f"reject must be a probability strictly between 0 and 1, 'auto' or None, got {reject!r}.")
    if reject_uncertainty is not None and (
        isinstance(reject_uncertainty, bool)
        or not isinstance(reject_uncertainty, Real)
        or not 0 < reject_uncertainty <= 1  # type: ignore[operator]  # numbers.Real: see above
    ):
        raise ValueError(f"reject_uncertainty must be in (0, 1] (or None), got {reject_uncertainty!r}.")
    assert model.classes_ is not None  # a classification model has its classes
    if UNASSIGNED in model.classes_:
        raise ValueError(f"The model has a class named '{UNASSIGNED}', which rejection would mix with rejected cells.")
