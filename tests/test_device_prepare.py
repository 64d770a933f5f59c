"""Training chunks of CSR matrices prepared on the device (``data.device_prepare``) match the host path."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import FAST

import autogenome_sc as ag
import autogenome_sc.data._pipeline as pipeline_mod
from autogenome_sc.config import validate
from autogenome_sc.data import TrainData, prepare
from autogenome_sc.data import _device as device


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    """Every matrix here is small: without this it would be cached, and read by the cached path."""
    monkeypatch.setattr(pipeline_mod, "CACHE_MB", 0)


def assert_close(got: np.ndarray, ref: np.ndarray, data: TrainData) -> None:
    """Equal to float32 rounding: ``rtol=1e-5, atol=1e-6`` in the units of the unscaled values.

    XLA's log1p and NumPy's differ in the last bit for a few percent of the values (both are
    within 2 units in the last place of the exact value). A gene's scaling multiplies that
    difference by its scale: for a z-scored gene of SD 0.05, by 20. So each gene's values are
    compared divided by ``max(1, scale)``; under min-max scaling (scale <= 1 for the genes
    that vary) and without scaling this is ``assert_allclose(got, ref, rtol=1e-5, atol=1e-6)``.
    """
    scaler = data.pipeline.scaler
    s = np.ones(ref.shape[-1], np.float32) if scaler is None else np.maximum(1.0, scaler.scale)
    np.testing.assert_allclose(got / s, ref / s, rtol=1e-5, atol=1e-6)


def _problem(adata, preprocess: str = "auto", batch_key: str | None = None, **data) -> TrainData:
    cfg = validate({"data": {"preprocess": preprocess, "device_prepare": "on", **data}})
    problem, _ = prepare(
        adata, "cell_type", layer=None, use_raw=False, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0), batch_key=batch_key,
    )  # fmt: skip
    return problem


@pytest.fixture(scope="module")
def counts_csr():
    """Synthetic counts as CSR, with two empty rows (library size 0) and two rows of zeros stored explicitly."""
    adata = ag.datasets.synthetic(1500, 300, n_types=4, rng=1)
    X = adata.X.toarray()
    X[[7, 400]] = 0
    X = sp.csr_matrix(X)
    for r in (11, 900):  # stored values, all 0
        X.data[X.indptr[r] : X.indptr[r + 1]] = 0
    adata.X = X
    return adata


def _with_outliers(data: TrainData) -> np.ndarray:
    """Give test cells values far outside the training range; return rows to compare (test, training, zero rows)."""
    X = data.pipeline.source.X
    test = data.idx["test"][:20]
    for r in test[:10]:  # one huge count: after normalising, far above the training maximum (others far below)
        X.data[X.indptr[r]] = 1e6
    rows = np.concatenate([test, data.idx["train"][:40], [7, 400, 11, 900], data.idx["train"][:5]])  # repeats too
    return np.random.default_rng(3).permutation(rows)


@pytest.mark.parametrize("preprocess", ["normalize_log1p", "log1p", "none"])
@pytest.mark.parametrize("scaling", ["minmax", "zscore", "none"])
@pytest.mark.parametrize("n_genes", [None, 120])
def test_rows_match_the_host_pipeline(counts_csr, preprocess, scaling, n_genes):
    adata = counts_csr.copy()
    scale = {"scale": False} if scaling == "none" else {"scaling": scaling}
    data = _problem(adata, preprocess, n_genes=n_genes, **scale)
    assert data.pipeline.cache is None and data.prepares_on_device()
    if n_genes is not None:  # a gene selection: an alignment that is not the identity
        assert data.pipeline.alignment is not None and not data.pipeline.alignment.identity
    rows = _with_outliers(data)
    got = device.DevicePrep(data.pipeline).block(rows)
    ref = data.pipeline.block(rows)
    assert got.dtype == np.float32 and got.shape == ref.shape == (len(rows), n_genes or adata.n_vars)
    assert_close(got, ref, data)
    if scaling == "minmax":
        assert ref.max() == 1.0 and ref.min() == 0.0  # the outliers were clipped, on both paths
    if scaling == "zscore" and preprocess == "none":  # a log keeps a count of 1e6 within 10 SD of most genes
        assert ref.max() == 10.0


def test_no_scaler_keeps_finite_values(counts_csr):
    """The base problem (no scaler): the preprocessed rows, as Pipeline.block gives them."""
    data = _problem(counts_csr.copy()).base
    assert data.pipeline.scaler is None
    rows = np.arange(0, 1500, 7)
    assert_close(device.DevicePrep(data.pipeline).block(rows), data.pipeline.block(rows), data)


def _epoch(data: TrainData, rng_seed: int, batch: int = 40) -> list[tuple]:
    return [(np.asarray(x), y, v) for x, y, v in data.train_chunks(batch, np.random.default_rng(rng_seed))]


def test_training_chunks_match_and_compile_once(counts_csr):
    """Several epochs: the chunks (same order, same cells) match the host's; one compilation per shape."""
    data = _problem(counts_csr.copy(), n_genes=150, chunk_mb=0.1)  # 8 chunks of 4 steps per epoch, the last of 2
    host = dataclasses.replace(data, device_prepare="off")
    assert data.prepares_on_device() and not host.prepares_on_device()
    before = sum(device.TRACES.values())
    n_chunks = 0
    for epoch in range(4):
        on, off = _epoch(data, epoch), _epoch(host, epoch)
        assert len(on) == len(off) == 8 and on[0][0].shape == (4, 40, 150)
        assert on[-1][2].sum() == 2  # the last chunk is padded with invalid steps
        for (xs, ys, valid), (xh, yh, vh) in zip(on, off, strict=True):
            np.testing.assert_array_equal(ys, yh)
            np.testing.assert_array_equal(valid, vh)
            assert xs.shape == xh.shape and xs.dtype == np.float32
            assert_close(xs[valid], xh[valid], data)
            assert not xs[~valid].any()  # padding steps are zeros, as on the host
        n_chunks += len(on)
    assert sum(device.TRACES.values()) - before <= 2 < n_chunks


