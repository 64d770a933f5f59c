"""A scverse user's genes and inputs: gene_symbols=, Ensembl version suffixes, panels (genes=), the model's own input
read from a query, probabilities in .obsm (issue 31)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import FAST, synthetic_counts

import autogenome_sc as ag
from autogenome_sc._keys import strings
from autogenome_sc.data import align_genes, match_genes

MLP = {**FAST, "models": {"mlp": {"widths": [32]}}}


@pytest.fixture(autouse=True)
def _info():
    """The log lines these tests read are at info level."""
    old, ag.settings.verbosity = ag.settings.verbosity, 2
    yield
    ag.settings.verbosity = old


def _ensembl(n: int, version: int | None = None) -> list[str]:
    return [f"ENSG{i:011d}" + ("" if version is None else f".{version + i % 3}") for i in range(n)]


def test_ensembl_version_suffixes_are_matched_without_the_suffix():
    model = pd.Index(_ensembl(6, version=17))
    query = pd.Index(["ENSG00000000003", "ENSG00000000000.4", "TP53", "ENSG00000000001", "ENSG00000000005.17"])
    pos, n_unversioned = match_genes(query, model)
    assert pos.tolist() == [1, 3, -1, 0, -1, 4] and n_unversioned == 4  # ENSG...5.17 is ENSG...5.19 in the model
    pos, n_unversioned = match_genes(query, pd.Index(["ENSG00000000005.17"]))
    assert pos.tolist() == [4] and n_unversioned == 0  # the same version: an exact match
    # an unversioned ID two query genes share matches neither; a symbol is never cut at a dot
    pos, n = match_genes(
        pd.Index(["ENSG00000000001.1", "ENSG00000000001.2", "RP11-1.2"]), pd.Index(["ENSG00000000001.3", "RP11-1"])
    )
    assert pos.tolist() == [-1, -1] and n == 0
    al = align_genes(query, model, 0.5)
    assert al.report("var_names") == {
        "matched_by": "var_names", "n_model": 6, "n_found": 4, "n_exact": 0, "n_unversioned": 4, "n_missing": 2,
    }  # fmt: skip
    assert "4 of the model's 6 found by var_names (4 without their Ensembl version suffix), 2 missing" in al.describe(
        "var_names"
    )


@pytest.fixture
def with_symbols():
    """Synthetic counts whose var_names are versioned Ensembl IDs and whose symbols sit in var['symbol']."""
    a = synthetic_counts()
    a.var["symbol"] = list(a.var_names)
    a.var_names = _ensembl(a.n_vars, version=5)
    return a


def test_gene_symbols_are_recorded_and_a_query_is_matched_by_them(with_symbols, tmp_path, ag_log):
    a = with_symbols
    ag.tl.train(
        a, "cell_type", model="mlp", gene_symbols="symbol", config={**MLP, "save": {"path": str(tmp_path / "m")}}
    )
    model = ag.read_model(tmp_path / "m")
    assert model.gene_symbols == "symbol" and model.var_names_[0] == "gene0"
    assert a.uns["ag"]["preprocessing"]["genes"] == "var['symbol']"
    # the query: other identifiers in var_names, genes shuffled, 10 of them missing; matched by the recorded column
    rng = np.random.default_rng(0)
    keep = rng.permutation(a.n_vars)[:-10]
    q = a[:, keep].copy()
    q.var_names = [f"other{i}" for i in range(q.n_vars)]
    ag_log.clear()
    ag.tl.predict(q, model)
    genes = q.uns["ag"]["prediction"]["genes"]
    assert genes == {
        "matched_by": "var['symbol']", "n_model": 200, "n_found": 190, "n_exact": 190, "n_unversioned": 0,
        "n_missing": 10,
    }  # fmt: skip
    assert "genes: 190 of the model's 200 found by query.var['symbol'], 10 missing set to zero" in ag_log.text
    # with every gene there, the query is labelled as the reference was
    full = a[:, rng.permutation(a.n_vars)].copy()
    full.var_names = [f"x{i}" for i in range(full.n_vars)]
    ag.tl.predict(full, model, key_added="q")
    assert (full.obs["q_prediction"].astype(str) == a.obs["ag_prediction"].astype(str)).all()
    # a query without the column is matched by var_names (said in the log), here other versions of the same IDs
    by_id = a.copy()
    by_id.var_names = _ensembl(a.n_vars, version=9)
    del by_id.var["symbol"]
    ag_log.clear()
    with pytest.raises(ValueError, match="shares only 0 of the model's 200 genes"):
        ag.tl.predict(by_id, model)


def test_versioned_ids_match_other_versions_of_the_query(with_symbols, tmp_path, ag_log):
    a = with_symbols
    ag.tl.train(a, "cell_type", model="mlp", config={**MLP, "save": {"path": str(tmp_path / "m")}})
    q = a.copy()
    q.var_names = [name.split(".")[0] for name in a.var_names]  # the same IDs without versions
    ag_log.clear()
    ag.tl.predict(q, tmp_path / "m")
    assert q.uns["ag"]["prediction"]["genes"]["n_unversioned"] == 200
    assert "(200 without their Ensembl version suffix)" in ag_log.text
    assert (q.obs["ag_prediction"].astype(str) == a.obs["ag_prediction"].astype(str)).all()


def test_bad_gene_symbols_and_genes_are_one_sentence_before_any_work(with_symbols, tmp_path):
    a = with_symbols
    cfg = {**MLP, "save": {"path": str(tmp_path / "m")}}
    with pytest.raises(KeyError, match=r"gene_symbols='name' is not a column of adata.var \(columns: 'symbol'\)"):
        ag.tl.train(a, "cell_type", model="mlp", gene_symbols="name", config=cfg)
    a.var.loc[a.var_names[1], "symbol"] = "gene0"
    with pytest.raises(ValueError, match=r"adata.var\['symbol'\] names some genes twice \(e.g. \['gene0'\]\)"):
        ag.tl.train(a, "cell_type", model="mlp", gene_symbols="symbol", config=cfg)
    with pytest.raises(ValueError, match="None of the 2 genes in genes= is among the 200"):
        ag.tl.train(a, "cell_type", model="mlp", genes=["CD3E", "MS4A1"], config=cfg)
    with pytest.raises(TypeError, match="genes must be a list of gene names or an AnnData"):
        ag.tl.search(a, "cell_type", genes="CD3E", config=cfg, run_dir=tmp_path)
    with pytest.raises(ValueError, match="gene_symbols is for supervised search"):
        ag.tl.search(a, gene_symbols="symbol", config=cfg, run_dir=tmp_path)
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob("*.journal*"))


def test_a_panel_trains_the_reference_on_the_querys_genes(counts, tmp_path, ag_log):
    panel = counts[:, np.random.default_rng(1).permutation(counts.n_vars)[:60]].copy()  # a query of 60 genes
    ag_log.clear()
    ag.tl.train(counts, "cell_type", model="mlp", genes=panel, config={**MLP, "save": {"path": str(tmp_path / "m")}})
    assert "genes: 60 of the 60 in genes= found by adata.var_names; the model reads these 60 of the 200" in ag_log.text
    model = ag.read_model(tmp_path / "m")
    assert sorted(model.var_names_) == sorted(panel.var_names) and list(model.var_names_) == [
        g for g in counts.var_names if g in set(panel.var_names)
    ]  # the reference's order
    assert dict(counts.uns["ag"]["panel"]) == {"n_asked": 60, "n_kept": 60, "n_unversioned": 0, "n_reference": 200}
    ag.tl.predict(panel, model)
    assert panel.uns["ag"]["prediction"]["genes"]["n_missing"] == 0
    # counts are normalised over the panel's genes in training as in the query: the same cells get the same labels
    assert (panel.obs["ag_prediction"].astype(str) == counts.obs["ag_prediction"].astype(str)).all()


def test_predict_reads_the_matrix_the_model_was_trained_on(pbmc, tmp_path, ag_log):
    ag.tl.train(pbmc, "bulk_labels", model="mlp", use_raw=True, config={**MLP, "save": {"path": str(tmp_path / "m")}})
    q = pbmc.copy()
    ag_log.clear()
    ag.tl.predict(q, tmp_path / "m")  # the query has .raw: it is read, as in training
    assert "reading query.raw.X (the model's input)" in ag_log.text
    assert q.uns["ag"]["prediction"]["matrix"] == "raw.X"
    assert (q.obs["ag_prediction"].astype(str) == pbmc.obs["ag_prediction"].astype(str)).all()
    np.testing.assert_allclose(q.obsm["ag_probabilities"], pbmc.obsm["ag_probabilities"], atol=1e-5)
    ag_log.clear()
    ag.tl.predict(q, tmp_path / "m", use_raw=False, key_added="x")  # told otherwise: .X (z-scored) it is
    assert "reading query.X (as asked)" in ag_log.text
    assert (q.obs["x_prediction"].astype(str) != pbmc.obs["ag_prediction"].astype(str)).any()
    no_raw = ad.AnnData(pbmc.raw.X.copy(), obs=pbmc.obs[[]].copy(), var=pbmc.raw.var[[]].copy())
    ag_log.clear()
    ag.tl.predict(no_raw, tmp_path / "m")  # no .raw: X, and the log says why
    assert "reading query.X (the model was trained on adata.raw.X, which this AnnData lacks)" in ag_log.text
    assert (no_raw.obs["ag_prediction"].astype(str) == pbmc.obs["ag_prediction"].astype(str)).all()
    # explain on the labelled query reads the model's input too
    ag_log.clear()
    ag.tl.explain(q, max_cells=20, n_samples=8, n_background=10)
    assert "reading adata.raw.X (the model's input)" in ag_log.text
    assert q.uns["ag"]["importance"]["values"].shape[0] == pbmc.raw.n_vars


@pytest.mark.parametrize("fmt", ["h5ad", "zarr"])
def test_predict_writes_probabilities_that_round_trip(trained, fmt, tmp_path):
    adata, model = trained
    q = adata.copy()
    ag.tl.predict(q, model, key_added="q")
    p = q.obsm["q_probabilities"]
    classes = strings(q.uns["q"]["probabilities"]["q_probabilities"])
    assert p.shape == (q.n_obs, len(model.classes_)) and list(classes) == list(model.classes_)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    assert (classes[p.argmax(axis=1)] == q.obs["q_prediction"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(p.max(axis=1), q.obs["q_confidence"], atol=1e-6)
    np.testing.assert_allclose(p, model.predict_proba(q).to_numpy(), atol=1e-6)
    # the training wrote the same table for the reference
    np.testing.assert_allclose(adata.obsm["ag_probabilities"], p, atol=1e-5)
    path = tmp_path / f"q.{fmt}"
    if fmt == "h5ad":
        q.write_h5ad(path)
        back = ad.read_h5ad(path)
    else:
        q.write_zarr(path)
        back = ad.read_zarr(path)
    np.testing.assert_array_equal(back.obsm["q_probabilities"], p)
    assert list(strings(back.uns["q"]["probabilities"]["q_probabilities"])) == list(classes)


def test_the_command_line_matches_by_symbols_and_trains_on_a_panel(with_symbols, tmp_path, capsys):
    from autogenome_sc.cli import main

    a = with_symbols
    ref, out, model, pred = (str(tmp_path / n) for n in ("ref.h5ad", "out.h5ad", "m", "pred.h5ad"))
    a.write_h5ad(ref)
    panel = tmp_path / "panel.txt"  # 60 symbols, a comment and a blank line
    panel.write_text("# the panel\n" + "\n".join(a.var["symbol"][::-1][:60]) + "\n\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**MLP, "search": {"cv_folds": 0}, "save": {"path": model}}))
    common = ["--label-key", "cell_type", "--modes", "mlp", "--n-trials", "1", "--config", str(cfg)]
    argv = ["search", ref, *common, "--run-dir", str(tmp_path / "runs"), "--gene-symbols", "symbol"]
    assert main([*argv, "--genes", str(panel), "--out", out]) == 0
    searched = ad.read_h5ad(out)
    assert searched.uns["ag"]["preprocessing"]["genes"] == "var['symbol']"
    assert dict(searched.uns["ag"]["panel"])["n_kept"] == 60
    m = ag.read_model(model)
    assert m.gene_symbols == "symbol" and sorted(m.var_names_) == sorted(a.var["symbol"][-60:])
    # the panel's query: its 60 genes under other var_names and the same symbols, labelled by the command line
    # as the search labelled the reference (counts normalised over the panel's genes in both)
    q = a[:, a.var["symbol"].isin(m.var_names_).to_numpy()].copy()
    q.var_names = [f"other{i}" for i in range(q.n_vars)]
    q.write_h5ad(tmp_path / "q.h5ad")
    assert main(["predict", str(tmp_path / "q.h5ad"), "--model", model, "--gene-symbols", "symbol", "--out", pred]) == 0
    labelled = ad.read_h5ad(pred)
    assert labelled.uns["ag"]["prediction"]["genes"]["n_found"] == 60
    assert (labelled.obs["ag_prediction"].astype(str) == searched.obs["ag_prediction"].astype(str)).all()
    # --genes may name an .h5ad query (its genes, by --gene-symbols); a file naming no genes is one sentence
    small = a[:, :30].copy()
    small.var_names = [f"q{i}" for i in range(30)]
    small.write_h5ad(tmp_path / "small.h5ad")
    out2 = str(tmp_path / "out2.h5ad")
    cfg.write_text(json.dumps({**MLP, "search": {"cv_folds": 0}, "save": {"path": str(tmp_path / "m2")}}))
    argv2 = ["search", ref, *common, "--run-dir", str(tmp_path / "runs2"), "--gene-symbols", "symbol"]
    assert main([*argv2, "--genes", str(tmp_path / "small.h5ad"), "--out", out2]) == 0
    assert dict(ad.read_h5ad(out2).uns["ag"]["panel"])["n_kept"] == 30
    (tmp_path / "empty.txt").write_text("# nothing\n")
    capsys.readouterr()
    assert main([*argv2, "--genes", str(tmp_path / "empty.txt"), "--out", out2]) != 0
    assert "empty.txt' names no genes." in capsys.readouterr().err
    assert main([*argv2, "--genes", str(tmp_path / "missing.txt"), "--out", out2]) != 0
    assert "missing.txt' is not a file" in capsys.readouterr().err
