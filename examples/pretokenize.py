#!/usr/bin/env python
"""Encode an image dataset once with a `BARVQModel`: every image and its horizontal flip become packed bit tensors
stored as a `datasets` dataset (Arrow), as the authors' pretokenized ImageNet (BAR_METHOD §7).

    accelerate launch examples/pretokenize.py --vqvae_model_name_or_path runs/vq/vqvae \
        --dataset_name fashion_mnist_local --output_dir runs/tokens

Work is split into shards (`--shard_size` images); each process writes its own shards and skips finished ones, so
an interrupted run resumes where it stopped. The output folder holds `dataset/` (columns `tokens`, `tokens_flip`:
`np.packbits` of the flat `(L * num_bits)` bits, LSB-first bit order per token as `bits.py`; `label`) and
`metadata.json` (grid, bits, label names, tokenizer).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from bar_hf import BARVQModel
from bar_hf.training_utils import dummy_image_dataset, image_to_tensor, load_image_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vqvae_model_name_or_path", required=True)
    parser.add_argument("--dataset_name", default=None)
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--train_data_dir", default=None)
    parser.add_argument("--use_dummy_data", action="store_true")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--shard_size", type=int, default=10000)
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--no_flip", action="store_true", help="skip the flipped copy (tokens_flip = tokens)")
    args = parser.parse_args(argv)
    if not (args.use_dummy_data or args.dataset_name or args.train_data_dir):
        parser.error("one of --dataset_name, --train_data_dir or --use_dummy_data is required")
    return args


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
        if args.label_column in rows:
            labels.extend(int(v) for v in rows[args.label_column])
        else:
            labels.extend([0] * images.shape[0])
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


def main(args: argparse.Namespace) -> None:
    accelerator = Accelerator()
    output = Path(args.output_dir)
    shard_root = output / "shards"
    if accelerator.is_main_process:
        shard_root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    vq = BARVQModel.from_pretrained(args.vqvae_model_name_or_path).eval().to(accelerator.device)
    if args.use_dummy_data:
        size = vq.config.sample_size if isinstance(vq.config.sample_size, int) else vq.config.sample_size[0]
        dataset = dummy_image_dataset(40, size, vq.config.in_channels)
    else:
        dataset = load_image_dataset(
            args.dataset_name, args.dataset_config_name, args.train_data_dir, split=args.split
        )
    total = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    num_shards = math.ceil(total / args.shard_size)
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
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        parts = [datasets.load_from_disk(str(shard_root / f"shard-{i:05d}")) for i in range(num_shards)]
        merged = datasets.concatenate_datasets(parts)
        shutil.rmtree(output / "dataset", ignore_errors=True)
        merged.save_to_disk(str(output / "dataset"))
        metadata = {
            "num_images": len(merged),
            "latent_height": vq.grid_size[0],
            "latent_width": vq.grid_size[1],
            "num_bits": vq.config.num_bits,
            "label_names": label_names(dataset, args.label_column),
            "vqvae": str(args.vqvae_model_name_or_path),
            "flip": not args.no_flip,
        }
        (output / "metadata.json").write_text(json.dumps(metadata, indent=2))
        accelerator.print(f"wrote {len(merged)} tokenized images to {output / 'dataset'}")


if __name__ == "__main__":
    main(parse_args())
