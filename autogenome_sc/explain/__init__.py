"""Explanations: SHAP values by expected gradients in JAX."""

from ._expected_gradients import SAMPLINGS, NetworkOutput, auto_chunk_size, expected_gradients, model_output

__all__ = ["SAMPLINGS", "NetworkOutput", "auto_chunk_size", "expected_gradients", "model_output"]
