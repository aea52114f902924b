"""Shared pieces of the benchmark scripts: model shapes, random-weight pipelines, Markdown/JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time

import torch

#: benchmark shapes: (preset, overrides). "b4-small" is the BAR-B/4-shaped model used for the speed profile.
SHAPES = {
    "b4-small": ("bar-b-4", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, head_hidden_size=1024)),
    "bar-b-4": ("bar-b-4", {}),
    "bar-b-2": ("bar-b-2", {}),
    "bar-b": ("bar-b", {}),
    "bar-l": ("bar-l", {}),
    # tiny width, 16x16 tokens of 1 bit at patch 1: 256 AR steps (KV cache vs full recompute)
    "tiny-256": (
        "bar-b",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            head_hidden_size=64,
            num_bits=4,
            num_class_tokens=4,
            head_fourier_size=16,
        ),
    ),  # fmt: skip
}


def build_config(shape: str):
    from bar_hf import BARConfig

    preset, overrides = SHAPES[shape]
    return BARConfig.from_preset(preset, **overrides)


def build_pipeline(shape: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """Random-weight pipeline (AdaLN-zero layers woken up so every path computes) with the preset's sampling
    settings. Same seed → same weights in every process and code version."""
    from bar_hf import BAR_SAMPLING_DEFAULTS, BARBitScheduler, BARForCausalImageModeling, BARPipeline, BARVQModel

    preset, _ = SHAPES[shape]
    config = build_config(shape)
    torch.manual_seed(seed)
    transformer = BARForCausalImageModeling(config).eval()
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "adaLN_modulation" in name:
                param.normal_(0, 0.02)
    vqvae = BARVQModel(sample_size=16 * config.latent_height, num_bits=config.num_bits).eval()
    defaults = BAR_SAMPLING_DEFAULTS[preset]
    k = config.num_bits * config.patch_size**2  # bits per token (spelled out: baseline checkouts may predate its name)
    scheduler = BARBitScheduler(
        bits_per_token=k,
        tokens_allocation=defaults["tokens_allocation"] if k == 16 * config.patch_size**2 else None,
        num_inference_steps=min(4, k),
        temperature=defaults["temperature"],
    )
    pipe = BARPipeline(vqvae, transformer, scheduler, guidance_scale=defaults["guidance_scale"])
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if dtype != torch.float32:  # the transformer only: the tokenizer (and its quantizer) stay float32
        pipe.transformer.to(dtype)
    return pipe


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str = "cpu") -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def summarize(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def machine_info(device: str = "cpu") -> dict:
    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": torch.cuda.get_device_name() if str(device).startswith("cuda") else "cpu",
    }
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=os.path.dirname(__file__)
        ).stdout.strip()
    except OSError:
        pass
    return info


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(stem: str, report: dict, markdown: str) -> None:
    """`<stem>.json` and `<stem>.md` (the directory is created)."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as handle:
        json.dump(report, handle, indent=2)
    with open(stem + ".md", "w") as handle:
        handle.write(markdown + "\n")
    print(markdown)
    print(f"\nwrote {stem}.json and {stem}.md")
