"""The expert-mode JSON configuration: the paper's five modules, validated by pydantic.

Modules: ``data`` (data loader), ``trainer`` (general training hyperparameters),
``loss``, ``models`` (the architecture of each mode when trained without search),
``search`` (modes and their search spaces, the paper's defaults) and ``save``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .._names import Activation, ClassWeight, FinalFit, GenesBy, Likelihood, Preprocess, Scaling, SelectBy, mode_names


def _wrong_type(annotation: Any, value: Any) -> str | None:
    """Why ``value`` is not of ``annotation``'s kind without a conversion, or ``None``.

    pydantic's lax mode reads ``"8"`` or ``true`` as the number 8 or 1 and ``"no"`` as false;
    here a number must be a number (not a string or a boolean) and a switch true or false,
    in lists and tuples too. Everything else is left to pydantic.
    """
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        reasons = [_not_among(a, value) or _wrong_type(a, value) for a in members]
        if None in reasons:
            return None
        words = [repr(v) for a in members if get_origin(a) is Literal for v in get_args(a)]
        others = [r for a, r in zip(members, reasons, strict=True) if get_origin(a) is not Literal]
        if words and others:  # bool | Literal["auto"]: "'on' is not true or false, nor 'auto'"
            return f"{others[0]}, nor {' or '.join(words)}"
        return reasons[0]
    if origin in (list, tuple) and isinstance(value, list | tuple):
        items = args[:1] * len(value) if origin is list or (len(args) == 2 and args[1] is Ellipsis) else args
        for item_type, item in zip(items, value, strict=False):
            reason = _wrong_type(item_type, item)
            if reason:
                return reason
        return None
    if annotation is bool and not isinstance(value, bool):
        return f"{value!r} is not true or false"
    if annotation in (int, float) and isinstance(value, bool | str):
        return f"{value!r} is not a number (a {type(value).__name__})"
    return None


def _not_among(annotation: Any, value: Any) -> str | None:
    """Why ``value`` is not one of a ``Literal`` member of a union (``bool | Literal["auto"]``: "on" is neither)."""
    if get_origin(annotation) is Literal and value not in get_args(annotation):
        return f"{value!r} is not one of {', '.join(map(repr, get_args(annotation)))}"
    return None


def _positive_sizes(v: list[int], what: str) -> list[int]:
    bad = [x for x in v if x < 1]
    if bad:
        raise ValueError(f"every {what} must be a positive integer; {bad[0]} is not")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_conversion(cls, value: Any, info: ValidationInfo) -> Any:
        """A string or a boolean is not a number, a number or a string not a switch (see :func:`_wrong_type`)."""
        assert info.field_name is not None
        reason = _wrong_type(cls.model_fields[info.field_name].annotation, value)
        if reason:
            raise ValueError(reason)
        return value


class DataConfig(_Strict):
    """Data loader module."""

    preprocess: Preprocess = Field(
        "auto",
        description=(
            "How the matrix is turned into log-expression before 0-1 scaling. 'auto' detects raw counts "
            "(normalised to 10,000 per cell, then log1p), normalised non-log values (log1p) and "
            "log or scaled values (left as they are)."
        ),
    )
    scale: bool = Field(True, description="Scale each gene (see ``scaling``), fitted on the training split.")
    scaling: Scaling = Field(
        "minmax",
        description=(
            "'minmax': the paper's per-gene 0-1 scaling, clipped to the training range on every other cell; "
            "'zscore': (x - mean) / sd clipped to [-10, 10], as CellTypist does. A gene whose training range "
            "(or sd) is below a tolerance (1e-6 of the largest) is constant and reads 0 everywhere."
        ),
    )
    n_genes: int | None = Field(
        None,
        ge=1,
        description=("Keep only this many genes (see genes_by), chosen on the training split; None: all genes."),
    )
    genes_by: GenesBy = Field(
        "variance",
        description=(
            "How n_genes are chosen: the most variable (variance of the preprocessed values), or, for "
            "classification, the largest ANOVA F statistic against the classes."
        ),
    )
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Train, validation and test fractions of the stratified split."
    )
    chunk_mb: float = Field(
        64.0, gt=0, description="Densified minibatches are prepared in chunks of at most this many MB."
    )
    shuffle: Literal["auto", "cells", "blocks"] = Field(
        "auto",
        description=(
            "Epoch order. 'cells': a random permutation of the training cells. 'blocks': runs of "
            "neighbouring cells in random order (at least 256 runs per chunk), shuffled again within each "
            "chunk, so on-disk (backed) data are read in few contiguous slices. 'auto': 'cells' when the "
            "training split fits in one chunk, else 'blocks'. The order never depends on whether the data "
            "are in memory or on disk."
        ),
    )
    prefetch: int = Field(
        2, ge=0, description="Chunks prepared ahead on a background thread while the device computes (0: none)."
    )
    device_prepare: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Where the training chunks of a sparse (CSR) matrix too large to cache are densified, normalised, "
            "log-transformed and scaled. 'on': on the device (GPU, TPU), from each chunk's CSR arrays sent "
            "there, in compiled code; 'off': on the host, with NumPy, the dense chunk then sent to the device. "
            "'auto': 'on' unless JAX's default backend is the CPU, where the host path is faster. Dense "
            "matrices, and matrices small enough to be cached on the device, never need it. Both paths give the "
            "same values to float32 rounding."
        ),
    )
    min_gene_overlap: float = Field(
        0.5, ge=0, le=1, description="Prediction refuses a query sharing fewer than this fraction of the model's genes."
    )

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v):
        if any(f <= 0 for f in v) or abs(sum(v) - 1) > 1e-6:
            raise ValueError("the three fractions must be positive and sum to 1")
        return v


class TrainerConfig(_Strict):
    """Model trainer module: the general hyperparameters (Smith's one-cycle policy)."""

    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW or SGD with Nesterov momentum.")
    learning_rate: float = Field(3e-3, gt=0, description="Peak learning rate of the one-cycle schedule.")
    batch_size: int = Field(128, ge=2, description="Minibatch size (cells).")
    momentum: float = Field(
        0.95, gt=0, lt=1, description="Peak momentum (Adam's beta1); cycled down by 0.1 while the rate rises."
    )
    weight_decay: float = Field(1e-2, ge=0, description="Decoupled weight decay.")
    max_epochs: int = Field(60, ge=1, description="Upper bound on epochs.")
    patience: int = Field(20, ge=1, description="Early stopping: epochs without a better validation loss.")
    data_parallel: bool = Field(
        True,
        description=(
            "With several devices (GPUs, TPU cores, or CPU devices from XLA_FLAGS="
            "--xla_force_host_platform_device_count), split each minibatch across all of them "
            "(a jax.sharding Mesh over the batch axis); batch_size is rounded down to a multiple of the device count."
        ),
    )
    pct_start: float = Field(0.3, gt=0, lt=1, description="Fraction of the cycle spent raising the rate.")
    grad_clip: float = Field(5.0, gt=0, description="Clip gradients to this global norm.")
    l2: float = Field(
        0.0,
        ge=0,
        description=(
            "L2 penalty 0.5 * l2 * ||W||^2 on the kernels, added to the mean loss (the 'linear' mode searches it: "
            "scikit-learn's LogisticRegression(C) is l2 = 1 / (C * n_cells))."
        ),
    )
    min_steps_per_epoch: int = Field(
        8,
        ge=1,
        le=10_000,
        description=(
            "An epoch is at least this many minibatches: on small data it passes over the cells several times "
            "(at most 10000, so that an epoch ends and its order of cells fits in memory)."
        ),
    )
    precision: Literal["auto", "float32", "tf32", "bf16"] = Field(
        "auto",
        description=(
            "Matmul precision of the supervised networks' training: 'auto' is XLA's default (exact float32 on CPU, "
            "TF32 on NVIDIA GPUs), 'float32' exact everywhere, 'tf32' TF32 where available, 'bf16' mixed precision "
            "(bfloat16 compute, float32 parameters, optimiser state and loss). Test metrics, calibration and "
            "explanations are always computed at full float32 precision."
        ),
    )


class LossConfig(_Strict):
    """Loss function module."""

    name: Literal["auto", "cross_entropy", "mse", "auc"] = Field(
        "auto",
        description=(
            "'auto': cross entropy for categorical labels, MSE for float labels; 'auc' is a pairwise AUC "
            "surrogate for imbalanced binary labels."
        ),
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing for cross entropy.")
    class_weight: ClassWeight = Field(
        "none",
        description=(
            "Cross entropy: 'balanced' weighs each cell by n_cells / (n_classes * n_cells_of_its_class) on the "
            "training split, so rare classes count as much as common ones (higher macro-F1 on imbalanced labels)."
        ),
    )


class _Arch(_Strict):
    input_keep: float = Field(0.8, gt=0, le=1, description="Keep ratio of the input dropout (1.0: none).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden FC unit.")
    activation: Activation = "relu"


class LinearConfig(_Strict):
    """Multinomial logistic regression: input dropout, then one linear layer (no hidden unit)."""

    input_keep: float = Field(1.0, gt=0, le=1, description="Keep ratio of the input dropout (1.0: none).")


class _FCArch(_Arch):
    batch_norm: bool = Field(
        True,
        description=(
            "BatchNorm in each FC unit (the paper's Dense -> BatchNorm -> activation); false: Dense -> activation, "
            "as in a plain multilayer perceptron (scikit-learn's MLPClassifier)."
        ),
    )


class MLPConfig(_FCArch):
    """Multilayer perceptron of FC units."""

    widths: list[int] = Field([256, 256], min_length=1, description="Width of each hidden FC unit.")

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, v):
        return _positive_sizes(v, "width")


class ResNetConfig(_FCArch):
    """RFCN-ResNet: each FC unit adds its input to its output."""

    width: int = Field(256, ge=1)
    n_blocks: int = Field(3, ge=1, description="Number of residual FC units after the first.")


class DenseNetConfig(_FCArch):
    """RFCN-DenseNet: each FC unit takes the concatenation of all earlier outputs of its block."""

    block_structure: list[int] = Field([2, 3, 4], min_length=1, description="FC units per dense block.")
    growth_rate: int = Field(64, ge=1, description="Width of each FC unit in a dense block.")
    compression: float = Field(0.5, gt=0, le=1, description="Transition units shrink the block output by this.")

    @field_validator("block_structure")
    @classmethod
    def _positive_blocks(cls, v):
        return _positive_sizes(v, "block's number of units")


class ResVAEConfig(_Strict):
    """Res-VAE (or, under ``models.vae``, the plain VAE without skip connections)."""

    n_layers: int = Field(3, ge=1, description="FC units in the encoder (the decoder mirrors them).")
    first_width: int = Field(512, ge=8, description="Width of the encoder's first FC unit.")
    decay: float = Field(0.5, gt=0, le=1, description="Each encoder unit is this fraction of the previous one.")
    latent: int | Literal["auto"] = Field(
        "auto",
        description=(
            "Size of the latent code; 'auto': 128, or fewer where the data are small or narrow (a quarter of "
            "the training cells, a third of the genes, at least 2)."
        ),
    )
    input_keep: float = Field(0.8, gt=0, le=1, description="Keep ratio of the input dropout (1.0: none).")
    activation: Activation = "relu"
    likelihood: Literal["auto", Likelihood] = Field(
        "auto",
        description=(
            "'mse' (the paper's), 'gaussian' (learned gene-wise noise scale) or 'bernoulli' on the 0-1 scaled "
            "input, 'nb' (negative binomial) on raw counts; 'auto' picks 'nb' for raw counts, 'gaussian' for dense "
            "values (under half of the entries zero: microarrays, qPCR) and 'mse' for sparse ones."
        ),
    )
    kl_warmup: int = Field(10, ge=0, description="Epochs over which the KL weight rises linearly from 0 to 1.")

    @field_validator("latent", mode="before")
    @classmethod
    def _latent(cls, v):
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError("the latent size must be 'auto' or a positive integer")
        return v


class EnasConfig(_Arch):
    """RRFCN by ENAS (paper Methods; Pham et al. 2018 for the controller and REINFORCE settings).

    The paper's defaults (6 nodes, first width 2048, widths up to 2048, long search) are sized
    for a GPU; on a CPU use fewer nodes, smaller widths and fewer epochs.
    """

    n_nodes: int = Field(6, ge=2, description="FC nodes in the DAG (the paper's 'number of layers').")
    first_width: int = Field(2048, ge=1, description="Width of the first node (fixed, not searched).")
    widths: list[int] = Field(
        [16, 32, 64, 128, 256, 512, 1024, 2048], min_length=1, description="Width options of nodes 2..N."
    )
    epochs: int = Field(310, ge=1, description="Search epochs (shared-weight training, then controller steps).")
    controller_steps: int = Field(50, ge=0, description="Controller updates per epoch.")
    n_arch_per_step: int = Field(20, ge=1, description="Architectures sampled per controller update (M).")
    n_candidates: int = Field(100, ge=1, description="Architectures sampled at the end and scored on validation (K).")
    entropy_weight: float = Field(1e-4, ge=0, description="Entropy bonus added to the reward.")
    baseline_decay: float = Field(0.99, ge=0, lt=1, description="Moving-average reward baseline decay.")
    controller_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the controller.")
    controller_hidden: int = Field(32, ge=1, description="LSTM size of the controller.")

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, v):
        if any(w < 1 for w in v):
            raise ValueError("every width option must be a positive integer")
        return v


