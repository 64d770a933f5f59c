"""A trained model (``ag.Model``): its task, network, weights, classes, genes and preprocessing.

Inference lives here; the directory format (writing, reading, the checks an untrusted file
needs) lives in :mod:`autogenome_sc.io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import check_flag
from .._logging import warn
from .._precision import at_full_precision
from ..io import DamagedModel, read_model_files, write_model_files

if TYPE_CHECKING:
    from flax import linen as nn

    from ..data import GeneAlignment, Pipeline, Scaler
    from ..data._hierarchy import Hierarchy

_GROUPS = {"counts": "log", "normalized": "log", "log": "log", "scaled": "scaled", "binary": "binary"}


@dataclass
class Model:
    """A trained autogenome_sc model (``ag.Model``).

    Obtain one from ``ag.read_model(path)`` or from the path that ``ag.tl.train`` and
    ``ag.tl.search`` store in ``adata.uns["ag"]["model_path"]``.

    Attributes
    ----------
    architecture
        ``{"model": "resnet", "width": ..., ...}``: enough to rebuild the network.
    task
        ``"classification"``, ``"regression"`` or ``"embedding"`` (a Res-VAE or VAE; see
        :meth:`embed` and :meth:`reconstruct`).
    classes_
        Class names (classification).
    var_names_
        The genes the model reads, in order.
    preprocessing_
        ``{"input": detected kind, "applied": transform, "config": requested}``.
    metrics_
        Test-split metrics from training.
    calibration
        ``{"temperature": T, "ece_before": ..., "ece_after": ..., ...}``: the temperature
        fitted on the validation split and the expected calibration error (15 bins) before
        and after, on validation and test. Empty for a model saved without calibration
        (temperature 1).
    novelty_
        The statistics of the novelty score behind ``ag_uncertainty``: the projection of the
        model's input onto the training cells' principal components and the kept training
        cells there, and the scores' reference on held-out cells (``train/_confidence.py``;
        models saved before hold class centroids of the embedding instead).
    novelty_levels_
        With a label hierarchy: each coarser level's standardisation and reference, for the
        same score with that level's confidence (``{level: statistics}``; see
        :meth:`level_uncertainty`).
    layer, use_raw
        The matrix the model was trained on: ``adata.layers[layer]``, ``adata.raw.X``
        (``use_raw``) or ``adata.X`` (neither); ``ag.tl.predict`` and ``ag.tl.explain`` read
        the same one of a query that has it (see :meth:`read_input`).
    gene_symbols
        The column of ``.var`` that named the genes in training (``None``: ``var_names``).
    input_recorded
        ``False`` for a model saved before models recorded ``layer`` and ``use_raw`` (then
        ``None`` and ``False`` until filled from the training AnnData's record).
    """

    architecture: dict[str, Any]
    task: str
    classes_: list[str] | None
    var_names_: pd.Index
    preprocessing_: dict[str, Any]
    variables: dict
    scaler_min_: np.ndarray
    scaler_scale_: np.ndarray
    target_mean_: float = 0.0
    target_std_: float = 1.0
    config: dict = field(default_factory=dict)
    metrics_: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    path: Path | None = None
    calibration: dict = field(default_factory=dict)
    novelty_: dict = field(default_factory=dict)
    novelty_levels_: dict = field(default_factory=dict)
    id_: str | None = None  # the checksum written by save(); None until saved
    hierarchy_: dict = field(default_factory=dict)  # {"levels": [coarse, ..., fine], "parents": {...}}
    layer: str | None = None
    use_raw: bool = False
    input_recorded: bool = True
    gene_symbols: str | None = None

    def __post_init__(self):
        from ..nn import build_network, build_vae
        from ..train import make_apply, make_embed, task_type

        self.var_names_ = pd.Index(self.var_names_).astype(str)
        self.task_type = task_type(self.task)
        self.net: nn.Module
        if self.task == "embedding":
            self.net = build_vae(self.architecture, self.n_out)
            self.embed_fn = make_embed(self.net)
        else:
            self.net = build_network(self.architecture, self.n_out)
        self.apply_fn = make_apply(self.net)

    @property
    def n_out(self) -> int:
        """Number of network outputs."""
        return self.task_type.n_out(self.classes_, len(self.var_names_))

    def __repr__(self) -> str:
        if self.task == "embedding":
            what = f"embedding, {self.architecture.get('likelihood')} likelihood"
        else:
            what = f"{len(self.classes_)} classes" if self.classes_ else "regression"
        return f"ag.Model({self.architecture['model']}, {what}, {len(self.var_names_)} genes)"

    # ------------------------------------------------------------------ inference
    @property
    def hierarchy(self) -> Hierarchy | None:
        """The label hierarchy (``label_key=[coarse, ..., fine]``) the model reads its coarse levels from, if any."""
        from ..data._hierarchy import Hierarchy

        return Hierarchy.from_dict(self.hierarchy_) if self.hierarchy_ else None

    @property
    def batch_key(self) -> str | None:
        """The column of ``.obs`` whose batches were standardised on themselves in training (or ``None``)."""
        return self.preprocessing_.get("batch_key")

    def check_batch_key(self, batch_key: str | None) -> None:
        """Refuse a ``batch_key`` for a model trained without one, in one sentence."""
        if batch_key is not None and self.batch_key is None:
            raise ValueError(
                "This model was trained without a batch_key, so it has no per-batch standardisation to apply; "
                "predict without batch_key, or train with one."
            )

    def read_input(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        use_raw: bool | None = None,
        gene_symbols: str | None = None,
    ) -> tuple[str | None, bool, str | None, str]:
        """Which matrix and gene names of ``adata`` to read: ``(layer, use_raw, gene_symbols, why)``.

        What is asked (``layer``, or ``use_raw`` ``True`` or ``False``; ``gene_symbols``) is read;
        otherwise the matrix the model was trained on (``adata.raw.X`` or its layer) when
        ``adata`` has it, else ``adata.X``; and the model's ``gene_symbols`` column when
        ``adata`` has it, else ``var_names``. ``why`` says which, for the log.
        """
        if layer is not None or use_raw is not None:
            layer, use_raw, why = layer, bool(use_raw), "as asked"
        elif self.use_raw and adata.raw is not None:
            layer, use_raw, why = None, True, "the model's input"
        elif self.layer is not None and self.layer in adata.layers:
            layer, use_raw, why = self.layer, False, "the model's input"
        elif self.use_raw or self.layer is not None:
            trained = "raw.X" if self.use_raw else f"layers['{self.layer}']"
            layer, use_raw, why = None, False, f"the model was trained on adata.{trained}, which this AnnData lacks"
        else:
            layer, use_raw, why = None, False, "the model's input"
        if gene_symbols is None and self.gene_symbols is not None:
            var = adata.raw.var if use_raw and adata.raw is not None else adata.var
            if self.gene_symbols in var.columns:
                gene_symbols = self.gene_symbols
            else:
                why += f"; genes by var_names (no column '{self.gene_symbols}', which the model matched genes by)"
        return layer, use_raw, gene_symbols, why

    def pipeline(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        use_raw: bool | None = None,
        batch_key: str | None = None,
        gene_symbols: str | None = None,
    ) -> tuple[Pipeline, GeneAlignment, str]:
        """The data pipeline that maps ``adata`` onto this model's genes and scaling.

        The matrix and gene names are chosen by :meth:`read_input`. A model trained with a
        ``batch_key`` standardises each batch of ``adata`` on its own cells: the batches of
        ``adata.obs[batch_key]``, by default the column the model was trained with; without
        that column, ``adata`` is one batch (with a warning).
        """
        from ..data import Pipeline, align_genes, check_finite_and_detect, get_source
        from ..data import resolve_preprocessing as _resolve

        self.check_batch_key(batch_key)
        layer, use_raw, gene_symbols, _ = self.read_input(
            adata, layer=layer, use_raw=use_raw, gene_symbols=gene_symbols
        )
        source = get_source(adata, layer=layer, use_raw=use_raw, gene_symbols=gene_symbols)
        min_overlap = self.config.get("data", {}).get("min_gene_overlap", 0.5)
        alignment = align_genes(source.var_names, self.var_names_, min_overlap)
        kind = check_finite_and_detect(source, self.config.get("data", {}).get("chunk_mb", 64.0))
        trained_kind = self.preprocessing_["input"]
        how = _resolve(kind, self.preprocessing_.get("config", "auto"))
        if kind != trained_kind:
            done = {
                "none": "used as is",
                "log1p": "log1p'd",
                "normalize_log1p": "normalised to 1e4 per cell and log1p'd",
            }
            trained_how = done.get(self.preprocessing_.get("applied", "none"), "used as is")
            risk = "Predictions may be unreliable. " if _GROUPS[kind] != _GROUPS[trained_kind] else ""
            warn(
                f"The model was trained on {trained_kind} input but adata.{source.where} looks like {kind}: it was "
                f"{done[how]} before the model's scaling (the training cells were {trained_how}). {risk}If this is "
                "not the matrix you mean, pass the matching `layer` or `use_raw`.",
            )
        if self.architecture.get("likelihood") == "nb" and kind != "counts":
            raise ValueError(
                f"This model reads raw counts (negative-binomial likelihood), but adata.{source.where} looks like "
                f"{kind} values; pass the counts with `layer=`."
            )
        pipe = Pipeline(source=source, preprocess=how, scaler=self.scaler(), alignment=alignment)
        if self.batch_key is not None:
            pipe.batches = self._query_batches(adata, source, how, batch_key)
        return pipe, alignment, kind

    def _query_batches(self, adata: AnnData, source, how: str, batch_key: str | None):
        """Each batch of ``adata`` standardised on all of its cells (a query has no training split)."""
        from ..data import BatchStandardizer, apply_preprocessing, read_batches, rows_per_chunk

        key = batch_key if batch_key is not None else self.batch_key
        assert key is not None  # called for models trained with a batch_key
        if batch_key is None and key not in adata.obs.columns:
            warn(
                f"The model standardises each batch of adata.obs['{key}'] on its own cells, but there is no such "
                "column: every cell is taken as one batch. Pass batch_key= naming the column of your batches."
            )
            codes, names = np.zeros(adata.n_obs, np.int32), ["all"]
        else:
            codes, names = read_batches(adata, key)
        chunk = rows_per_chunk(source.n_vars, float(self.config.get("data", {}).get("chunk_mb", 64.0)))
        return BatchStandardizer.fit(
            key, names, codes, lambda idx: apply_preprocessing(source.rows(idx), how), np.arange(adata.n_obs),
            source.n_vars, chunk,
        )  # fmt: skip

    def scaler(self) -> Scaler:
        """The per-gene scaling the model applies after preprocessing (bounded to its training range).

        Models saved before scaling was bounded carry no clip bounds; their min-max scaling is
        clipped to [0, 1] like a new model's.
        """
        from ..data import CLIP, Scaler

        kind = self.preprocessing_.get("scaling")
        if kind is None:  # saved by an earlier version: min-max unless the config turned scaling off
            kind = "minmax" if self.config.get("data", {}).get("scale", True) else "none"
        if kind == "none":
            return Scaler.identity(len(self.var_names_))
        lo, hi = self.preprocessing_.get("clip", CLIP.get(kind, (-np.inf, np.inf)))
        return Scaler(self.scaler_min_, self.scaler_scale_, float(lo), float(hi), kind)

    @at_full_precision
    def outputs(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        use_raw: bool | None = None,
        batch_size: int = 1024,
        batch_key: str | None = None,
        gene_symbols: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Raw network outputs and embeddings of every cell, with alignment info."""
        pipe, alignment, kind = self.pipeline(
            adata, layer=layer, use_raw=use_raw, batch_key=batch_key, gene_symbols=gene_symbols
        )
        out, emb = self.outputs_of(pipe, adata.n_obs, batch_size)
        return out, emb, self.input_info(pipe, alignment, kind)

    @at_full_precision
    def outputs_of(self, pipe: Pipeline, n_obs: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Raw network outputs and embeddings of the ``n_obs`` rows of a query's ``pipe``."""
        from ..train import predict_arrays

        return predict_arrays(self.apply_fn, self.variables, pipe, np.arange(n_obs), int(min(batch_size, n_obs)))

    @staticmethod
    def input_info(pipe: Pipeline, alignment: GeneAlignment, kind: str) -> dict[str, Any]:
        """What ``uns[key]["prediction"]`` records of a query's input: its kind, matrix, batches and genes."""
        return {
            "genes_missing_fraction": alignment.fraction_missing,
            "input": kind,
            "matrix": pipe.source.where,
            "n_batches": 0 if pipe.batches is None else len(pipe.batches.names),
            "genes": alignment.report(pipe.source.matched_by),
        }

    def embed(
        self, adata: AnnData, *, layer: str | None = None, use_raw: bool | None = None, batch_key: str | None = None
    ) -> np.ndarray:
        """Posterior means of the latent code of every cell (embedding models).

        Parameters
        ----------
        adata
            Cells to embed; genes are aligned to the model's by name (missing ones set to zero,
            with a warning; too few shared genes raise an error).
        layer, use_raw
            Which matrix to read; by default the one the model was trained on when ``adata`` has it
            (see :meth:`read_input`).
        batch_key
            For a model trained with a ``batch_key``: the column of ``adata.obs`` whose batches
            are each standardised on their own cells (default: the model's column).
        query_aware
            The uncertainty also reads ``adata`` as one query (as ``ag.tl.predict``'s
            ``query_aware``; where it cannot, the uncertainty reads the reference alone).

        Returns
        -------
        An array of shape ``(n_obs, latent)``.
        """
        self._need_embedding("embed")
        pipe, _, _ = self.pipeline(adata, layer=layer, use_raw=use_raw, batch_key=batch_key)
        return self.embed_rows(pipe, np.arange(adata.n_obs))

    def reconstruct(
        self, adata: AnnData, *, layer: str | None = None, use_raw: bool | None = None, chunk_size: int = 1024
    ) -> np.ndarray:
        """Reconstruction of every cell from its posterior mean (embedding models), in chunks.

        Parameters
        ----------
        adata
            Cells to reconstruct; genes are aligned to the model's by name.
        layer, use_raw
            Which matrix to read; by default the one the model was trained on when ``adata`` has it
            (see :meth:`read_input`).
        chunk_size
            Cells per compiled call.

        Returns
        -------
        A float32 array ``(n_obs, n_model_genes)``: expected counts for the negative-binomial
        likelihood, otherwise the preprocessed (e.g. log) values, the 0-1 scaling undone.
        """
        self._need_embedding("reconstruct")
        pipe, _, _ = self.pipeline(adata, layer=layer, use_raw=use_raw)
        return self.reconstruct_rows(pipe, np.arange(adata.n_obs), chunk_size)

    def _need_embedding(self, what: str) -> None:
        if self.task != "embedding":
            raise ValueError(f"`{what}` is for embedding models (Res-VAE, VAE); this model does {self.task}.")

    @at_full_precision
    def embed_rows(self, pipe: Pipeline, idx: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Latent means of rows ``idx`` of ``pipe`` (embedding models)."""
        from ..train import embed_arrays

        return embed_arrays(self.embed_fn, self.variables, pipe, idx, int(min(batch_size, max(len(idx), 1))))

    @at_full_precision
    def reconstruct_rows(self, pipe: Pipeline, idx: np.ndarray, chunk_size: int = 1024) -> np.ndarray:
        """Reconstructions of rows ``idx`` of ``pipe``, in the input's units (embedding models)."""
        import jax.numpy as jnp

        from ..train import make_reconstruct

        rec_fn = make_reconstruct(self.net)
        bs = int(min(chunk_size, max(len(idx), 1)))
        out = np.empty((len(idx), self.n_out), dtype=np.float32)
        scaled = self.architecture.get("likelihood") != "nb"
        span = np.divide(1.0, self.scaler_scale_, out=np.zeros_like(self.scaler_scale_), where=self.scaler_scale_ > 0)
        for i, (x, n) in enumerate(pipe.eval_batches(idx, bs)):
            rec = np.asarray(rec_fn(self.variables, jnp.asarray(x))[:n])
            out[i * bs : i * bs + n] = rec * span + self.scaler_min_ if scaled else rec
        return out

    @property
    def temperature(self) -> float:
        """The calibration temperature (1 when the model was saved without calibration)."""
        return float(self.calibration.get("temperature", 1.0))

    def postprocess(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw network outputs to ``(predictions, calibrated probabilities or None)``, by the model's task."""
        return self.task_type.postprocess(
            out, temperature=self.temperature, target_mean=self.target_mean_, target_std=self.target_std_
        )

    @property
    def query_aware_available(self) -> bool:
        """Whether ``ag_uncertainty`` can read the query as a whole (``ag.tl.predict(query_aware=True)``).

        Models trained before the density ratio was added, or whose held-out reference had fewer
        than 10 cells to keep, cannot.
        """
        from ..train._confidence import has_query_term

        return "points" in self.novelty_ and has_query_term(self.novelty_)

    def input_evidence(self, pipe: Pipeline, n_obs: int, *, query: bool = False) -> tuple[np.ndarray, ...] | None:
        """Each cell's distances to the reference in input space and the reference-space classifier's probabilities.

        The distances: one column (models saved before the Mahalanobis distance) or two, the mean
        distance to the nearest reference cells and the Mahalanobis distance to the nearest class mean.
        ``query``: the cells are one query, and the model can read it (:attr:`query_aware_available`):
        also the cells' density ratios and those of the held-out cells read with them (four arrays
        then; two for a query of fewer than 50 cells).
        ``None`` for a model saved without them (see ``train/_confidence``).
        """
        from ..train._confidence import input_evidence

        if "points" not in self.novelty_:
            return None
        query = query and self.query_aware_available
        return input_evidence(pipe.block, np.arange(n_obs), self.novelty_, query=query)

    def uncertainty_of(
        self, emb: np.ndarray, p: np.ndarray, evidence: tuple[np.ndarray, ...] | None = None
    ) -> np.ndarray:
        """``ag_uncertainty`` from embeddings, calibrated probabilities and the input space (see ``train/_confidence``).

        ``evidence``: :meth:`input_evidence` of the same cells, which the novelty statistics of
        a model trained since they were added need (older models read ``emb``); with four
        arrays, the density ratios of the query and of the held-out cells, the score reads those too.
        """
        from ..train import uncertainty

        if not self.novelty_:  # saved without novelty statistics
            return 1.0 - p.max(axis=1)
        dist, lr, density = self._evidence(evidence)
        return uncertainty(emb, p.max(axis=1), self.novelty_, dist, None if lr is None else lr.max(axis=1), density)

    def _evidence(
        self, evidence: tuple[np.ndarray, ...] | None
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None] | tuple[None, None, None]:
        if "points" not in self.novelty_:
            return None, None, None
        if evidence is None:
            raise ValueError("This model's uncertainty needs the cells' input-space evidence (model.input_evidence).")
        dist, lr, *density = evidence
        return dist, lr, ((density[0], density[1]) if density else None)

    def level_uncertainty(
        self, level: str, emb: np.ndarray, p: np.ndarray, evidence: tuple[np.ndarray, ...] | None = None
    ) -> np.ndarray | None:
        """The uncertainty of each cell at a coarser ``level`` of the hierarchy (``None``: no statistics for it).

        As ``ag_uncertainty``, with the level's confidences (the summed probabilities of its
        classes): the rank of the cell's novelty score among the reference's held-out cells.
        """
        from ..train import uncertainty

        state = self.novelty_levels_.get(level)
        hierarchy = self.hierarchy
        if not state or hierarchy is None:
            return None
        _, M = hierarchy.membership(level)
        dist, lr, density = self._evidence(evidence)
        lr_level = None if lr is None else (lr @ M[np.asarray(self.novelty_["lr_classes"])]).max(axis=1)
        return uncertainty(emb, (p @ M).max(axis=1), state, dist, lr_level, density)

    def predict_proba(
        self, adata: AnnData, *, layer: str | None = None, use_raw: bool | None = None, batch_key: str | None = None
    ) -> pd.DataFrame:
        """Class probabilities of every cell (cells x classes), calibrated by the model's temperature.

        Parameters
        ----------
        adata
            Cells to label; genes are aligned to the model's by name.
        layer, use_raw
            Which matrix to read; by default the one the model was trained on when ``adata`` has it
            (see :meth:`read_input`).
        batch_key
            For a model trained with a ``batch_key``: the column of ``adata.obs`` whose batches
            are each standardised on their own cells (default: the model's column).
        query_aware
            The uncertainty also reads ``adata`` as one query (as ``ag.tl.predict``'s
            ``query_aware``; where it cannot, the uncertainty reads the reference alone).

        Returns
        -------
        A DataFrame indexed by ``adata.obs_names`` with one column per class.
        """
        if self.task != "classification":
            what = "an embedding model (Res-VAE/VAE); use `model.embed`" if self.task == "embedding" else "a regression"
            raise ValueError(f"predict_proba is for classification models; this is {what}.")
        out, _, _ = self.outputs(adata, layer=layer, use_raw=use_raw, batch_key=batch_key)
        _, p = self.postprocess(out)
        return pd.DataFrame(p, index=adata.obs_names, columns=self.classes_)

    def predict(
        self,
        adata: AnnData,
        *,
        layer: str | None = None,
        use_raw: bool | None = None,
        batch_key: str | None = None,
        query_aware: bool = False,
    ) -> pd.DataFrame:
        """Predict every cell of ``adata``; genes are aligned to the model's by name.

        Parameters
        ----------
        adata
            Cells to label. Missing genes are set to zero (with a warning); too few shared
            genes raise an error.
        layer, use_raw
            Which matrix to read; by default the one the model was trained on when ``adata`` has it
            (see :meth:`read_input`).
        batch_key
            For a model trained with a ``batch_key``: the column of ``adata.obs`` whose batches
            are each standardised on their own cells (default: the model's column).
        query_aware
            The uncertainty also reads ``adata`` as one query (as ``ag.tl.predict``'s
            ``query_aware``; where it cannot, the uncertainty reads the reference alone).

        Returns
        -------
        A DataFrame indexed by ``adata.obs_names`` with ``prediction`` and, for
        classification, ``confidence`` (the largest calibrated class probability) and
        ``uncertainty`` (see ``ag.tl.predict``).
        """
        check_flag(query_aware, "query_aware")
        pipe, _, _ = self.pipeline(adata, layer=layer, use_raw=use_raw, batch_key=batch_key)
        out, emb = self.outputs_of(pipe, adata.n_obs)
        pred, p = self.postprocess(out)
        if p is None:
            return pd.DataFrame({"prediction": pred}, index=adata.obs_names)
        labels = pd.Categorical.from_codes(pred, categories=self.classes_)
        unc = self.uncertainty_of(emb, p, self.input_evidence(pipe, adata.n_obs, query=query_aware))
        return pd.DataFrame(
            {"prediction": labels, "confidence": p.max(axis=1), "uncertainty": unc}, index=adata.obs_names
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save the model as a directory (``model.json`` + ``weights.msgpack``).

        The folder is written beside ``path`` and renamed into place, so it appears complete
        or not at all; nothing is written through a symbolic link. Of two processes saving to
        one new ``path``, one succeeds and the other gets a ``FileExistsError``.

        Parameters
        ----------
        path
            Directory to create (a folder of its own: not empty, not ``"."``, not a link).
        overwrite
            Replace an existing model directory (never a folder holding other files). The old
            model is removed only once the new one is complete.

        Returns
        -------
        The directory written.
        """
        state: dict[str, Any] = {
            "variables": self.variables,
            "scaler": {"min": self.scaler_min_, "scale": self.scaler_scale_},
        }
        if self.novelty_:
            state["novelty"] = dict(self.novelty_)
        if self.novelty_levels_:
            state["novelty_levels"] = {level: dict(v) for level, v in self.novelty_levels_.items()}
        meta = {
            "architecture": self.architecture,
            "task": self.task,
            "classes": self.classes_,
            "var_names": self.var_names_.tolist(),
            "preprocessing": self.preprocessing_,
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
            "config": self.config,
            "metrics": self.metrics_,
            "extra": self.extra,
            "calibration": self.calibration,
        }
        if self.hierarchy_:
            meta["hierarchy"] = self.hierarchy_
        if self.input_recorded:
            meta["matrix"] = {"layer": self.layer, "use_raw": self.use_raw}
            if self.gene_symbols is not None:
                meta["matrix"]["gene_symbols"] = self.gene_symbols
        self.id_ = write_model_files(path, meta, state, overwrite=overwrite)
        self.path = Path(path)
        return self.path


def read_model(path: str | Path) -> Model:
    """Load a model saved by :meth:`Model.save`, ``ag.tl.train`` or ``ag.tl.search``.

    Parameters
    ----------
    path
        The model directory.

    Returns
    -------
    The :class:`Model`, ready to ``predict``.

    Notes
    -----
    Before anything is built, ``model.json`` is checked against the weights: required fields
    and their types, every size in the architecture within what the weights hold, finite
    weights, and the checksum written at saving (an edited or swapped file is refused). The
    weights are read with ``flax.serialization`` (msgpack, no pickle), so reading a model runs
    no code from it. The checksum is not a signature: anyone who can write the files can
    write a matching checksum, so a model from an untrusted source can still be a model that
    predicts wrongly on purpose.
    """
    import jax
    import jax.numpy as jnp
    from flax import serialization

    from ..nn import MODELS, VAE_MODELS

    path = Path(path)
    meta, state = read_model_files(path, (*MODELS, *VAE_MODELS))
    model = Model(
        architecture=meta["architecture"],
        task=meta["task"],
        classes_=meta["classes"],
        var_names_=pd.Index(meta["var_names"]),
        preprocessing_=meta["preprocessing"],
        variables={},
        scaler_min_=np.asarray(state["scaler"]["min"], np.float32),
        scaler_scale_=np.asarray(state["scaler"]["scale"], np.float32),
        target_mean_=meta.get("target_mean", 0.0),
        target_std_=meta.get("target_std", 1.0),
        config=meta.get("config", {}),
        metrics_=meta.get("metrics", {}),
        extra=meta.get("extra", {}),
        path=path,
        calibration=meta.get("calibration", {}),
        novelty_={k: np.asarray(v) for k, v in state.get("novelty", {}).items()},
        novelty_levels_={
            str(level): {k: np.asarray(v) for k, v in stats.items()}
            for level, stats in state.get("novelty_levels", {}).items()
        },
        id_=meta.get("checksum"),
        hierarchy_=meta.get("hierarchy") or {},
        **_recorded_input(meta),
    )
    # shapes only (no memory is allocated for the template's weights)
    template = jax.eval_shape(
        lambda: model.net.init(jax.random.key(0), jnp.zeros((1, len(model.var_names_))), train=False)
    )
    try:
        variables = serialization.from_state_dict(template, state["variables"])
    except (KeyError, ValueError) as e:
        names = str(e)[:200]
        raise ValueError(f"The weights in '{path}' do not match its architecture ({names}).") from None
    # PyTreeDef comes from jaxlib's compiled module, which ships no stub: mypy cannot resolve !=
    if jax.tree.structure(variables) != jax.tree.structure(template) or any(  # type: ignore[operator]
        np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(template), strict=True)
    ):
        raise ValueError(f"The weights in '{path}' do not match its architecture.")
    if model.novelty_:  # the centroids live in the network's embedding: same width, or every uncertainty fails
        x = jnp.zeros((1, len(model.var_names_)))
        _, emb = jax.eval_shape(lambda v: model.net.apply(v, x, train=False), template)
        for stats in [model.novelty_, *model.novelty_levels_.values()]:
            if "centroids" in stats and stats["centroids"].shape[1] != emb.shape[-1]:
                raise DamagedModel(
                    f"'{path}': the novelty statistics in weights.msgpack are for an embedding of "
                    f"{stats['centroids'].shape[1]} dimensions, the network's has {emb.shape[-1]}."
                )
    model.variables = jax.tree.map(np.asarray, variables)
    return model


def _recorded_input(meta: dict[str, Any]) -> dict[str, Any]:
    """``layer``, ``use_raw`` and ``input_recorded`` of a ``model.json`` (models saved before it lack ``matrix``)."""
    matrix = meta.get("matrix")
    if matrix is None:
        return {"layer": None, "use_raw": False, "input_recorded": False}
    recorded = {"layer": matrix["layer"], "use_raw": matrix["use_raw"], "input_recorded": True}
    return {**recorded, "gene_symbols": matrix.get("gene_symbols")}
