#!/usr/bin/env python
"""Measure the head-step trade-off of a `BARPipeline`: quality vs head calls per image for bit schedules.

    python research/scheduler_sweep.py --output_dir runs/sweep --num_images 500
    python research/scheduler_sweep.py --output_dir /tmp/sweep_quick --quick      # seconds, tiny random model

For every setting (head steps S = 1, 2, 3, 4, 6, k under the allocation rules, the authors' small-first allocation,
both fixed scheduler classes, a few temperatures, and `BARAdaptiveBitScheduler` at thresholds calibrated so that its
average head calls match S = 2, 3, 4, 6) it samples the same `--num_images` labels (classes cycled) with the same
per-image seeds (`seed + i`) and reports FID / precision / recall against real Fashion-MNIST test images
(`bar_hf.evaluation`, FID Inception-v3 features), the accuracy of the real-data classifier on the requested class,
exact head calls per image (counted at the scheduler), and images/s (interleaved timing rounds, median and range).
Each setting's result is cached in `--output_dir/settings/`; a rerun skips finished settings. Writes
`results.json`, `results.md`, `quality_vs_head_calls.png` and `grid_seeds_by_steps.png`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from sweep_plots import image_grid, quality_plot  # a sibling module: this script's folder is on sys.path

import bar_hf
from bar_hf.evaluation.fashion_mnist_classifier import load_classifier, per_class_accuracy
from bar_hf.evaluation.metrics import compute_metrics, compute_reference_statistics
from bar_hf.schedulers.scheduling_bar import MASK_BIT
from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR, read_fashion_mnist

CLASSIFIER = Path(__file__).resolve().parents[1] / "tests" / "data" / "fmnist_classifier.safetensors"
ADAPTIVE_THRESHOLDS = (0.6, 0.8, 0.9, 0.95, 0.98, 0.995)


@dataclass
class Setting:
    """One sampling configuration; `rule` is the plot line it belongs to."""

    name: str
    rule: str
    scheduler: str = "BARBitScheduler"
    num_inference_steps: int | None = None
    tokens_allocation: list[int] | None = None
    allocation_rule: str = "uniform"
    temperature: float | None = None
    confidence_threshold: float | None = None
    target_head_steps: float | None = None  # adaptive only: the per-token head calls its threshold was matched to
    extra: dict = field(default_factory=dict)


def default_settings(k: int, authors_allocation: list[int] | None) -> list[Setting]:
    """The sweep, most informative first (a cut-short run still covers the main curve)."""
    steps = sorted({s for s in (1, 2, 3, 4, 6, k) if s <= k})
    main = [s for s in steps if s in (1, 2, 4, k)]
    rest = [s for s in steps if s not in main]
    targets = [s for s in (2, 4, 3, 6) if 1 < s < k]
    settings = [Setting(f"uniform-S{s}", "uniform", num_inference_steps=s) for s in main]
    settings += [
        Setting(f"adaptive-S~{t}", "adaptive", "BARAdaptiveBitScheduler", target_head_steps=t) for t in targets[:2]
    ]
    settings += [
        Setting(f"cosine-S{s}", "cosine", num_inference_steps=s, allocation_rule="cosine") for s in (2, 4) if s < k
    ]
    if authors_allocation is not None:
        settings.append(
            Setting(f"authors-{authors_allocation}", "authors' small-first", tokens_allocation=authors_allocation)
        )
    settings += [Setting(f"uniform-S{s}", "uniform", num_inference_steps=s) for s in rest]
    settings.append(Setting("logprob-S4", "logprob", "BARLogProbBitScheduler", num_inference_steps=min(4, k)))
    settings += [
        Setting(f"uniform-S4-T{t:g}", f"uniform S4 T={t:g}", num_inference_steps=min(4, k), temperature=t)
        for t in (1.0, 2.5)
    ]
    settings += [
        Setting(f"cosine-S{s}", "cosine", num_inference_steps=s, allocation_rule="cosine") for s in (3, 6) if s < k
    ]
    settings += [
        Setting(f"adaptive-S~{t}", "adaptive", "BARAdaptiveBitScheduler", target_head_steps=t) for t in targets[2:]
    ]
    return settings  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_images", type=int, default=500, help="images per setting (classes cycled)")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="image i uses torch.Generator().manual_seed(seed + i)")
    parser.add_argument(
        "--settings", nargs="*", default=None, help="names of settings to run, in this order (default: all)"
    )
    parser.add_argument("--num_reference", type=int, default=2000, help="real Fashion-MNIST test images for FID")
    parser.add_argument("--classifier", default=str(CLASSIFIER), help="Fashion-MNIST classifier (.safetensors)")
    parser.add_argument("--calibration_images", type=int, default=30, help="images to calibrate adaptive thresholds")
    parser.add_argument("--timing_rounds", type=int, default=3, help="interleaved timing rounds (0: no timing)")
    parser.add_argument("--timing_batch", type=int, default=10)
    parser.add_argument("--grid_images", type=int, default=10, help="images per row of the seed grid")
    parser.add_argument("--feature_batch_size", type=int, default=50)
    parser.add_argument(
        "--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR, help="folder of the Fashion-MNIST IDX .gz files"
    )
    parser.add_argument("--quick", action="store_true", help="tiny random model, pixel features: a smoke test")
    args = parser.parse_args(argv)
    for name in ("num_images", "batch_size", "num_reference", "calibration_images", "timing_batch", "grid_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.timing_rounds < 0:
        parser.error(f"--timing_rounds must be >= 0, got {args.timing_rounds}")
    return args


# ------------------------------------------------------------------------------------------------ model and data
def tiny_pipeline() -> bar_hf.BARPipeline:
    """A seeded random 16-px model with 4x4 tokens of 4 bits (for `--quick`)."""
    torch.manual_seed(0)
    vqvae = bar_hf.BARVQModel(
        sample_size=16, patch_size=4, num_bits=4, in_channels=1, out_channels=1, encoder_hidden_size=24,
        encoder_num_layers=1, encoder_num_heads=3, encoder_intermediate_size=37, encoder_num_position_embeddings=16,
        decoder_hidden_size=20, decoder_num_layers=1, decoder_num_heads=2, decoder_intermediate_size=33,
    ).eval()  # fmt: skip
    config = bar_hf.BARConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, latent_height=4, latent_width=4, num_bits=4,
        num_classes=10, num_class_tokens=2, head_hidden_size=24, head_num_layers=1, head_fourier_size=8,
    )  # fmt: skip
    transformer = bar_hf.BARForCausalImageModeling(config).eval()
    with torch.no_grad():
        transformer.head.output_embed.weight.normal_(0, 0.5)  # logits large enough for the adaptive threshold
    scheduler = bar_hf.BARBitScheduler(bits_per_token=4, num_inference_steps=2, temperature=1.0)
    return bar_hf.BARPipeline(vqvae, transformer, scheduler, guidance_scale=2.0)


def dummy_features(images: torch.Tensor) -> torch.Tensor:
    """`--quick` features: 4x4 average-pooled pixels (no Inception)."""
    return torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)


def reference_images(args: argparse.Namespace, size: int) -> np.ndarray:
    """Real Fashion-MNIST test images resized (bicubic) to the model's size as uint8 RGB, or noise for `--quick`."""
    from PIL import Image

    if args.quick:
        return np.random.default_rng(0).integers(0, 256, (args.num_reference, size, size, 3), dtype=np.uint8)
    images, _ = read_fashion_mnist("test", args.fashion_mnist_dir)
    out = [np.asarray(Image.fromarray(x).resize((size, size), Image.BICUBIC).convert("RGB")) for x in images]
    return np.stack(out[: args.num_reference])


