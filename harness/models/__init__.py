"""Demo SavedModels, built offline with random weights."""

from harness.models.catalog import MODELS, ModelInfo

__all__ = ["MODELS", "ModelInfo"]
