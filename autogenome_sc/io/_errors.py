"""The error of a model directory that cannot be used as it is."""

from __future__ import annotations


class DamagedModel(ValueError):
    """A model directory whose files are inconsistent, incomplete, changed after saving or not a model's."""
