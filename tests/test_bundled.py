"""The model shipped inside the package (trained by this project on real Fashion-MNIST images)."""

from pathlib import Path

import numpy as np
import torch

from bar_hf import BARPipeline, bundled_model_path, cli
from bar_hf.training.data import FASHION_MNIST_CLASSES

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = Path(__file__).parent / "data" / "fmnist_classifier.safetensors"


def load_pipe():
    pipe = BARPipeline.from_pretrained(bundled_model_path())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_bundled_pipeline_loads_offline():
    pipe = load_pipe()
    assert pipe.id2label == dict(enumerate(FASHION_MNIST_CLASSES))
    assert pipe.vqvae.config.num_bits == pipe.transformer.config.num_bits == 10
    assert tuple(pipe.vqvae.grid_size) == (8, 8)
    size = sum(f.stat().st_size for f in Path(bundled_model_path()).rglob("*") if f.is_file())
    assert size < 40 * 2**20  # a few MB inside the wheel


def test_bundled_samples_are_recognizable_garments():
    """A small CNN trained on the real Fashion-MNIST training set (examples/fashion_mnist/fashion_mnist_classifier.py,
    87.9 % test accuracy) recognizes the requested class in most generated images."""
    from bar_hf.evaluation.fashion_mnist_classifier import load_classifier, preprocess

    pipe = load_pipe()
    classes = ["Trouser", "Sneaker", "Bag", "Dress"]
    per_class = 8
    images = pipe(
        classes,
        num_images_per_label=per_class,
        generator=[torch.Generator().manual_seed(100 + i) for i in range(len(classes) * per_class)],
        output_type="np",
    ).images
    assert images.shape == (32, 32, 32, 1)
    pixels = (images[..., 0] * 255).round().astype(np.uint8)
    with torch.no_grad():
        predicted = load_classifier(str(CLASSIFIER))(preprocess(pixels)).argmax(-1).numpy()
    wanted = np.repeat([FASHION_MNIST_CLASSES.index(c) for c in classes], per_class)
    assert (predicted == wanted).mean() >= 0.75


def test_demo_command(tmp_path):
    out = tmp_path / "demo.png"
    assert cli.main(["demo", "--num-images-per-label", "2", "--output", str(out), "--quiet"]) == 0
    from PIL import Image

    grid = Image.open(out)
    assert grid.width > 2 * 96 and grid.height >= 4 * 96  # four labelled rows of upscaled 32 px images
