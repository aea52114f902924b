"""`bar-hf` command line: `generate`, `demo`, `inpaint`, `convert`, `app`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .bundled import bundled_model_path


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

    if os.path.isfile(model):
        raise ValueError(
            f"`--model` {model!r} is a file, not a pipeline folder: pass the folder holding model_index.json (or a Hub "
            "repo id)."
        )
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


def _check_scale(scale: int | None) -> None:
    if scale is not None and scale < 1:
        raise ValueError(f"`--scale` must be an integer >= 1 (grid upscaling factor), got {scale}.")


def _check_output(output: str | None, flag: str = "--output") -> None:
    """The grid path must name a file whose extension PIL can write (e.g. `.png`)."""
    from PIL import Image

    if output is None:
        return
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        raise ValueError(
            f"`{flag}` {output!r} is a folder: give an image file path such as {output.rstrip('/')}/grid.png."
        )
    Image.init()
    suffix = Path(output).suffix.lower()
    if suffix not in Image.registered_extensions():
        raise ValueError(
            f"`{flag}` {output!r} must end with an image file extension PIL can write (e.g. .png, .jpg), got "
            f"{suffix or 'none'}."
        )


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

    from .pipelines.pipeline_bar import BARPipeline

    model = args.model or bundled_model_path()
    dtype = _parse_dtype(args.dtype)
    device = _parse_device(args.device)
    tokens_allocation = _parse_tokens_allocation(args.tokens_allocation)
    _check_scale(args.scale)
    _check_output(args.output)
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
        parser.add_argument("--model", default=None, help="pipeline folder or Hub id (None: the bundled model)")
    parser.add_argument(
        "--class-labels",
        nargs="+",
        default=["Sneaker", "Dress", "Bag", "Trouser"] if demo else None,
        required=not demo,
        help="class ids or names (names from the model's id2label)",
    )
    parser.add_argument("--num-images-per-label", type=int, default=8 if demo else 4, help="images per label")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (batch-invariant)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="None: the model's saved value")
    parser.add_argument(
        "--guidance-schedule", choices=["linear", "constant"], default=None, help="None: the model's saved value"
    )
    parser.add_argument("--num-inference-steps", type=int, default=None, help="head steps per token")
    parser.add_argument("--tokens-allocation", default=None, help='JSON list of bits per head step, e.g. "[2,2,5,7]"')
    parser.add_argument("--temperature", type=float, default=None, help="base temperature (None: the scheduler's)")
    parser.add_argument("--output", default="outputs/demo.png" if demo else None, help="grid PNG path")
    parser.add_argument("--output-dir", default=None, help="also write one PNG per image here")
    parser.add_argument("--scale", type=int, default=None, help="grid upscaling factor >= 1 (None: to ~96 px)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _load_mask(spec: str, size: tuple[int, int], seed: int):
    """`--mask`: a named mask of `bar_hf.masks.MASK_NAMES` (at the model's size) or an image file (white = regenerate)."""
    import torch
    from PIL import Image

    from .masks import MASK_NAMES, make_mask

    if spec in MASK_NAMES:
        return make_mask(spec, size[0], size[1], generator=torch.Generator().manual_seed(seed))
    if not os.path.isfile(spec):
        raise ValueError(f"`--mask` must be one of {MASK_NAMES} or an image file, got {spec!r} (no such file).")
    return Image.open(spec).convert("L")


def _inpaint(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from .pipelines.pipeline_inpaint import BARInpaintPipeline

    model = args.model or bundled_model_path()
    dtype, device = _parse_dtype(args.dtype), _parse_device(args.device)
    _check_scale(args.scale)
    _check_output(args.output)
    _check_model_location(model)
    if not os.path.isfile(args.image):
        raise ValueError(f"`image` {args.image!r} is not a file.")
    if args.num_samples < 1:
        raise ValueError(f"`--num-samples` must be >= 1, got {args.num_samples}.")
    if args.quiet:
        _quiet_loading()
    pipe = BARInpaintPipeline.from_pretrained(model, dtype=dtype).to(device)
    if args.quiet:
        pipe.set_progress_bar_config(disable=True)
    size = tuple(s * pipe.vqvae.config.patch_size for s in pipe.vqvae.grid_size)
    image = Image.open(args.image)
    mask = _load_mask(args.mask, size, args.seed)
    label_ids = pipe._resolve_labels(args.class_labels)
    inputs = pipe.prepare_inputs(image, mask, label_ids[0], args.order, args.keep_bits)
    mode = "L" if pipe.vqvae.config.out_channels == 1 else "RGB"
    original = Image.fromarray((inputs.pixels[0].permute(1, 2, 0).squeeze(-1).numpy() * 255).round().astype(np.uint8))
    kept = pipe.kept_pixel_mask(inputs.regenerate)[0, 0].numpy()
    mask_view = Image.fromarray(np.where(kept, 0, 255).astype(np.uint8)).convert(mode)
    cells, titles = [], []
    for label in label_ids:
        completions = pipe(
            [image] * args.num_samples, mask, label, order=args.order, keep_bits=args.keep_bits,
            paste_back=not args.no_paste_back, guidance_scale=args.guidance_scale,
            num_inference_steps=args.num_inference_steps, temperature=args.temperature,
            generator=[torch.Generator().manual_seed(args.seed + i) for i in range(args.num_samples)],
        ).images  # fmt: skip
        cells += [original.convert(mode), mask_view, *completions]
        titles.append(f"{pipe.id2label.get(label, str(label)).split(',')[0]} ({inputs.order})")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    scale = args.scale or max(1, 96 // size[0])
    make_grid(cells, titles, args.num_samples + 2, scale).save(output)
    print(f"wrote {output}: original | mask (white = regenerated tokens) | {args.num_samples} completions per class")
    return 0


def _add_inpaint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="image file to edit (resized to the model's size if it has its aspect ratio)")
    parser.add_argument("--mask", required=True, help="a mask image (white = regenerate) or a named mask: " + ", ".join(
        ("center", "top_half", "bottom_half", "left_half", "right_half", "outpaint", "random_box")))  # fmt: skip
    parser.add_argument("--class-labels", nargs="+", required=True, help="class ids or names; one grid row each")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (None: the bundled model)")
    parser.add_argument("--order", choices=["kept_first", "raster"], default=None, help="None: from the model")
    parser.add_argument("--keep-bits", type=int, default=None, help="keep the first J bits of regenerated tokens")
    parser.add_argument("--no-paste-back", action="store_true", help="do not copy the kept pixels back")
    parser.add_argument("--num-samples", type=int, default=4, help="completions per class (seeds seed, seed+1, ...)")
    parser.add_argument("--seed", type=int, default=0, help="completion i uses seed + i; also seeds random_box")
    parser.add_argument("--guidance-scale", type=float, default=None, help="None: the model's saved value")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="head steps per token")
    parser.add_argument("--temperature", type=float, default=None, help="base temperature (None: the scheduler's)")
    parser.add_argument("--output", default="outputs/inpaint.png", help="grid PNG path")
    parser.add_argument("--scale", type=int, default=None, help="grid upscaling factor >= 1 (None: to ~96 px)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
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
    inpaint = sub.add_parser("inpaint", help="regenerate the masked part of an image (BARInpaintPipeline), grid PNG")
    _add_inpaint_arguments(inpaint)
    inpaint.set_defaults(func=_inpaint)
    try:
        from .conversion.convert import add_convert_subparser
    except ImportError:  # the converter module is optional at import time
        add_convert_subparser = None
    if add_convert_subparser is not None:
        add_convert_subparser(sub)
    from .app import add_app_subparser  # `bar-hf app`: the web app (imports Gradio only when run)

    add_app_subparser(sub)
    for subparser in sub.choices.values():  # every `--help` shows the defaults
        subparser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
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
