#!/usr/bin/env python
"""Sample from a `BARPipeline` and score it against a reference image set in one command (JSON report).

    accelerate launch examples/sampling/evaluate_bar.py --model runs/bar/pipeline --reference_dataset fashion_mnist_local \
        --reference_split test --num_images_per_class 100 --output_dir runs/eval

Metrics (`bar_hf.evaluation`): FID, Inception Score (when the feature network exposes logits) and k-NN
precision/recall (k = 3) with the FID Inception-v3 features; the report records the feature weights' source.
With `--classifier` (see `examples/fashion_mnist/fashion_mnist_classifier.py`) it also reports, per class, how often a classifier trained on
the real data recognizes the requested class in the generated images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import sample_bar  # the sibling script (its folder is on sys.path when this one runs)
from PIL import Image

from bar_hf.evaluation.fashion_mnist_classifier import load_classifier, per_class_accuracy
from bar_hf.evaluation.metrics import compute_metrics
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, load_image_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--reference_dataset", default=None, help="Hub name, save_to_disk folder or fashion_mnist_local"
    )
    parser.add_argument("--reference_data_dir", default=None, help="an imagefolder of reference images")
    parser.add_argument("--reference_split", default="train")
    parser.add_argument(
        "--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="IDX files read by fashion_mnist_local"
    )
    parser.add_argument("--reference_image_column", default="image")
    parser.add_argument("--max_reference_images", type=int, default=None)
    parser.add_argument("--reference_stats_cache", default=None, help=".npz cache of the reference statistics")
    parser.add_argument(
        "--classifier", default=None, help="Fashion-MNIST classifier (.safetensors) for class accuracy"
    )
    parser.add_argument("--feature_batch_size", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="device of the Inception network")
    args, rest = parser.parse_known_args(argv)
    if not (args.reference_dataset or args.reference_data_dir or args.reference_stats_cache):
        parser.error("one of --reference_dataset, --reference_data_dir or --reference_stats_cache is required")
    args.sample_args = sample_bar.parse_args(
        rest
        + ["--output_dir", str(Path(args.output_dir) / "samples")]
        + (["--model", args.model] if args.model else [])
    )
    return args


def reference_images(args: argparse.Namespace, size: tuple[int, int]) -> np.ndarray | None:
    """Reference images as uint8 RGB at the generated size (bicubic), as the model's training data were prepared."""
    if not (args.reference_dataset or args.reference_data_dir):
        return None
    dataset = load_image_dataset(
        args.reference_dataset,
        None,
        args.reference_data_dir,
        split=args.reference_split,
        fashion_mnist_dir=args.fashion_mnist_dir,
    )
    count = len(dataset) if args.max_reference_images is None else min(len(dataset), args.max_reference_images)
    images = []
    for row in dataset.select(range(count)):
        image = row[args.reference_image_column].convert("RGB")
        if image.size != size:
            image = image.resize(size, Image.BICUBIC)
        images.append(np.asarray(image, dtype=np.uint8))
    return np.stack(images)


def main(args: argparse.Namespace) -> dict | None:
    summary = sample_bar.main(args.sample_args)
    state = sample_bar.distributed_state()
    if not state.is_main_process:
        return None
    image_dir = Path(summary["output_dir"])
    labels = json.loads((image_dir.parent / "labels.json").read_text())
    names = sorted(labels)
    generated = np.stack([sample_bar.to_uint8_rgb(Image.open(image_dir / name)) for name in names])
    reference = reference_images(args, (generated.shape[2], generated.shape[1]))
    metrics = compute_metrics(
        generated_images=generated,
        reference_images=reference,
        reference_stats_cache=args.reference_stats_cache,
        batch_size=args.feature_batch_size,
        device=args.device,
    )
    report = {"model": args.model or "bundled", "num_generated": len(generated), "metrics": metrics}
    if args.classifier:
        label_array = np.array([labels[name] for name in names])
        report["classifier_accuracy"] = per_class_accuracy(load_classifier(args.classifier), generated, label_array)
    path = Path(args.output_dir) / "report.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main(parse_args())
