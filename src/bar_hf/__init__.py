"""bar_hf: BAR (masked Bit AutoRegressive image generation) for diffusers and transformers."""

__version__ = "0.1.0"

from . import bits
from .vq_model_bar import BARBitQuantizer, BARVQEncoderOutput, BARVQModel

__all__ = ["bits", "BARVQModel", "BARVQEncoderOutput", "BARBitQuantizer"]
