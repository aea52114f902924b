"""Conversion of the authors' released checkpoints into bar_hf pipeline folders (`bar-hf convert`)."""

from .convert import convert_to_pipeline

__all__ = ["convert_to_pipeline"]
