"""Getters (``ag.get``): results stored in AnnData as pandas / shap objects."""

from ._explain import explanation, importance_df

__all__ = ["explanation", "importance_df"]