# ------------------------------------------------------------------------------------------------ sampling
def make_scheduler(pipe: bar_hf.BARPipeline, setting: Setting, base_config):
    cls = getattr(bar_hf, setting.scheduler)
    options = {"allocation_rule": setting.allocation_rule, "tokens_allocation": setting.tokens_allocation}
    k = pipe.transformer.config.bits_per_token
    options["num_inference_steps"] = (
        k if setting.scheduler == "BARAdaptiveBitScheduler" else setting.num_inference_steps
    )
    if setting.tokens_allocation is not None:
        options["num_inference_steps"] = len(setting.tokens_allocation)
    if setting.temperature is not None:
        options["temperature"] = setting.temperature
    if setting.confidence_threshold is not None:
        options["confidence_threshold"] = setting.confidence_threshold
    return cls.from_config(base_config, **options)


class HeadCallCounter:
    """Wraps `scheduler.step` to count head calls exactly: per batch loop and per row still being revealed (a row
    with no masked bit left would not need the call if it were sampled alone)."""

    def __init__(self, scheduler):
        self.scheduler, self.step = scheduler, scheduler.step
        self.batch_calls, self.row_calls = 0, None
        scheduler.step = self

    def __call__(self, model_output, timestep, sample, *args, **kwargs):
        active = (sample == MASK_BIT).any(-1).long()
        self.row_calls = active if self.row_calls is None else self.row_calls + active
        self.batch_calls += 1
        return self.step(model_output, timestep, sample, *args, **kwargs)

    def close(self):
        del self.scheduler.step  # back to the class method


