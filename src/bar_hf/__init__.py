"""bar_hf: BAR (masked Bit AutoRegressive image generation) for diffusers and transformers.

Layout: `models/` (tokenizer, generator, its layers and heads), `schedulers/` (bit schedulers), `pipelines/`
(generation and editing, their one sampling path), `conversion/` (the authors' checkpoints), `evaluation/` (FID and
friends), `training/` (what the training scripts share); `bits` and `masks` are the bit-layout and mask helpers.

Importing `bar_hf` registers every component class (diffusers resolves third-party component libraries from
`sys.modules` only, so import `bar_hf` before any generic Hugging Face loader).
"""

__version__ = "0.2.0"

import sys

from transformers import AutoConfig, AutoModel

from . import bits, masks
from .bundled import bundled_model_path
from .models import (
    BAR_PRESETS,
    BAR_SAMPLING_DEFAULTS,
    BARBitQuantizer,
    BARBitwiseHead,
    BARCausalImageModelingOutput,
    BARConfig,
    BARForCausalImageModeling,
    BARLinearHead,
    BARMaskedBitHead,
    BARModel,
    BARModelOutput,
    BARPreTrainedModel,
    BARVQEncoderOutput,
    BARVQModel,
    enable_layerwise_casting,
    modeling_bar,
    vq_model,
)
from .pipelines import BARInpaintPipeline, BARPipeline, pipeline_bar, pipeline_inpaint
from .schedulers import (
    BARAdaptiveBitScheduler,
    BARBitScheduler,
    BARBitSchedulerOutput,
    BARLogProbBitScheduler,
    BARSchedulerMixin,
    scheduling_bar,
)

AutoConfig.register("bar", BARConfig, exist_ok=True)
AutoModel.register(BARConfig, BARModel, exist_ok=True)

# Module paths that folders saved by bar_hf 0.1.0 name: their model_index.json records `bar_hf.modeling_bar`,
# `bar_hf.vq_model_bar` and `bar_hf.scheduling_bar`, and their `trust_remote_code` files import from those and from
# `bar_hf.pipeline_bar` / `bar_hf.pipeline_inpaint_bar`. diffusers looks component libraries up in `sys.modules`, so
# registering the new modules under the old names keeps those folders loading (tests/test_saved_folders.py).
LEGACY_MODULE_PATHS = {
    "bar_hf.modeling_bar": modeling_bar,
    "bar_hf.vq_model_bar": vq_model,
    "bar_hf.scheduling_bar": scheduling_bar,
    "bar_hf.pipeline_bar": pipeline_bar,
    "bar_hf.pipeline_inpaint_bar": pipeline_inpaint,
}
for _name, _module in LEGACY_MODULE_PATHS.items():
    sys.modules.setdefault(_name, _module)

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
