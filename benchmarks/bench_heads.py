#!/usr/bin/env python
"""Per-token time and memory of the MBM, bitwise and linear heads as the bits per token `k` grow.

    python benchmarks/bench_heads.py --out benchmarks/results/heads        # ~2 min on 2 cores
    python benchmarks/bench_heads.py --quick ...                            # k in {8, 16, 32}, 3 repeats

One "token" = everything the head does for one AR token: `S` head steps (the MBM head; `S = 4` by default, the
scheduler's head steps) with the guided scheduler step, on a batch of `--tokens` rows (+ CFG rows). Width: BAR-B's
head (2048, 3 blocks) unless `--head-width` says otherwise. Memory: parameter bytes, and activation memory of one
token: the largest single op allocation seen by `torch.profiler` on CPU, the peak extra bytes
(`torch.cuda.max_memory_allocated`) on GPU. The linear head needs a softmax
over `2**k` ids: its parameter count `W_h · 2**k` is computed from the config and the point is reported as
infeasible (not run) when it exceeds `--max-linear-bytes`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, markdown_table, sync, write_outputs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def head_config(head_type: str, k: int, width: int, layers: int):
    from bar_hf import BARConfig

    # k bits per token: a 2x2 latent grid of k-bit tokens (the head does not depend on the backbone)
    return BARConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, latent_height=2, latent_width=2, num_bits=k,
        num_classes=10, num_class_tokens=1, head_type=head_type, head_hidden_size=width, head_num_layers=layers,
        linear_head_max_bits=64,
    )  # fmt: skip


def linear_head_params(k: int, width: int) -> int:
    """Parameters of the linear head's output layer (`W_h → 2**k`, with bias) from the config alone."""
    return (width + 1) * 2**k


def measure(head_type: str, k: int, args, device: str, dtype: torch.dtype) -> dict:
    from bar_hf import BARBitScheduler, BARForCausalImageModeling
    from bar_hf.bits import MASK_BIT

    width = args.head_width
    size = torch.finfo(dtype).bits // 8
    if head_type == "linear" and linear_head_params(k, width) * size > args.max_linear_bytes:
        return {"feasible": False, "param_bytes": linear_head_params(k, width) * size}
    torch.manual_seed(0)
    model = BARForCausalImageModeling(head_config(head_type, k, width, args.head_layers)).to(device, dtype).eval()
    head_bytes = sum(p.numel() for p in model.head.parameters()) * size
    steps = k if head_type == "linear" else (1 if head_type == "bitwise" else min(args.head_steps, k))
    scheduler = BARBitScheduler(bits_per_token=k, num_inference_steps=steps, temperature=1.0)
    rows = 2 * args.tokens
    conditions = torch.randn(rows, width, device=device, dtype=dtype)

    @torch.no_grad()
    def one_token():
        states = torch.full((args.tokens, k), MASK_BIT, device=device)
        for t in scheduler.timesteps:
            ratio = torch.full((rows,), scheduler.mask_ratio(t), device=device)
            logits = model.head_logits(torch.cat([states, states]), ratio, conditions).float()
            cond, uncond = logits.chunk(2)
            states = scheduler.step(uncond + 3.0 * (cond - uncond), t, states).prev_sample
        return states

    one_token()
    times = []
    for _ in range(args.repeats):
        sync(device)
        start = time.perf_counter()
        one_token()
        sync(device)
        times.append((time.perf_counter() - start) / args.tokens)
    return {
        "feasible": True,
        "head_steps": steps,
        "param_bytes": head_bytes,
        "peak_activation_bytes": peak_bytes(one_token, device),
        "seconds_per_token": statistics.median(times),
        "range": [min(times), max(times)],
    }


def peak_bytes(fn, device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(profile_memory=True) as prof:
        fn()
    events = [e for e in prof.events() if e.cpu_memory_usage > 0]
    return max((e.cpu_memory_usage for e in events), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 10, 12, 16, 20, 24, 32, 64])
    parser.add_argument("--heads", nargs="+", default=["mbm", "bitwise", "linear"])
    parser.add_argument("--head-width", type=int, default=2048)
    parser.add_argument("--head-layers", type=int, default=3)
    parser.add_argument("--head-steps", type=int, default=4, help="MBM head steps per token")
    parser.add_argument("--tokens", type=int, default=16, help="AR tokens per call (batch); CFG doubles the rows")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-linear-bytes", type=float, default=4e9, help="linear heads above this are not run")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "heads"))
    args = parser.parse_args()
    if args.quick:
        args.bits, args.repeats = [8, 10, 16, 32], 3
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    report = {"machine": machine_info(args.device), "command": " ".join(sys.argv), "results": []}
    rows = []
    for k in args.bits:
        for head_type in args.heads:
            result = {"head": head_type, "bits": k, **measure(head_type, k, args, args.device, dtype)}
            report["results"].append(result)
            if result["feasible"]:
                cells = [
                    f"{result['seconds_per_token'] * 1e3:.3g} ({result['range'][0] * 1e3:.3g}–"
                    f"{result['range'][1] * 1e3:.3g})",
                    result["head_steps"],
                    f"{result['param_bytes'] / 2**20:.1f}",
                    f"{result['peak_activation_bytes'] / 2**20:.1f}",
                ]
            else:
                cells = ["infeasible (not run)", "–", f"{result['param_bytes'] / 2**20:.3g}", "–"]
            rows.append([head_type, k, *cells])
            print(rows[-1], flush=True)
    mbm = {r["bits"]: r["seconds_per_token"] for r in report["results"] if r["head"] == "mbm"}
    ratio = f"MBM time/token at 32 bits / at 10 bits: {mbm[32] / mbm[10]:.2f}×" if 32 in mbm and 10 in mbm else ""
    report["mbm_32_over_10"] = mbm[32] / mbm[10] if ratio else None
    m = report["machine"]
    markdown = "\n".join(
        [
            f"Heads ({m['date_utc']} UTC, torch {m['torch']}, {m['device']} / {m['cpu']}, {m['threads']} threads; "
            f"width {args.head_width}, {args.head_layers} blocks, {args.tokens} tokens + CFG, {args.dtype})",
            f"`{report['command']}`",
            "",
            markdown_table(
                ["head", "bits k", "ms/token (range)", "head steps", "params MiB", "largest op allocation MiB"], rows
            ),
            "",
            ratio,
        ]
    )
    write_outputs(args.out, report, markdown)


if __name__ == "__main__":
    main()
