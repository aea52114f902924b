#!/usr/bin/env python
"""Measure `BARInpaintPipeline` on real Fashion-MNIST test images: masks × orders × (true / swapped class).

    python research/inpaint_eval.py --output_dir runs/inpaint_eval                  # 500 images, bundled model
    python research/inpaint_eval.py --output_dir /tmp/inpaint_quick --quick         # seconds, tiny random model

For the first `--num_images` test images and every mask (`center`, `bottom_half`, `random_box` seeded per image) and
order (`kept_first`, `raster`) it completes each image twice with per-image seeds (`seed + i`): with its true class
and with the class swapped by the fixed derangement `(y + 1) mod 10`. Reported per setting: accuracy of the real-data
classifier (`tests/data/fmnist_classifier.safetensors`) on the completions w.r.t. the requested class (and, for the
swap, how often the original class is still predicted), PSNR of the kept region against the input (at the model's
resolution) with paste-back (exact: `inf`) and without, FID of the completions (with paste-back, the pipeline's default)
vs real test images (`bar_hf.evaluation`, Inception-v3 features, reference statistics cached in `--output_dir`), and
seconds per image (whole run, and a separate timing of `--timing_images` images vs plain `BARPipeline` generation).
Writes `results.json`, `results.md` and `grid.png` (original | per mask: mask, kept_first, raster).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scheduler_sweep import CLASSIFIER, dummy_features, tiny_pipeline  # a sibling script (its folder is on sys.path)

import bar_hf
from bar_hf.cli import make_grid
from bar_hf.evaluation.fashion_mnist_classifier import load_classifier, preprocess
from bar_hf.evaluation.metrics import compute_metrics, compute_reference_statistics
from bar_hf.masks import make_mask
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, read_fashion_mnist

MASKS = ("center", "bottom_half", "random_box")
ORDERS = ("kept_first", "raster")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_images", type=int, default=500, help="Fashion-MNIST test images (the first ones)")
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=bar_hf.masks.MASK_NAMES)
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS)
    parser.add_argument(
        "--batch_size", type=int, default=500, help="images per pipeline call (bigger is faster on CPU)"
    )
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i (sampling and random_box)")
    parser.add_argument("--num_reference", type=int, default=2000, help="real test images for the FID reference")
    parser.add_argument(
        "--fid_images",
        type=int,
        default=None,
        help="FID on the first M completions of each setting (default: all; 0: no FID)",
    )
    parser.add_argument("--classifier", default=str(CLASSIFIER), help="Fashion-MNIST classifier (.safetensors)")
    parser.add_argument("--timing_images", type=int, default=50, help="images for the timing vs plain generation")
    parser.add_argument("--grid_images", type=int, default=6, help="rows of grid.png")
    parser.add_argument("--feature_batch_size", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="device of the pipeline and of the Inception network")
    parser.add_argument(
        "--reference_stats_cache", default=None, help="FID reference .npz (default: OUTPUT_DIR/reference_N.npz)"
    )
    parser.add_argument(
        "--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="folder of the Fashion-MNIST IDX .gz files"
    )
    parser.add_argument("--quick", action="store_true", help="tiny random model, noise images, pixel features")
    args = parser.parse_args(argv)
    for name in ("num_images", "batch_size", "num_reference", "grid_images", "feature_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.fid_images is not None and args.fid_images < 0:
        parser.error(f"--fid_images must be >= 0, got {args.fid_images}")
    if args.timing_images < 0:
        parser.error(f"--timing_images must be >= 0, got {args.timing_images}")
    return args


# ------------------------------------------------------------------------------------------------ data
def test_images(args, size: int, count: int, offset: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Test images `(n, C, size, size)` in [0, 1] (PIL bicubic resize, as the training data) and labels; noise for
    `--quick`."""
    if args.quick:
        generator = torch.Generator().manual_seed(offset)
        return torch.rand(count, 1, size, size, generator=generator), [i % 10 for i in range(offset, offset + count)]
    from PIL import Image

    images, labels = read_fashion_mnist("test", args.fashion_mnist_dir)
    chosen = range(offset, offset + count)
    resized = [np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BICUBIC)) for i in chosen]
    return torch.from_numpy(np.stack(resized)).float()[:, None] / 255, [int(labels[i]) for i in chosen]


def masks_for(name: str, args, size: int, count: int) -> torch.Tensor:
    """`(n, size, size)` masks; `random_box` is seeded per image (`seed + i`)."""
    return torch.stack(
        [
            torch.from_numpy(make_mask(name, size, size, generator=torch.Generator().manual_seed(args.seed + i)))
            for i in range(count)
        ]
    )


