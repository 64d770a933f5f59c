import anndata
import pytest
from _search_helpers import TINY, cli


@pytest.fixture
def h5ad(tmp_path, _pbmc):
    path = tmp_path / "pbmc.h5ad"
    _pbmc.write_h5ad(path)
    return path


def test_help_of_every_command(tmp_path):
    procs = {c: cli(c, "--help", cwd=tmp_path, wait=False) for c in ("search", "worker", "predict")}
    for command, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert f"usage: autogenome-sc {command}" in out and "--label-key" in out or command == "predict"
        assert "--model" in out if command == "predict" else "--storage" in out


def test_bad_path_and_bad_label_key_one_sentence(h5ad, tmp_path):
    procs = {
        "path": cli("search", tmp_path / "missing.h5ad", "--label-key", "x", "--out", tmp_path / "o.h5ad", cwd=tmp_path, wait=False),
        "label": cli("worker", "--data", h5ad, "--label-key", "cell_type", "--study", "s", cwd=tmp_path, wait=False),
        "model": cli("predict", h5ad, "--model", tmp_path / "nomodel", "--out", tmp_path / "o.h5ad", cwd=tmp_path, wait=False),
    }  # fmt: skip
    expect = {"path": "missing.h5ad' does not exist", "label": "Label key 'cell_type'", "model": "does not exist"}
    for what, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 1, (what, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("autogenome-sc: error:"), err
        assert expect[what] in lines[0] and "Traceback" not in err


def test_search_then_predict(h5ad, tmp_path):
    import json

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(TINY))
    out = tmp_path / "out.h5ad"
    r = cli(
        "search", h5ad, "--label-key", "bulk_labels", "--use-raw", "--config", cfg, "--n-trials", "1",
        "--study", "c", "--run-dir", tmp_path / "runs", "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    a = anndata.read_h5ad(out)
    assert len(a.uns["ag"]["leaderboard"]) == 1 and "ag_prediction" in a.obs
    model = a.uns["ag"]["model_path"]
    pred_out = tmp_path / "pred.h5ad"
    r = cli(
        "predict", h5ad, "--model", tmp_path / model, "--use-raw", "--key-added", "q", "--out", pred_out, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-2000:]
    b = anndata.read_h5ad(pred_out)
    assert (b.obs["q_prediction"].astype(str) == a.obs["ag_prediction"].astype(str)).all()
    # --batch-key reaches ag.tl.predict: this model was trained without one, which is refused in one sentence
    r = cli(
        "predict",
        h5ad,
        "--model",
        tmp_path / model,
        "--use-raw",
        "--batch-key",
        "phase",
        "--out",
        pred_out,
        cwd=tmp_path,
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "trained without a batch_key" in lines[0], r.stderr[-2000:]
    # --reject and --query-aware reach ag.tl.predict; a bad --reject is one sentence
    r = cli(
        "predict", h5ad, "--model", tmp_path / model, "--use-raw", "--reject", "auto", "--query-aware",
        "--out", pred_out, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    info = anndata.read_h5ad(pred_out).uns["ag"]["prediction"]
    assert info["reject"] == "auto" and info["query_aware"] and "n_unassigned" in info
    for bad, says in (("often", "--reject must be a probability in (0, 1) or 'auto', not 'often'"),
                      ("1.5", "reject must be")):  # fmt: skip
        r = cli("predict", h5ad, "--model", tmp_path / model, "--reject", bad, "--out", pred_out, cwd=tmp_path)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 1 and len(lines) == 1 and says in lines[0], r.stderr[-2000:]