def generate(pipe, scheduler, labels, seeds, batch_size, output_type="pil", count=True):
    """Images as uint8 `(n, H, W, 3)` plus exact head calls per image: alone (per row) and in the batch run."""
    pipe.scheduler = scheduler
    images, row_calls, batch_calls = [], [], []
    for start in range(0, len(labels), batch_size):
        counter = HeadCallCounter(scheduler) if count else None
        try:
            gens = [torch.Generator().manual_seed(s) for s in seeds[start : start + batch_size]]
            out = pipe(labels[start : start + batch_size], generator=gens, output_type=output_type).images
        finally:
            if counter is not None:
                counter.close()
        if output_type == "pil":
            images.extend(np.asarray(image.convert("RGB"), dtype=np.uint8) for image in out)
        if counter is not None:
            row_calls.extend(counter.row_calls.tolist())
            batch_calls.extend([counter.batch_calls] * len(gens))
    return (np.stack(images) if images else None), np.array(row_calls), np.array(batch_calls)


def calibrate_adaptive(pipe, base_config, args, out: Path) -> dict[float, float]:
    """Mean head calls per token (alone) of the adaptive scheduler at each grid threshold; cached."""
    path = out / "calibration.json"
    if path.exists():
        return {float(t): c for t, c in json.loads(path.read_text()).items()}
    num_tokens = pipe.transformer.config.num_ar_steps
    n = args.calibration_images
    labels, seeds = [i % 10 for i in range(n)], [args.seed + 10**6 + i for i in range(n)]  # not the sweep's seeds
    result = {}
    for threshold in ADAPTIVE_THRESHOLDS:
        setting = Setting("calibration", "adaptive", "BARAdaptiveBitScheduler", confidence_threshold=threshold)
        _, row_calls, _ = generate(pipe, make_scheduler(pipe, setting, base_config), labels, seeds, n, "latent")
        result[threshold] = float(row_calls.mean() / num_tokens)
        print(f"calibration: threshold {threshold} -> {result[threshold]:.3f} head calls per token", flush=True)
    path.write_text(json.dumps(result, indent=2))
    return result


def threshold_for(calibration: dict[float, float], target: float) -> float:
    """Linear interpolation of the (increasing) calls-vs-threshold curve at `target` calls per token."""
    points = sorted(calibration.items())
    for (t0, c0), (t1, c1) in zip(points, points[1:]):
        if c0 <= target <= c1 and c1 > c0:
            return round(t0 + (target - c0) / (c1 - c0) * (t1 - t0), 4)
    return points[0][0] if target < points[0][1] else points[-1][0]


# ------------------------------------------------------------------------------------------------ metrics
def class_accuracy(classifier_path: str | None, images: np.ndarray, labels: list[int]) -> float | None:
    if not classifier_path or not Path(classifier_path).exists():
        return None
    return per_class_accuracy(load_classifier(classifier_path), images, np.array(labels))["mean"]


