#!/usr/bin/env python
"""A small CNN trained on the real Fashion-MNIST training set, used to measure class fidelity of generated samples
(accuracy of the classifier on images generated for each requested class).

    python examples/fashion_mnist_classifier.py --output runs/fmnist_classifier.safetensors --epochs 3

Images go through the same preprocessing as the bundled model's training data (28 → 32 px bicubic, [-1, 1]).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from bar_hf.training.data import FASHION_MNIST_CLASSES, image_to_tensor, read_fashion_mnist


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def preprocess(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 `(N, H, W)` or `(N, H, W, C)` → `(N, 1, 32, 32)` in [-1, 1], as the bundled model's data."""
    if images_uint8.ndim == 4:
        images_uint8 = images_uint8[..., 0] if images_uint8.shape[-1] in (1, 3) else images_uint8
    return torch.stack([image_to_tensor(Image.fromarray(x), 32, 1) for x in images_uint8])


def train(epochs: int = 3, batch_size: int = 128, seed: int = 0) -> tuple[SmallCNN, float]:
    torch.manual_seed(seed)
    images, labels = read_fashion_mnist("train")
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
    test_images, test_labels = read_fashion_mnist("test")
    accuracy = per_class_accuracy(model, test_images, test_labels)["mean"]
    return model, accuracy


@torch.no_grad()
def per_class_accuracy(model: SmallCNN, images_uint8: np.ndarray, labels: np.ndarray) -> dict:
    model.eval()
    predictions = torch.cat(
        [model(preprocess(images_uint8[i : i + 500])).argmax(-1) for i in range(0, len(labels), 500)]
    )
    labels = torch.as_tensor(labels)
    result = {"mean": float((predictions == labels).float().mean())}
    for class_id, name in enumerate(FASHION_MNIST_CLASSES):
        mask = labels == class_id
        if mask.any():
            result[name] = float((predictions[mask] == class_id).float().mean())
    return result


def load_classifier(path: str) -> SmallCNN:
    model = SmallCNN()
    model.load_state_dict(load_file(path))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help=".safetensors path")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, accuracy = train(args.epochs, seed=args.seed)
    save_file(model.state_dict(), args.output)
    print(json.dumps({"test_accuracy": accuracy, "output": args.output}))


if __name__ == "__main__":
    main()
