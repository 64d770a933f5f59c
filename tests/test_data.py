import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from conftest import synthetic_counts

from autogenome_sc import config
from autogenome_sc.data import (
    MinMaxScaler,
    align_genes,
    check_finite_and_detect,
    encode_targets,
    get_source,
    prepare,
    stratified_split,
)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda a: a.X, "scaled"),  # pbmc68k_reduced.X is z-scored
        (lambda a: a.raw.X, "log"),  # .raw holds log-normalised values
        (lambda a: (a.raw.X > 0).astype(np.float32), "binary"),
        (lambda a: np.expm1(a.raw.X.toarray()) * 100, "normalized"),
    ],
)
def test_detect_input_kinds(pbmc, make, kind):
    src = get_source(AnnData(make(pbmc)))
    assert check_finite_and_detect(src, 64) == kind


def test_detect_counts(counts):
    assert check_finite_and_detect(get_source(counts), 64) == "counts"


def test_rows_densifies_only_requested_rows_in_given_order(counts):
    src = get_source(counts)
    idx = np.array([5, 1, 300, 2])
    expected = counts.X[idx].toarray()
    np.testing.assert_array_equal(src.rows(idx), expected)
    assert sp.issparse(src.X)  # the source keeps the sparse matrix


def test_csc_input_is_read_by_rows(counts):
    csc = counts.copy()
    csc.X = sp.csc_matrix(csc.X)
    np.testing.assert_array_equal(get_source(csc).rows(np.arange(10)), counts.X[:10].toarray())


def test_stratified_split_proportions_and_reproducibility(pbmc):
    t = encode_targets(pbmc, "bulk_labels")
    s1 = stratified_split(t, (0.8, 0.1, 0.1), np.random.default_rng(0))
    s2 = stratified_split(t, (0.8, 0.1, 0.1), np.random.default_rng(0))
    s3 = stratified_split(t, (0.8, 0.1, 0.1), np.random.default_rng(1))
    np.testing.assert_array_equal(s1, s2)
    assert (s1 != s3).any()
    frac = pd.Series(s1).value_counts(normalize=True)
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["test"] - 0.1) < 0.03
    for k in range(len(t.classes)):  # every class, even the 8-cell one, is in val and test
        assert {"train", "val", "test"} <= set(s1[t.y == k])


def test_scaler_fitted_on_training_split_only(counts):
    data, kind = prepare(
        counts,
        "cell_type",
        layer=None,
        use_raw=False,
        split_key=None,
        data_cfg=config.Config().data,
        loss="auto",
        rng=np.random.default_rng(0),
    )
    assert kind == "counts" and data.pipeline.preprocess == "normalize_log1p"
    train = data.idx["train"]
    dense = counts.X[train].toarray()
    logn = np.log1p(dense / dense.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(data.pipeline.scaler.min_, logn.min(0), rtol=1e-5, atol=1e-6)
    x = data.pipeline.block(train)
    assert x.min() >= -1e-6 and x.max() <= 1 + 1e-6
    held_out = data.pipeline.block(data.idx["test"])
    assert held_out.shape == (len(data.idx["test"]), counts.n_vars)


def test_scaler_constant_gene_maps_to_zero():
    s = MinMaxScaler.fit_chunks([np.array([[1.0, 3.0], [1.0, 5.0]], np.float32)])
    np.testing.assert_allclose(s.transform(np.array([[1.0, 4.0]], np.float32)), [[0.0, 0.5]])


def test_gene_alignment_reorders_pads_and_refuses():
    model = pd.Index(["a", "b", "c", "d"])
    al = align_genes(pd.Index(["d", "x", "b", "a", "c"]), model, 0.5)
    block = np.array([[4.0, 9.0, 2.0, 1.0, 3.0]], np.float32)
    np.testing.assert_array_equal(al.apply(block), [[1.0, 2.0, 3.0, 4.0]])
    with pytest.warns(UserWarning, match=r"1 of the model's 4 genes \(25.0%\)"):
        al = align_genes(pd.Index(["c", "a", "b"]), model, 0.5)
    np.testing.assert_array_equal(al.apply(np.array([[3.0, 1.0, 2.0]], np.float32)), [[1.0, 2.0, 3.0, 0.0]])
    with pytest.raises(ValueError, match="shares only 1 of the model's 4 genes"):
        align_genes(pd.Index(["a", "z"]), model, 0.5)


def test_integer_and_string_labels_are_classes():
    a = synthetic_counts(n_cells=90, n_types=3)
    a.obs["int_label"] = a.obs["cell_type"].cat.codes.astype(int)
    a.obs["str_label"] = a.obs["cell_type"].astype(str)
    for key in ("int_label", "str_label"):
        t = encode_targets(a, key)
        assert t.task == "classification" and len(t.classes) == 3
    a.obs["float_label"] = np.linspace(0, 1, a.n_obs)
    assert encode_targets(a, "float_label").task == "regression"
