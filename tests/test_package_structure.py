"""Public-API conventions, checked like scanpy's tests/test_package_structure.py."""

import inspect
import re
from pathlib import Path

import pytest
from anndata import AnnData

import autogenome_sc as ag

TL = [getattr(ag.tl, name) for name in ag.tl.__all__]
PL = [getattr(ag.pl, name) for name in ag.pl.__all__]
# Every other public function (the API reference documents these too).
OTHER = [ag.read_model] + [
    getattr(m, name) for m in (ag.pp, ag.get, ag.config) for name in m.__all__ if inspect.isfunction(getattr(m, name))
]
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("func", TL, ids=lambda f: f.__name__)
def test_tl_signature_convention(func):
    params = list(inspect.signature(func).parameters.values())
    assert params[0].name in ("adata", "query")
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 2, f"options of {func.__name__} must be keyword-only"
    names = {p.name: p for p in params}
    if "copy" in names:
        assert names["copy"].default is False
        assert inspect.signature(func).return_annotation in ("AnnData | None", AnnData | None)
    if "rng" in names:
        assert names["rng"].default == 0
    assert "key_added" in names or "key" in names


@pytest.mark.parametrize("func", TL + PL + OTHER, ids=lambda f: f"{f.__module__.split('.')[1]}.{f.__name__}")
def test_numpydoc_parameters_and_returns(func):
    doc = inspect.getdoc(func)
    params = inspect.signature(func).parameters
    assert doc and "Returns\n-------" in doc
    assert "Parameters\n----------" in doc or not params
    for name in params:
        assert re.search(rf"^{name}$", doc, flags=re.M), f"{func.__name__} does not document {name}"


def test_api_reference_lists_every_public_function():
    """docs/api.md lists the modules; autosummary's module template lists each module's ``__all__``."""
    api = (DOCS / "api.md").read_text()
    block = re.search(r"```\{eval-rst\}\n\.\. autosummary::\n   :toctree: generated\n\n(.*?)```", api, flags=re.S)
    listed = block.group(1).split()
    assert {"autogenome_sc.tl", "autogenome_sc.pl", "autogenome_sc.pp", "autogenome_sc.get"} <= set(listed)
    assert re.search(r"^   read_model$", api, flags=re.M) and re.search(r"^   Model$", api, flags=re.M)
    template = (DOCS / "_templates" / "autosummary" / "module.rst").read_text()
    assert "{% for item in functions %}" in template
    assert "autosummary_ignore_module_all = False" in (DOCS / "conf.py").read_text()  # functions = __all__
    # tests/test_docs.py builds the site and checks a rendered page for every function of ag.tl and ag.pl.


@pytest.mark.parametrize("func", PL, ids=lambda f: f.__name__)
def test_pl_signature_convention(func):
    params = inspect.signature(func).parameters
    assert list(params)[0] == "adata"
    assert params["show"].default is None and params["ax"].default is None
    assert "save" not in params  # DESIGN.md: plot functions return the figure and never take save=


def test_top_level_namespace():
    assert callable(ag.read_model) and isinstance(ag.__version__, str)
    assert ag.settings.verbosity in (0, 1, 2, 3)
    with pytest.raises(ValueError, match="verbosity must be one of"):
        ag.settings.verbosity = 7
