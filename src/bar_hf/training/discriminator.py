"""The adversarial term of the BAR-FSQ tokenizer objective (docs/method.md §2.6): a frozen DINO ViT-S/8 with five
trainable spectral-norm heads, hinge loss, fixed weight 0.05 from step 100k (the weight and start step are the
training script's flags).

* Backbone: a `transformers` `ViTModel` (the authors: DINO ViT-S/8 — `facebook/dino-vits8` on the Hub), frozen, with
  the key bias of every attention layer zeroed as the authors do (it does not change the attention softmax). Token
  features are taken before the blocks (the embeddings output) and after blocks 2, 5, 8 and 11, each as the patch
  tokens plus the CLS token ("CLS-added").
* Heads (one per feature map; StyleGAN-T / RAE design): SpectralNorm Conv1d(k=1) + BatchNormLocal (virtual batch 8)
  + LeakyReLU 0.2 → residual [SN Conv1d(k=9, circular padding) + BatchNormLocal + LeakyReLU] scaled by 1/√2 →
  SN Conv1d(→1). The logits of all heads are concatenated: `(B, 5 · num_patches)`.
* Input: images in [-1, 1] → ImageNet normalisation; if larger than `image_size`, with probability 0.5 a random crop
  of `image_size`, otherwise a resize (area when shrinking, bicubic when enlarging).

Spectral norm is `torch.nn.utils.parametrizations.spectral_norm` (its power-iteration vectors are buffers, so they are
saved and restored with the model).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .losses import imagenet_normalize, resize_images

logger = logging.getLogger(__name__)

__all__ = [
    "DINO_HOOK_LAYERS",
    "BatchNormLocal",
    "DiscriminatorHead",
    "DINODiscriminator",
    "random_dino_vits8",
    "hinge_discriminator_loss",
    "generator_adversarial_loss",
    "quantize_to_8_bits",
]

#: Blocks after which the heads read the token features (plus one head before the blocks).
DINO_HOOK_LAYERS = (2, 5, 8, 11)


class BatchNormLocal(nn.Module):
    """Batch normalisation over "virtual batches" of `virtual_batch_size` samples (no running statistics): the batch
    is split into `ceil(B / virtual_batch_size)` equal groups, each normalised over its samples and positions."""

    def __init__(self, num_features: int, virtual_batch_size: int = 8, eps: float = 1e-5):
        super().__init__()
        self.virtual_batch_size, self.eps = virtual_batch_size, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        groups = math.ceil(batch / self.virtual_batch_size)
        if batch % groups:
            raise ValueError(
                f"BatchNormLocal splits a batch of {batch} into {groups} equal groups of at most "
                f"{self.virtual_batch_size}: use a batch size divisible by {groups}."
            )
        grouped = x.reshape(groups, batch // groups, channels, length)
        mean = grouped.mean(dim=(1, 3), keepdim=True)
        var = grouped.var(dim=(1, 3), unbiased=False, keepdim=True)
        grouped = (grouped - mean) / torch.sqrt(var + self.eps)
        return grouped.reshape(batch, channels, length) * self.weight[None, :, None] + self.bias[None, :, None]


def _block(channels: int, kernel_size: int, virtual_batch_size: int) -> nn.Sequential:
    conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, padding_mode="circular")
    return nn.Sequential(spectral_norm(conv), BatchNormLocal(channels, virtual_batch_size), nn.LeakyReLU(0.2))


class DiscriminatorHead(nn.Module):
    """One head on `(B, channels, tokens)` features → `(B, tokens)` logits."""

    def __init__(self, channels: int, virtual_batch_size: int = 8):
        super().__init__()
        self.block = _block(channels, 1, virtual_batch_size)
        self.residual = _block(channels, 9, virtual_batch_size)
        self.out = spectral_norm(nn.Conv1d(channels, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.block(features)
        hidden = (self.residual(hidden) + hidden) / math.sqrt(2)
        return self.out(hidden).squeeze(1)


def random_dino_vits8(image_size: int = 224):
    """A randomly initialised ViT-S/8 (hidden 384, 12 layers, 6 heads, patch 8): offline/test stand-in for DINO."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=8,
        image_size=image_size, layer_norm_eps=1e-6,
    )  # fmt: skip
    return ViTModel(config, add_pooling_layer=False)


