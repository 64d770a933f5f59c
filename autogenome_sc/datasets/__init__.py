"""Data sets: realistic synthetic counts for tests and scale benchmarks."""

from ._synthetic import synthetic

__all__ = ["synthetic"]
