"""BAR-FSQ tokenizer: SigLIP2 ViT encoder → binary FSQ (one bit per latent channel) → ViT pixel decoder.

Architecture and numerics follow docs/method.md §2.2-2.4. Module names mirror the authors' checkpoint keys
(``quantize.in_proj``, ``decoder.transformer.j.attn.qkv`` ...) and the encoder reuses transformers' SigLIP2 vision
modules, so converted weights map 1:1 (``encoder.embeddings``, ``encoder.encoder.layers.i``,
``encoder.post_layernorm``).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.utils import BaseOutput
from torch import nn
from transformers import Siglip2VisionConfig
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.siglip2.modeling_siglip2 import Siglip2Encoder, Siglip2VisionEmbeddings

from ..bits import check_bits

__all__ = ["BARVQModel", "BARBitQuantizer", "BARVQEncoderOutput", "fsq_bound", "FSQ_SHIFT"]


# Binary FSQ constants computed exactly as the authors' FSQ module does (float32 tensors, levels = 2, eps = 1e-3):
# half_l = (L - 1) * (1 + eps) / 2, offset = 0.5, shift = atanh(offset / half_l): 3.800685 in float32 (the authors'
# tensors), 3.800701 in exact arithmetic.
_FSQ_HALF_L = (torch.tensor([2], dtype=torch.int32) - 1) * (1 + 1e-3) / 2
_FSQ_OFFSET = torch.tensor([0.5], dtype=torch.float32)
_FSQ_SHIFT = (_FSQ_OFFSET / _FSQ_HALF_L).atanh()
#: Decision threshold magnitude: a channel value ``u`` gives bit 1 iff ``u >= -FSQ_SHIFT``.
FSQ_SHIFT = float(_FSQ_SHIFT)


def fsq_bound(latents: torch.Tensor) -> torch.Tensor:
    """``tanh(u + shift) * half_l - offset`` in float32 (values in (-1.0005, 0.0005))."""
    latents = latents.float()
    dev = latents.device
    return (latents + _FSQ_SHIFT.to(dev)).tanh() * _FSQ_HALF_L.to(dev) - _FSQ_OFFSET.to(dev)


@dataclass
class BARVQEncoderOutput(BaseOutput):
    """Output of [`BARVQModel.encode`].

    Args:
        latents (`torch.Tensor` of shape `(batch, num_tokens, num_bits)`):
            Pre-quantization channel values `u = in_proj(z)` (float32). `decode(latents)` quantizes them.
        quantized (`torch.Tensor` of shape `(batch, num_tokens, num_bits)`):
            Binary codes in {-1, +1} with a straight-through gradient to `latents`.
        bits (`torch.Tensor` of shape `(batch, num_tokens, num_bits)`):
            int64 bits in {0, 1}; bit `c` is latent channel `c`. Tokens in raster order over the latent grid.
    """

    latents: torch.Tensor
    quantized: torch.Tensor
    bits: torch.Tensor


class _DropQuantizerDtypeWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32" not in record.getMessage()


@contextmanager
def _quantizer_dtype_warning_silenced():
    """diffusers' `ModelMixin.to(dtype)` warns that `_keep_in_fp32_modules` "should be kept in float32" whenever a
    dtype is passed; `BARBitQuantizer._apply` does keep the quantizer in float32, so for `BARVQModel.to` the warning is
    false. Drop it for the duration of that call only (nothing is installed on diffusers' logger otherwise)."""
    diffusers_logger, dropper = logging.getLogger("diffusers.models.modeling_utils"), _DropQuantizerDtypeWarning()
    diffusers_logger.addFilter(dropper)
    try:
        yield
    finally:
        diffusers_logger.removeFilter(dropper)


class BARBitQuantizer(nn.Module):
    """Binary FSQ (docs/method.md §2.3): `in_proj` to `num_bits` channels, one bit per channel, `out_proj` back.

    Runs in float32 with autocast disabled. The decision threshold is `u >= -FSQ_SHIFT` (-3.800685 in float32, not 0), the standard FSQ offset
    for an even number of levels. Gradients pass straight through the rounding.
    """

    def __init__(self, in_features: int, num_bits: int, out_features: int):
        super().__init__()
        self.num_bits = num_bits
        self.in_proj = nn.Linear(in_features, num_bits)
        self.out_proj = nn.Linear(num_bits, out_features)

    @staticmethod
    def quantize_latents(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel values `u` → (codes in {-1, +1} with straight-through gradient, int64 bits)."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            bounded = fsq_bound(latents)
            quantized = bounded + (bounded.round() - bounded).detach()  # round with straight-through gradient
            codes = 2 * quantized + 1
            bits = ((codes.detach() + 1) / 2).round().clamp(0, 1).to(torch.int64)
        return codes, bits

    def _apply(self, fn, recurse=True):
        # Kept in float32 under `.to(bfloat16)` / `.half()` / `from_pipe(dtype)` too: the bit decision must not depend
        # on the storage dtype. The public mechanism, `_keep_in_fp32_modules`, only acts when loading with
        # `from_pretrained(torch_dtype=...)`; `nn.Module.to(dtype)` has no hook to exempt a submodule, so this is the
        # one place that can (`BARVQModel.to` drops diffusers' then-false "should be kept in float32" warning).
        super()._apply(fn, recurse)
        for param in self.parameters():
            if param.is_floating_point() and param.element_size() < 4:
                param.data = param.data.float()
        return self

    def project_in(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.in_proj(features.to(self.in_proj.weight.dtype))

    def project_out(self, codes: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=codes.device.type, enabled=False):
            return self.out_proj(codes.to(self.out_proj.weight.dtype))


class BARDecoderAttention(nn.Module):
    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, width // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class BARDecoderMLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class BARDecoderBlock(GradientCheckpointingLayer):
    """Pre-norm ViT block: LayerNorm (eps 1e-5), multi-head attention with qkv bias, GELU MLP."""

    def __init__(self, width: int, num_heads: int, hidden: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = BARDecoderAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = BARDecoderMLP(width, hidden)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


class BARPixelDecoder(nn.Module):
    """ViT pixel decoder (docs/method.md §2.4): class token, learned positions, pre-norm blocks, 1×1 conv → depth-to-space
    with channel layout (p1, p2, c) → 3×3 conv."""

    def __init__(
        self,
        grid_size: tuple[int, int],
        width: int,
        num_layers: int,
        num_heads: int,
        hidden: int,
        patch_size: int,
        out_channels: int,
        eps: float,
        distill_projector_dim: int | None,
        distill_projector_hidden_size: int = 2048,
    ):
        super().__init__()
        self.grid_size = grid_size
        self.patch_size = patch_size
        self.out_channels = out_channels
        num_tokens = grid_size[0] * grid_size[1]
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(num_tokens + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        self.transformer = nn.ModuleList([BARDecoderBlock(width, num_heads, hidden, eps) for _ in range(num_layers)])
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.ffn = nn.Sequential(nn.Conv2d(width, patch_size * patch_size * out_channels, 1))
        self.conv_out = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if distill_projector_dim is not None:
            hidden_proj = distill_projector_hidden_size  # 2048 in the authors' decoder
            self.clip_projector = nn.Sequential(
                nn.Linear(width, hidden_proj),
                nn.SiLU(),
                nn.Linear(hidden_proj, hidden_proj),
                nn.SiLU(),
                nn.Linear(hidden_proj, distill_projector_dim),
            )

    def forward(
        self, tokens: torch.Tensor, distill_layer_index: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = tokens.shape[0]
        cls = self.class_embedding.to(tokens.dtype).expand(batch, 1, -1)
        hidden = torch.cat([cls, tokens], dim=1) + self.positional_embedding.to(tokens.dtype)
        hidden = self.ln_pre(hidden)
        distill = None
        for index, block in enumerate(self.transformer):
            hidden = block(hidden)
            if distill_layer_index is not None and index == distill_layer_index:
                distill = self.clip_projector(hidden[:, 1:])
        hidden = self.ln_post(hidden[:, 1:])
        height, width = self.grid_size
        feature_map = hidden.transpose(1, 2).reshape(batch, -1, height, width)
        pixels = self.ffn(feature_map)  # (B, p*p*C, h, w), channels ordered (p1, p2, c)
        p, c = self.patch_size, self.out_channels
        pixels = pixels.reshape(batch, p, p, c, height, width).permute(0, 3, 4, 1, 5, 2)
        pixels = pixels.reshape(batch, c, height * p, width * p)
        return self.conv_out(pixels), distill


class BARVisionEncoder(nn.Module):
    """SigLIP2 (naflex) vision tower without pooling head, built from transformers' own SigLIP2 modules."""

    def __init__(self, config: Siglip2VisionConfig):
        super().__init__()
        self.embeddings = Siglip2VisionEmbeddings(config)
        self.encoder = Siglip2Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(pixel_values, spatial_shapes)
        hidden = self.encoder(inputs_embeds=hidden, attention_mask=None).last_hidden_state
        return self.post_layernorm(hidden)


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"`{name}` must be an int or a pair of ints, got {value!r}.")


#: `BARVQModel` arguments that must be positive ints.
_POSITIVE_INT_ARGUMENTS = (
    "in_channels",
    "out_channels",
    "patch_size",
    "num_bits",
    "encoder_hidden_size",
    "encoder_num_layers",
    "encoder_num_heads",
    "encoder_intermediate_size",
    "decoder_hidden_size",
    "decoder_num_layers",
    "decoder_num_heads",
    "decoder_intermediate_size",
    "distill_projector_hidden_size",
)


def _check_vq_arguments(arguments: dict, height: int, width: int) -> None:
    """`ValueError` naming the first `BARVQModel` argument that breaks its rule."""
    for name in _POSITIVE_INT_ARGUMENTS:
        value = arguments[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    patch_size = arguments["patch_size"]
    encoder_hidden_size, encoder_num_heads = arguments["encoder_hidden_size"], arguments["encoder_num_heads"]
    decoder_hidden_size, decoder_num_heads = arguments["decoder_hidden_size"], arguments["decoder_num_heads"]
    encoder_num_position_embeddings = arguments["encoder_num_position_embeddings"]
    distill_layer_index, decoder_num_layers = arguments["distill_layer_index"], arguments["decoder_num_layers"]
    distill_projector_dim = arguments["distill_projector_dim"]
    if height % patch_size or width % patch_size:
        raise ValueError(f"`sample_size` {(height, width)} must be a multiple of `patch_size` {patch_size}.")
    if encoder_hidden_size % encoder_num_heads:
        raise ValueError(
            f"`encoder_hidden_size` ({encoder_hidden_size}) must be divisible by `encoder_num_heads` "
            f"({encoder_num_heads})."
        )
    if decoder_hidden_size % decoder_num_heads:
        raise ValueError(
            f"`decoder_hidden_size` ({decoder_hidden_size}) must be divisible by `decoder_num_heads` "
            f"({decoder_num_heads})."
        )
    grid_side = math.isqrt(encoder_num_position_embeddings)
    if grid_side * grid_side != encoder_num_position_embeddings:
        raise ValueError(
            "`encoder_num_position_embeddings` must be a perfect square (a learned square grid), "
            f"got {encoder_num_position_embeddings}."
        )
    if distill_projector_dim is not None and not 0 <= distill_layer_index < decoder_num_layers:
        raise ValueError(
            f"`distill_layer_index` must be in [0, decoder_num_layers={decoder_num_layers}), "
            f"got {distill_layer_index}."
        )


class BARVQModel(ModelMixin, ConfigMixin):
    r"""The BAR-FSQ image tokenizer: image ↔ bits.

    Images (`(batch, channels, height, width)`, values in [-1, 1]) are cut into `patch_size` patches, encoded by a
    SigLIP2 ViT, projected to `num_bits` channels and binarized (one bit per channel, binary FSQ). The decoder maps
    ±1 codes back to pixels. The official models use `num_bits=16` (256 px) and `num_bits=10` (512 px).

    Args:
        sample_size (`int` or `tuple[int, int]`, *optional*, defaults to 256): image height/width in pixels.
        in_channels (`int`, *optional*, defaults to 3): input image channels.
        out_channels (`int`, *optional*, defaults to 3): output image channels.
        patch_size (`int`, *optional*, defaults to 16): encoder patch size; the token grid is `sample_size / patch_size`.
        num_bits (`int`, *optional*, defaults to 16): bits per token (= quantizer channels); codebook `2**num_bits`.
        encoder_hidden_size (`int`, *optional*, defaults to 1152): SigLIP2 width.
        encoder_num_layers (`int`, *optional*, defaults to 27): SigLIP2 depth.
        encoder_num_heads (`int`, *optional*, defaults to 16): SigLIP2 attention heads.
        encoder_intermediate_size (`int`, *optional*, defaults to 4304): SigLIP2 MLP hidden size.
        encoder_num_position_embeddings (`int`, *optional*, defaults to 256): learned position grid (a square, 16×16);
            resized bilinearly to the token grid as in SigLIP2 naflex.
        encoder_layer_norm_eps (`float`, *optional*, defaults to 1e-6): SigLIP2 LayerNorm epsilon.
        encoder_hidden_act (`str`, *optional*, defaults to `"gelu_pytorch_tanh"`): SigLIP2 MLP activation.
        decoder_hidden_size (`int`, *optional*, defaults to 1024): decoder width.
        decoder_num_layers (`int`, *optional*, defaults to 24): decoder depth.
        decoder_num_heads (`int`, *optional*, defaults to 16): decoder attention heads.
        decoder_intermediate_size (`int`, *optional*, defaults to 4096): decoder MLP hidden size (GELU).
        decoder_layer_norm_eps (`float`, *optional*, defaults to 1e-5): decoder LayerNorm epsilon.
        distill_projector_dim (`int`, *optional*): if set, adds the training-only `decoder.clip_projector` that maps
            decoder block `distill_layer_index` to features of this width (1152 in the authors' checkpoints).
        distill_layer_index (`int`, *optional*, defaults to 2): decoder block whose output feeds the projector.
        distill_projector_hidden_size (`int`, *optional*, defaults to 2048): hidden width of the projector's two
            SiLU MLP layers (2048 in the authors' checkpoints).

    Example:

    ```py
    >>> import torch
    >>> from bar_hf import BARVQModel

    >>> vq = BARVQModel(sample_size=32, patch_size=8, num_bits=6, encoder_hidden_size=32, encoder_num_layers=1,
    ...                 encoder_num_heads=2, encoder_intermediate_size=64, encoder_num_position_embeddings=16,
    ...                 decoder_hidden_size=32, decoder_num_layers=1, decoder_num_heads=2, decoder_intermediate_size=64)
    >>> bits = vq.encode_to_bits(torch.rand(2, 3, 32, 32) * 2 - 1)  # (2, 16, 6) int64
    >>> images = vq.decode_bits(bits).sample  # (2, 3, 32, 32)
    ```
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["BARDecoderBlock", "Siglip2EncoderLayer"]
    # SigLIP2 reads `position_embedding.weight` directly (resized to the token grid), bypassing the module call the
    # layerwise-casting hook wraps, so it stays in the compute dtype; the FSQ quantizer stays out too (float32 math).
    _skip_layerwise_casting_patterns = ["quantize", "position_embedding"]
    _keep_in_fp32_modules = ["quantize"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] = 256,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int = 16,
        num_bits: int = 16,
        encoder_hidden_size: int = 1152,
        encoder_num_layers: int = 27,
        encoder_num_heads: int = 16,
        encoder_intermediate_size: int = 4304,
        encoder_num_position_embeddings: int = 256,
        encoder_layer_norm_eps: float = 1e-6,
        encoder_hidden_act: str = "gelu_pytorch_tanh",
        decoder_hidden_size: int = 1024,
        decoder_num_layers: int = 24,
        decoder_num_heads: int = 16,
        decoder_intermediate_size: int = 4096,
        decoder_layer_norm_eps: float = 1e-5,
        distill_projector_dim: int | None = None,
        distill_layer_index: int = 2,
        distill_projector_hidden_size: int = 2048,
    ):
        super().__init__()
        height, width = _pair(sample_size, "sample_size")
        _check_vq_arguments(locals(), height, width)
        self.grid_size = (height // patch_size, width // patch_size)

        encoder_config = Siglip2VisionConfig(
            hidden_size=encoder_hidden_size,
            intermediate_size=encoder_intermediate_size,
            num_hidden_layers=encoder_num_layers,
            num_attention_heads=encoder_num_heads,
            num_channels=in_channels,
            num_patches=encoder_num_position_embeddings,
            patch_size=patch_size,
            hidden_act=encoder_hidden_act,
            layer_norm_eps=encoder_layer_norm_eps,
            attention_dropout=0.0,
            vision_use_head=False,
        )
        encoder_config._attn_implementation = "sdpa"
        self.encoder = BARVisionEncoder(encoder_config)
        self.quantize = BARBitQuantizer(encoder_hidden_size, num_bits, decoder_hidden_size)
        self.decoder = BARPixelDecoder(
            grid_size=self.grid_size,
            width=decoder_hidden_size,
            num_layers=decoder_num_layers,
            num_heads=decoder_num_heads,
            hidden=decoder_intermediate_size,
            patch_size=patch_size,
            out_channels=out_channels,
            eps=decoder_layer_norm_eps,
            distill_projector_dim=distill_projector_dim,
            distill_projector_hidden_size=distill_projector_hidden_size,
        )

    def to(self, *args, **kwargs):
        with _quantizer_dtype_warning_silenced():
            return super().to(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def num_tokens(self) -> int:
        """Number of latent tokens `L` per image."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def bit_budget(self) -> int:
        """Discrete latent capacity in bits: `L * num_bits` (4096 for the 256-px BAR-FSQ)."""
        return self.num_tokens * self.config.num_bits

    # ------------------------------------------------------------------------------------------------ checks
    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a (batch, channels, height, width) tensor, got {shape}.")
        height, width = _pair(self.config.sample_size, "sample_size")
        expected = (self.config.in_channels, height, width)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"`images` must have shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) for this model "
                f"(channels and `sample_size` from its config), got {tuple(images.shape)}."
            )
        if not images.is_floating_point():
            raise ValueError(f"`images` must be a float tensor in [-1, 1], got dtype {images.dtype}.")

    def _check_tokens(self, codes: torch.Tensor, name: str) -> None:
        expected = (self.num_tokens, self.config.num_bits)
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or tuple(codes.shape[1:]) != expected:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"`{name}` must have shape (batch, {expected[0]}, {expected[1]}), got {shape}.")

    # ------------------------------------------------------------------------------------------------ encode
    def patchify_images(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` → `(B, L, p*p*C)` patches in raster order, flattened (row-in-patch, col-in-patch, channel)
        as SigLIP2 naflex `pixel_values`."""
        batch, channels, height, width = images.shape
        p = self.config.patch_size
        x = images.reshape(batch, channels, height // p, p, width // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // p) * (width // p), p * p * channels)

    def encode(self, images: torch.Tensor, return_dict: bool = True) -> BARVQEncoderOutput | tuple:
        """Encode images in [-1, 1] → [`BARVQEncoderOutput`] (latents, ±1 codes, bits `(B, L, num_bits)`)."""
        self._check_images(images)
        pixel_values = self.patchify_images(images.to(self.dtype))
        spatial_shapes = torch.tensor([self.grid_size], device=images.device).expand(images.shape[0], 2)
        features = self.encoder(pixel_values, spatial_shapes)
        latents = self.quantize.project_in(features)
        quantized, bits = self.quantize.quantize_latents(latents)
        if not return_dict:
            return (latents, quantized, bits)
        return BARVQEncoderOutput(latents=latents, quantized=quantized, bits=bits)

    def encode_to_bits(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → int64 bits `(B, L, num_bits)`."""
        return self.encode(images).bits

    # ------------------------------------------------------------------------------------------------ decode
    def _decode_codes(self, codes: torch.Tensor, distill: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.quantize.project_out(codes).to(self.dtype)
        layer = self.config.distill_layer_index if distill else None
        return self.decoder(tokens, distill_layer_index=layer)

    def decode(
        self, codes: torch.Tensor, force_not_quantize: bool = False, return_dict: bool = True
    ) -> DecoderOutput | tuple:
        """Decode `(B, L, num_bits)` latents to images in [-1, 1].

        Args:
            codes (`torch.Tensor`): pre-quantization latents (as returned by `encode(...).latents`), quantized first;
                or, with `force_not_quantize=True`, codes already in {-1, +1} (used as they are).
            force_not_quantize (`bool`, *optional*, defaults to `False`): skip quantization.
            return_dict (`bool`, *optional*, defaults to `True`): return a `DecoderOutput` instead of a tuple.
        """
        self._check_tokens(codes, "codes")
        if not codes.is_floating_point():
            raise ValueError(
                f"`codes` must be float latents or ±1 codes, got dtype {codes.dtype}; use `decode_bits` for 0/1 bits."
            )
        if not force_not_quantize:
            codes, _ = self.quantize.quantize_latents(codes)
        sample, _ = self._decode_codes(codes)
        if not return_dict:
            return (sample, None)
        return DecoderOutput(sample=sample)

    def decode_bits(self, bits: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Decode int bits `(B, L, num_bits)` (or the authors' flat `(B, L * num_bits)`) to images in [-1, 1]."""
        if isinstance(bits, torch.Tensor) and bits.dim() == 2 and bits.shape[1] == self.bit_budget:
            bits = bits.reshape(bits.shape[0], self.num_tokens, self.config.num_bits)
        self._check_tokens(bits, "bits")
        check_bits(bits)
        codes = 2 * bits.to(torch.float32) - 1
        return self.decode(codes, force_not_quantize=True, return_dict=return_dict)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Encode → quantize (straight-through) → decode; gradients reach the encoder through the STE."""
        encoded = self.encode(sample)
        reconstruction, _ = self._decode_codes(encoded.quantized)
        if not return_dict:
            return (reconstruction, None)
        return DecoderOutput(sample=reconstruction)

    def forward_with_distillation(self, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training helper: (reconstruction, projector features of decoder block `distill_layer_index`, bits)."""
        if self.config.distill_projector_dim is None:
            raise ValueError(
                "`distill_projector_dim` is None in this model's config; there is no distillation branch."
            )
        encoded = self.encode(sample)
        reconstruction, features = self._decode_codes(encoded.quantized, distill=True)
        return reconstruction, features, encoded.bits
