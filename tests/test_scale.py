"""Scale: synthetic data on disk, backed AnnData read by chunks, block shuffling, prefetching."""

from __future__ import annotations

import threading

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import FAST

import autogenome_sc as ag
from autogenome_sc.data import TrainData, get_source, prefetch

# Small chunks, so the 2,400 training cells span several chunks and every path (block
# shuffle, several reads per chunk, prefetching) runs.
SMALL_CHUNKS = {**FAST, "data": {"chunk_mb": 0.25}}


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic") / "cells.h5ad"
    ag.datasets.synthetic(3000, 300, n_types=5, path=path, chunk_size=1000, rng=3).file.close()
    return path


def test_synthetic_is_reproducible_and_realistic(tmp_path):
    a = ag.datasets.synthetic(1500, 2000, n_types=4, rng=1)
    b = ag.datasets.synthetic(1500, 2000, n_types=4, rng=1, chunk_size=700, path=tmp_path / "b.h5ad")
    assert b.isbacked and isinstance(b.X, ad.abc.CSRDataset)
    np.testing.assert_array_equal(a.X.toarray(), b.to_memory().X.toarray())  # whatever chunk_size, on disk or not
    assert (a.obs["cell_type"] == b.obs["cell_type"]).all()
    assert not np.array_equal(a.X.toarray(), ag.datasets.synthetic(1500, 2000, n_types=4, rng=2).X.toarray())

    X = a.X.toarray()
    assert np.array_equal(X, np.round(X)) and X.min() >= 0  # counts
    assert 0.5 < (X == 0).mean() < 0.95  # sparse, like 2000 HVGs of scRNA-seq
    lib = X.sum(1)
    assert 0.3 < lib.std() / lib.mean() < 0.8  # library sizes vary between cells
    frac = X / lib[:, None]
    for t in a.obs["cell_type"].cat.categories:  # each type's markers are up in that type
        markers = (a.var["marker_of"] == t).to_numpy()
        cells = (a.obs["cell_type"] == t).to_numpy()
        assert markers.sum() == 100
        assert frac[cells][:, markers].mean() > 1.1 * frac[~cells][:, markers].mean()
    var = X.var(0)[X.mean(0) > 1]
    assert (var > X.mean(0)[X.mean(0) > 1]).mean() > 0.9  # overdispersed (negative binomial)


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="n_types"):
        ag.datasets.synthetic(10, 100, n_types=20)
    with pytest.raises(ValueError, match="markers need more"):
        ag.datasets.synthetic(100, 50, n_types=4, markers_per_type=20)
    with pytest.raises(ValueError, match="n_obs and n_vars must be positive"):
        ag.datasets.synthetic(0, 100)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        ag.datasets.synthetic(100, 100, n_types=2, chunk_size=0)
    with pytest.raises(ValueError, match="dispersion must be positive"):
        ag.datasets.synthetic(100, 100, n_types=2, dispersion=0)
    with pytest.raises(ValueError, match="mean_library_size must be positive"):
        ag.datasets.synthetic(100, 100, n_types=2, mean_library_size=-5)
    with pytest.raises(ValueError, match="effect_size must be 0 or more"):
        ag.datasets.synthetic(100, 100, n_types=2, effect_size=-1)


def test_backed_and_in_memory_give_the_same_model(on_disk):
    backed = ad.read_h5ad(on_disk, backed="r")
    memory = backed.to_memory()
    source = get_source(backed)
    assert source.backed and not get_source(memory).backed
    # the in-memory matrix is small enough to be cached, preprocessed on the host; the backed one is read by
    # chunks, which a GPU would prepare on itself (device_prepare "auto") in float32 with other rounding.
    # "off" (what "auto" is on a CPU) keeps both on the host path, so the two must give the same model bit for bit.
    host = {**SMALL_CHUNKS, "data": {**SMALL_CHUNKS["data"], "device_prepare": "off"}}
    for adata in (backed, memory):
        ag.tl.train(adata, "cell_type", config=host, rng=0)
    assert backed.isbacked  # results written to .obs/.obsm/.uns, the matrix left on disk
    assert backed.uns["ag"]["preprocessing"]["input"] == "counts"
    np.testing.assert_array_equal(backed.obsm["X_ag"], memory.obsm["X_ag"])
    assert (backed.obs["ag_prediction"] == memory.obs["ag_prediction"]).all()
    np.testing.assert_array_equal(backed.uns["ag"]["history"]["val_loss"], memory.uns["ag"]["history"]["val_loss"])
    assert backed.uns["ag"]["metrics"]["accuracy"] > 0.5  # it learned (5 types, chance <= 0.4)

    model = ag.read_model(backed.uns["ag"]["model_path"])
    query = ad.read_h5ad(on_disk, backed="r")
    ag.tl.predict(query, model)  # a backed query
    assert (query.obs["ag_prediction"] == memory.obs["ag_prediction"]).all()


