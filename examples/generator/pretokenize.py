#!/usr/bin/env python
"""Encode an image dataset once with a `BARVQModel`: every image and its horizontal flip become packed bit tensors
stored as a `datasets` dataset (Arrow), as the authors' pretokenized ImageNet (docs/method.md §7).

    accelerate launch examples/generator/pretokenize.py --vqvae_model_name_or_path runs/vq/vqvae \
        --dataset_name fashion_mnist_local --output_dir runs/tokens

Work is split into shards (`--shard_size` images); each process writes its own shards and skips finished ones, so
an interrupted run resumes where it stopped. The output folder holds `dataset/` (columns `tokens`, `tokens_flip`:
`np.packbits` of the flat `(L * num_bits)` bits, LSB-first bit order per token as `bits.py`; `label`) and
`metadata.json` (grid, bits, label names, tokenizer and its fingerprint, which `train_bar.py` checks). A dataset without
the label column is an error unless `--unconditional` (every label 0) is given. `metadata.json` is written last: a
folder without it is incomplete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from bar_hf import BARVQModel
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, dummy_image_dataset, image_to_tensor, load_image_dataset
from bar_hf.training.utils import AT_LEAST_1, check_columns, check_flags, parse_and_validate, tokenizer_fingerprint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--vqvae_model_name_or_path", required=True)
    parser.add_argument("--dataset_name", default=None)
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--train_data_dir", default=None)
    parser.add_argument(
        "--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="IDX files read by --dataset_name fashion_mnist_local"
    )
    parser.add_argument("--use_dummy_data", action="store_true")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument(
        "--unconditional", action="store_true", help="the data has no labels: store label 0 for every image"
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--shard_size", type=int, default=10000)
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--no_flip", action="store_true", help="skip the flipped copy (tokens_flip = tokens)")
    return parse_and_validate(parser, argv, validate_args)


def validate_args(args: argparse.Namespace) -> None:
    if not (args.use_dummy_data or args.dataset_name or args.train_data_dir):
        raise ValueError("one of --dataset_name, --train_data_dir or --use_dummy_data is required")
    check_flags(args, {"batch_size": AT_LEAST_1, "shard_size": AT_LEAST_1, "max_images": AT_LEAST_1})


def check_dataset(dataset, args: argparse.Namespace) -> None:
    """The image column must exist; the label column too (integer or `ClassLabel`), unless `--unconditional`."""
    label_column = None if args.unconditional else args.label_column
    try:
        check_columns(dataset, {"--image_column": args.image_column, "--label_column": label_column})
    except ValueError as error:
        if label_column is None or label_column in (dataset.column_names or []):
            raise
        raise ValueError(f"{error} For data without labels pass `--unconditional` (every label is 0).") from error
    feature = dataset.features.get(label_column) if label_column and dataset.features else None
    if feature is not None and not (
        isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value) and "int" in feature.dtype)
    ):
        raise ValueError(
            f"`--label_column` {label_column!r} must hold integer class ids (or a ClassLabel), got {feature}."
        )


def unpack_bits(packed, num_tokens: int, num_bits: int) -> np.ndarray:
    """Inverse of the storage format: packed uint8 → `(num_tokens, num_bits)` uint8 bits."""
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8))[: num_tokens * num_bits]
    return flat.reshape(num_tokens, num_bits)


def label_names(dataset, column: str) -> list[str] | None:
    feature = dataset.features.get(column) if dataset.features else None
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


@torch.no_grad()
def encode_shard(vq: BARVQModel, dataset, start: int, stop: int, args, device) -> datasets.Dataset:
    size = vq.config.sample_size if isinstance(vq.config.sample_size, int) else vq.config.sample_size[0]
    tokens, flips, labels = [], [], []
    for begin in range(start, stop, args.batch_size):
        rows = dataset[begin : min(stop, begin + args.batch_size)]
        images = torch.stack([image_to_tensor(img, size, vq.config.in_channels) for img in rows[args.image_column]])
        images = images.to(device)
        bits = vq.encode_to_bits(images).reshape(images.shape[0], -1)
        flip_bits = bits if args.no_flip else vq.encode_to_bits(images.flip(-1)).reshape(images.shape[0], -1)
        tokens.extend(np.packbits(bits.cpu().numpy().astype(np.uint8), axis=1))
        flips.extend(np.packbits(flip_bits.cpu().numpy().astype(np.uint8), axis=1))
        if args.unconditional:
            labels.extend([0] * images.shape[0])
        else:
            labels.extend(int(v) for v in rows[args.label_column])
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("uint8")),
            "tokens_flip": datasets.List(datasets.Value("uint8")),
            "label": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {"tokens": [t.tolist() for t in tokens], "tokens_flip": [t.tolist() for t in flips], "label": labels},
        features=features,
    )


def shard_settings(args: argparse.Namespace, fingerprint: str, total: int) -> dict:
    """What the finished shards depend on: reusing shards written with other settings would mix data silently."""
    keys = ("dataset_name", "dataset_config_name", "train_data_dir", "use_dummy_data", "split", "image_column")
    return {
        **{k: getattr(args, k) for k in keys},
        "label_column": None if args.unconditional else args.label_column,
        "shard_size": args.shard_size,
        "no_flip": args.no_flip,
        "num_images": total,
        "vqvae_fingerprint": fingerprint,
    }


def check_shard_settings(shard_root: Path, settings: dict) -> None:
    """Refuse to resume into shards written with other settings."""
    path = shard_root / "settings.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in settings.keys() | previous.keys() if previous.get(k) != settings.get(k))
            raise ValueError(
                f"`--output_dir` {str(shard_root.parent)!r} holds shards written with other settings ({changed}); "
                "use a new --output_dir (or delete it) to tokenize with these."
            )


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_source(args: argparse.Namespace, vq: BARVQModel):
    if args.use_dummy_data:
        size = vq.config.sample_size if isinstance(vq.config.sample_size, int) else vq.config.sample_size[0]
        dataset = dummy_image_dataset(40, size, vq.config.in_channels)
    else:
        dataset = load_image_dataset(
            args.dataset_name,
            args.dataset_config_name,
            args.train_data_dir,
            split=args.split,
            fashion_mnist_dir=args.fashion_mnist_dir,
        )
    check_dataset(dataset, args)
    return dataset


def encode_shards(vq, dataset, args, shard_root: Path, num_shards: int, total: int, accelerator) -> None:
    """This process's shards, each written to a temporary folder and renamed when complete; finished ones skipped."""
    mine = list(range(accelerator.process_index, num_shards, accelerator.num_processes))
    for shard in tqdm(mine, disable=not accelerator.is_local_main_process, desc="shards"):
        target = shard_root / f"shard-{shard:05d}"
        if (target / "dataset_info.json").exists():
            continue  # finished by an earlier (interrupted) run
        start, stop = shard * args.shard_size, min(total, (shard + 1) * args.shard_size)
        part = encode_shard(vq, dataset, start, stop, args, accelerator.device)
        tmp = shard_root / f".tmp-shard-{shard:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        part.save_to_disk(str(tmp))
        tmp.rename(target)


