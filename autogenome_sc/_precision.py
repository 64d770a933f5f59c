"""The precision policy: how training computes float32 matmuls; evaluation is always exact.

``trainer.precision``:

``"auto"`` (default)
    XLA's default: exact float32 on CPU; on NVIDIA GPUs float32 matmuls run in TF32
    (10-bit mantissa), several times faster.
``"float32"``
    Exact float32 matmuls everywhere (``jax.default_matmul_precision("highest")``).
``"tf32"``
    TF32 matmuls where the device has them (``"tensorfloat32"``; exact on CPU).
``"bf16"``
    Mixed precision: the network computes in bfloat16 from bfloat16 copies of the float32
    parameters; parameters, optimiser state, batch statistics and the loss stay float32.

Whatever trains, the numbers a user reads are computed at full float32 precision
(:func:`exact`): test predictions and metrics, calibration, and explanations.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp

F = TypeVar("F", bound=Callable[..., Any])
_CONTEXTS = {"auto": None, "float32": "highest", "tf32": "tensorfloat32", "bf16": None}


@contextlib.contextmanager
def training_precision(precision: str) -> Iterator[None]:
    """The matmul precision of a training run under ``trainer.precision``."""
    if precision not in _CONTEXTS:
        raise ValueError(f"Unknown precision '{precision}'; choose one of {', '.join(map(repr, _CONTEXTS))}.")
    level = _CONTEXTS[precision]
    if level is None:
        yield
    else:
        with jax.default_matmul_precision(level):
            yield


def exact() -> contextlib.AbstractContextManager:
    """Full float32 matmuls, whatever the device's default (evaluation, calibration, explanations)."""
    return jax.default_matmul_precision("highest")


def to_bf16(tree: Any) -> Any:
    """bfloat16 copies of the float32 leaves of ``tree`` (others unchanged)."""
    return jax.tree.map(lambda a: a.astype(jnp.bfloat16) if a.dtype == jnp.float32 else a, tree)


def at_full_precision(fn: F) -> F:
    """Decorate ``fn`` to run under :func:`exact`."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kw: Any) -> Any:
        with exact():
            return fn(*args, **kw)

    return cast(F, wrapped)