def test_backed_embedding_explanation_and_search(on_disk, tmp_path):
    backed = ad.read_h5ad(on_disk, backed="r")
    memory = backed.to_memory()
    vae = {"trainer": {"max_epochs": 2, "patience": 2}, "data": {"chunk_mb": 0.25}}
    for adata in (backed, memory):
        ag.tl.train_vae(adata, config={**vae, "models": {"resvae": {"n_layers": 3, "first_width": 64}}}, rng=0)
    np.testing.assert_array_equal(backed.obsm["X_ag"], memory.obsm["X_ag"])

    ag.tl.train(backed, "cell_type", config=SMALL_CHUNKS, rng=0)
    ag.tl.explain(backed, n_background=100, n_samples=32, max_cells=200, rng=0)
    imp = ag.get.importance_df(backed)
    assert imp.shape == (300, 6)  # 5 types and "overall"
    top = imp["type_0"].nlargest(20).index
    assert (backed.var.loc[top, "marker_of"] == "type_0").mean() >= 0.5  # its own markers explain a type

    from _search_helpers import TINY

    ag.tl.search(backed, "cell_type", n_trials=2, run_dir=tmp_path, config=TINY, rng=0)
    assert list(backed.uns["ag"]["leaderboard"]["trial"]) == [0, 1] and backed.isbacked


def test_backed_csc_is_refused(tmp_path):
    a = ag.datasets.synthetic(200, 50, n_types=2, rng=0)
    a.X = sp.csc_matrix(a.X)
    a.write_h5ad(tmp_path / "csc.h5ad")
    backed = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    with pytest.raises(ValueError, match="CSC sparse matrix on disk"):
        ag.tl.train(backed, "cell_type", config=FAST)


def test_backed_dense_rows(tmp_path):
    a = ag.datasets.synthetic(500, 40, n_types=2, rng=0)
    a.X = a.X.toarray()
    a.write_h5ad(tmp_path / "dense.h5ad")
    source = get_source(ad.read_h5ad(tmp_path / "dense.h5ad", backed="r"))
    idx = np.array([499, 3, 17, 3, 250, 251, 0])  # any order, repeats
    np.testing.assert_array_equal(source.rows(idx), a.X[idx])


def _train_data(n_train: int, shuffle: str, chunk_mb: float = 0.25) -> TrainData:
    a = ag.datasets.synthetic(n_train + 2, 100, n_types=2, rng=0)
    split = np.array(["train"] * n_train + ["val", "test"])
    from autogenome_sc.data import MinMaxScaler, Pipeline

    pipe = Pipeline(get_source(a), "none", MinMaxScaler.identity(100))
    y = np.arange(n_train + 2)  # the target is the cell's position, to see the order
    return TrainData(pipe, y, split, "classification", ["a", "b"], chunk_mb=chunk_mb, shuffle=shuffle)


