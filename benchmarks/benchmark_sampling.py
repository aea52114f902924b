#!/usr/bin/env python
"""Sampling throughput of `BARPipeline` for the authors' model sizes (random weights: speed does not depend on
the values), plus full-size correctness checks on the same device.

    python benchmarks/benchmark_sampling.py --presets bar-b bar-b-4 --batch-size 125 --dtype bfloat16 --out bench.json

Throughput is measured like the authors' `sample_speed_benchmark`: warm-up batches excluded, images / wall time,
KV cache and CFG on, tokenizer decoding included, evaluation sampling settings of the preset (BAR_METHOD §4.5).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers.cache_utils import DynamicCache

from bar_hf import (
    BAR_SAMPLING_DEFAULTS,
    BARBitScheduler,
    BARConfig,
    BARForCausalImageModeling,
    BARPipeline,
    BARVQModel,
)


def build_pipeline(preset: str, device: str, dtype: torch.dtype) -> BARPipeline:
    config = BARConfig.from_preset(preset)
    with torch.device(device):
        transformer = BARForCausalImageModeling(config).eval()
        image_size = 16 * config.latent_height
        vqvae = BARVQModel(sample_size=image_size, num_bits=config.num_bits).eval()
    defaults = BAR_SAMPLING_DEFAULTS[preset]
    scheduler = BARBitScheduler(
        bits_per_token=config.bits_per_step,
        tokens_allocation=defaults["tokens_allocation"],
        temperature=defaults["temperature"],
    )
    pipe = BARPipeline(vqvae, transformer, scheduler, guidance_scale=defaults["guidance_scale"])
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(
    pipe: BARPipeline, batch_size: int, num_batches: int, warmup: int, device: str, cache: str = "dynamic"
) -> dict:
    labels = [i % pipe.transformer.config.num_classes for i in range(batch_size)]
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(warmup):
        pipe(labels, generator=generator, output_type="pt", cache_implementation=cache)
    sync(device)
    start = time.perf_counter()
    for _ in range(num_batches):
        pipe(labels, generator=generator, output_type="pt", cache_implementation=cache)
    sync(device)
    elapsed = time.perf_counter() - start
    return {
        "images": batch_size * num_batches,
        "seconds": round(elapsed, 3),
        "images_per_second": round(batch_size * num_batches / elapsed, 2),
        "cache_implementation": cache,
    }


@torch.no_grad()
def kv_cache_parity(preset: str, device: str) -> dict:
    """Full-size fp32 check: cached incremental conditions == full causal forward (BAR_METHOD §4.4: 2e-7)."""
    torch.manual_seed(0)
    config = BARConfig.from_preset(preset)
    with torch.device(device):
        model = BARForCausalImageModeling(config).eval()
        for name, param in model.named_parameters():  # wake up AdaLN-zero so every path matters
            if "adaLN_modulation" in name:
                param.normal_(0, 0.02)
    bits = torch.randint(0, 2, (2, config.num_ar_steps, config.bits_per_step), device=device)
    labels = torch.tensor([3, config.null_class_id], device=device)
    full = model.compute_conditions(bits, labels).conditions
    cache = DynamicCache()
    steps = [model.compute_conditions(None, labels, cache=cache).conditions]
    for i in range(config.num_ar_steps - 1):
        steps.append(model.compute_conditions(bits[:, i : i + 1], labels, cache=cache).conditions)
    incremental = torch.cat(steps, 1)
    model.config._attn_implementation = "eager"
    eager = model.compute_conditions(bits, labels).conditions
    return {
        "max_abs_diff_cache_vs_full": float((incremental - full).abs().max()),
        "max_abs_diff_eager_vs_sdpa": float((eager - full).abs().max()),
        "condition_scale": float(full.abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="*", default=["bar-b-4", "bar-b-2", "bar-b", "bar-l"])
    parser.add_argument("--model", default=None, help="also time a saved pipeline (folder, Hub id or 'bundled')")
    parser.add_argument("--batch-size", type=int, default=125)
    parser.add_argument("--num-batches", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parity-preset", default="bar-b", help="'' to skip the full-size KV-cache check")
    parser.add_argument("--caches", nargs="+", default=["dynamic", "static"], help="KV cache implementations to time")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "torch": torch.__version__,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "results": {},
    }
    if args.parity_preset:
        report["kv_cache_parity_fp32"] = {args.parity_preset: kv_cache_parity(args.parity_preset, args.device)}
        print(json.dumps(report["kv_cache_parity_fp32"]), flush=True)
    if args.model:
        from bar_hf import bundled_model_path

        path = bundled_model_path() if args.model == "bundled" else args.model
        pipe = BARPipeline.from_pretrained(path).to(device=args.device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        for cache in args.caches:
            result = throughput(pipe, args.batch_size, args.num_batches, args.warmup, args.device, cache)
            result.update(
                guidance_scale=pipe.config.guidance_scale,
                temperature=pipe.scheduler.config.temperature,
                num_inference_steps=pipe.scheduler.config.num_inference_steps,
                threads=torch.get_num_threads(),
            )
            report["results"][f"{args.model}/{cache}"] = result
            print(args.model, json.dumps(result), flush=True)
    for preset in args.presets:
        pipe = build_pipeline(preset, args.device, dtype)
        for cache in args.caches:
            result = throughput(pipe, args.batch_size, args.num_batches, args.warmup, args.device, cache)
            result.update(BAR_SAMPLING_DEFAULTS[preset])
            report["results"][f"{preset}/{cache}"] = result
            print(preset, json.dumps(result), flush=True)
        del pipe
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
