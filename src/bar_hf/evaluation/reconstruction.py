"""Reconstruction quality of a tokenizer: MSE, PSNR, reconstruction FID, distinct tokens and, with a Fashion-MNIST
classifier, its accuracy on the reconstructions and its logit MSE (`examples/tokenizer/evaluate_tokenizer.py` and the
head study in `research/` use it)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import ReferenceStatistics, compute_metrics, compute_reference_statistics


def to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """`(N, C, H, W)` in [-1, 1] (C = 1 or 3) → uint8 `(N, H, W, 3)`."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def reconstruction_metrics(
    vq,
    images: torch.Tensor,
    batch_size: int,
    reference,
    feature_extractor=None,
    classifier=None,
    labels=None,
) -> dict:
    """MSE, PSNR, rFID and distinct tokens of `vq`'s (a `BARVQModel`) reconstructions of `images` (`(N, C, H, W)` in [-1, 1]).

    `reference`: the originals' statistics (`ReferenceStatistics`), or an `.npz` cache path (or None) in which they are
    computed from `images` once. `feature_extractor`: as `bar_hf.evaluation.compute_metrics` (default Inception).
    `classifier` (with the images' `labels`): also its accuracy on reconstructions and originals and its logit MSE."""
    reconstructions, tokens = [], []
    for start in range(0, len(images), batch_size):
        bits = vq.encode_to_bits(images[start : start + batch_size])
        tokens.append(bits.reshape(-1, bits.shape[-1]))
        reconstructions.append(vq.decode_bits(bits).sample.clamp(-1, 1))
    reconstructed = torch.cat(reconstructions)
    mse = (reconstructed - images).pow(2).mean().item()
    used = torch.unique(torch.cat(tokens), dim=0).shape[0]
    if not isinstance(reference, ReferenceStatistics):
        reference = compute_reference_statistics(to_uint8_rgb(images), reference, feature_extractor)
    fid = compute_metrics(
        generated_images=to_uint8_rgb(reconstructed), reference_stats=reference, feature_extractor=feature_extractor
    )
    result = {
        "num_images": len(images),
        "mse": mse,
        "psnr_db": 10 * math.log10(4 / mse),
        "rfid": fid["fid"],
        "tokens_used": used,
        "feature_source": fid["feature_source"],
    }
    if classifier is not None:
        result.update(classifier_metrics(classifier, images, reconstructed, labels, batch_size))
    return result


@torch.no_grad()
def classifier_metrics(classifier, images, reconstructed, labels, batch_size: int) -> dict:
    """Accuracy of a 32 px grey Fashion-MNIST classifier on the reconstructions and the originals, and the MSE of its
    logits between the two (the perceptual term of the tokenizer fine-tune)."""

    def logits(x: torch.Tensor) -> torch.Tensor:
        x = x[:, :1]
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
        return torch.cat([classifier(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    rec, real = logits(reconstructed), logits(images)
    return {
        "classifier_accuracy": (rec.argmax(-1) == labels).float().mean().item(),
        "classifier_accuracy_on_real": (real.argmax(-1) == labels).float().mean().item(),
        "logit_mse": (rec - real).pow(2).mean().item(),
    }
