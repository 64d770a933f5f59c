"""Shared fixtures: real data (pbmc68k_reduced ships inside scanpy) and a model dir per test."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

import autogenome_sc as ag

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
