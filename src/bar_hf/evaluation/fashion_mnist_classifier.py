"""The small Fashion-MNIST CNN that measures class fidelity (the accuracy of a classifier trained on the real data on
images generated for each requested class) and serves as a logit-loss network for tokenizer fine-tuning.

Trained by `examples/fashion_mnist/fashion_mnist_classifier.py`; `tests/data/fmnist_classifier.safetensors` is one.
Images go through the preprocessing of the bundled model's training data (28 → 32 px bicubic, [-1, 1]).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from ..training.data import FASHION_MNIST_CLASSES, image_to_tensor


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


@torch.no_grad()
def per_class_accuracy(model: SmallCNN, images_uint8: np.ndarray, labels: np.ndarray) -> dict:
    """`{"mean": accuracy, <class name>: accuracy of that class, ...}` of `model` on uint8 images."""
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
    """A [`SmallCNN`] from its `.safetensors` state dict, in eval mode."""
    model = SmallCNN()
    model.load_state_dict(load_file(path))
    return model.eval()