class DINODiscriminator(nn.Module):
    """Frozen ViT backbone + trainable heads on its token features (see the module docstring).

    Args:
        backbone: a `transformers` `ViTModel` (frozen here; its attention key biases are zeroed).
        image_size: the size images are cropped/resized to before the backbone (the authors: 224; a multiple of the
            patch size; the position embeddings are interpolated when it differs from the backbone's).
        hook_layers: blocks after which features are read (the authors: 2, 5, 8, 11; plus the embeddings output).
        virtual_batch_size: BatchNormLocal group size (the authors: 8).
        pretrained: False when `backbone` is randomly initialised: a warning says the discriminator features are
            then not DINO features.
    """

    def __init__(self, backbone, image_size: int = 224, hook_layers=DINO_HOOK_LAYERS, virtual_batch_size: int = 8,
                 pretrained: bool = True):  # fmt: skip
        super().__init__()
        patch = backbone.config.patch_size
        if image_size % patch:
            raise ValueError(
                f"the discriminator image size must be a multiple of the patch size {patch}, got {image_size}."
            )
        layers = backbone.config.num_hidden_layers
        if any(not 0 <= i < layers for i in hook_layers):
            raise ValueError(f"hook layers {tuple(hook_layers)} do not exist in a backbone with {layers} blocks.")
        if not pretrained:
            logger.warning(
                "the discriminator backbone is RANDOMLY INITIALISED: its features are not DINO features "
                "(offline/test use only)."
            )
        with torch.no_grad():
            for name, module in backbone.named_modules():  # `k_proj` (transformers 5) or `attention.key` (older)
                if name.endswith(("k_proj", "attention.key")) and getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        self.backbone = backbone.eval().requires_grad_(False)
        self.image_size, self.hook_layers = image_size, tuple(hook_layers)
        channels = backbone.config.hidden_size
        self.heads = nn.ModuleList(
            [DiscriminatorHead(channels, virtual_batch_size) for _ in range(len(self.hook_layers) + 1)]
        )

    def train(self, mode: bool = True):  # the frozen backbone stays in eval mode (dropout off)
        super().train(mode)
        self.backbone.eval()
        return self

    def prepare_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[-1, 1] → ImageNet-normalised `image_size` input: larger images are randomly cropped with probability 0.5
        (one crop position per batch), resized otherwise; smaller ones are resized (bicubic)."""
        images = imagenet_normalize(images.float())
        size, (height, width) = self.image_size, images.shape[-2:]
        if min(height, width) > size and torch.rand((), generator=generator).item() < 0.5:
            top = int(torch.randint(0, height - size + 1, (), generator=generator))
            left = int(torch.randint(0, width - size + 1, (), generator=generator))
            return images[..., top : top + size, left : left + size]
        return resize_images(images, size, mode="area_or_bicubic")

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] → logits `(B, num_heads · num_patches)`."""
        pixel_values = self.prepare_images(images, generator)
        output = self.backbone(pixel_values, interpolate_pos_encoding=True, output_hidden_states=True)
        states = [output.hidden_states[0]] + [output.hidden_states[i + 1] for i in self.hook_layers]
        logits = []
        for head, state in zip(self.heads, states):
            tokens = state[:, 1:] + state[:, :1]  # patch tokens + CLS token
            logits.append(head(tokens.transpose(1, 2)))
        return torch.cat(logits, dim=1)


def quantize_to_8_bits(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and round to the 256 levels of an 8-bit image (what the discriminator sees as fake)."""
    return torch.round((images.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """`0.5 · (mean relu(1 − D(x)) + mean relu(1 + D(x̂_q)))`."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """`−mean D(x̂)` (no adaptive weight; the script multiplies it by `--adversarial_weight`)."""
    return -logits_fake.mean()
