from __future__ import annotations

from anndata import AnnData

from ..data import PREPROCESSING, check_finite_and_detect, get_source


def detect_input(adata: AnnData, *, layer: str | None = None, use_raw: bool = False) -> dict[str, str]:
    """Say what kind of values a matrix holds and which preprocessing training would apply.

    Parameters
    ----------
    adata
        Annotated data matrix.
    layer
        Inspect ``adata.layers[layer]`` instead of ``adata.X``.
    use_raw
        Inspect ``adata.raw.X``.

    Returns
    -------
    ``{"matrix": ..., "input": kind, "preprocessing": transform}`` where kind is one of
    ``"counts"``, ``"normalized"``, ``"log"``, ``"scaled"``, ``"binary"``. Nothing is written
    to ``adata``. Raises a ``ValueError`` for NaN or infinite values.
    """
    source = get_source(adata, layer=layer, use_raw=use_raw)
    kind = check_finite_and_detect(source, 64.0)
    return {"matrix": source.where, "input": kind, "preprocessing": PREPROCESSING[kind]}
