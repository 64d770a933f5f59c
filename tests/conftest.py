"""Shared fixtures: real data (pbmc68k_reduced ships inside scanpy) and a model dir per test.

Also the test tiers (docs/code_map.md, "Test tiers") and JAX's persistent compilation cache
for the test session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings

import jax
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

import autogenome_sc as ag

# The tiers: `-m "not slow"` is the fast tier. The tests of a tier that needs more than the
# package (notebooks, the Sphinx build, a PostgreSQL server) are also slow. The tests below are
# slow by measurement (more than about 10 s each with 2 cores, `--durations=0`), keyed by
# "file::function" so that every parametrisation is included and test bodies stay untouched.
IMPLY_SLOW = ("notebook", "docs", "postgres")
SLOW = {
}


def pytest_collection_modifyitems(config, items):
    found = set()
    for item in items:
        key = f"{item.path.name}::{item.originalname}"
        if key in SLOW or any(item.get_closest_marker(m) for m in IMPLY_SLOW):
            item.add_marker("slow")
            found.add(key)
    collected = {item.path.name for item in items}
    stale = sorted(k for k in SLOW if k.split("::")[0] in collected and k not in found)
    if stale:  # a renamed test would silently join the fast tier
        warnings.warn(f"tests/conftest.py SLOW names tests that do not exist: {stale}", stacklevel=1)


_CACHE_DIR: str | None = None  # the persistent compilation cache this process made (and removes)


def pytest_configure(config):
    """JAX's persistent compilation cache in a temporary folder, for this test session only.

    Tests train many networks of the same shapes; each run traces again, and a compilation
    that another test (or a subprocess: a notebook's kernel, a CLI worker) already made is
    read back instead of compiled. The environment variables reach the subprocesses and the
    workers of pytest-xdist, which share the folder; the package never sets any of this.
    """
    global _CACHE_DIR
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # a folder of the caller's (or of the xdist controller)
        return
    _CACHE_DIR = tempfile.mkdtemp(prefix="ag-tests-jax-cache-")
    cache = {
        "jax_compilation_cache_dir": _CACHE_DIR,
        "jax_persistent_cache_min_compile_time_secs": 0.0,  # the default (1 s) would skip most of ours
        "jax_persistent_cache_min_entry_size_bytes": -1,  # whatever their size
    }
    for name, value in cache.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


# Small and fast training for tests that check plumbing rather than accuracy.
FAST = {"trainer": {"max_epochs": 8, "patience": 8}, "models": {"resnet": {"width": 32, "n_blocks": 1}}}


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(ag.settings, "model_dir", tmp_path / "models")
    old = ag.settings.verbosity
    ag.settings.verbosity = 1
    yield
    ag.settings.verbosity = old


@pytest.fixture(scope="session")
def _pbmc():
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def pbmc(_pbmc) -> AnnData:
    """pbmc68k_reduced: 700 cells x 765 genes, obs['bulk_labels'] with 10 types; X is z-scored."""
    return _pbmc.copy()


def synthetic_counts(n_cells=600, n_genes=200, n_types=4, seed=0, sparse=True) -> AnnData:
    """Negative-binomial counts with a block of marker genes per cell type and varying depth."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    prog = np.ones((n_types, n_genes))
    block = n_genes // (2 * n_types)
    for t in range(n_types):
        prog[t, t * block : (t + 1) * block] = 6.0
    depth = rng.lognormal(0, 0.4, n_cells)[:, None]
    mu = base[None, :] * prog[types] * depth
    theta = 5.0
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    X = sp.csr_matrix(counts) if sparse else counts
    adata = AnnData(X)
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = np.asarray([f"type{t}" for t in types])
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata


@pytest.fixture
def counts() -> AnnData:
    return synthetic_counts()


class _Records(list):
    @property
    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def ag_log():
    """Messages the package logged (at whatever ag.settings.verbosity allows)."""
    import logging

    records = _Records()

    class _Handler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Handler()
    logger = logging.getLogger("autogenome_sc")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def _trained_counts(tmp_path_factory):
    adata = synthetic_counts()
    path = tmp_path_factory.mktemp("trained") / "model"
    ag.settings.verbosity = 1
    ag.tl.train(adata, "cell_type", config={**FAST, "save": {"path": str(path)}}, rng=0)
    return adata, path


@pytest.fixture
def trained(_trained_counts):
    """(adata trained on synthetic counts with FAST, its model freshly read from disk); one training per module."""
    adata, path = _trained_counts
    return adata.copy(), ag.read_model(path)