def merge_shards(vq, dataset, args, output: Path, num_shards: int, fingerprint: str, accelerator) -> None:
    """Concatenate the shards into `dataset/` and write `metadata.json` last (its absence marks an unfinished run)."""
    (output / "metadata.json").unlink(missing_ok=True)
    shard_root = output / "shards"
    parts = [datasets.load_from_disk(str(shard_root / f"shard-{i:05d}")) for i in range(num_shards)]
    merged = datasets.concatenate_datasets(parts)
    tmp = output / ".tmp-dataset"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_to_disk(str(tmp))
    shutil.rmtree(output / "dataset", ignore_errors=True)
    tmp.rename(output / "dataset")
    metadata = {
        "num_images": len(merged),
        "latent_height": vq.grid_size[0],
        "latent_width": vq.grid_size[1],
        "num_bits": vq.config.num_bits,
        "label_names": None if args.unconditional else label_names(dataset, args.label_column),
        "unconditional": args.unconditional,
        "vqvae": str(args.vqvae_model_name_or_path),
        "vqvae_fingerprint": fingerprint,
        "flip": not args.no_flip,
    }
    write_atomically(output / "metadata.json", json.dumps(metadata, indent=2))
    accelerator.print(f"wrote {len(merged)} tokenized images to {output / 'dataset'}")


def main(args: argparse.Namespace) -> None:
    validate_args(args)
    accelerator = Accelerator()
    output = Path(args.output_dir)
    shard_root = output / "shards"
    vq = BARVQModel.from_pretrained(args.vqvae_model_name_or_path).eval().to(accelerator.device)
    dataset = load_source(args, vq)
    total = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    num_shards = math.ceil(total / args.shard_size)
    if total == 0:
        raise ValueError("the dataset is empty: there is nothing to tokenize.")
    fingerprint = tokenizer_fingerprint(vq)
    settings = shard_settings(args, fingerprint, total)
    check_shard_settings(shard_root, settings)  # every process, before any writes
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shard_root.mkdir(parents=True, exist_ok=True)
        write_atomically(shard_root / "settings.json", json.dumps(settings, indent=2))
    accelerator.wait_for_everyone()
    encode_shards(vq, dataset, args, shard_root, num_shards, total, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        merge_shards(vq, dataset, args, output, num_shards, fingerprint, accelerator)


if __name__ == "__main__":
    main(parse_args())
