#!/usr/bin/env python
"""Train the small Fashion-MNIST CNN (`bar_hf.evaluation.fashion_mnist_classifier.SmallCNN`) on the real training set;
it measures the class fidelity of generated samples and serves as the tokenizer fine-tune's logit-loss network.

    python examples/fashion_mnist/fashion_mnist_classifier.py --output runs/fmnist_classifier.safetensors --epochs 3

Images go through the same preprocessing as the bundled model's training data (28 → 32 px bicubic, [-1, 1]).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from bar_hf.evaluation.fashion_mnist_classifier import SmallCNN, per_class_accuracy, preprocess
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, read_fashion_mnist


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--output", required=True, help=".safetensors path")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="folder of the IDX .gz files")
    return parser


def train(root, epochs: int = 3, batch_size: int = 128, seed: int = 0) -> tuple[SmallCNN, float]:
    torch.manual_seed(seed)
    images, labels = read_fashion_mnist("train", root)
    x, y = preprocess(images), torch.from_numpy(labels)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test_images, test_labels = read_fashion_mnist("test", root)
    accuracy = per_class_accuracy(model, test_images, test_labels)["mean"]
    return model, accuracy


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    model, accuracy = train(args.fashion_mnist_dir, args.epochs, seed=args.seed)
    save_file(model.state_dict(), args.output)
    print(json.dumps({"test_accuracy": accuracy, "output": args.output}))


if __name__ == "__main__":
    main()
