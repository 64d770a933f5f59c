"""``ag.print_versions()``: what a bug report needs to know of the installation."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TextIO

#: The packages whose versions change results or behaviour, in the order they are printed.
PACKAGES = (
    "autogenome_sc",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "optuna",
    "anndata",
    "scanpy",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "shap",
    "pydantic",
    "matplotlib",
    "h5py",
    "zarr",
    "igraph",
    "scib-metrics",
)


def versions() -> dict[str, str]:
    """``{name: version}`` of Python, the platform, :data:`PACKAGES` (``"not installed"``) and JAX's devices."""
    # the package that runs, also from a checkout on PYTHONPATH (which has no metadata)
    running = sys.modules[__package__ or "autogenome_sc"].__version__
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "autogenome_sc": running}
    for name in PACKAGES:
        if name == "autogenome_sc":
            continue
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["jax devices"] = _devices()
    return out


def _devices() -> str:
    try:
        import jax

        devices = jax.devices()
    except Exception as e:  # a backend that fails to start is what a bug report should show
        return f"unavailable ({type(e).__name__}: {e})"
    platforms = [d.platform for d in devices]
    return ", ".join(f"{platforms.count(p)} {p}" for p in sorted(set(platforms)))


def print_versions(*, file: TextIO | None = None) -> None:
    """Print the versions of Python, the platform, the packages that decide results and JAX's devices.

    Paste the output into a bug report, as scanpy's ``sc.logging.print_versions()`` asks.

    Parameters
    ----------
    file
        Where to print; default ``sys.stdout``.
    """
    table = versions()
    width = max(map(len, table))
    for name, value in table.items():
        print(f"{name:<{width}}  {value}", file=file if file is not None else sys.stdout)
