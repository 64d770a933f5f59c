"""Compiled training: losses, one-cycle optimizers, the epoch loop, metrics."""

from ._confidence import (
    expected_calibration_error,
    fit_novelty,
    fit_temperature,
    reliability_bins,
    softmax_t,
    uncertainty,
)
from ._epochs import FitResult
from ._loop import fit, make_apply, predict_arrays
from ._losses import LOSSES, auc_surrogate, cross_entropy, host_loss, mse
from ._metrics import classification_metrics, regression_metrics
from ._optim import make_optimizer, one_cycle
from ._solvers import fit_solved, solve_linear
from ._tasks import Classification, Embedding, Regression, TaskType, task_type
from ._trees import fit_trees
from ._vae import embed_arrays, evaluate_elbo, fit_vae, make_embed, make_reconstruct, make_terms
from ._vae_setup import check_vae_model, fit_vae_config, prepare_vae

__all__ = [
    "Classification",
    "Embedding",
    "Regression",
    "TaskType",
    "LOSSES",
    "FitResult",
    "auc_surrogate",
    "check_vae_model",
    "classification_metrics",
    "cross_entropy",
    "embed_arrays",
    "evaluate_elbo",
    "expected_calibration_error",
    "fit",
    "fit_solved",
    "fit_trees",
    "fit_novelty",
    "fit_temperature",
    "fit_vae",
    "fit_vae_config",
    "host_loss",
    "make_apply",
    "make_embed",
    "make_optimizer",
    "make_reconstruct",
    "make_terms",
    "mse",
    "one_cycle",
    "prepare_vae",
    "predict_arrays",
    "regression_metrics",
    "reliability_bins",
    "softmax_t",
    "solve_linear",
    "task_type",
    "uncertainty",
]
