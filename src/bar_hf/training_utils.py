"""Helpers shared by the training scripts in `examples/` (data loading, augmentation, schedules, checkpoints).

Everything random in training runs on the main process from generators whose state is checkpointed, so a run
resumed from a checkpoint continues bit-for-bit like an uninterrupted one (CPU, fixed seeds).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

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
    "CHECKPOINT_MARKER",
    "list_checkpoints",
    "read_checkpoint_marker",
    "prune_checkpoints",
    "resolve_resume_checkpoint",
    "save_training_checkpoint",
    "TrainingProgress",
    "resume_training_state",
    "training_batches",
    "check_flags",
    "check_columns",
    "read_json_flag",
    "tokenizer_fingerprint",
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
    fashion_mnist_dir: str | os.PathLike = FASHION_MNIST_DIR,
):
    """A `datasets` dataset of images: a Hub name, a folder saved with `save_to_disk`, the special name
    `fashion_mnist_local` (the IDX files of Debian's `dataset-fashion-mnist` in `fashion_mnist_dir`), or an
    `imagefolder` directory (`train_data_dir`)."""
    import datasets

    if train_data_dir is not None:
        return datasets.load_dataset(
            "imagefolder", data_dir=train_data_dir, split=split, streaming=streaming, cache_dir=cache_dir
        )
    if dataset_name is None:
        raise ValueError("one of `dataset_name` or `train_data_dir` is required.")
    if dataset_name == "fashion_mnist_local":
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
#: Written last into a checkpoint folder (before the folder gets its final name): the training position and the size
#: of every file, so that a folder missing it, or with a missing or truncated file, is never resumed from.
CHECKPOINT_MARKER = "checkpoint_complete.json"
_TMP_PREFIX = ".tmp-"


def fault_point(variable: str, step: int) -> None:
    """Test hook: SIGKILL this process when the environment variable `variable` equals `step` (the scripts use
    `BAR_HF_SIGKILL_AT_STEP`, after a step and its checkpoint, and `BAR_HF_SIGKILL_DURING_SAVE`, after a checkpoint's
    files were written but before it is marked complete)."""
    if os.environ.get(variable) == str(step):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def read_checkpoint_marker(path: str | os.PathLike) -> dict | None:
    """The completion marker of a checkpoint folder, or None when the checkpoint is incomplete (no marker, or a file
    it lists is missing or has another size)."""
    path = Path(path)
    try:
        marker = json.loads((path / CHECKPOINT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    for name, size in marker.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            return None
    return marker


def list_checkpoints(output_dir: str | os.PathLike, complete_only: bool = False) -> list[Path]:
    """`checkpoint-N` folders sorted by N (only the complete ones with `complete_only`)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    paths = [p for _, p in sorted(found)]
    return [p for p in paths if read_checkpoint_marker(p) is not None] if complete_only else paths


def prune_checkpoints(output_dir: str | os.PathLike, limit: int | None) -> None:
    """Keep the `limit` newest complete checkpoints; incomplete `checkpoint-N` folders older than the newest complete
    one are deleted too (they cannot be resumed from). Call it only after the new checkpoint is complete."""
    if limit is None:
        return
    complete = list_checkpoints(output_dir, complete_only=True)
    doomed = complete[: max(0, len(complete) - limit)]
    if complete:
        newest = checkpoint_step(complete[-1])
        doomed += [p for p in list_checkpoints(output_dir) if p not in complete and checkpoint_step(p) < newest]
    for path in doomed:
        shutil.rmtree(path)


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """`"latest"` → the newest complete `checkpoint-N` (None if there is none; incomplete ones are skipped with a
    warning); a path or folder name → that checkpoint, which must be complete."""
    if resume is None:
        return None
    if resume == "latest":
        for path in reversed(list_checkpoints(output_dir)):
            if read_checkpoint_marker(path) is not None:
                return path
            logger.warning("skipping the incomplete checkpoint %s (interrupted while it was written)", path)
        return None
    path = Path(resume)
    if not path.is_dir():
        path = Path(output_dir) / resume
    if not path.is_dir():
        raise ValueError(
            f"`--resume_from_checkpoint` must be 'latest' or an existing checkpoint folder, got {resume!r}."
        )
    if read_checkpoint_marker(path) is None:
        raise ValueError(
            f"`--resume_from_checkpoint` {resume!r} is incomplete (no valid {CHECKPOINT_MARKER}: the run was "
            "interrupted while writing it, or a file was removed or truncated); use 'latest' or an older checkpoint."
        )
    return path


def checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    if match is None:
        raise ValueError(f"checkpoint folder names must look like 'checkpoint-<step>', got {path.name!r}.")
    return int(match.group(1))


def _fsync(path: Path) -> None:
    """Flush a file or a folder entry to disk (best effort where the OS cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finalize_checkpoint(tmp: Path, final: Path, marker: dict) -> None:
    """fsync the files of `tmp`, write the marker (with every file's size) last, then rename `tmp` to `final`."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    for file in files:
        _fsync(file)
    marker = {**marker, "files": {str(p.relative_to(tmp)): p.stat().st_size for p in files}}
    (tmp / CHECKPOINT_MARKER).write_text(json.dumps(marker, indent=2))
    _fsync(tmp / CHECKPOINT_MARKER)
    _fsync(tmp)
    if final.exists():  # an incomplete leftover, or a checkpoint of the same step from before a resume
        stale = final.with_name(f"{_TMP_PREFIX}stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        shutil.rmtree(stale)
    tmp.rename(final)
    _fsync(final.parent)


def save_training_checkpoint(
    accelerator, output_dir: Path, progress: TrainingProgress, total_limit: int | None
) -> Path:
    """Atomically write `checkpoint-<step>`: every process calls `accelerator.save_state` into a temporary folder
    (each saves its own RNG state), the main process writes the completion marker, renames the folder and only then
    prunes old checkpoints down to `total_limit`."""
    final = output_dir / f"checkpoint-{progress.global_step}"
    tmp = output_dir / f"{_TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    fault_point("BAR_HF_SIGKILL_DURING_SAVE", progress.global_step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _finalize_checkpoint(tmp, final, progress.state_dict())
        for leftover in output_dir.glob(f"{_TMP_PREFIX}*checkpoint-*"):  # from runs killed while saving
            shutil.rmtree(leftover, ignore_errors=True)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


# ------------------------------------------------------------------------------------------------- input validation
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Rules for [`check_flags`]: name → (predicate, description).
AT_LEAST_0 = (lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
AT_LEAST_1 = (lambda v: _is_number(v) and v >= 1, "an integer >= 1")
POSITIVE = (lambda v: _is_number(v) and v > 0, "a finite number > 0")
UNIT_INTERVAL = (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
BETA = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")


#: Flags every training script has (optimizer, schedule, checkpointing, logging) and their rules; each script adds
#: its own to these in its `FLAG_RULES`.
TRAINING_FLAG_RULES = {
    "train_batch_size": AT_LEAST_1,
    "max_train_steps": AT_LEAST_0,
    "gradient_accumulation_steps": AT_LEAST_1,
    "learning_rate": POSITIVE,
    "min_learning_rate": AT_LEAST_0,
    "lr_warmup_steps": AT_LEAST_0,
    "adam_beta1": BETA,
    "adam_beta2": BETA,
    "adam_weight_decay": AT_LEAST_0,
    "max_grad_norm": AT_LEAST_0,
    "checkpointing_steps": AT_LEAST_1,
    "checkpoints_total_limit": AT_LEAST_1,
    "logging_steps": AT_LEAST_1,
}


def parse_and_validate(parser: argparse.ArgumentParser, argv, validate) -> argparse.Namespace:
    """`parser.parse_args(argv)`, then `validate(args)`; a `ValueError` becomes argparse's `error:` line and rc 2."""
    args = parser.parse_args(argv)
    try:
        validate(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def check_flags(args, rules: dict[str, tuple]) -> None:
    """Raise a `ValueError` naming the flag, the rule and the value for the first `args.<name>` (not None) that breaks
    its rule; `rules` maps attribute names to `(predicate, description)` pairs such as [`AT_LEAST_1`]."""
    for name, (predicate, description) in rules.items():
        value = getattr(args, name)
        if value is not None and not predicate(value):
            raise ValueError(f"`--{name}` must be {description}, got {value!r}.")


def check_columns(dataset, columns: dict[str, str | None]) -> None:
    """Raise a `ValueError` when a column the run needs is missing: `columns` maps the flag that names it (e.g.
    `"--label_column"`) to the column name (None: not needed)."""
    names = getattr(dataset, "column_names", None)
    if names is None and getattr(dataset, "features", None) is not None:
        names = list(dataset.features)
    if names is None:  # a stream without known features: nothing to check up front
        return
    for flag, column in columns.items():
        if column is not None and column not in names:
            raise ValueError(
                f"the dataset has no column {column!r} (its columns: {sorted(names)}); name the right one with "
                f"`{flag}`."
            )


def read_json_flag(path: str, flag: str) -> dict:
    """A JSON object file given on the command line; `ValueError` naming `flag` when it is missing or malformed."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"`{flag}` must be a readable JSON file, got {path!r}: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"`{flag}` must hold a JSON object of config arguments, got {type(value).__name__}.")
    return value


def tokenizer_fingerprint(vq) -> str:
    """SHA-256 of a tokenizer's weights and grid/bit layout: pretokenized data stores it, `train_bar.py` checks it."""
    digest = hashlib.sha256()
    layout = {k: vq.config.get(k) for k in ("sample_size", "patch_size", "in_channels", "num_bits")}
    digest.update(json.dumps(layout, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vq.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tensor.numel()}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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


class TrainingProgress:
    """Where a run is: optimizer steps done, the epoch, and the batches of that epoch already consumed (micro-batches
    with gradient accumulation). Stored in each checkpoint's marker; [`training_batches`] resumes from it."""

    def __init__(self, global_step: int = 0, epoch: int = 0, batches_in_epoch: int = 0):
        self.global_step, self.epoch, self.batches_in_epoch = global_step, epoch, batches_in_epoch

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}


def resume_training_state(accelerator, output_dir: Path, resume: str | None) -> TrainingProgress:
    """Load `--resume_from_checkpoint` (if any: model, optimizer, LR scheduler, RNG states, registered objects) and
    return the [`TrainingProgress`] it was saved at."""
    checkpoint = resolve_resume_checkpoint(output_dir, resume)
    if checkpoint is None:
        return TrainingProgress()
    accelerator.print(f"resuming from {checkpoint}")
    marker = read_checkpoint_marker(checkpoint)
    accelerator.load_state(str(checkpoint))
    return TrainingProgress(marker["global_step"], marker["epoch"], marker["batches_in_epoch"])


def _batches_without_touching_rng(dataloader):
    """Iterate `dataloader` with the global torch RNG state left as it was before the first batch.

    Creating a `DataLoader` iterator draws its worker base seed from the global torch RNG. An uninterrupted run
    drew it at the start of the epoch, before the state a mid-epoch checkpoint holds; re-drawing it after
    `load_state` would shift every later random draw (MBM masks, label dropout, orders) of a resumed run.
    """
    iterator = iter(dataloader)
    state = torch.get_rng_state()
    try:
        first = next(iterator)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from iterator


def training_batches(accelerator, dataloader, progress: TrainingProgress, batch_flag: str = "--train_batch_size"):
    """Batches for ever, epoch after epoch (each reshuffled by its seed), starting where `progress` stands.

    Updates `progress.epoch` / `progress.batches_in_epoch` as it goes (the caller counts `global_step`) and raises a
    `ValueError` naming `batch_flag` when an epoch yields no batch at all (instead of looping forever).
    """
    resumed = progress.batches_in_epoch > 0
    while True:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(progress.epoch)
        if resumed:
            loader = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
            batches = _batches_without_touching_rng(loader)
        else:
            batches = dataloader
        count = 0
        for batch in batches:
            count += 1
            progress.batches_in_epoch += 1
            yield batch
        if count == 0 and not resumed:
            raise ValueError(
                f"the training data yields no batch (an empty dataset, or fewer examples than `{batch_flag}` with "
                "incomplete batches dropped); use a smaller batch size or more data."
            )
        progress.epoch, progress.batches_in_epoch, resumed = progress.epoch + 1, 0, False


def upload_to_hub(repo_id: str | None, folder: Path, token: str | None) -> None:
    if repo_id is not None:
        from huggingface_hub import upload_folder

        upload_folder(repo_id=repo_id, folder_path=folder, token=token)
