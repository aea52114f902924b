"""bar_hf: BAR (masked Bit AutoRegressive image generation) for diffusers and transformers.

Importing `bar_hf` registers every component class (diffusers 0.42 resolves third-party component libraries from
`sys.modules` only, so import `bar_hf` before any generic Hugging Face loader).
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel

from . import bits, masks
from .cli import bundled_model_path
from .configuration_bar import BAR_PRESETS, BAR_SAMPLING_DEFAULTS, BARConfig
from .layerwise_casting import enable_layerwise_casting
from .modeling_bar import (
    BARBitwiseHead,
    BARCausalImageModelingOutput,
    BARForCausalImageModeling,
    BARLinearHead,
    BARMaskedBitHead,
    BARModel,
    BARModelOutput,
    BARPreTrainedModel,
)
from .pipeline_bar import BARPipeline
from .pipeline_inpaint_bar import BARInpaintPipeline
from .scheduling_bar import (
    BARAdaptiveBitScheduler,
    BARBitScheduler,
    BARBitSchedulerOutput,
    BARLogProbBitScheduler,
    BARSchedulerMixin,
)
from .vq_model_bar import BARBitQuantizer, BARVQEncoderOutput, BARVQModel

AutoConfig.register("bar", BARConfig, exist_ok=True)
AutoModel.register(BARConfig, BARModel, exist_ok=True)

__all__ = [
    "bits",
    "masks",
    "bundled_model_path",
    "BARVQModel",
    "BARVQEncoderOutput",
    "BARBitQuantizer",
    "BARConfig",
    "BAR_PRESETS",
    "BAR_SAMPLING_DEFAULTS",
    "BARPreTrainedModel",
    "BARModel",
    "BARModelOutput",
    "BARForCausalImageModeling",
    "BARCausalImageModelingOutput",
    "BARMaskedBitHead",
    "BARBitwiseHead",
    "BARLinearHead",
    "BARBitScheduler",
    "BARLogProbBitScheduler",
    "BARAdaptiveBitScheduler",
    "BARBitSchedulerOutput",
    "BARSchedulerMixin",
    "BARPipeline",
    "BARInpaintPipeline",
    "enable_layerwise_casting",
]
