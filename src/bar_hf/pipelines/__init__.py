"""Pipelines (diffusers `DiffusionPipeline`): generation (`BARPipeline`) and mask-guided editing
(`BARInpaintPipeline`), both sampling through `sampling` (KV cache, backbone step, guided head loop); their input
checks, Hub/LoRA/loading support."""

from .pipeline_bar import BARPipeline
from .pipeline_inpaint import BARInpaintPipeline

__all__ = ["BARPipeline", "BARInpaintPipeline"]
