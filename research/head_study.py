#!/usr/bin/env python
"""Prediction heads vs bits per token on real Fashion-MNIST: the paper's central claim, on a 2-core budget.

    python research/head_study.py --study_dir runs/head_study            # default study (~2 h on 2 CPU cores)
    python research/head_study.py --study_dir /tmp/head_study_quick --quick   # a few minutes, tiny models

For every bit width k (8x8 tokens on 32x32 images) it trains a BAR-FSQ tokenizer (`train_bar_vq.py`), reports its
PSNR and reconstruction FID on the test split, pretokenizes the training images (`pretokenize.py`), then trains one
generator per head (`train_bar.py`; `mbm`, `bitwise`, `linear`) with the same backbone, steps, batch, learning rate
and seed, head widths matched on head parameters. A linear head whose `2**k` ids exceed `--max_linear_params` or
`--max_logits_mib` is reported infeasible from its configuration (never built). Each generator is sampled with the
best setting of the same small sweep (`--sweep`, chosen by the classifier-feature Fréchet distance) and reports FID,
precision/recall, classifier accuracy, head parameters, training seconds per step, peak memory and sampling time.

Resumable: one JSON per finished cell in `<study_dir>/results/` (atomic writes); a rerun skips finished cells and
resumes an unfinished training from its last checkpoint. Writes `<study_dir>/head_study.md` and `head_study.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from head_study_cells import (  # sibling modules: this script's folder is on sys.path when it runs
    evaluate_generator,
    evaluate_tokenizer,
    prepare_train_data,
    real_test_images,
    train_generator,
    train_tokenizer,
    write_json,
)
from head_study_heads import plan_heads
from head_study_report import write_report

from bar_hf.training.data import DEBIAN_FASHION_MNIST_DIR
from bar_hf.training.utils import AT_LEAST_1, BETA, POSITIVE, check_flags

HERE = Path(__file__).resolve().parent

HEADS = ("mbm", "bitwise", "linear")
CLASSIFIER = HERE.parent / "tests" / "data" / "fmnist_classifier.safetensors"
#: Sizes of the default study and of `--quick`; every value can be overridden by its flag.
PRESETS = {
    "default": dict(
        bits=[4, 8, 12, 16, 24], tokenizer_width=64, tokenizer_layers=2, tokenizer_steps=400,
        tokenizer_learning_rate=1e-3, tokenizer_ema_decay=0.99, train_images=60000, pretokenize_images=20000, hidden_size=128,
        num_layers=4, num_attention_heads=4, num_class_tokens=4, head_width=128, head_layers=2, head_fourier_size=64,
        generator_steps=300, train_batch_size=64, learning_rate=1e-3, checkpointing_steps=100, num_samples=300,
        sweep_samples=100, num_reference=1000, sample_batch_size=50, max_linear_params=20_000_000,
        max_logits_mib=512, features="inception", threads=2,
    ),
    "quick": dict(
        bits=[4, 8], tokenizer_width=16, tokenizer_layers=1, tokenizer_steps=20, tokenizer_learning_rate=1e-3,
        tokenizer_ema_decay=0.0, train_images=1000, pretokenize_images=256, hidden_size=32, num_layers=1, num_attention_heads=2,
        num_class_tokens=1, head_width=16, head_layers=1, head_fourier_size=8, generator_steps=20, train_batch_size=16,
        learning_rate=1e-3, checkpointing_steps=5, num_samples=20, sweep_samples=10, num_reference=100,
        sample_batch_size=20, max_linear_params=2048, max_logits_mib=2048, features="pixels", threads=1,
    ),
}  # fmt: skip
#: Sampling settings tried for every generator (same for all heads): CFG scale and temperature.
DEFAULT_SWEEP = [(2.0, 1.0), (3.0, 1.5)]
#: Flags that change results: a study folder refuses to continue with other values (bits / heads only select cells).
RESULT_FLAGS = [k for k in PRESETS["default"] if k not in ("bits", "threads", "checkpointing_steps")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--study_dir", required=True, help="results, models and report (resumable)")
    parser.add_argument("--quick", action="store_true", help="tiny models and few steps (a smoke run, not evidence)")
    parser.add_argument("--bits", type=int, nargs="+", help="bits per token (default 4 8 12 16 24; quick: 4 8)")
    parser.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    parser.add_argument("--sweep", default=None, help="JSON list of [guidance_scale, temperature] pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--tokenizer_patch_size", type=int, default=4, help="32 / 4 = an 8x8 token grid")
    parser.add_argument("--fashion_mnist_dir", default=DEBIAN_FASHION_MNIST_DIR)
    parser.add_argument("--classifier", default=str(CLASSIFIER), help="Fashion-MNIST classifier (.safetensors)")
    parser.add_argument("--features", choices=["inception", "pixels"], help="FID features (quick: pixels)")
    parser.add_argument("--plan", action="store_true", help="print the cells (widths, head params, feasibility), exit")
    for name, value in PRESETS["default"].items():
        if name not in ("bits", "features"):
            parser.add_argument(f"--{name}", type=type(value), default=None, help=f"default {value}")
    args = parser.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "default"]
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    validate_args(args)
    return args


def validate_args(args: argparse.Namespace) -> None:
    integers = [k for k, v in PRESETS["default"].items() if isinstance(v, int) and k != "bits"]
    rules = {k: AT_LEAST_1 for k in integers}
    rules.update(learning_rate=POSITIVE, tokenizer_learning_rate=POSITIVE, tokenizer_ema_decay=BETA)
    check_flags(args, {**rules, "image_size": AT_LEAST_1, "tokenizer_patch_size": AT_LEAST_1})
    if any(not 1 <= b <= 62 for b in args.bits):
        raise ValueError(f"`--bits` must be ints in 1..62 (token ids are int64), got {args.bits}.")
    if args.image_size % args.tokenizer_patch_size:
        raise ValueError(
            f"`--image_size` ({args.image_size}) must be divisible by `--tokenizer_patch_size` "
            f"({args.tokenizer_patch_size})."
        )
    if args.num_samples < 4 or args.sweep_samples < 2 or args.num_reference < 4:
        raise ValueError("`--num_samples` and `--num_reference` must be >= 4 and `--sweep_samples` >= 2.")
    try:
        pairs = DEFAULT_SWEEP if args.sweep is None else json.loads(args.sweep)
        args.sweep = [{"guidance_scale": float(g), "temperature": float(t)} for g, t in pairs]
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"`--sweep` must be a JSON list of [guidance_scale, temperature] pairs, got {args.sweep!r}."
        ) from error
    if not args.sweep:
        raise ValueError("`--sweep` must hold at least one setting.")
    for setting in args.sweep:  # checked now, not after hours of training
        if not (setting["guidance_scale"] >= 0 and setting["temperature"] >= 0):
            raise ValueError(f"`--sweep` needs guidance_scale >= 0 and temperature >= 0, got {setting}.")


def check_study_settings(args: argparse.Namespace, root: Path) -> None:
    """A study folder continues only with the settings that made its finished cells."""
    names = [*RESULT_FLAGS, "seed", "image_size", "tokenizer_patch_size", "sweep", "fashion_mnist_dir", "classifier"]
    settings = {k: getattr(args, k) for k in names}
    path = root / "study.json"
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in settings.keys() | previous.keys() if previous.get(k) != settings.get(k))
        if changed:
            raise ValueError(
                f"`--study_dir` {str(root)!r} holds a study made with other settings ({changed}); use a new "
                "--study_dir to run these."
            )
    write_json(path, settings)


def load_references(args: argparse.Namespace, root: Path) -> dict:
    """Real test-image statistics (cached in the study folder) for the FID features and the classifier features."""
    from bar_hf.evaluation.fashion_mnist_classifier import load_classifier
    from bar_hf.evaluation.metrics import compute_reference_statistics

    classifier = load_classifier(args.classifier)
    if args.features == "inception":
        from bar_hf.evaluation.metrics import load_inception_feature_extractor

        extractor = load_inception_feature_extractor()
    else:
        extractor = pooled_pixels
    _, real = real_test_images(args.num_reference, args.image_size, args.fashion_mnist_dir)
    cache = root / "reference"
    cache.mkdir(parents=True, exist_ok=True)
    classifier_fx = ClassifierFeatures(classifier)
    return {
        "fx": extractor,
        "main": compute_reference_statistics(real, cache / f"{args.features}_{len(real)}.npz", extractor),
        "classifier_fx": classifier_fx,
        "classifier": compute_reference_statistics(real, cache / f"classifier_{len(real)}.npz", classifier_fx),
        "classifier_model": classifier,
    }


def pooled_pixels(images):
    """`--features pixels` (the `--quick` default): 4x4 average-pooled pixels. Cheap, not an FID."""
    import torch

    return torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)


pooled_pixels.source = {"name": "4x4 average-pooled pixels (not Inception: FID values not comparable)", "custom": True}


class ClassifierFeatures:
    """128-d penultimate features of the Fashion-MNIST classifier: the sweep's fast Fréchet distance."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.source = {"name": "fashion_mnist_classifier penultimate (128-d)", "custom": True}

    def __call__(self, images):
        x = images[:, :1].float() / 127.5 - 1  # uint8 RGB of grayscale → [-1, 1], one channel
        return self.classifier.classifier[:-1](self.classifier.features(x))