class ModelsConfig(_Strict):
    """Architecture of each mode, used by ``ag.tl.train`` (search overrides what it searches)."""

    linear: LinearConfig = Field(default_factory=LinearConfig)
    mlp: MLPConfig = Field(default_factory=MLPConfig)
    resnet: ResNetConfig = Field(default_factory=ResNetConfig)
    densenet: DenseNetConfig = Field(default_factory=DenseNetConfig)
    resvae: ResVAEConfig = Field(default_factory=ResVAEConfig)
    vae: ResVAEConfig = Field(default_factory=ResVAEConfig)
    enas: EnasConfig = Field(default_factory=EnasConfig)


class SearchSpaces(_Strict):
    """The paper's default search spaces (Methods)."""

    mlp_widths: list[int] = Field(
        [8, 16, 32, 64, 128, 256, 512, 1024], min_length=1, description="MLP: width of its FC units."
    )
    mlp_layers: list[int] = Field([1, 2, 3, 4], min_length=1, description="MLP: number of FC units.")
    resnet_blocks: list[int] = Field([1, 2, 3, 5, 6], min_length=1, description="RFCN-ResNet: residual units.")
    resnet_widths: list[int] = Field(
        [8, 16, 32, 64, 128, 256, 512], min_length=1, description="RFCN-ResNet: width of every unit."
    )
    densenet_blocks: list[list[int]] = Field(
        [[2, 3, 4], [3, 4, 5]], min_length=1, description="RFCN-DenseNet: block structures (units per block)."
    )
    densenet_growth_rates: list[int] = Field(
        [8, 16, 32, 64, 128, 256, 512], min_length=1, description="RFCN-DenseNet: growth rates."
    )
    input_keep: list[float] = Field(
        [0.6, 0.8, 1.0], min_length=1, description="Keep ratio of the input dropout (all modes)."
    )
    resvae_layers: list[int] = Field([3, 4, 5], min_length=1, description="Res-VAE: FC units in the encoder.")
    resvae_first_widths: list[int] = Field(
        [4096, 2048, 1024, 512, 256, 128], min_length=1, description="Res-VAE: width of the first encoder unit."
    )
    resvae_decay: list[float] = Field(
        [0.8, 0.6, 0.5], min_length=1, description="Res-VAE: each encoder unit's width over the previous one's."
    )
    learning_rate: tuple[float, float] = Field((1e-4, 1e-2), description="Log-uniform range.")
    resvae_learning_rate: tuple[float, float] = Field(
        (1e-4, 3e-3),
        description="Res-VAE: log-uniform range of the learning rate (above 3e-3 the ELBO of wide VAEs diverges).",
    )
    batch_size: list[int] = Field([32, 64, 128, 256], min_length=1, description="Minibatch sizes.")
    momentum: list[float] = Field([0.85, 0.9, 0.95], min_length=1, description="Peak momentums (Adam's beta1).")
    weight_decay: tuple[float, float] = Field((1e-5, 1e-1), description="Log-uniform range.")
    dropout: list[float] = Field(
        [0.0, 0.1, 0.3, 0.5],
        min_length=1,
        description="Dropout after each hidden FC unit (a regularisation choice; not in the paper).",
    )
    label_smoothing: list[float] = Field(
        [0.0, 0.1], min_length=1, description="Label smoothing of the cross entropy (classification)."
    )
    batch_norm: list[bool] = Field(
        [True, False],
        min_length=1,
        description=(
            "MLP, RFCN-ResNet and RFCN-DenseNet: BatchNorm in each FC unit or not (see models.mlp.batch_norm; "
            "without it a 2-layer MLP matched scikit-learn's MLPClassifier, with it it trailed by 0.02)."
        ),
    )
    class_weight: list[ClassWeight] = Field(
        ["none", "balanced"], min_length=1, description="Class weights of the cross entropy (see loss.class_weight)."
    )
    linear_l2: tuple[float, float] = Field(
        (1e-5, 1.0), description="Linear mode: log-uniform range of the L2 penalty (see trainer.l2)."
    )
    linear_C: list[float] = Field(
        [0.01, 0.1, 1.0, 10.0, 100.0],
        min_length=1,
        description=(
            "Logistic and svm modes: the inverse penalty C, as scikit-learn's (the objective is 0.5 ||W||^2 + C * "
            "the summed loss over the training cells; 1 is scikit-learn's default and the portfolio's)."
        ),
    )
    trees_learning_rate: list[float] = Field(
        [0.05, 0.1, 0.2], min_length=1, description="Trees mode: the boosting learning rate (shrinkage)."
    )
    trees_leaf_nodes: list[int] = Field(
        [7, 15, 31],
        min_length=1,
        description="Trees mode: the most leaves of one tree (scikit-learn's max_leaf_nodes).",
    )
    trees_l2: list[float] = Field(
        [0.0, 1.0], min_length=1, description="Trees mode: the L2 penalty on leaf values (l2_regularization)."
    )
    trees_max_features: list[float] = Field(
        [0.2, 0.5, 1.0],
        min_length=1,
        description=(
            "Trees mode: the share of genes drawn at random at each split (scikit-learn's max_features; 1 uses "
            "every gene). The portfolio's trees use 0.2 (docs/benchmarks.md)."
        ),
    )
    trees_max_bins: list[int] = Field(
        [31, 63],
        min_length=1,
        description=(
            "Trees mode: the most bins each gene's values are sorted into before the splits are sought "
            "(scikit-learn's max_bins, 2 to 255). Fewer bins fit faster; 31 and 63 were as accurate as 255 on the "
            "suite (docs/benchmarks.md). The portfolio's trees use 63."
        ),
    )
    trees_stages: int = Field(
        200,
        ge=1,
        le=2000,
        description=(
            "Trees mode: boosting stages fitted per trial; the validation loss after each chooses how many are "
            "kept (cross-validation chooses again), as epochs are chosen for a network."
        ),
    )

    @field_validator("trees_learning_rate", "trees_leaf_nodes", "trees_l2", "trees_max_features", "trees_max_bins")
    @classmethod
    def _trees_ranges(cls, v: list, info: ValidationInfo) -> list:
        lo, hi, what = {
            "trees_learning_rate": (0.0, 1.0, "above 0 and at most 1"),
            "trees_leaf_nodes": (1, 65535, "whole numbers of at least 2"),
            "trees_l2": (-1.0, float("inf"), "at least 0"),
            "trees_max_features": (0.0, 1.0, "above 0 and at most 1"),
            "trees_max_bins": (1, 255, "whole numbers from 2 to 255"),
        }[str(info.field_name)]
        if not all(lo < x <= hi for x in v) or (info.field_name == "trees_l2" and min(v) < 0):
            raise ValueError(f"every value must be {what}")
        return v

    scaling: list[Scaling] = Field(
        ["minmax", "zscore"], min_length=1, description="Input scaling (see data.scaling), fitted on training cells."
    )
    n_genes: list[int | None] = Field(
        [None, 5000, 2000, 500],
        min_length=1,
        description=(
            "Genes kept: None for all, or the n top genes by genes_by on the training cells (choices at or "
            "above the number of genes mean all)."
        ),
    )
    genes_by: list[GenesBy] = Field(
        ["variance", "f_test"],
        min_length=1,
        description="How the kept genes are ranked (see data.genes_by; 'f_test' for classification only).",
    )

    @field_validator("learning_rate", "weight_decay", "linear_l2", "resvae_learning_rate")
    @classmethod
    def _log_range(cls, v):
        if not 0 < v[0] <= v[1]:
            raise ValueError("a log-uniform range needs 0 < low <= high")
        return v

    @field_validator(
        "mlp_widths", "mlp_layers", "resnet_blocks", "resnet_widths", "densenet_growth_rates", "resvae_layers",
        "batch_size",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v):
        bad = [x for x in v if x < 1]
        if bad:
            raise ValueError(f"every choice must be a positive integer; {bad[0]} is not")
        return v

    @field_validator("resvae_first_widths")
    @classmethod
    def _vae_widths(cls, v):
        if min(v) < 8:
            raise ValueError(
                f"every first width must be at least 8 (models.resvae.first_width's bound); {min(v)} is not"
            )
        return v

    @field_validator("densenet_blocks")
    @classmethod
    def _blocks(cls, v):
        for blocks in v:
            if not blocks or min(blocks) < 1:
                raise ValueError(
                    f"every block structure needs at least one block of at least one unit; {blocks} has not"
                )
        return v

    @field_validator("n_genes")
    @classmethod
    def _genes(cls, v):
        bad = [x for x in v if x is not None and x < 1]
        if bad:
            raise ValueError(f"every choice must be None (all genes) or a positive number of genes; {bad[0]} is not")
        return v

    @field_validator("linear_C")
    @classmethod
    def _penalties(cls, v):
        bad = [x for x in v if not x > 0]
        if bad:
            raise ValueError(f"every C must be a positive number; {bad[0]} is not")
        return v

    @field_validator("input_keep", "resvae_decay")
    @classmethod
    def _keep(cls, v):
        bad = [x for x in v if not 0 < x <= 1]
        if bad:
            raise ValueError(f"every choice must be in (0, 1]; {bad[0]} is not (1.0 keeps everything)")
        return v

    @field_validator("dropout", "label_smoothing", "momentum")
    @classmethod
    def _fraction(cls, v):
        bad = [x for x in v if not 0 <= x < 1]
        if bad:
            raise ValueError(f"every choice must be in [0, 1); {bad[0]} is not")
        return v


