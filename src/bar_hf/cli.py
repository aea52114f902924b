"""`bar-hf` command line: `generate`, `demo`, `convert`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "bundled" / "bar-fashion-mnist"


def bundled_model_path() -> str:
    """Path of the small BAR pipeline trained by this project on Fashion-MNIST and shipped with the package."""
    if not (BUNDLED_MODEL_DIR / "model_index.json").exists():
        raise FileNotFoundError(f"the bundled model is missing at {BUNDLED_MODEL_DIR} (broken installation?)")
    return str(BUNDLED_MODEL_DIR)


def _parse_dtype(name: str):
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"`--dtype` must be one of {sorted(dtypes)}, got {name!r}.")
    return dtypes[name]


def _parse_device(name: str):
    """`--device` → `torch.device`, checking that the device exists here (`cuda` without a GPU is an error)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"`--device` must be a torch device such as 'cpu' or 'cuda:0', got {name!r} ({error})."
        ) from None
    backend = getattr(torch, device.type, None) if device.type != "cpu" else None
    if device.type != "cpu" and not (
        backend is not None and hasattr(backend, "is_available") and backend.is_available()
    ):
        raise ValueError(f"`--device` {name!r}: no {device.type} device is available on this machine (try 'cpu').")
    if device.index is not None and hasattr(backend, "device_count") and device.index >= backend.device_count():
        raise ValueError(
            f"`--device` {name!r}: only {backend.device_count()} {device.type} device(s) are available on this machine."
        )
    return device


def _check_model_location(model: str) -> None:
    """`--model` must be a local pipeline folder or a valid Hub repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "model_index.json")):
            raise ValueError(f"`--model` {model!r} is a folder without model_index.json: not a saved BARPipeline.")
        return
    try:
        validate_repo_id(model)
    except HFValidationError:
        raise ValueError(
            f"`--model` {model!r} is neither a local folder nor a valid Hub repo id ('org/name')."
        ) from None


def _parse_tokens_allocation(text: str | None):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(
            f"`--tokens-allocation` must be a JSON list of ints such as '[2,2,5,7]', got {text!r}."
        ) from None
    if not isinstance(value, list):
        raise ValueError(f"`--tokens-allocation` must be a JSON list of ints such as '[2,2,5,7]', got {text!r}.")
    return value


def _quiet_loading() -> None:
    """Silence the loading progress bars of diffusers, transformers and huggingface_hub (`--quiet`)."""
    import diffusers
    import huggingface_hub
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def make_grid(images, row_titles: list[str], columns: int, scale: int):
    """Labelled grid: one row per title, `columns` images each; PIL images are upscaled by `scale` (nearest)."""
    from PIL import Image, ImageDraw

    width, height = images[0].size
    cell_w, cell_h = width * scale, height * scale
    title_w = max(80, 7 * max(len(t) for t in row_titles) + 10)
    pad = 2
    grid = Image.new("RGB", (title_w + columns * (cell_w + pad), len(row_titles) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for row, title in enumerate(row_titles):
        y = row * (cell_h + pad)
        draw.text((4, y + cell_h // 2 - 6), title, fill="black")
        for col in range(columns):
            image = images[row * columns + col].convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
            grid.paste(image, (title_w + col * (cell_w + pad), y))
    return grid


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .pipeline_bar import BARPipeline

    model = args.model or bundled_model_path()
    dtype = _parse_dtype(args.dtype)
    device = _parse_device(args.device)
    tokens_allocation = _parse_tokens_allocation(args.tokens_allocation)
    _check_model_location(model)
    if args.quiet:
        _quiet_loading()
    pipe = BARPipeline.from_pretrained(model, dtype=dtype).to(device)
    if args.quiet:
        pipe.set_progress_bar_config(disable=True)
    label_ids = pipe._resolve_labels(args.class_labels)
    count = len(label_ids) * args.num_images_per_label
    if not 1 <= count <= pipe.max_batch_size:
        raise ValueError(
            f"`--num-images-per-label` must give 1..{pipe.max_batch_size} images in total, got "
            f"{args.num_images_per_label} × {len(label_ids)} labels."
        )
    generators = [torch.Generator(device="cpu").manual_seed(args.seed + i) for i in range(count)]
    images = pipe(
        class_labels=label_ids,
        num_images_per_label=args.num_images_per_label,
        guidance_scale=args.guidance_scale,
        guidance_schedule=args.guidance_schedule,
        num_inference_steps=args.num_inference_steps,
        tokens_allocation=tokens_allocation,
        temperature=args.temperature,
        generator=generators,
    ).images
    names = [pipe.id2label.get(i, str(i)).split(",")[0] for i in label_ids]
    if args.output_dir:
        out_dir = Path(args.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            label = label_ids[index // args.num_images_per_label]
            image.save(out_dir / f"{index:05d}_class{label}_seed{args.seed + index}.png")
        print(f"wrote {len(images)} images to {out_dir}")
    if args.output or not args.output_dir:
        output = Path(args.output or "bar_samples.png")
        output.parent.mkdir(parents=True, exist_ok=True)
        scale = args.scale or max(1, 96 // images[0].size[1])
        make_grid(images, names, args.num_images_per_label, scale).save(output)
        print(f"wrote a {len(names)}x{args.num_images_per_label} grid ({', '.join(names)}) to {output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    args.model = None
    return _generate(args)


def _add_generate_arguments(parser: argparse.ArgumentParser, demo: bool = False) -> None:
    if not demo:
        parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: the bundled model)")
    parser.add_argument(
        "--class-labels",
        nargs="+",
        default=["Sneaker", "Dress", "Bag", "Trouser"] if demo else None,
        required=not demo,
        help="class ids or names (names from the model's id2label)",
    )
    parser.add_argument("--num-images-per-label", type=int, default=8 if demo else 4)
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (batch-invariant)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the model's saved value")
    parser.add_argument("--guidance-schedule", choices=["linear", "constant"], default=None)
    parser.add_argument("--num-inference-steps", type=int, default=None, help="head steps per token")
    parser.add_argument("--tokens-allocation", default=None, help='JSON list of bits per head step, e.g. "[2,2,5,7]"')
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--output", default="outputs/demo.png" if demo else None, help="grid PNG path")
    parser.add_argument("--output-dir", default=None, help="also write one PNG per image here")
    parser.add_argument("--scale", type=int, default=None, help="grid upscaling factor (default: to ~96 px)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bar-hf", description="BAR image generation with diffusers/transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    generate = sub.add_parser("generate", help="generate class-conditional images with a BARPipeline")
    _add_generate_arguments(generate)
    generate.set_defaults(func=_generate)
    demo = sub.add_parser("demo", help="generate a labelled grid with the bundled Fashion-MNIST model")
    _add_generate_arguments(demo, demo=True)
    demo.set_defaults(func=_demo)
    try:
        from .convert import add_convert_subparser
    except ImportError:  # the converter module is optional at import time
        add_convert_subparser = None
    if add_convert_subparser is not None:
        add_convert_subparser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as error:
        print(f"bar-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
