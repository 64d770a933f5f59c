"""The documentation site builds with warnings as errors, from a copy of the sources (nothing is written to the repo)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import autogenome_sc as ag

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.docs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "docs", tmp / "docs", ignore=shutil.ignore_patterns("_build", "generated", "tutorials"))
    shutil.copytree(ROOT / "tutorials", tmp / "tutorials", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(ROOT / "CHANGELOG.md", tmp / "CHANGELOG.md")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", tmp / "docs", tmp / "html"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "html"


def _text(path: Path) -> str:
    return re.sub(r"<[^>]+>", " ", path.read_text())


@pytest.mark.parametrize("module", [ag.tl, ag.pl], ids=lambda m: m.__name__)
def test_api_reference_has_every_public_function(site, module):
    index = _text(site / "generated" / f"{module.__name__}.html")
    for name in module.__all__:
        page = site / "generated" / f"{module.__name__}.{name}.html"
        assert page.is_file(), f"{module.__name__}.{name} is missing from the API reference"
        assert name in index
        text = _text(page)
        assert "Parameters" in text and "Returns" in text, f"{name}: numpydoc sections not rendered"


def test_pages_render(site):
    for page in (
        "installation",
        "quickstart",
        "api",
        "config_reference",
        "benchmarks",
        "changelog",
        "searching",
        "label_transfer",
    ):
        assert (site / f"{page}.html").is_file(), page
    assert "Keep a Changelog" in _text(site / "changelog.html")  # ../CHANGELOG.md included
    assert "logistic regression" in _text(site / "benchmarks.html")
    assert "search.spaces" in _text(site / "config_reference.html")
    quickstart = _text(site / "quickstart.html")
    assert "ag.tl.search" in quickstart and "ag.pl.shap_summary" in quickstart
    for name in (
        "01_cell_type_classification",
        "02_explain",
        "03_unsupervised_resvae",
        "04_expert_mode",
        "05_label_transfer",
    ):
        html = (site / "tutorials" / f"{name}.html").read_text()
        assert "<img" in html, f"{name}: the committed figures are not rendered"