def run_setting(pipe, setting, base_config, args, reference_stats, feature_extractor) -> dict:
    n, num_tokens = args.num_images, pipe.transformer.config.num_ar_steps
    labels, seeds = [i % 10 for i in range(n)], [args.seed + i for i in range(n)]
    scheduler = make_scheduler(pipe, setting, base_config)
    start = time.perf_counter()
    images, row_calls, batch_calls = generate(pipe, scheduler, labels, seeds, args.batch_size)
    seconds = time.perf_counter() - start
    metrics = compute_metrics(
        generated_images=images, reference_stats=reference_stats, feature_extractor=feature_extractor,
        batch_size=args.feature_batch_size,
    )  # fmt: skip
    return {
        "setting": asdict(setting),
        "scheduler_config": {key: value for key, value in scheduler.config.items() if not key.startswith("_")},
        "tokens_allocation": scheduler.tokens_allocation,
        "num_images": n,
        "head_calls_per_image": float(row_calls.mean()),
        "head_calls_per_token": float(row_calls.mean() / num_tokens),
        "head_calls_per_image_range": [int(row_calls.min()), int(row_calls.max())],
        "head_calls_per_image_in_batch": float(batch_calls.mean()),
        "batch_size": args.batch_size,
        "fid": metrics["fid"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "class_accuracy": class_accuracy(args.classifier, images, labels),
        "sampling_seconds_whole_run": seconds,
        "feature_source": metrics["feature_source"],
    }, images[: args.grid_images]


def interleaved_timing(pipe, settings, base_config, args) -> dict[str, dict]:
    """Images/s per setting: `timing_rounds` rounds, each timing every setting once on the same small batch."""
    labels = [i % 10 for i in range(args.timing_batch)]
    seeds = [args.seed + i for i in range(args.timing_batch)]
    times = {s.name: [] for s in settings}
    for _ in range(args.timing_rounds):
        for setting in settings:
            scheduler = make_scheduler(pipe, setting, base_config)
            start = time.perf_counter()
            generate(pipe, scheduler, labels, seeds, args.timing_batch, count=False)
            times[setting.name].append(args.timing_batch / (time.perf_counter() - start))
    return {
        name: {"images_per_s_median": statistics.median(v), "images_per_s_range": [min(v), max(v)], "rounds": len(v)}
        for name, v in times.items()
        if v
    }


# ------------------------------------------------------------------------------------------------ report
def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(results: list[dict], timing: dict) -> str:
    lines = [
        "| setting | scheduler | allocation / threshold | T0 | head calls / image (alone) | in batch | FID | "
        "precision | recall | class acc. | images/s median [range]* |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cfg, name = r["scheduler_config"], r["setting"]["name"]
        detail = str(r["tokens_allocation"])
        if r["setting"]["scheduler"] == "BARAdaptiveBitScheduler":
            detail = f"threshold {cfg['confidence_threshold']}, max S={cfg['num_inference_steps']}"
        t = timing.get(name)
        speed = f"{t['images_per_s_median']:.1f} [{t['images_per_s_range'][0]:.1f}, {t['images_per_s_range'][1]:.1f}]"
        lines.append(
            f"| {name} | {r['setting']['scheduler'].replace('BAR', '').replace('BitScheduler', '') or 'Bit'} | {detail} | "
            f"{cfg['temperature']:g} | {r['head_calls_per_image']:.1f} | {r['head_calls_per_image_in_batch']:.1f} | "
            f"{_fmt(r['fid'], 2)} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['class_accuracy'])} | "
            f"{speed if t else '–'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(results: list[dict], timing: dict, grids: dict, out: Path, base_temperature: float) -> None:
    (out / "results.json").write_text(json.dumps({"settings": results, "timing": timing}, indent=2, default=str))
    (out / "results.md").write_text(markdown_table(results, timing))
    lines: dict[str, dict[str, list]] = {"FID (lower is better)": {}, "classifier accuracy (higher is better)": {}}
    for r in results:
        if r["scheduler_config"]["temperature"] != base_temperature:
            continue  # temperature variants are single points, kept out of the rule lines
        rule = r["setting"]["rule"]
        if r["setting"]["scheduler"] == "BARLogProbBitScheduler":
            continue
        x = r["head_calls_per_image"]
        lines["FID (lower is better)"].setdefault(rule, []).append((x, r["fid"]))
        lines["classifier accuracy (higher is better)"].setdefault(rule, []).append((x, r["class_accuracy"]))
    for metric in lines.values():
        for rule in ("cosine", "adaptive"):  # S = 1 and S = k are the same allocation under every rule
            if rule in metric:
                metric[rule] += [p for p in metric.get("uniform", []) if p[0] in (min(metric["uniform"])[0],)]
        for points in metric.values():
            points.sort()
    quality_plot(lines, out / "quality_vs_head_calls.png", "head calls per image (alone)")
    rows = [(name, grid) for name, grid in grids.items() if name.startswith("uniform-S") and "-T" not in name]
    rows.sort(key=lambda row: int(row[0].split("S")[1]))
    rows += [(name, grid) for name, grid in grids.items() if name.startswith("adaptive")]
    if rows:
        image_grid(rows, out / "grid_seeds_by_steps.png")


def main(args: argparse.Namespace) -> dict:
    out = Path(args.output_dir)
    (out / "settings").mkdir(parents=True, exist_ok=True)
    if args.quick:
        pipe, feature_extractor = tiny_pipeline(), dummy_features
    else:
        from bar_hf.evaluation.metrics import load_inception_feature_extractor

        pipe = bar_hf.BARPipeline.from_pretrained(args.model or bar_hf.bundled_model_path())
        feature_extractor = load_inception_feature_extractor()
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    k = pipe.transformer.config.bits_per_token
    authors = next(
        (d["tokens_allocation"] for d in bar_hf.BAR_SAMPLING_DEFAULTS.values() if sum(d["tokens_allocation"]) == k),
        None,
    )
    settings = default_settings(k, authors)
    if args.settings:
        unknown = sorted(set(args.settings) - {s.name for s in settings})
        if unknown:
            raise ValueError(f"--settings: unknown names {unknown}; known: {[s.name for s in settings]}")
        by_name = {s.name: s for s in settings}
        settings = [by_name[name] for name in dict.fromkeys(args.settings)]  # in the order given
    if any(s.scheduler == "BARAdaptiveBitScheduler" for s in settings):
        calibration = calibrate_adaptive(pipe, base_config, args, out)
        for s in settings:
            if s.scheduler == "BARAdaptiveBitScheduler":
                s.confidence_threshold = threshold_for(calibration, s.target_head_steps)
    size = pipe.vqvae.config.sample_size
    reference = compute_reference_statistics(
        reference_images(args, size), out / f"reference_{args.num_reference}.npz", feature_extractor,
        args.feature_batch_size,
    )  # fmt: skip
    results, grids = [], {}
    for setting in settings:
        path = out / "settings" / f"{setting.name}.json"
        cached = json.loads(path.read_text()) if path.exists() else None
        if cached is None or cached["num_images"] != args.num_images or cached["setting"] != asdict(setting):
            start = time.perf_counter()
            result, grid = run_setting(pipe, setting, base_config, args, reference, feature_extractor)
            result["total_seconds"] = time.perf_counter() - start
            np.save(path.with_suffix(".npy"), grid)
            path.write_text(json.dumps(result, indent=2, default=str))
            print(
                f"{setting.name}: {json.dumps({k_: result[k_] for k_ in ('head_calls_per_image', 'fid', 'class_accuracy')})}",
                flush=True,
            )
        results.append(json.loads(path.read_text()))
        grids[setting.name] = np.load(path.with_suffix(".npy"))
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    missing = [s for s in settings if s.name not in timing]
    if args.timing_rounds and missing:
        timing.update(interleaved_timing(pipe, missing, base_config, args))
        timing_path.write_text(json.dumps(timing, indent=2))
    write_report(results, timing, grids, out, float(base_config.temperature))
    return {"results": results, "timing": timing}


if __name__ == "__main__":
    main(parse_args())
