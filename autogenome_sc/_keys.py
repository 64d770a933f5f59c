"""The storage contract: every name a result is written under (like scanpy's ``_keys.py``).

Neutral ground: ``tl`` writes these keys and ``pl``/``get`` read them, so neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ._checks import check_key_added

#: The label of cells a rejection threshold leaves without a class.
UNASSIGNED = "Unassigned"


@dataclass(frozen=True)
class Keys:
    """Where results go for a given ``key_added``."""

    key: str = "ag"

    def __post_init__(self) -> None:
        check_key_added(self.key, "key")

    @property
    def prediction(self) -> str:
        return f"{self.key}_prediction"

    @property
    def confidence(self) -> str:
        return f"{self.key}_confidence"

    @property
    def uncertainty(self) -> str:
        return f"{self.key}_uncertainty"

    def level_prediction(self, level: str) -> str:
        """The label of one level of a label hierarchy (``label_key=[coarse, ..., fine]``)."""
        return f"{self.key}_prediction_{level}"

    def level_confidence(self, level: str) -> str:
        """The confidence of one level's label: the summed probability of its fine classes."""
        return f"{self.key}_confidence_{level}"

    def level_uncertainty(self, level: str) -> str:
        """The novelty of a cell at one coarser level of a hierarchy, against that level's classes (as ``uncertainty``)."""
        return f"{self.key}_uncertainty_{level}"

    @property
    def probabilities(self) -> str:
        """``.obsm``: cells x classes, the calibrated class probabilities; class names in ``uns[key]["probabilities"]``."""
        return f"{self.key}_probabilities"

    def level_probabilities(self, level: str) -> str:
        """``.obsm``: cells x classes of one coarser level of a label hierarchy (the summed fine probabilities)."""
        return f"{self.key}_probabilities_{level}"

    @property
    def smoothed(self) -> str:
        return f"{self.key}_prediction_smoothed"

    @property
    def vote_fraction(self) -> str:
        return f"{self.key}_vote_fraction"

    @property
    def split(self) -> str:
        return f"{self.key}_split"

    @property
    def obsm(self) -> str:
        return f"X_{self.key}"

    @property
    def reconstruction(self) -> str:
        return f"{self.key}_reconstruction"

    @property
    def uns(self) -> str:
        return self.key


def strings(stored: Iterable) -> np.ndarray:
    """A string array stored in ``uns``, as a plain NumPy array of ``str`` whatever the file format.

    h5ad gives object or ``<U`` arrays back, zarr (anndata 0.12) NumPy's ``StringDType``, which
    ``np.asarray(..., dtype=str)`` refuses to cast; every reader of stored names goes through here.
    """
    return np.array([str(v) for v in stored], dtype=str)