def test_block_shuffle_covers_every_cell_once_in_few_runs():
    data = _train_data(8000, "auto", chunk_mb=1.0)
    batch = 32
    steps, k = data.steps_per_chunk(batch)
    assert k * batch < 8000 / 2  # several chunks, so 'auto' means 'blocks'
    seen = np.concatenate([ys[valid].ravel() for _, ys, valid in data.train_chunks(batch, np.random.default_rng(0))])
    assert len(seen) == steps * batch and len(np.unique(seen)) == len(seen)
    order = data.epoch_order(np.random.default_rng(0), k * batch)
    np.testing.assert_array_equal(np.sort(order), np.arange(8000))
    chunk = np.sort(order[: k * batch])
    runs = 1 + (np.diff(chunk) > 1).sum()
    assert runs <= 300  # about 256 contiguous runs per chunk, not one read per cell
    within = order[: k * batch]
    assert np.abs(np.corrcoef(np.arange(len(within)), within)[0, 1]) < 0.2  # shuffled within the chunk
    cells = _train_data(8000, "cells", chunk_mb=1.0).epoch_order(np.random.default_rng(0), k * batch)
    assert 1 + (np.diff(np.sort(cells[: k * batch])) > 1).sum() > 3 * runs


def test_one_chunk_keeps_the_plain_permutation():
    data = _train_data(500, "auto", chunk_mb=64)
    np.testing.assert_array_equal(
        data.epoch_order(np.random.default_rng(5), 10_000), np.random.default_rng(5).permutation(500)
    )


def test_prefetch_keeps_order_raises_and_stops():
    assert list(prefetch(iter(range(100)), 3)) == list(range(100))
    assert list(prefetch(iter(range(5)), 0)) == list(range(5))

    def broken():
        yield 1
        raise KeyError("from the producer")

    it = prefetch(broken(), 2)
    assert next(it) == 1
    with pytest.raises(KeyError, match="from the producer"):
        next(it)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    for i in prefetch(endless(), 2):
        if i == 3:
            break
    assert threading.active_count() == before  # the producer thread has stopped
    assert len(produced) <= 4 + 3


def test_cli_reads_backed(on_disk, tmp_path):
    from autogenome_sc.cli import main

    adata = ad.read_h5ad(on_disk)
    ag.tl.train(adata, "cell_type", config=FAST, rng=0)
    out = tmp_path / "labelled.h5ad"
    assert main(["predict", str(on_disk), "--backed", "--model", adata.uns["ag"]["model_path"], "--out", str(out)]) == 0
    labelled = ad.read_h5ad(out)
    assert (labelled.obs["ag_prediction"] == adata.obs["ag_prediction"]).all()
    assert labelled.X.shape == (3000, 300)  # the matrix is carried over from the backed file


def test_memory_stays_far_below_the_dense_matrix(tmp_path):
    """40,000 and 200,000 cells x 1,000 genes on disk: what training holds does not grow with the matrix."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    runs = {}
    for n in (40_000, 200_000):
        path = tmp_path / f"cells_{n}.h5ad"
        ag.datasets.synthetic(n, 1000, n_types=8, path=path, chunk_size=50_000, rng=0).file.close()
        proc = subprocess.run(
            [sys.executable, str(root / "tests" / "scripts" / "memory.py"), str(path), str(tmp_path / "models")],
            # glibc otherwise keeps freed chunk buffers below its dynamic mmap threshold (up to
            # 32 MB) in per-thread arenas; how many depends on thread timing, so the RSS would
            # measure the allocator's cache (0.4-1.2 GiB seen) rather than what training holds.
            env=dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu", MALLOC_MMAP_THRESHOLD_="1048576"),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[n] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert runs[n]["backed"] and runs[n]["accuracy"] > 0.5
    added = {n: r["peak_gib"] - r["baseline_gib"] for n, r in runs.items()}  # above Python + JAX at rest
    # Both sizes span many 16 MB chunks, so the chunk buffers and the compiled step cost the
    # same; the difference is what grows with cells. The dense matrix grows by 0.6 GiB
    # (4,000 bytes per cell); what training holds may grow by at most 15% of that.
    # Measured: 0.35-0.38 GiB added at 40k cells, 0.37-0.38 GiB at 200k.
    dense_growth = runs[200_000]["dense_gib"] - runs[40_000]["dense_gib"]
    assert added[200_000] - added[40_000] < 0.15 * dense_growth, runs
    assert added[200_000] < runs[200_000]["dense_gib"], runs  # not even one dense copy's worth in all