def test_same_rng_same_chunks(counts_csr):
    data = _problem(counts_csr.copy(), chunk_mb=0.05)
    for a, b in zip(_epoch(data, 5), _epoch(data, 5), strict=True):
        np.testing.assert_array_equal(a[0], b[0])


def test_batch_standardisation_on_the_device(counts_csr):
    adata = counts_csr.copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 3 == 0, "a", "b")
    data = _problem(adata, batch_key="batch", n_genes=100, scaling="zscore")
    assert data.pipeline.batches is not None
    rows = _with_outliers(data)
    assert_close(device.DevicePrep(data.pipeline).block(rows), data.pipeline.block(rows), data)


def test_backed_csr(tmp_path, counts_csr):
    """An on-disk CSR matrix (``backed="r"``): read by chunks of rows, prepared on the device."""
    path = tmp_path / "counts.h5ad"
    counts_csr.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    data = _problem(backed, n_genes=200, chunk_mb=0.05)
    assert data.pipeline.source.backed and data.prepares_on_device()
    memory = _problem(counts_csr.copy(), n_genes=200, chunk_mb=0.05)
    rows = np.random.default_rng(0).integers(0, counts_csr.n_obs, 300)  # any order, repeats
    got = device.DevicePrep(data.pipeline).block(rows)
    assert_close(got, data.pipeline.block(rows), data)
    np.testing.assert_array_equal(got, device.DevicePrep(memory.pipeline).block(rows))  # same as in memory
    host = dataclasses.replace(data, device_prepare="off")
    for (xs, ys, valid), (xh, yh, _) in zip(_epoch(data, 1), _epoch(host, 1), strict=True):
        np.testing.assert_array_equal(ys, yh)
        assert_close(xs[valid], xh[valid], data)
    backed.file.close()


def test_dense_and_cached_matrices_keep_the_host_path(counts_csr, monkeypatch):
    adata = counts_csr.copy()
    adata.X = adata.X.toarray()
    assert not _problem(adata).prepares_on_device()
    monkeypatch.setattr(pipeline_mod, "CACHE_MB", 256)
    assert not _problem(counts_csr.copy()).prepares_on_device()  # cached: the rows are on the device already


def test_auto_is_off_on_cpu():
    import jax

    assert device.enabled("on") and not device.enabled("off")
    assert device.enabled("auto") == (jax.default_backend() != "cpu")
    with pytest.raises(ValueError, match="device_prepare"):
        device.enabled("always")


def test_nnz_bucket():
    sizes = [device.nnz_bucket(n) for n in range(1, 200_000, 37)]
    assert all(s >= n for s, n in zip(sizes, range(1, 200_000, 37), strict=True))
    assert all(s <= max(1.125 * n, device.MIN_NNZ) for s, n in zip(sizes, range(1, 200_000, 37), strict=True))
    assert len(set(sizes)) <= 8 * 8 + 1  # few shapes: 8 per power of two, 1024 to 2**18


def test_train_on_and_off_agree(pbmc):
    """``ag.tl.train`` with the chunks prepared on the device predicts as with the host's chunks (same rng)."""
    preds = {}
    for mode in ("on", "off"):
        a = pbmc.copy()
        before = sum(device.TRACES.values())
        ag.tl.train(a, "bulk_labels", use_raw=True, rng=0, config={**FAST, "data": {"device_prepare": mode}})
        if mode == "on":
            assert 1 <= sum(device.TRACES.values()) - before <= 2  # 8 epochs
        preds[mode] = a.obs["ag_prediction"].to_numpy()
    assert (preds["on"] == preds["off"]).mean() >= 0.99


_TWO_DEVICES = """
import json, sys, tempfile
import numpy as np, scanpy as sc
import autogenome_sc as ag, autogenome_sc.data._pipeline as pipeline_mod
from autogenome_sc.data import _device as device

pipeline_mod.CACHE_MB = 0
ag.settings.verbosity, ag.settings.progress_bar, ag.settings.model_dir = 0, False, tempfile.mkdtemp()
base, out = sc.datasets.pbmc68k_reduced(), {}
for mode in ("on", "off"):
    a = base.copy()
    cfg = {"trainer": {"max_epochs": 3, "patience": 3}, "models": {"resnet": {"width": 32, "n_blocks": 1}},
           "data": {"device_prepare": mode}}
    ag.tl.train(a, "bulk_labels", use_raw=True, rng=0, config=cfg)
    out[mode] = a.obs["ag_prediction"].astype(str).tolist()
    out["n_devices_" + mode] = int(a.uns["ag"]["params"]["n_devices"])
out["traces"] = sum(device.TRACES.values())
print(json.dumps(out))
"""


def test_two_devices():
    """With a mesh of 2 (CPU) devices, chunks prepared on the device are split across both."""
    root = Path(__file__).resolve().parents[1]
    env = dict(
        os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    proc = subprocess.run([sys.executable, "-c", _TWO_DEVICES], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_devices_on"] == out["n_devices_off"] == 2 and out["traces"] >= 1
    assert np.mean(np.asarray(out["on"]) == np.asarray(out["off"])) >= 0.99
