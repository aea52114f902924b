#!/usr/bin/env python
"""Sample N images per class from a `BARPipeline` for evaluation, across processes.

    accelerate launch examples/sampling/sample_bar.py --model org/bar-b --num_images_per_class 50 --output_dir samples \
        --save_npz samples/bar_b.npz

Image `i` has class `classes[i % C]` (classes cycled, as the authors' 50-per-class ImageNet protocol) and its own
generator seeded with `seed + i`, so the result does not depend on the number of processes or the batch size. Each
process samples its share (`i % world_size == rank`), writes `images/<i>.png`, and skips images already written
(resumable). `--save_npz` gathers all PNGs into an ADM-evaluator batch: `arr_0` uint8 NHWC (grayscale replicated to
3 channels) and `arr_1` the class ids. Sampling settings default to the ones saved with the pipeline.

Several processes (`accelerate launch --num_processes N` or `torchrun --nproc_per_node N`) split the plan on GPUs and,
with gloo, on a CPU-only machine too ([`distributed_state`]). The summary printed by each process says which images
it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image
from tqdm.auto import tqdm

from bar_hf import BARPipeline, bundled_model_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_images_per_class", type=int, default=50)
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="default: every class of the model")
    parser.add_argument("--batch_size", type=int, default=125, help="per process")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--guidance_scale", type=float, default=None)
    parser.add_argument("--guidance_schedule", choices=["linear", "constant"], default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--num_inference_steps", type=int, default=None)
    parser.add_argument("--tokens_allocation", default=None, help="JSON list")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--save_npz", default=None, help="write the ADM .npz (arr_0 uint8 NHWC, arr_1 labels) here")
    args = parser.parse_args(argv)
    if args.num_images_per_class < 1 or args.batch_size < 1:
        parser.error("--num_images_per_class and --batch_size must be >= 1")
    return args


def sample_plan(num_classes: int, classes: list[int] | None, per_class: int, seed: int) -> list[tuple[int, int, int]]:
    """`(index, class id, seed)` for every image: classes cycled, seed = seed + index."""
    classes = list(range(num_classes)) if classes is None else classes
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"`classes` must be in [0, {num_classes}), got {bad[:5]}.")
    total = len(classes) * per_class
    return [(i, classes[i % len(classes)], seed + i) for i in range(total)]


def distributed_state() -> PartialState:
    """The processes of this launch. Without CUDA, `PartialState()` ignores a multi-process launch (one process,
    `DistributedType.NO`: every process would sample the whole plan); `cpu=True` makes it a gloo `MULTI_CPU` group
    of `WORLD_SIZE` processes."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())


def to_uint8_rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def main(args: argparse.Namespace) -> dict:
    state = distributed_state()
    out = Path(args.output_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    pipe = BARPipeline.from_pretrained(args.model or bundled_model_path(), dtype=dtype).to(state.device)
    pipe.set_progress_bar_config(disable=True)
    plan = sample_plan(pipe.transformer.config.num_classes, args.classes, args.num_images_per_class, args.seed)
    todo = [
        p for p in plan[state.process_index :: state.num_processes] if not (image_dir / f"{p[0]:06d}.png").exists()
    ]
    allocation = json.loads(args.tokens_allocation) if args.tokens_allocation else None
    for start in tqdm(range(0, len(todo), args.batch_size), disable=not state.is_local_main_process, desc="batches"):
        chunk = todo[start : start + args.batch_size]
        images = pipe(
            [label for _, label, _ in chunk],
            guidance_scale=args.guidance_scale,
            guidance_schedule=args.guidance_schedule,
            temperature=args.temperature,
            num_inference_steps=args.num_inference_steps,
            tokens_allocation=allocation,
            generator=[torch.Generator(device="cpu").manual_seed(seed) for _, _, seed in chunk],
        ).images
        for (index, _, _), image in zip(chunk, images):
            tmp = image_dir / f".{index:06d}.png.tmp"
            image.save(tmp, format="PNG")
            tmp.rename(image_dir / f"{index:06d}.png")
    state.wait_for_everyone()
    summary = {
        "num_images": len(plan),
        "process_index": state.process_index,
        "num_processes": state.num_processes,
        "written_by_this_process": len(todo),
        "written_indices": [index for index, _, _ in todo],
        "output_dir": str(image_dir),
    }
    if state.is_main_process:
        labels = {index: label for index, label, _ in plan}
        (out / "labels.json").write_text(json.dumps({f"{i:06d}.png": c for i, c in labels.items()}))
        if args.save_npz:
            arrays = np.stack([to_uint8_rgb(Image.open(image_dir / f"{i:06d}.png")) for i, _, _ in plan])
            np.savez(args.save_npz, arr_0=arrays, arr_1=np.array([c for _, c, _ in plan], dtype=np.int64))
            summary["npz"] = args.save_npz
    return summary


if __name__ == "__main__":
    print(json.dumps(main(parse_args())))
