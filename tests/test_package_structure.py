"""Public-API conventions, checked like scanpy's tests/test_package_structure.py."""

import inspect

import pytest
from anndata import AnnData

import autogenome_sc as ag

TL = [getattr(ag.tl, name) for name in ag.tl.__all__]
PL = [getattr(ag.pl, name) for name in ag.pl.__all__]


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


@pytest.mark.parametrize("func", TL + PL, ids=lambda f: f.__name__)
def test_numpydoc_parameters_and_returns(func):
    doc = inspect.getdoc(func)
    assert doc and "Parameters\n----------" in doc and "Returns\n-------" in doc
    for name in inspect.signature(func).parameters:
        assert name in doc, f"{func.__name__} does not document {name}"


@pytest.mark.parametrize("func", PL, ids=lambda f: f.__name__)
def test_pl_signature_convention(func):
    params = inspect.signature(func).parameters
    assert list(params)[0] == "adata"
    assert params["show"].default is None and params["ax"].default is None
    assert "save" not in params


def test_top_level_namespace():
    assert callable(ag.read_model) and isinstance(ag.__version__, str)
    assert ag.settings.verbosity in (0, 1, 2, 3)
    with pytest.raises(ValueError, match="verbosity must be one of"):
        ag.settings.verbosity = 7
