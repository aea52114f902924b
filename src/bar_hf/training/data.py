"""Training data: Fashion-MNIST and `datasets` image datasets, pixel conversion and checkpointable augmentation."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
#: Where Debian's `dataset-fashion-mnist` installs the IDX files: the default of the scripts' `--fashion_mnist_dir`
#: flags only (every function here takes the folder as an argument; none defaults to it).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_fashion_mnist(split: str, root: str | os.PathLike):
    """Read the Fashion-MNIST IDX files of `split` (`"train"` or `"test"`) in the folder `root` (e.g. Debian's
    `dataset-fashion-mnist`, [`DEBIAN_FASHION_MNIST_DIR`]): uint8 images `(N, 28, 28)` and labels `(N,)`."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    root = Path(root)
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    if not images_path.exists():
        raise FileNotFoundError(
            f"Fashion-MNIST not found at {root}; install it with `apt-get install dataset-fashion-mnist`."
        )
    return _read_idx(images_path), _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def fashion_mnist_dataset(split: str, root: str | os.PathLike):
    """Fashion-MNIST (the IDX files in `root`) as a `datasets.Dataset` with `image` (PIL, mode L) and `label`
    (ClassLabel, standard ids)."""
    import datasets

    images, labels = read_fashion_mnist(split, root)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES)}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(x) for x in images], "label": labels.tolist()}, features=features
    )


def dummy_image_dataset(num_images: int, size: int, channels: int = 3, num_classes: int = 3, seed: int = 0):
    """Random images with labels (smoke tests, `--use_dummy_data`)."""
    import datasets

    rng = np.random.default_rng(seed)
    mode = "L" if channels == 1 else "RGB"
    shape = (size, size) if channels == 1 else (size, size, 3)
    images = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode) for _ in range(num_images)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"class_{i}" for i in range(num_classes)])}
    )
    labels = [i % num_classes for i in range(num_images)]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    split: str = "train",
    streaming: bool = False,
    cache_dir: str | None = None,
    fashion_mnist_dir: str | os.PathLike | None = None,
):
    """A `datasets` dataset of images: a Hub name, a folder saved with `save_to_disk`, the special name
    `fashion_mnist_local` (the IDX files in `fashion_mnist_dir`, required with that name), or an `imagefolder`
    directory (`train_data_dir`)."""
    import datasets

    if train_data_dir is not None:
        return datasets.load_dataset(
            "imagefolder", data_dir=train_data_dir, split=split, streaming=streaming, cache_dir=cache_dir
        )
    if dataset_name is None:
        raise ValueError("one of `dataset_name` or `train_data_dir` is required.")
    if dataset_name == "fashion_mnist_local":
        if fashion_mnist_dir is None:
            raise ValueError("`fashion_mnist_local` needs `fashion_mnist_dir`, the folder of the IDX files.")
        dataset = fashion_mnist_dataset("test" if split == "test" else "train", fashion_mnist_dir)
        return dataset.to_iterable_dataset() if streaming else dataset
    if os.path.isdir(dataset_name) and os.path.exists(os.path.join(dataset_name, "dataset_info.json")):
        loaded = datasets.load_from_disk(dataset_name)
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    return datasets.load_dataset(
        dataset_name, dataset_config_name, split=split, streaming=streaming, cache_dir=cache_dir
    )


def image_to_tensor(image: Image.Image, resolution: int, channels: int) -> torch.Tensor:
    """PIL image → `(channels, resolution, resolution)` float tensor in [-1, 1]: resize the shorter edge (bicubic,
    antialiased) and center-crop."""
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    if scale != 1:
        image = image.resize(
            (max(resolution, round(width * scale)), max(resolution, round(height * scale))), Image.BICUBIC
        )
    width, height = image.size
    left, top = (width - resolution) // 2, (height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if channels == 1:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


class AugmentationState:
    """A checkpointable `torch.Generator` for data augmentation (register it with
    `accelerator.register_for_checkpointing`)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def random_crop_flip(images: torch.Tensor, crop: int | None, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Batch augmentation on `(B, C, H, W)`: optional random crop to `crop` pixels and random horizontal flip."""
    batch, _, height, width = images.shape
    if crop is not None and (crop < height or crop < width):
        tops = torch.randint(0, height - crop + 1, (batch,), generator=generator).tolist()
        lefts = torch.randint(0, width - crop + 1, (batch,), generator=generator).tolist()
        images = torch.stack([img[:, t : t + crop, s : s + crop] for img, t, s in zip(images, tops, lefts)])
    if flip:
        mask = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(mask[:, None, None, None].to(images.device), images.flip(-1), images)
    return images