def to_uint8_rgb(images: torch.Tensor) -> np.ndarray:
    """`(n, C, H, W)` in [0, 1] → uint8 `(n, H, W, 3)`."""
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


# ------------------------------------------------------------------------------------------------ metrics
def psnr(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor) -> float | str:
    """PSNR (dB, images in [0, 1]) over the pixels of `region`, all images pooled; `"inf"` when identical."""
    mse = float(((a - b)[region.expand_as(a)] ** 2).mean())
    return "inf" if mse == 0 else float(10 * np.log10(1 / mse))


def classifier_predictions(path: str, images: np.ndarray) -> np.ndarray | None:
    if not path or not Path(path).exists():
        return None
    model = load_classifier(path).eval()
    with torch.no_grad():
        return torch.cat(
            [model(preprocess(images[i : i + 500])).argmax(-1) for i in range(0, len(images), 500)]
        ).numpy()


def complete(pipe, pixels, masks, labels, order, args) -> tuple[torch.Tensor, float]:
    """Completions without paste-back `(n, C, H, W)` and the seconds they took."""
    outputs, start = [], time.perf_counter()
    for s in range(0, len(labels), args.batch_size):
        end = min(s + args.batch_size, len(labels))
        generators = [torch.Generator().manual_seed(args.seed + i) for i in range(s, end)]
        out = pipe(
            pixels[s:end], masks[s:end], labels[s:end], order=order, paste_back=False, generator=generators,
            output_type="pt",
        ).images  # fmt: skip
        outputs.append(out.cpu())
    return torch.cat(outputs), time.perf_counter() - start


def evaluate_setting(pipe, data, mask_name, order, swapped, reference, features, args) -> tuple[dict, torch.Tensor]:
    pixels, true_labels, masks = data["pixels"], data["labels"], data["masks"][mask_name]
    labels = [(y + 1) % 10 for y in true_labels] if swapped else true_labels
    raw, seconds = complete(pipe, pixels, masks, labels, order, args)
    kept = pipe.kept_pixel_mask(data["regenerate"][mask_name])
    pasted = torch.where(kept, pixels, raw)
    uint8 = to_uint8_rgb(pasted)
    predictions = classifier_predictions(args.classifier, uint8)
    fid_images = len(uint8) if args.fid_images is None else min(args.fid_images, len(uint8))
    fid = None
    if fid_images:
        fid = compute_metrics(
            generated_images=uint8[:fid_images], reference_stats=reference, feature_extractor=features,
            batch_size=args.feature_batch_size, device=args.device,
        )["fid"]  # fmt: skip
    result = {
        "mask": mask_name,
        "order": order,
        "labels": "swapped (y+1) mod 10" if swapped else "true",
        "num_images": len(labels),
        "regenerated_token_fraction": float(data["regenerate"][mask_name].float().mean()),
        "class_accuracy": None if predictions is None else float((predictions == np.array(labels)).mean()),
        "original_class_predicted": None
        if predictions is None or not swapped
        else float((predictions == np.array(true_labels)).mean()),
        "psnr_kept_paste_back": psnr(pasted, pixels, kept),
        "psnr_kept_no_paste_back": psnr(raw, pixels, kept),
        "fid": fid,
        "fid_images": fid_images,
        "seconds_per_image_whole_run": seconds / len(labels),
    }
    return result, pasted


def timing(pipe, data, args) -> dict:
    """Seconds per image on the first `--timing_images` images: plain class-conditional generation and every
    mask × order (one run each, same batch; only meaningful on an otherwise idle machine)."""
    n = min(args.timing_images, len(data["labels"]))
    if n == 0:
        return {}
    plain = bar_hf.BARPipeline.from_pipe(pipe)
    plain.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(n)]
    start = time.perf_counter()
    plain(data["labels"][:n], generator=generators, output_type="pt")
    result = {"plain_generation": (time.perf_counter() - start) / n}
    sub = argparse.Namespace(**{**vars(args), "batch_size": n})
    for mask_name in args.masks:
        for order in args.orders:
            masks = data["masks"][mask_name][:n]
            _, seconds = complete(pipe, data["pixels"][:n], masks, data["labels"][:n], order, sub)
            result[f"{mask_name}/{order}"] = seconds / n
    return {"images": n, "seconds_per_image": result}


