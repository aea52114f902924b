"""Helpers shared by the training scripts in `examples/` (data loading, augmentation, schedules, checkpoints).

Everything random in training runs on the main process from generators whose state is checkpointed, so a run
resumed from a checkpoint continues bit-for-bit like an uninterrupted one (CPU, fixed seeds).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "read_fashion_mnist",
    "fashion_mnist_dataset",
    "dummy_image_dataset",
    "load_image_dataset",
    "image_to_tensor",
    "AugmentationState",
    "random_crop_flip",
    "cosine_with_warmup",
    "JSONLinesTracker",
    "list_checkpoints",
    "prune_checkpoints",
    "resolve_resume_checkpoint",
]

#: Fashion-MNIST class names in the dataset's own id order (0..9).
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
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_fashion_mnist(split: str = "train", root: str | os.PathLike = FASHION_MNIST_DIR):
    """Read Fashion-MNIST IDX files (Debian's `dataset-fashion-mnist`): uint8 images `(N, 28, 28)` and labels `(N,)`."""
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


def fashion_mnist_dataset(split: str = "train", root: str | os.PathLike = FASHION_MNIST_DIR):
    """Fashion-MNIST as a `datasets.Dataset` with `image` (PIL, mode L) and `label` (ClassLabel, standard ids)."""
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
):
    """A `datasets` dataset of images: a Hub name, a folder saved with `save_to_disk`, the special name
    `fashion_mnist_local` (Debian package files), or an `imagefolder` directory (`train_data_dir`)."""
    import datasets

    if train_data_dir is not None:
        return datasets.load_dataset(
            "imagefolder", data_dir=train_data_dir, split=split, streaming=streaming, cache_dir=cache_dir
        )
    if dataset_name is None:
        raise ValueError("one of `dataset_name` or `train_data_dir` is required.")
    if dataset_name == "fashion_mnist_local":
        dataset = fashion_mnist_dataset("test" if split == "test" else "train")
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


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
    """Linear warmup from 0, then cosine decay to `min_lr` at `total_steps` (the authors' schedule)."""
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(step: int, base: float) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        floor = min_lr / base if base > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, b=b: factor(s, b) for b in base_lrs])


class JSONLinesTracker:
    """Minimal accelerate tracker writing one JSON object per `log` call to `<logging_dir>/<run>/metrics.jsonl`."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, run_name: str, logging_dir: str | os.PathLike, **kwargs):
        self.run_name = run_name
        self.path = Path(logging_dir) / run_name / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        record = {"step": step, **{k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def finish(self) -> None:
        pass


def _make_jsonl_tracker_class():
    from accelerate.tracking import GeneralTracker

    class _Tracker(JSONLinesTracker, GeneralTracker):
        def __init__(self, run_name: str, logging_dir: str | os.PathLike, **kwargs):
            JSONLinesTracker.__init__(self, run_name, logging_dir)
            GeneralTracker.__init__(self, _blank=True)

    return _Tracker


def make_jsonl_tracker(run_name: str, logging_dir: str | os.PathLike):
    """An accelerate `GeneralTracker` instance of [`JSONLinesTracker`]."""
    return _make_jsonl_tracker_class()(run_name, logging_dir)


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """`checkpoint-N` folders sorted by N."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(output_dir: str | os.PathLike, limit: int | None) -> None:
    """Delete the oldest checkpoints so that one more fits under `limit`."""
    if limit is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for path in checkpoints[: max(0, len(checkpoints) - limit + 1)]:
        shutil.rmtree(path)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """`"latest"` → the newest `checkpoint-N` (None if there is none); a path → that path (must exist)."""
    if resume is None:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not path.is_dir():
        path = Path(output_dir) / resume
    if not path.is_dir():
        raise ValueError(
            f"`--resume_from_checkpoint` must be 'latest' or an existing checkpoint folder, got {resume!r}."
        )
    return path


def checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    if match is None:
        raise ValueError(f"checkpoint folder names must look like 'checkpoint-<step>', got {path.name!r}.")
    return int(match.group(1))


# ---------------------------------------------------------------------------------------------------- script plumbing
def create_accelerator(args, run_name: str):
    """The training scripts' `Accelerator`: JSON-lines tracker (+ `--report_to`), seedable sampler (exact resume),
    logging, `set_seed`, the output folder and, with `--push_to_hub`, the Hub repo.

    Returns `(accelerator, output_dir, repo_id)` (`repo_id` is None unless pushing, on the main process).
    """
    import logging

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    output_dir = Path(args.output_dir)
    trackers = [make_jsonl_tracker(run_name, output_dir / "logs")]
    if args.report_to:
        trackers.append(args.report_to)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=trackers,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    repo_id = None
    if args.push_to_hub and accelerator.is_main_process:
        from huggingface_hub import create_repo

        repo_id = create_repo(args.hub_model_id or output_dir.name, exist_ok=True, token=args.hub_token).repo_id
    return accelerator, output_dir, repo_id


def resume_training_state(
    accelerator, output_dir: Path, resume: str | None, steps_per_epoch: int | None, accumulation: int
):
    """Load `--resume_from_checkpoint` (if any) and return `(global_step, first_epoch, batches_to_skip)`."""
    checkpoint = resolve_resume_checkpoint(output_dir, resume)
    if checkpoint is None:
        return 0, 0, 0
    accelerator.print(f"resuming from {checkpoint}")
    accelerator.load_state(str(checkpoint))
    global_step = checkpoint_step(checkpoint)
    if not steps_per_epoch:  # streaming data: no epoch arithmetic
        return global_step, 0, 0
    return global_step, global_step // steps_per_epoch, (global_step % steps_per_epoch) * accumulation


def epoch_batches(accelerator, dataloader, epoch: int, first_epoch: int, batches_to_skip: int):
    """The dataloader of `epoch` (reshuffled by its seed), skipping what a resumed run already consumed."""
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(epoch)
    if epoch == first_epoch and batches_to_skip:
        return accelerator.skip_first_batches(dataloader, batches_to_skip)
    return dataloader


def save_training_checkpoint(accelerator, output_dir: Path, global_step: int, total_limit: int | None) -> None:
    """`save_state` to `checkpoint-<step>` after pruning old ones (main process only)."""
    if not accelerator.is_main_process:
        return
    prune_checkpoints(output_dir, total_limit)
    accelerator.save_state(str(output_dir / f"checkpoint-{global_step}"))
    if os.environ.get("BAR_HF_SIGKILL_AT_STEP") == str(global_step):  # test hook: die uncleanly right here
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def upload_to_hub(repo_id: str | None, folder: Path, token: str | None) -> None:
    if repo_id is not None:
        from huggingface_hub import upload_folder

        upload_folder(repo_id=repo_id, folder_path=folder, token=token)
