"""The two models: the bit tokenizer (`BARVQModel`, a diffusers `ModelMixin`) and the generator (`BARConfig`,
`BARForCausalImageModeling`: backbone in `modeling_bar`, its layers in `layers`, the bit heads in `heads`)."""

from .configuration_bar import BAR_PRESETS, BAR_SAMPLING_DEFAULTS, BARConfig
from .heads import BARBitwiseHead, BARLinearHead, BARMaskedBitHead
from .layerwise_casting import enable_layerwise_casting
from .modeling_bar import (
    BARCausalImageModelingOutput,
    BARForCausalImageModeling,
    BARModel,
    BARModelOutput,
    BARPreTrainedModel,
)
from .vq_model import BARBitQuantizer, BARVQEncoderOutput, BARVQModel

__all__ = [
    "BAR_PRESETS",
    "BAR_SAMPLING_DEFAULTS",
    "BARConfig",
    "BARBitwiseHead",
    "BARLinearHead",
    "BARMaskedBitHead",
    "enable_layerwise_casting",
    "BARCausalImageModelingOutput",
    "BARForCausalImageModeling",
    "BARModel",
    "BARModelOutput",
    "BARPreTrainedModel",
    "BARBitQuantizer",
    "BARVQEncoderOutput",
    "BARVQModel",
]