class SearchConfig(_Strict):
    """Search mode module: which modes, how long, over which spaces."""

    modes: list[str] | None = Field(
        None,
        min_length=1,
        description=(
            "Modes the search draws from (built in: linear, logistic, svm, trees, mlp, resnet, densenet, enas, resvae; "
            "autogenome_sc.search.register_mode adds more). None: linear, logistic, svm, trees, mlp, resnet and densenet, "
            "plus enas when JAX runs on a GPU or TPU (the paper's ENAS is too large for the default CPU budget); "
            "logistic, svm and trees only for classification whose matrix is kept in memory (at most 256 MB)."
        ),
    )

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, v):
        unknown = [m for m in v or () if m not in mode_names()]
        if unknown:
            raise ValueError(f"unknown search mode {unknown[0]!r}; choose from {', '.join(mode_names())}")
        return v

    n_trials: int | None = Field(
        None, ge=1, description="Trials of the study in total (all runs and workers); the argument wins."
    )
    timeout: float | None = Field(
        None,
        gt=0,
        description=(
            "Seconds after which a run starts no new trial; with neither this nor n_trials: 60 s "
            "(the Res-VAE: 30 trials or 240 s)."
        ),
    )
    stagnation: int | None = Field(
        None,
        ge=1,
        description=(
            "Stop starting trials once this many in a row, after the portfolio's, have not improved the best "
            "validation value by more than search.stagnation_tol of it (pruned trials count as no progress); "
            "n_trials and the timeout stay upper bounds. None: use the whole budget."
        ),
    )
    stagnation_tol: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="The relative gain of the best validation value that counts as progress for search.stagnation.",
    )
    compile_ahead: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "Compile the portfolio's networks (the trials known in advance) in a worker thread while the "
            "trials before them train, on problems small enough to keep on the device; it changes the time, "
            "never a number. 'auto': on where the trials run on an accelerator (the host's cores are idle), "
            "off on a CPU, where the thread competes with the trials (on 2 cores: fewer trials per minute)."
        ),
    )
    spaces: SearchSpaces = Field(default_factory=SearchSpaces)
    metric: Literal["val_loss", "val_accuracy"] = Field(
        "val_loss",
        description="What a trial is judged by, on the validation split (never the test split); "
        "'val_accuracy' is for classification only.",
    )
    pruner: Literal["hyperband", "successive_halving", "none"] = Field(
        "hyperband", description="Stops unpromising trials early, from the metric reported after each epoch."
    )
    min_epochs: int = Field(5, ge=1, description="Epochs every trial gets before it can be pruned.")
    n_startup_trials: int = Field(8, ge=1, description="Random trials before the TPE sampler starts modelling.")
    ensemble: int = Field(
        3,
        ge=1,
        description=(
            "At most this many configurations in the final model: an ensemble (weighted average of class "
            "probabilities) is chosen greedily on held-out predictions (cross-validation, else the validation "
            "split) and kept only where it beats the best single configuration; 1: never an ensemble."
        ),
    )
    stack_margin: float | None = Field(
        0.005,
        ge=-1,
        le=1,
        description=(
            "After cross-validation (classification, ensemble at least 2): a stack of the two best configurations, "
            "a logistic regression on their log-probabilities (boosted trees: centred logits) fitted on their out-of-fold "
            "outputs, replaces the choice where its own out-of-fold score (the meta-learner cross-validated in the "
            "same folds; the mean of accuracy and macro-F1) beats the choice's by more than this. None: never "
            "stack."
        ),
    )
    cv_folds: int = Field(
        5,
        ge=0,
        description=(
            "Re-score the most promising configurations by k-fold cross-validation on train + validation, "
            "choose the winner by its cross-validated score and train the final model on train + validation; "
            "0 or 1: judge by the validation split alone."
        ),
    )
    cv_max_cells: int = Field(
        5000,
        ge=0,
        description=(
            "Cross-validate only when train + validation hold at most this many cells (above it the validation "
            "split is large enough to choose by)."
        ),
    )
    linear_epochs: int = Field(
        200,
        ge=1,
        description=(
            "Epochs of the linear mode's trials (at least trainer.max_epochs): a logistic regression converges "
            "slowly under the one-cycle schedule and an epoch of it costs little (60 epochs left it 0.02 less "
            "accurate than scikit-learn's on binary mutation profiles)."
        ),
    )
    cv_configs: int = Field(
        3,
        ge=1,
        description="Configurations re-scored by cross-validation: the best of the non-linear modes (linear ones "
        "fill the slots left empty), plus the best linear on all genes and the best on a gene selection.",
    )
    cv_share: float = Field(
        0.4,
        gt=0,
        lt=1,
        description=(
            "With a timeout: at most this share of it is kept for cross-validation; the trials stop when what "
            "is left is what cross-validating the current best configurations should take (measured from them)."
        ),
    )
    enas_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "With a timeout: an ENAS trial gets at most this share of the time left (its search runs the epochs "
            "that fit, measured from its own; its retraining stops there), so ENAS never takes the whole budget."
        ),
    )
    select_by: SelectBy = Field(
        "accuracy_f1",
        description=(
            "How the final model is chosen among the re-scored configurations and their ensemble, on held-out "
            "predictions (classification): 'accuracy_f1', the mean of accuracy and macro-F1, ties broken by "
            "log-loss; 'loss_or_accuracy', the lower log-loss unless the other is clearly more accurate (by more "
            "than two paired standard errors, with a macro-F1 no lower); 'loss', the log-loss alone; "
            "'within_noise', 'accuracy_f1''s choice unless other configurations are within one standard error of "
            "it (paired: accuracy per cell, macro-F1 per fold): then their ensemble if it scores at least as well, "
            "else the simplest of them (a linear model before a network). Each configuration's outputs are "
            "divided by a temperature fitted on them before any loss is taken or any ensemble averaged."
        ),
    )
    cv_one_per_mode: bool = Field(
        False,
        description=(
            "Cross-validation's cv_configs slots go to the best trial of each mode first (in the validation "
            "split's order), then to the next best of any; otherwise to the best trials whatever their mode "
            "(variants of one mode, such as the svm at other penalties, may then fill every slot)."
        ),
    )
    cv_seeds: int = Field(
        1,
        ge=1,
        le=8,
        description=(
            "Networks with hidden layers trained per cross-validation fold, each from its own initialisation; "
            "their class probabilities are averaged into the fold's held-out outputs, and the final model ('bag') "
            "keeps them all. The out-of-fold score then measures the averaged networks a bag is, not one network. "
            "The linear mode, the solved families and the trees train once per fold."
        ),
    )
    cv_epochs_by: Literal["loss", "select_by"] = Field(
        "loss",
        description=(
            "How cross-validation chooses a configuration's number of epochs on its pooled out-of-fold outputs: "
            "'loss', the lowest log-loss; 'select_by', the epoch search.select_by prefers (for 'accuracy_f1': the "
            "highest mean of accuracy and macro-F1, ties broken by the loss)."
        ),
    )
    final: FinalFit = Field(
        "bag",
        description=(
            "After cross-validation: 'bag' keeps the k fold models of each chosen configuration and averages them; "
            "'refit' trains each once more on train + validation for the epochs cross-validation chose. The solved "
            "families (logistic, svm) are always refitted: they have no epochs to choose and solve in seconds; so are "
            "the boosted trees (trees), with the number of stages cross-validation chose."
        ),
    )
    heartbeat_interval: int = Field(10, ge=1, description="Seconds between a running trial's heartbeats.")
    grace_period: int = Field(
        60, ge=2, description="A running trial without a heartbeat for this many seconds is failed and retried."
    )
    max_retry: int = Field(2, ge=0, description="How often a trial of a killed worker is retried.")


class SaveConfig(_Strict):
    """Best-model save path module."""

    path: str | None = Field(
        None,
        min_length=1,
        description="Where to save the model (a folder of its own); default: a new folder under ag.settings.model_dir.",
    )
    overwrite: bool = Field(
        False,
        description="Replace a model already saved at path (never a folder holding other files); otherwise refuse.",
    )


class Config(_Strict):
    """The whole expert-mode configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    save: SaveConfig = Field(default_factory=SaveConfig)

    @model_validator(mode="after")
    def _sections_agree(self) -> Config:
        """Rules across sections; a rule that needs the data (a regression found by preparing it) is checked there."""
        if self.search.metric == "val_accuracy" and self.loss.name == "mse":
            raise ValueError("search.metric 'val_accuracy' is for classification; use 'val_loss' for regression")
        return self
