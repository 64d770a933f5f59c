"""The tutorials run top to bottom on bundled data and are committed with their outputs."""

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the test extra has it; a bare accelerator image may not
NotebookClient = pytest.importorskip("nbclient").NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
NAMES = ["01_cell_type_classification", "02_explain", "03_unsupervised_resvae", "04_expert_mode", "05_label_transfer"]
NOTEBOOKS = [TUTORIALS / f"{name}.ipynb" for name in NAMES]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(nb) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out.data:
                parts.append(out.data["text/plain"])
    return "\n".join(parts)


def test_the_tutorials_are_there():
    assert sorted(p.stem for p in TUTORIALS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs_in_order(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = _code_cells(nb)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom, then commit"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures are part of a tutorial"
    assert path.stat().st_size < 1_500_000, "keep outputs small"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, monkeypatch, tmp_path):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's tempfile folders go with the test, not into /tmp
    before = {d: set(os.listdir(d)) for d in (ROOT, TUTORIALS)}
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}).execute()
    assert {d: set(os.listdir(d)) for d in (ROOT, TUTORIALS)} == before, "a tutorial left files in the repository"
    if path.stem[:2] in ("01", "02", "04", "05"):  # they save models: into a temporary folder, nowhere else
        assert any(p.name.startswith("ag_tutorial_") for p in tmp_path.iterdir())
    outputs = [o for c in _code_cells(nb) for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1
    text = _text(nb)
    if path.stem.startswith("01"):
        acc = float(text.split("query: accuracy ")[1].split(",")[0])
        assert acc >= 0.7, "label transfer to the query with other genes"
    elif path.stem.startswith("05"):
        without = float(text.split("no batch_key: accuracy ")[1].split()[0])
        with_key = float(text.split("batch: accuracy ")[1].split()[0])
        assert with_key > without, "per-batch standardisation helps on batches that hold every cell type"
        assert "with a lineage only" in text
    elif path.stem.startswith("02"):
        assert "CD79A" in text  # the B-cell marker among the top SHAP genes
    elif path.stem.startswith("03"):
        assert "Res-VAE" in text and "k-means ARI" in text
    elif path.stem.startswith("04"):
        assert "8 trials; best value" in text and "4 trials so far" in text  # the search was resumed
