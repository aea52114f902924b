"""Perceptual loss terms of the BAR-FSQ tokenizer objective (docs/method.md §2.6, "Perc" = `lpips-convnext_s-1.0-0.1`).

    L_G ⊃ 1.1 · Perc(x, x̂),   Perc = (1.0 · LPIPS_vgg(x, x̂) + 0.1 · MSE(ConvNeXt-S logits(x̂), logits(x))) / 1.1

Images and reconstructions are in [-1, 1]. Every backbone is frozen; gradients flow only into `x̂`.

* [`LPIPSLoss`] wraps the `lpips` package (its wheel ships the VGG16 linear calibration weights
  `lpips/weights/v0.1/vgg.pth`; the VGG16 trunk is torchvision's ImageNet model, downloaded by torchvision at first
  use). `pretrained_backbone=False` uses a random trunk, with a warning: the loss is then not perceptual.
* [`ClassifierLogitLoss`] is the MSE between the logits of a frozen classifier on `x̂` and on `x` (the authors:
  ConvNeXt-S ImageNet logits at 224 px, bicubic + antialias resize, ImageNet normalisation). The classifier is any
  module returning logits or an output with `.logits` (e.g. `AutoModelForImageClassification`).
* [`PerceptualLoss`] combines them as the weighted average above and returns each term for logging.

The adversarial term (DINO-feature discriminator) is in `bar_hf.training.discriminator`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_normalize",
    "resize_images",
    "LPIPSLoss",
    "ClassifierLogitLoss",
    "PerceptualLoss",
    "load_image_classifier",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grayscale `(B, 1, H, W)` → 3 identical channels; 3-channel input unchanged."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}.")
    return images


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (1 or 3 channels) → 3 channels, mapped to [0, 1], ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype)[None, :, None, None]
    return ((to_rgb(images) + 1) / 2 - mean) / std


def resize_images(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Square resize (no-op at the same size). `mode="bicubic"` uses antialiasing (the authors' logit-loss resize);
    `mode="area_or_bicubic"` is area when shrinking, bicubic otherwise (the authors' discriminator resize)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    if mode == "area_or_bicubic":
        mode = "area" if max(images.shape[-2:]) > size else "bicubic"
    if mode == "area":
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode=mode, align_corners=False, antialias=mode == "bicubic")


class LPIPSLoss(nn.Module):
    """LPIPS (VGG16 trunk, v0.1 linear calibration weights) from the `lpips` package, averaged over the batch.

    Args:
        pretrained_backbone: load torchvision's ImageNet VGG16 trunk (downloaded at first use). `False`: a randomly
            initialised trunk (offline smoke tests) — a warning says the loss is then not perceptual.

    Raises `ImportError` (with the install command) when `lpips` or a torchvision build matching the installed torch
    cannot be imported.
    """

    def __init__(self, pretrained_backbone: bool = True):
        super().__init__()
        try:
            import lpips
        except Exception as error:  # ImportError, or torchvision built for another torch (RuntimeError on import)
            raise ImportError(
                "the LPIPS loss needs the `lpips` package and a torchvision build matching your torch "
                f"(`pip install lpips torchvision`; torchvision's CUDA wheels do not load with a CPU-only torch): {error}"
            ) from error
        if not pretrained_backbone:
            logger.warning(
                "LPIPS with a RANDOMLY INITIALISED VGG16 trunk: the loss is NOT perceptual (offline/test use only)."
            )
        self.lpips = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=not pretrained_backbone, verbose=False)
        self.lpips.eval().requires_grad_(False)

    def train(self, mode: bool = True):  # the trunk stays in eval mode (its dropout layers are off)
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lpips(to_rgb(reconstruction), to_rgb(target)).mean()


class ClassifierLogitLoss(nn.Module):
    """MSE between a frozen classifier's logits on the reconstruction and on the target (target logits without
    gradient).

    Args:
        classifier: a module mapping `(B, C, S, S)` images to logits (or to an output with `.logits`).
        image_size: the classifier's input size `S` (the authors: 224); inputs are resized bicubic + antialias.
        normalization: `"imagenet"` (3 channels, ImageNet mean/std — the authors' ConvNeXt) or `"none"` (the images
            stay in [-1, 1] with their own channels, e.g. the bundled Fashion-MNIST classifier).
    """

    def __init__(self, classifier: nn.Module, image_size: int = 224, normalization: str = "imagenet"):
        super().__init__()
        if normalization not in ("imagenet", "none"):
            raise ValueError(f"`normalization` must be 'imagenet' or 'none', got {normalization!r}.")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"`image_size` must be an integer >= 1, got {image_size!r}.")
        self.classifier = classifier.eval().requires_grad_(False)
        self.image_size = image_size
        self.normalization = normalization

    def train(self, mode: bool = True):  # frozen: always in eval mode
        super().train(mode)
        self.classifier.eval()
        return self

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        images = resize_images(images.float(), self.image_size)
        if self.normalization == "imagenet":
            images = imagenet_normalize(images)
        output = self.classifier(images)
        return (output.logits if hasattr(output, "logits") else output).float()

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_logits = self.logits(target)
        return F.mse_loss(self.logits(reconstruction), target_logits)


class PerceptualLoss(nn.Module):
    """`(lpips_weight · LPIPS + logit_weight · logit MSE) / (lpips_weight + logit_weight)` (the authors: 1.0 and 0.1;
    the script multiplies the result by `--perceptual_weight`, 1.1 in their recipe). A term whose module is None is
    left out (and its weight too). `forward` returns `(loss, {"lpips": ..., "logit": ...})` for logging."""

    def __init__(
        self,
        lpips: LPIPSLoss | None = None,
        logit: ClassifierLogitLoss | None = None,
        lpips_weight: float = 1.0,
        logit_weight: float = 0.1,
    ):
        super().__init__()
        if lpips is None and logit is None:
            raise ValueError("PerceptualLoss needs at least one of `lpips` or `logit`.")
        self.lpips, self.logit = lpips, logit
        self.weights = {"lpips": lpips_weight if lpips is not None else 0.0}
        self.weights["logit"] = logit_weight if logit is not None else 0.0
        if sum(self.weights.values()) <= 0:
            raise ValueError(f"the perceptual term weights must sum to > 0, got {self.weights}.")

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = {}
        if self.lpips is not None:
            terms["lpips"] = self.lpips(reconstruction, target)
        if self.logit is not None:
            terms["logit"] = self.logit(reconstruction, target)
        total = sum(self.weights[name] * value for name, value in terms.items()) / sum(self.weights.values())
        return total, terms


def load_image_classifier(name_or_path: str) -> nn.Module:
    """A frozen `transformers` image classifier (`AutoModelForImageClassification`: a Hub id such as
    `facebook/convnext-small-224`, or a local folder). Raises `OSError` when it cannot be loaded (offline, typo)."""
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(name_or_path).eval().requires_grad_(False)