# ------------------------------------------------------------------------------------------------ report
def _fmt(value, digits=3) -> str:
    if value is None:
        return "–"
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def markdown_table(results: list[dict], timed: dict) -> str:
    lines = [
        "| mask | order | class | regenerated tokens | class acc. | orig. class still predicted | PSNR kept, paste-back "
        "| PSNR kept, no paste-back | FID | s / image (run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['mask']} | {r['order']} | {r['labels']} | {r['regenerated_token_fraction']:.2f} | "
            f"{_fmt(r['class_accuracy'])} | {_fmt(r['original_class_predicted'])} | {_fmt(r['psnr_kept_paste_back'], 2)} | "
            f"{_fmt(r['psnr_kept_no_paste_back'], 2)} | {_fmt(r['fid'], 2)} | {r['seconds_per_image_whole_run']:.4f} |"
        )
    if timed:
        lines += ["", f"Timing on {timed['images']} images (one run each, seconds per image):", ""]
        lines += ["| run | s / image |", "|---|---|"]
        lines += [f"| {name} | {seconds:.4f} |" for name, seconds in timed["seconds_per_image"].items()]
    return "\n".join(lines) + "\n"


def write_grid(pipe, data, completions: dict, args, path: Path) -> None:
    """Rows: images; columns: original, then per mask: the regenerated tokens (white), kept_first, raster."""
    from PIL import Image

    rows = min(args.grid_images, len(data["labels"]))
    mode = "L" if data["pixels"].shape[1] == 1 else "RGB"

    def pil(image: torch.Tensor) -> Image.Image:
        return Image.fromarray(to_uint8_rgb(image[None])[0]).convert(mode)

    cells, titles = [], []
    for i in range(rows):
        cells.append(pil(data["pixels"][i]))
        for mask_name in args.masks:
            kept = pipe.kept_pixel_mask(data["regenerate"][mask_name][i : i + 1])[0]
            cells.append(pil((~kept).float()))
            cells += [pil(completions[mask_name, order][i]) for order in args.orders]
        titles.append(pipe.id2label.get(data["labels"][i], str(data["labels"][i])).split(",")[0])
    size = data["pixels"].shape[-1]
    make_grid(cells, titles, 1 + len(args.masks) * (1 + len(args.orders)), max(1, 64 // size)).save(path)


def main(args: argparse.Namespace) -> dict:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        bar, features = tiny_pipeline(), dummy_features
    else:
        from bar_hf.evaluation.metrics import load_inception_feature_extractor

        bar = bar_hf.BARPipeline.from_pretrained(args.model or bar_hf.bundled_model_path())
        features = load_inception_feature_extractor(device=args.device)
    pipe = bar_hf.BARInpaintPipeline.from_pipe(bar).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.vqvae.config.sample_size
    pixels, labels = test_images(args, size, args.num_images)
    reference = None
    if args.fid_images != 0:  # the first `num_reference` real test images (cached statistics)
        reference_pixels, _ = test_images(args, size, args.num_reference, offset=args.num_images if args.quick else 0)
        cache = args.reference_stats_cache or out / f"reference_{args.num_reference}.npz"
        reference = compute_reference_statistics(
            to_uint8_rgb(reference_pixels), cache, features, args.feature_batch_size, device=args.device
        )
    data = {"pixels": pixels, "labels": labels, "masks": {}, "regenerate": {}}
    for mask_name in args.masks:
        data["masks"][mask_name] = masks_for(mask_name, args, size, len(labels))
        data["regenerate"][mask_name] = pipe.prepare_inputs(
            pixels, data["masks"][mask_name], labels, "raster", None
        ).regenerate
    results, completions = [], {}
    for mask_name in args.masks:
        for order in args.orders:
            for swapped in (False, True):
                result, pasted = evaluate_setting(pipe, data, mask_name, order, swapped, reference, features, args)
                results.append(result)
                if not swapped:
                    completions[mask_name, order] = pasted[: args.grid_images]
                print(
                    json.dumps({k: result[k] for k in ("mask", "order", "labels", "class_accuracy", "fid")}),
                    flush=True,
                )
    timed = timing(pipe, data, args)
    report = {
        "model": "tiny random (--quick)" if args.quick else (args.model or "bundled"),
        "default_order": pipe.default_order,
        "training_orders": getattr(pipe.transformer.config, "training_orders", None),
        "scheduler": {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")},
        "guidance_scale": pipe.config.guidance_scale,
        "settings": results,
        "timing": timed,
        "args": {k: v for k, v in vars(args).items()},
    }
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "results.md").write_text(markdown_table(results, timed))
    write_grid(pipe, data, completions, args, out / "grid.png")
    return report


if __name__ == "__main__":
    main(parse_args())