def run_tokenizer_cell(args, bits: int, root: Path, references) -> dict:
    path = root / "results" / f"tokenizer-k{bits}.json"
    if path.exists():
        print(f"[head_study] tokenizer-k{bits}: finished earlier, skipped", flush=True)
        return json.loads(path.read_text())
    start = time.perf_counter()
    train_stats = train_tokenizer(args, bits, root)
    result = evaluate_tokenizer(args, bits, root, train_stats, references)
    result.update(
        cell_seconds=time.perf_counter() - start, finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    )
    write_json(path, result)
    print(f"[head_study] tokenizer-k{bits}: PSNR {result['psnr_db']:.2f} dB, rFID {result['rfid']:.2f}", flush=True)
    return result


def run_generator_cell(args, bits: int, head_type: str, plan: dict, root: Path, references) -> dict:
    cell = f"k{bits}-{head_type}"
    path = root / "results" / f"{cell}.json"
    if path.exists():
        print(f"[head_study] {cell}: finished earlier, skipped", flush=True)
        return json.loads(path.read_text())
    result = {"cell": cell, "bits": bits, "head": head_type, **plan}
    if not plan["feasible"]:
        print(f"[head_study] {cell}: infeasible ({plan['infeasible_reason']})", flush=True)
    else:
        start = time.perf_counter()
        result["train"] = train_generator(args, bits, head_type, plan["head_width"], root)
        result.update(evaluate_generator(args, bits, head_type, root, references))
        result["cell_seconds"] = time.perf_counter() - start
        print(f"[head_study] {cell}: FID {result['gen_fid']:.2f}, acc {result['class_accuracy']:.3f}", flush=True)
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    write_json(path, result)
    return result


