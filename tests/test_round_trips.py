"""Every ``ag`` result survives h5ad and zarr round trips: getters, plots and a second explain work after them."""

import json

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from _search_helpers import TINY

import autogenome_sc as ag
from autogenome_sc._keys import strings

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def results(_pbmc, tmp_path_factory):
    """pbmc68k_reduced after a tiny search and an explanation: every kind of ``uns`` entry."""
    ag.settings.model_dir = tmp_path_factory.mktemp("models")
    a = _pbmc.copy()
    cfg = json.loads(json.dumps(TINY))
    ag.tl.search(a, "bulk_labels", n_trials=2, config=cfg, run_dir=tmp_path_factory.mktemp("runs"), use_raw=True)
    ag.tl.explain(a, n_samples=20, n_background=20, max_cells=60)
    return a


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_results_survive_a_round_trip(results, fmt, tmp_path):
    path = tmp_path / f"a.{fmt}"
    if fmt == "h5ad":
        results.write_h5ad(path)
        back = ad.read_h5ad(path)
    else:
        results.write_zarr(path)
        back = ad.read_zarr(path)
    # the search's final model wrote its class probabilities, with their class names beside them
    np.testing.assert_array_equal(back.obsm["ag_probabilities"], results.obsm["ag_probabilities"])
    classes = strings(back.uns["ag"]["probabilities"]["ag_probabilities"])
    assert list(classes) == list(strings(results.uns["ag"]["classes"]))
    assert (classes[back.obsm["ag_probabilities"].argmax(axis=1)] == back.obs["ag_prediction"].astype(str)).all()
    before, after = ag.get.importance_df(results), ag.get.importance_df(back)
    pd.testing.assert_frame_equal(before, after, check_dtype=False, check_index_type=False)
    assert list(after.index[:3]) == list(before.index[:3]) and after.index.dtype == object
    top = ag.get.importance_df(back, "CD14+ Monocyte")
    assert top.index[0] == before["CD14+ Monocyte"].idxmax()
    exp_before, exp_after = ag.get.explanation(results), ag.get.explanation(back)
    np.testing.assert_array_equal(exp_before.values, exp_after.values)
    assert list(exp_after.feature_names) == list(exp_before.feature_names)
    for draw in (
        lambda: ag.pl.shap_summary(back, show=False),
        lambda: ag.pl.shap_summary(back, "CD14+ Monocyte", show=False),
        lambda: ag.pl.importance(back, "CD14+ Monocyte", show=False),
        lambda: ag.pl.confusion_matrix(back, show=False),
        lambda: ag.pl.reliability(back, show=False),
        lambda: ag.pl.reliability(back, label_key="bulk_labels", show=False),
        lambda: ag.pl.training_history(back, show=False),
        lambda: ag.pl.search_history(back, show=False),
    ):
        ax = draw()
        assert ax.has_data() or ax.images or ax.patches
        matplotlib.pyplot.close("all")
    # the stored model and matrix are found again: predictions agree, a second explanation runs
    ag.tl.predict(back, back.uns["ag"]["model_path"], use_raw=True, key_added="again")
    assert (back.obs["again_prediction"].astype(str) == results.obs["ag_prediction"].astype(str)).all()
    ag.tl.explain(back, n_samples=20, n_background=20, max_cells=60)
    np.testing.assert_allclose(ag.get.importance_df(back).to_numpy(), before.to_numpy(), rtol=1e-5)
