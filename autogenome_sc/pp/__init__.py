"""Preprocessing helpers (``ag.pp``)."""

from ._detect import detect_input

__all__ = ["detect_input"]
