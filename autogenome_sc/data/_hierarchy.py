"""Label hierarchies: ``label_key=["lineage", "cell_type"]``, coarse to fine.

The network learns the finest level; every coarser level is read off it. Each fine class
has one parent per coarser level (checked on the cells), so a coarse class's probability
is the sum of its fine classes' probabilities, and the labels of all levels agree with the
hierarchy by construction: a cell's coarse label is the parent of its fine label, with the
confidence of the whole group. Rejection can then fall back from an unsure fine label to
the deepest level that is sure ("T cell" rather than "Unassigned").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from ._labels import obs_column


@dataclass
class Hierarchy:
    """Levels coarse to fine (columns of ``.obs``) and, for each coarser level, the parent of every fine class."""

    levels: list[str]
    parents: dict[str, list[str]]  # level -> parent name of each fine class, in the model's class order

    @property
    def finest(self) -> str:
        return self.levels[-1]

    def classes_of(self, level: str) -> list[str]:
        """The classes of ``level``: the model's own (finest level), else sorted."""
        return list(self.parents[level]) if level == self.finest else sorted(set(self.parents[level]))

    def membership(self, level: str) -> tuple[list[str], np.ndarray]:
        """``(classes, M)``: ``M[i, j] = 1`` when fine class ``i`` belongs to class ``j`` of ``level``."""
        classes = self.classes_of(level)
        pos = {c: j for j, c in enumerate(classes)}
        M = np.zeros((len(self.parents[level]), len(classes)))
        M[np.arange(len(self.parents[level])), [pos[p] for p in self.parents[level]]] = 1.0
        return classes, M

    def to_dict(self) -> dict:
        return {"levels": list(self.levels), "parents": {k: list(v) for k, v in self.parents.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Hierarchy:
        return cls([str(x) for x in d["levels"]], {str(k): [str(p) for p in v] for k, v in d["parents"].items()})


def label_levels(label_key: str | Sequence[str] | None) -> tuple[str | None, list[str]]:
    """``(the column to learn, all levels coarse to fine)`` of a ``label_key`` (one column or a list)."""
    if label_key is None or isinstance(label_key, str):
        return label_key, [] if label_key is None else [label_key]
    if not isinstance(label_key, Sequence) or not all(isinstance(k, str) for k in label_key):
        raise TypeError(
            "label_key must be a column of adata.obs or a list of columns from coarse to fine, "
            f"got {type(label_key).__name__}."
        )
    levels = list(label_key)
    if not levels:
        raise ValueError("label_key is an empty list; give one column, or columns from coarse to fine.")
    if len(set(levels)) != len(levels):
        raise ValueError(f"label_key names a column twice: {levels}.")
    return levels[-1], levels


def read_hierarchy(adata: AnnData, levels: list[str], classes: list[str], y: np.ndarray) -> Hierarchy | None:
    """The parent of every fine class at every coarser level, checked to nest (``None`` for one level).

    ``classes`` and ``y`` are the finest level's encoded classes and codes of every cell.
    """
    if len(levels) < 2:
        return None
    fine = levels[-1]
    parents: dict[str, list[str]] = {fine: list(classes)}
    for level in levels[:-1]:
        col = obs_column(adata, level, "label_key level", "every level of label_key needs a label for every cell")
        pairs = pd.DataFrame({"fine": np.asarray(y), "coarse": col.astype(str).to_numpy()}).drop_duplicates()
        counts = pairs.groupby("fine")["coarse"].nunique()
        bad = counts[counts > 1]
        if len(bad):
            c = int(bad.index[0])
            under = sorted(pairs.loc[pairs["fine"] == c, "coarse"])
            raise ValueError(
                f"Class {classes[c]!r} of adata.obs['{fine}'] falls under more than one class of "
                f"adata.obs['{level}'] ({', '.join(map(repr, under[:5]))}); the levels of label_key must nest, "
                "coarse to fine."
            )
        parent = dict(zip(pairs["fine"].astype(int), pairs["coarse"], strict=True))
        parents[level] = [parent[i] for i in range(len(classes))]
    return Hierarchy(levels, parents)


def level_outputs(
    hierarchy: Hierarchy, p: np.ndarray, pred: np.ndarray
) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per level: ``(classes, label code of each cell, confidence of that label)``.

    A cell's label at a coarser level is the parent of its fine label ``pred``; its
    confidence is the summed probability of the fine classes under that parent.
    """
    out = {}
    for level in hierarchy.levels:
        classes, M = hierarchy.membership(level)
        group = M.argmax(axis=1)[pred]  # each cell's fine label's class at this level
        conf = (p @ M)[np.arange(len(pred)), group]
        out[level] = (classes, group, conf)
    return out