def print_plan(args: argparse.Namespace) -> dict:
    """`--plan`: every generator cell's head width, head parameters and feasibility, from the configuration alone."""
    plans = {bits: plan_heads(args, bits) for bits in args.bits}
    for bits, plan in plans.items():
        for head, entry in plan.items():
            status = "feasible" if entry["feasible"] else f"INFEASIBLE: {entry['infeasible_reason']}"
            print(
                f"k={bits:>2} {head:<8} width {entry['head_width']:>4}  head params {entry['head_params']:>13,}  {status}"
            )
    return plans


def main(args: argparse.Namespace) -> dict:
    if args.plan:
        return print_plan(args)
    root = Path(args.study_dir)
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    check_study_settings(args, root)
    references = load_references(args, root)
    args.train_data_path = prepare_train_data(args, root)
    tokenizers, generators = {}, {}
    for bits in args.bits:
        plans = plan_heads(args, bits)  # from the configuration: widths, parameter counts, feasibility
        tokenizers[bits] = run_tokenizer_cell(args, bits, root, references)
        for head_type in args.heads:
            generators[(bits, head_type)] = run_generator_cell(
                args, bits, head_type, plans[head_type], root, references
            )
    write_report(args, tokenizers, generators, root)
    return {"tokenizers": tokenizers, "generators": generators}


if __name__ == "__main__":
    main(parse_args())
