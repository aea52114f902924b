"""The cells of `head_study.py`: train (through the unchanged training scripts of `examples/`, run in this process)
and evaluate one tokenizer per bit width and one generator per (bit width, head)."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from head_study_heads import generator_config  # sibling modules: this script's folder is on sys.path
from sweep_plots import image_grid

import bar_hf
from bar_hf.evaluation.fashion_mnist_classifier import per_class_accuracy
from bar_hf.evaluation.metrics import compute_metrics
from bar_hf.evaluation.reconstruction import reconstruction_metrics, to_uint8_rgb
from bar_hf.training.data import image_to_tensor, read_fashion_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_json(path: Path, value) -> None:
    """Atomic: a temporary file renamed over `path` (a killed study never leaves a half-written result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def peak_rss_mib() -> float:
    """Peak resident memory since the last `reset_peak_rss` (Linux `VmHWM`), else the process's `ru_maxrss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


#: The training scripts the cells run, by name (in `examples/`, loaded from their files).
SCRIPTS = {
    "train_bar_vq": EXAMPLES / "tokenizer" / "train_bar_vq.py",
    "pretokenize": EXAMPLES / "generator" / "pretokenize.py",
    "train_bar": EXAMPLES / "generator" / "train_bar.py",
}


def load_script(script: str):
    """The module of `examples/.../<script>.py` (loaded from its file once; `main` and `parse_args` unchanged)."""
    if script not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"bar_hf_example_{script}", SCRIPTS[script])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[script] = module
    return _LOADED[script]


_LOADED: dict = {}


def run_script(args, script: str, argv: list[str], out: Path) -> dict:
    """Run the training script `script`'s `main` (unchanged) in this process, timing its optimizer steps through its
    `step_hook` (the scripts without one, `pretokenize`, report no step times); returns and writes
    `<out>/<script>_stats.json`: seconds per optimizer step of this invocation and its peak memory."""
    module = load_script(script)
    out.mkdir(parents=True, exist_ok=True)
    times: list[float] = []
    exact_peak = reset_peak_rss()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if script == "pretokenize":
        module.main(module.parse_args(argv))
    else:
        module.main(module.parse_args(argv), step_hook=lambda step, seconds: times.append(seconds))
    stats = {
        "script": script,
        "wall_seconds": time.perf_counter() - start,
        "steps_timed": len(times),
        # the first step of an invocation pays one-off costs (allocation, lazy init): left out of median / mean
        "step_seconds_median": statistics.median(times[1:] or times) if times else None,
        "step_seconds_mean": statistics.fmean(times[1:] or times) if times else None,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_scope": "this training" if exact_peak else "whole study process",
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }
    write_json(out / f"{script}_stats.json", stats)
    return stats


def _common_flags(args, steps: int, batch: int, lr: float, out: Path) -> list[str]:
    return [
        "--output_dir", str(out), "--max_train_steps", str(steps), "--train_batch_size", str(batch),
        "--learning_rate", str(lr), "--min_learning_rate", "1e-5", "--lr_warmup_steps", str(max(1, steps // 10)),
        "--checkpointing_steps", str(args.checkpointing_steps), "--checkpoints_total_limit", "2",
        "--logging_steps", str(max(1, min(50, steps // 4))), "--resume_from_checkpoint", "latest",
    ]  # fmt: skip


def _data_flags(args) -> list[str]:
    return ["--dataset_name", str(args.train_data_path)]


def prepare_train_data(args, root: Path) -> Path:
    """The first `--train_images` Fashion-MNIST training images saved once with `save_to_disk` (memory-mapped for
    every training; decoding the IDX files in each script would cost seconds per cell)."""
    import shutil

    import datasets
    from PIL import Image

    from bar_hf.training.data import FASHION_MNIST_CLASSES

    path = root / "data" / f"fashion_mnist_train_{args.train_images}"
    if not (path / "dataset_info.json").exists():
        images, labels = read_fashion_mnist("train", args.fashion_mnist_dir)
        n = min(args.train_images, len(images))
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES)}
        )
        dataset = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(x) for x in images[:n]], "label": labels[:n].tolist()}, features=features
        )  # the rows of `fashion_mnist_dataset("train")`, built for the first n only
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        dataset.save_to_disk(str(tmp))
        tmp.rename(path)
    return path


# ---------------------------------------------------------------------------------------------------- tokenizer
def tokenizer_config(args, bits: int) -> dict:
    width, grid = args.tokenizer_width, args.image_size // args.tokenizer_patch_size
    part = dict(hidden_size=width, num_layers=args.tokenizer_layers, num_heads=4, intermediate_size=4 * width)
    return {
        "sample_size": args.image_size, "in_channels": 1, "out_channels": 1, "patch_size": args.tokenizer_patch_size,
        "num_bits": bits, "encoder_num_position_embeddings": grid * grid,
        **{f"encoder_{k}": v for k, v in part.items()}, **{f"decoder_{k}": v for k, v in part.items()},
    }  # fmt: skip


def train_tokenizer(args, bits: int, root: Path) -> dict:
    """`train_bar_vq.py` then `pretokenize.py` for one bit width (each skipped when already finished)."""
    out = root / "tokenizers" / f"k{bits}"
    write_json(out / "vq_config.json", tokenizer_config(args, bits))
    stats = out / "train_bar_vq_stats.json"
    if not ((out / "vqvae" / "config.json").exists() and stats.exists()):
        argv = [*_data_flags(args), "--model_config", str(out / "vq_config.json"), "--random_flip", "--seed",
                str(args.seed), "--encoder_lr_mult", "1.0",
                *_common_flags(args, args.tokenizer_steps, args.train_batch_size, args.tokenizer_learning_rate, out)]  # fmt: skip
        if args.tokenizer_ema_decay:
            argv += ["--use_ema", "--ema_decay", str(args.tokenizer_ema_decay)]
        run_script(args, "train_bar_vq", argv, out)
    tokens = root / "tokens" / f"k{bits}"
    if not (tokens / "metadata.json").exists():
        argv = [*_data_flags(args), "--vqvae_model_name_or_path", str(out / "vqvae"), "--output_dir", str(tokens),
                "--batch_size", "500", "--shard_size", str(min(10000, args.pretokenize_images)),
                "--max_images", str(args.pretokenize_images)]  # fmt: skip
        run_script(args, "pretokenize", argv, tokens)
    return json.loads(stats.read_text())


def real_test_images(n: int, size: int, root: str) -> tuple[torch.Tensor, np.ndarray]:
    """The first `n` Fashion-MNIST test images as the models see them (`image_to_tensor`, [-1, 1], 1 channel) and
    as uint8 RGB `(n, size, size, 3)` (the FID reference)."""
    from PIL import Image

    images, _ = read_fashion_mnist("test", root)
    tensors = torch.stack([image_to_tensor(Image.fromarray(x), size, 1) for x in images[:n]])
    return tensors, to_uint8_rgb(tensors)


@torch.no_grad()
def evaluate_tokenizer(args, bits: int, root: Path, train_stats: dict, references) -> dict:
    vq = bar_hf.BARVQModel.from_pretrained(root / "tokenizers" / f"k{bits}" / "vqvae").eval()
    real, _ = real_test_images(args.num_samples, args.image_size, args.fashion_mnist_dir)
    metrics = reconstruction_metrics(vq, real, 250, references["main"], references["fx"])
    params = sum(p.numel() for p in vq.parameters())
    return {
        "cell": f"tokenizer-k{bits}", "bits": bits, "params": params, "num_images": len(real),
        "psnr_db": metrics["psnr_db"], "mse": metrics["mse"], "rfid": metrics["rfid"],
        "distinct_tokens": metrics["tokens_used"], "codebook_size": 2**bits,
        "train": train_stats, "feature_source": metrics["feature_source"],
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- generator
def head_steps(head_type: str, bits: int) -> int:
    """Head calls per token at sampling: MBM min(4, k) (the bundled model's setting); bitwise 1 (its bits are drawn
    independently whatever the schedule); linear k (one bit per call = exact ancestral sampling of the softmax)."""
    return {"mbm": min(4, bits), "bitwise": 1, "linear": bits}[head_type]


def train_generator(args, bits: int, head_type: str, width: int, root: Path) -> dict:
    out = root / "generators" / f"k{bits}-{head_type}"
    write_json(out / "model_config.json", generator_config(args, bits, head_type, width))
    stats = out / "train_bar_stats.json"
    if not ((out / "pipeline" / "model_index.json").exists() and stats.exists()):
        argv = ["--pretokenized_dataset", str(root / "tokens" / f"k{bits}"), "--vqvae_model_name_or_path",
                str(root / "tokenizers" / f"k{bits}" / "vqvae"), "--model_config", str(out / "model_config.json"),
                "--adam_beta2", "0.96", "--adam_weight_decay", "0.03", "--seed", str(args.seed),
                "--num_inference_steps", str(head_steps(head_type, bits)),
                *_common_flags(args, args.generator_steps, args.train_batch_size, args.learning_rate, out)]  # fmt: skip
        run_script(args, "train_bar", argv, out)
    return json.loads(stats.read_text())


def sample(pipe, n: int, first_seed: int, setting: dict, steps: int, batch_size: int) -> tuple[np.ndarray, float]:
    """`n` images (classes cycled, seeds `first_seed + i`) as uint8 `(n, H, W, 3)` and the seconds it took."""
    labels = [i % 10 for i in range(n)]
    images, start = [], time.perf_counter()
    for begin in range(0, n, batch_size):
        gens = [torch.Generator().manual_seed(first_seed + i) for i in range(begin, min(n, begin + batch_size))]
        out = pipe(
            labels[begin : begin + batch_size], guidance_scale=setting["guidance_scale"],
            temperature=setting["temperature"], num_inference_steps=steps, generator=gens, output_type="pil",
        ).images  # fmt: skip
        images.extend(np.asarray(image.convert("RGB"), dtype=np.uint8) for image in out)
    return np.stack(images), time.perf_counter() - start


def classifier_accuracy(classifier, images: np.ndarray, labels: np.ndarray) -> float:
    return per_class_accuracy(classifier, images, labels)["mean"]


def evaluate_generator(args, bits: int, head_type: str, root: Path, references) -> dict:
    """The sweep (chosen by the classifier-feature Fréchet distance on `--sweep_samples` images, seeds 10**6 + i),
    then the final metrics of the best setting on `--num_samples` images (seeds `--seed` + i)."""
    out = root / "generators" / f"k{bits}-{head_type}"
    pipe = bar_hf.BARPipeline.from_pretrained(out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    steps = head_steps(head_type, bits)
    sweep = []
    for setting in args.sweep:
        name = f"g{setting['guidance_scale']:g}-t{setting['temperature']:g}"
        path = out / "sweep" / f"{name}.json"
        if not path.exists():
            images, _ = sample(pipe, args.sweep_samples, 10**6, setting, steps, args.sample_batch_size)
            metrics = compute_metrics(
                generated_images=images, reference_stats=references["classifier"],
                feature_extractor=references["classifier_fx"], compute_precision_recall=False,
            )  # fmt: skip
            write_json(path, {"name": name, **setting, "classifier_fd": metrics["fid"]})
        sweep.append(json.loads(path.read_text()))
    best = min(sweep, key=lambda r: r["classifier_fd"])
    setting = {"guidance_scale": best["guidance_scale"], "temperature": best["temperature"]}
    images, seconds = sample(pipe, args.num_samples, args.seed, setting, steps, args.sample_batch_size)
    metrics = compute_metrics(
        generated_images=images, reference_stats=references["main"], feature_extractor=references["fx"],
        k=min(3, args.num_samples - 1),
    )  # fmt: skip
    labels = np.array([i % 10 for i in range(args.num_samples)])
    image_grid([(f"k{bits}-{head_type}", images[:20])], out / "samples.png")  # classes 0-9 twice, for the eye
    return {
        "sweep": sweep, "best_setting": setting, "head_steps": steps, "num_samples": args.num_samples,
        "gen_fid": metrics["fid"], "precision": metrics["precision"], "recall": metrics["recall"],
        "precision_recall_k": metrics["precision_recall_k"],
        "class_accuracy": classifier_accuracy(references["classifier_model"], images, labels),
        "sampling_seconds_per_image": seconds / args.num_samples, "sample_batch_size": args.sample_batch_size,
        "feature_source": metrics["feature_source"],
        "transformer_params": sum(p.numel() for p in pipe.transformer.parameters()),
    }  # fmt: skip
