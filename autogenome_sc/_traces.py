"""Counting compilations: every compiled function of the package counts its traces the same way.

A function JAX compiles runs its Python body only while being traced, so one added to a
counter there counts compilations. The tests check these counts (one compilation per
architecture and batch shape, whatever the hyperparameters), and the trainers report them
(``FitResult.n_traces``, ``EnasResult.n_traces``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from functools import wraps
from typing import Any


class Traces(Counter):
    """Traces of compiled functions, by key (a name, or a name and the network it was compiled for)."""

    def counted(self, fn: Callable, key: Hashable) -> Callable:
        """``fn``, adding one to ``self[key]`` each time it is traced (wrap it before ``jax.jit``)."""

        @wraps(fn)
        def wrapped(*args: Any, **kw: Any) -> Any:
            self[key] += 1  # runs only while tracing
            return fn(*args, **kw)

        return wrapped

    def watch(self, keys: Iterable[Hashable] | None = None) -> Callable[[], dict]:
        """Start counting: the function returned gives the traces of each of ``keys`` since this call.

        ``None`` watches every key, including those first traced after this call.
        """
        before = dict(self)
        chosen = None if keys is None else list(keys)
        return lambda: {k: self[k] - before.get(k, 0) for k in (list(self) if chosen is None else chosen)}
