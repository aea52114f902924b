#!/usr/bin/env python
"""Exact FLOPs (`torch.utils.flop_counter.FlopCounterMode`) and bytes read per image of one `BARPipeline` generation,
split backbone / head / scheduler, for every preset. Noise-free (counted, not timed) and quick (~1 min): the
pipeline's model calls run on the `meta` device, so no arithmetic is done.

    python benchmarks/bench_flops.py --out benchmarks/results/flops

FLOPs count matrix products and attention (what `FlopCounterMode` counts: 2 per multiply-add); element-wise work
(norms, activations, the scheduler's Gumbel/top-k) is not counted, so the scheduler shows 0. The tokenizer decode is
excluded. Weight bytes: every weight read once per call that uses it (backbone per AR step except the AdaLN
modulations, computed once per generation; head per head step except the mask-ratio embedding), divided by the
batch; KV bytes: the cached keys/values each step attends to. Divide FLOPs/image by a chip's peak FLOP/s and bytes/image
by its bandwidth for the two ceilings of images/s.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import SHAPES, build_config, machine_info, markdown_table, write_outputs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def count_generation(shape: str, batch: int, dtype: torch.dtype = torch.bfloat16, full: bool = False) -> dict:
    """FLOPs of one generation of `batch` images (CFG on, the preset's head steps), per component."""
    from bar_hf import BAR_SAMPLING_DEFAULTS, BARBitScheduler, BARForCausalImageModeling
    from bar_hf.bits import MASK_BIT
    from bar_hf.pipelines.pipeline_bar import guidance_weight
    from bar_hf.pipelines.sampling import SamplingState

    config = build_config(shape)
    preset = SHAPES[shape][0]
    defaults = BAR_SAMPLING_DEFAULTS[preset]
    with torch.device("meta"):
        transformer = BARForCausalImageModeling(config).to(dtype).eval()
    scheduler = BARBitScheduler(
        bits_per_token=config.bits_per_token,
        tokens_allocation=defaults["tokens_allocation"] if config.bits_per_token == 16 * config.patch_size**2 else None,
        num_inference_steps=min(4, config.bits_per_token),
    )
    ids = torch.arange(2 * batch, device="meta") % config.num_classes
    N = config.num_ar_steps

    def flops(fn, *args):
        with FlopCounterMode(display=False) as counter:
            out = fn(*args)
        return out, counter.get_total_flops()

    # Shapes are identical for every AR token, so the head and scheduler are counted for token 0 (which also embeds
    # the mask ratios, once per generation) and token 1 (times N - 1); a backbone step's FLOPs are affine in its slot
    # (attention over the cached keys), so the N - 1 steps sum to (N - 1) * (first + last) / 2 exactly. The AdaLN
    # modulations are counted per step (the same GEMM FLOPs as the per-block precomputation). `--full` counts every
    # step instead (same numbers, much slower).
    counts = {"backbone": 0, "head": 0, "scheduler": 0}
    with torch.no_grad():
        state = SamplingState(transformer, ids, static=False)
        state.exact_modulations = False  # per step; the data-dependent exactness check cannot run on meta tensors
        conditions, counts["backbone"] = flops(state.prefill)
        for i in range(N) if full else range(min(2, N)):
            repeat = 1 if full or i == 0 else N - 1
            weight = guidance_weight(defaults["guidance_scale"], i, N)
            states = torch.full((batch, config.bits_per_token), MASK_BIT, device="meta")
            for index, t in enumerate(scheduler.timesteps):
                mask_ratio = scheduler.mask_ratio(t)
                logits, f = flops(state.head_logits, states, index, mask_ratio, conditions, weight, True)
                counts["head"] += f * repeat
                output, f = flops(scheduler.step, logits, t, states)
                states = output.prev_sample
                counts["scheduler"] += f * repeat
        step_input = torch.cat([states, states])[:, None]
        if full:
            for _ in range(N - 1):
                counts["backbone"] += flops(state.step, step_input)[1]
        elif N > 1:
            first = flops(state.step, step_input)[1]
            state.cache.length = config.prefix_length + N - 2  # the last step's slot
            last = flops(state.step, step_input)[1]
            counts["backbone"] += (N - 1) * (first + last) // 2
    return {"flops": counts, "bytes": bytes_read(transformer, config, scheduler, batch, dtype)}


def bytes_read(transformer, config, scheduler, batch: int, dtype: torch.dtype) -> dict:
    """Weight and KV-cache bytes read by one generation (see the module docstring)."""
    size = torch.finfo(dtype).bits // 8
    model, head = transformer.model, transformer.head
    adaln = sum(p.numel() for layer in model.layers for p in layer.adaLN_modulation.parameters())
    layers = sum(p.numel() for layer in model.layers for p in layer.parameters()) - adaln
    step = layers + sum(p.numel() for p in model.input_merge.parameters())
    step += sum(p.numel() for m in (model.norm, model.latent_condition_proj) for p in m.parameters())
    N, S = config.num_ar_steps, scheduler.num_inference_steps
    t_embedder = sum(p.numel() for p in getattr(head, "t_embedder", torch.nn.Identity()).parameters())
    head_weights = sum(p.numel() for p in head.parameters()) - t_embedder
    rows, P = 2 * batch, config.prefix_length
    kv = sum(2 * rows * config.hidden_size * (P + i + 1) for i in range(N - 1)) * config.num_hidden_layers
    return {
        "backbone_weights": size * (N * step + adaln * 2),  # AdaLN: prefix pass + ~one block for the AR steps
        "head_weights": size * (N * S * head_weights + t_embedder * S),
        "kv_cache": size * kv,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["b4-small", "bar-b-4", "bar-b-2", "bar-b", "bar-l"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 125])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16", help="for the byte counts")
    parser.add_argument("--quick", action="store_true", help="b4-small and bar-b only")
    parser.add_argument("--full", action="store_true", help="count every AR step (slow; checks the shortcut)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "flops"))
    args = parser.parse_args()
    if args.quick:
        args.shapes = ["b4-small", "bar-b"]
    dtype = getattr(torch, args.dtype)
    report = {"machine": machine_info(), "command": " ".join(sys.argv), "dtype": args.dtype, "results": []}
    rows = []
    for shape in args.shapes:
        for batch in args.batch_sizes:
            result = count_generation(shape, batch, dtype, args.full)
            flops, nbytes = result["flops"], result["bytes"]
            per_image = {k: v / batch for k, v in flops.items()}
            weights = (nbytes["backbone_weights"] + nbytes["head_weights"]) / batch
            report["results"].append({"shape": shape, "batch": batch, **result})
            rows.append(
                [
                    shape,
                    batch,
                    f"{per_image['backbone'] / 1e9:.2f}",
                    f"{per_image['head'] / 1e9:.2f}",
                    f"{per_image['scheduler'] / 1e9:.2f}",
                    f"{sum(per_image.values()) / 1e9:.2f}",
                    f"{weights / 1e9:.3f}",
                    f"{nbytes['kv_cache'] / batch / 1e9:.3f}",
                ]
            )
            print(rows[-1], flush=True)
    headers = ["shape", "batch", "backbone GFLOP/img", "head GFLOP/img", "scheduler GFLOP/img", "total GFLOP/img"]
    headers += [f"weight GB read/img ({args.dtype})", f"KV GB read/img ({args.dtype})"]
    markdown = "\n".join(
        [
            f"FLOPs per image, one generation with CFG (2 rows per image), the preset's head steps; counted with "
            f"`FlopCounterMode` on the meta device ({report['machine']['date_utc']} UTC, torch "
            f"{report['machine']['torch']}).",
            f"`{report['command']}`",
            "",
            markdown_table(headers, rows),
        ]
    )
    write_outputs(args.out, report, markdown)


if __name__ == "__main__":
    main()
