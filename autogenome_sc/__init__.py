"""autogenome_sc: AutoML for single-cell and genomic profiling data, on AnnData, in JAX."""

from importlib.metadata import PackageNotFoundError, version

from . import config, datasets, get, pl, pp, tl
from ._settings import settings
from ._versions import print_versions
from .model import Model, read_model

try:
    __version__ = version("autogenome_sc")
except PackageNotFoundError:  # pragma: no cover - not installed
    __version__ = "0.0.0"

__all__ = [
    "Model",
    "config",
    "datasets",
    "get",
    "pl",
    "pp",
    "print_versions",
    "read_model",
    "settings",
    "tl",
    "__version__",
]
