#!/usr/bin/env python
"""Sampling throughput of `BARPipeline` (random weights: speed does not depend on the values), new code vs a
BASELINE checkout (e.g. the previous `main`), interleaved.

    git worktree add --detach /tmp/bar_main_ref main   # the baseline
    python benchmarks/benchmark_sampling.py --baseline-src /tmp/bar_main_ref/src --out benchmarks/results/sampling
    python benchmarks/benchmark_sampling.py --quick ...  # a few minutes on 2 cores (no compile, no bf16)

Every variant runs in a worker process (the baseline worker imports `bar_hf` from `--baseline-src`, the others from
this checkout); repeats are interleaved round-robin over variants so drift and noise hit all variants alike. Reported:
images/s from wall time (median and range over repeats) and process CPU seconds per image. Before timing, each
worker's temperature-0 latents are compared with the baseline's (fp32 variants must be bit-identical).

Variants (new code): `eager` (default pipeline call), `eager-static` (`cache_implementation="static"`), `compiled`
(`pipe.enable_compile()`), `bf16` (eager, `torch.bfloat16` transformer), `compiled-bf16`, `bare-loop` (the same model calls without
the pipeline: overhead = pipeline / bare − 1). Separately, `kv-vs-recompute`: backbone-only AR loop with the KV
cache vs a full causal forward per step, on a tiny-width model with 256 AR steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    build_pipeline,
    machine_info,
    markdown_table,
    summarize,
    timed,
    write_outputs,
)

HERE = os.path.dirname(os.path.abspath(__file__))
NEW_SRC = os.path.join(os.path.dirname(HERE), "src")


# ---------------------------------------------------------------------------------------------------- worker side
def bare_loop(pipe, labels, generator, output_type="latent"):
    """The pipeline's model calls without the pipeline (labels resolved, CFG weights, head loop; decode unless
    `output_type == "latent"`)."""
    from bar_hf.bits import unpatchify_bits
    from bar_hf.pipelines.sampling import SamplingState, sample_token

    config, scheduler = pipe.transformer.config, pipe.scheduler
    scheduler.set_timesteps()
    g = pipe.config.guidance_scale
    ids = torch.tensor(labels)
    ids = torch.cat([ids, torch.full_like(ids, config.null_class_id)])
    state = SamplingState(pipe.transformer, ids)
    conditions = state.prefill()
    bits = torch.empty(len(labels), config.num_ar_steps, config.bits_per_token, dtype=torch.long)
    for i in range(config.num_ar_steps):
        weight = 1 + (g - 1) * i / config.num_ar_steps
        bits[:, i] = states = sample_token(state, scheduler, conditions, weight, True, generator)
        if i < config.num_ar_steps - 1:
            conditions = state.step(torch.cat([states, states])[:, None])
    latent = unpatchify_bits(bits, (config.latent_height, config.latent_width), config.patch_size)
    return latent if output_type == "latent" else pipe.vqvae.decode_bits(latent).sample


def gemm_rate(rows: int, shapes: list[tuple[int, int]], repeats: int = 20) -> float:
    """GFLOP/s of `F.linear` on `(rows, K) @ (K, N)` for each `(K, N)` in `shapes` (float32): the rate the BLAS
    reaches on the head's own GEMM shapes: a ceiling for fp32 generation where those GEMMs dominate (batch >= ~16);
    not one at tiny `rows` (the prefill's larger GEMMs run faster) nor for bf16."""
    weights = [torch.randn(n, k) for k, n in shapes]
    inputs = [torch.randn(rows, k) for k, _ in shapes]
    flops = sum(2 * rows * k * n for k, n in shapes) * repeats
    for x, w in zip(inputs, weights):
        torch.nn.functional.linear(x, w)  # warm-up
    wall, _ = timed(
        lambda: [torch.nn.functional.linear(x, w) for _ in range(repeats) for x, w in zip(inputs, weights)]
    )
    return flops / wall / 1e9


def head_gemm_shapes(config) -> list[tuple[int, int]]:
    """(K, N) of the MBM head's GEMMs per head step (AdaLN, SwiGLU in/out per block; final AdaLN; in/out proj)."""
    W, inter, k = config.head_hidden_size, config.head_intermediate_size, config.bits_per_token
    block = [(W, 3 * W), (W, 2 * inter), (inter, W)]
    return [(k * config.head_bit_embedding_size, W)] + block * config.head_num_layers + [(W, 2 * W), (W, 2 * k)]


def executed_flops(pipe, labels) -> int:
    """FLOPs (`FlopCounterMode`: matrix products and attention) the pipeline executes for one latent generation."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        pipe(labels, temperature=0.0, output_type="latent")
    return counter.get_total_flops()


def kv_vs_recompute(shape: str, batch: int, steps: int | None) -> dict:
    """Backbone-only AR loop: KV cache (one token per step) vs full recompute (whole prefix per step)."""
    from bar_hf.pipelines.sampling import SamplingState

    pipe = build_pipeline(shape)
    model, config = pipe.transformer, pipe.transformer.config
    steps = steps or config.num_ar_steps
    bits = torch.randint(0, 2, (2 * batch, steps, config.num_bits * config.patch_size**2))
    ids = torch.cat([torch.arange(batch) % config.num_classes, torch.full((batch,), config.null_class_id)])

    @torch.no_grad()
    def cached():  # the pipeline's path: preallocated KV cache, one token per step
        state = SamplingState(model, ids, static=False)
        state.prefill()
        for i in range(steps - 1):
            state.step(bits[:, i : i + 1])

    @torch.no_grad()
    def recompute():
        for i in range(steps):
            model.compute_conditions(bits[:, :i], ids)

    return {"cached": timed(cached), "recompute": timed(recompute), "steps": steps}


class Worker:
    """Holds pipelines of one code version; answers one JSON command per line."""

    def __init__(self, threads: int, device: str):
        torch.set_num_threads(threads)
        self.device, self.pipes = device, {}

    def pipe(self, shape, variant):
        dtype = torch.bfloat16 if "bf16" in variant else torch.float32
        key = (shape, dtype, "compiled" in variant)  # eager / eager-static / bare-loop share one pipeline
        if key not in self.pipes:
            pipe = build_pipeline(shape, self.device, dtype)  # bf16: the transformer only
            if "compiled" in variant:
                mode = "reduce-overhead" if self.device.startswith("cuda") else None
                pipe.enable_compile(mode=mode)
            self.pipes[key] = pipe
        return self.pipes[key]

    def run(self, command: dict) -> dict:
        shape, variant, batch = command["shape"], command["variant"], command["batch"]
        if variant == "kv-vs-recompute":
            return kv_vs_recompute(shape, batch, command.get("steps"))
        pipe = self.pipe(shape, variant)
        config = pipe.transformer.config
        labels = [i % config.num_classes for i in range(batch)]
        generator = torch.Generator(device=self.device).manual_seed(0)
        cache = "static" if variant == "eager-static" else "dynamic"
        output_type = command.get("output_type", "latent")
        if variant == "ceiling":  # executed FLOPs per image and the BLAS rate on the head's GEMM shapes
            rate = gemm_rate(2 * batch, head_gemm_shapes(config)) if self.device == "cpu" else None
            return {"flops_per_image": executed_flops(pipe, labels) / batch, "gemm_gflops": rate}
        if command.get("latents"):  # temperature-0 latents for the bit-identity check
            images = pipe(labels, temperature=0.0, output_type="latent", cache_implementation=cache).images
            return {"latents": images.cpu().flatten().tolist()}
        if variant == "decode":  # the tokenizer decode alone (identical in every variant and code version)
            bits = torch.randint(0, 2, (batch, config.latent_height * config.latent_width, config.num_bits))
            with torch.no_grad():
                wall, cpu = timed(lambda: pipe.vqvae.decode_bits(bits.to(self.device)), self.device)
        elif variant == "bare-loop":
            with torch.no_grad():
                wall, cpu = timed(lambda: bare_loop(pipe, labels, generator, output_type), self.device)
        else:
            call = lambda: pipe(labels, generator=generator, output_type=output_type, cache_implementation=cache)  # noqa: E731
            wall, cpu = timed(call, self.device)
        return {"wall": wall, "cpu": cpu}


def worker_main(threads: int, device: str) -> None:
    worker = Worker(threads, device)
    for line in sys.stdin:
        result = worker.run(json.loads(line))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------- driver side
class WorkerProcess:
    def __init__(self, src: str, threads: int, device: str):
        env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads), "--device", device],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def run(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died on {command}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def check_identity(workers, plan, shape, batch, reference_key) -> list[dict]:
    """Temperature-0 latents of every float32 variant compared with the reference variant's."""
    latents, entries = {}, []
    for who, variant in plan:
        if "bf16" not in variant and variant not in ("bare-loop", "decode"):
            latents[(who, variant)] = workers[who].run(shape=shape, variant=variant, batch=batch, latents=True)
    for (who, variant), got in latents.items():
        identical = got["latents"] == latents[reference_key]["latents"]
        entries.append(
            {"shape": shape, "batch": batch, "variant": f"{who}/{variant}", "reference": "/".join(reference_key),
             "identical": identical}
        )  # fmt: skip
        print(json.dumps(entries[-1]), flush=True)
    return entries


def time_interleaved(workers, plan, shape, batch, args) -> list[dict]:
    """Warm-up + repeats of every (code, variant), round-robin so drift and noise hit all alike."""
    times = {key: [] for key in plan}
    for repeat in range(args.warmup + args.repeats):
        for who, variant in plan:
            result = workers[who].run(shape=shape, variant=variant, batch=batch, output_type=args.output_type)
            if repeat >= args.warmup:
                times[(who, variant)].append(result)
    results = []
    for (who, variant), runs in times.items():
        results.append(
            {
                "shape": shape,
                "batch": batch,
                "code": who,
                "variant": variant,
                "images_per_s": summarize([batch / r["wall"] for r in runs]),
                "cpu_s_per_image": summarize([r["cpu"] / batch for r in runs]),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return results


def kv_report(worker, args) -> dict:
    steps = 64 if args.quick else None
    kv = [worker.run(shape=args.kv_shape, variant="kv-vs-recompute", batch=args.kv_batch, steps=steps) for _ in "ab"]
    cached, recompute = min(k["cached"][0] for k in kv), min(k["recompute"][0] for k in kv)
    return {
        "shape": args.kv_shape,
        "batch": args.kv_batch,
        "steps": kv[0]["steps"],
        "cached_s": cached,
        "recompute_s": recompute,
        "speedup": recompute / cached,
    }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["b4-small"], help="see benchmarks/_common.py SHAPES")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--variants", nargs="+", default=["eager", "eager-static", "compiled", "bf16", "bare-loop", "decode"]
    )
    parser.add_argument(
        "--output-type",
        choices=["latent", "pt"],
        default="latent",
        help="latent: time the generation (AR backbone + head + scheduler); pt: also decode in every variant",
    )
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--baseline-src", default=None, help="`src` folder of the baseline checkout (e.g. main)")
    parser.add_argument("--kv-shape", default="tiny-256", help="'' to skip the KV cache vs recompute measurement")
    parser.add_argument("--kv-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="3 repeats, batch 16, no bf16/compile, 64 KV steps")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the chip's peak (dense) for the FLOP ceiling")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "sampling"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker_main(args.threads, args.device)
    if args.quick:
        args.repeats, args.batch_sizes = 3, [16]
        args.variants = [v for v in args.variants if "bf16" not in v and "compiled" not in v]
    torch.set_num_threads(args.threads)

    workers = {"new": WorkerProcess(NEW_SRC, args.threads, args.device)}
    if args.baseline_src:
        workers["baseline"] = WorkerProcess(os.path.abspath(args.baseline_src), args.threads, args.device)
    plan = [("new", v) for v in args.variants] + ([("baseline", "eager")] if args.baseline_src else [])
    reference_key = ("baseline", "eager") if args.baseline_src else ("new", "eager")
    report = {
        "machine": machine_info(args.device),
        "command": " ".join(sys.argv),
        "output_type": args.output_type,
        "peak_tflops": args.peak_tflops,
        "results": [],
        "identity": [],
        "ceiling": [],
    }
    for shape in args.shapes:
        for batch in args.batch_sizes:
            report["identity"] += check_identity(workers, plan, shape, batch, reference_key)
            report["results"] += time_interleaved(workers, plan, shape, batch, args)
            ceiling = workers["new"].run(shape=shape, variant="ceiling", batch=batch)
            report["ceiling"].append({"shape": shape, "batch": batch, **ceiling})
    if args.kv_shape:
        report["kv_vs_recompute"] = kv_report(workers["new"], args)
    for worker in workers.values():
        worker.close()
    write_outputs(args.out, report, to_markdown(report))


def to_markdown(report: dict) -> str:
    rows, index = [], {}
    for r in report["results"]:
        index[(r["shape"], r["batch"], r["code"], r["variant"])] = r["images_per_s"]["median"]
    for r in report["results"]:
        ips, cpu = r["images_per_s"], r["cpu_s_per_image"]
        base = index.get((r["shape"], r["batch"], "baseline", "eager"))
        pipe_eager = index.get((r["shape"], r["batch"], "new", "eager"))
        rows.append(
            [
                r["shape"],
                r["batch"],
                f"{r['code']}/{r['variant']}",
                f"{ips['median']:.3g} ({ips['min']:.3g}–{ips['max']:.3g})",
                f"{cpu['median']:.3g}",
                f"{ips['median'] / base:.2f}×" if base and r["variant"] != "decode" else "–",
                f"{ips['median'] / pipe_eager - 1:+.1%}" if r["variant"] == "bare-loop" and pipe_eager else "",
            ]
        )
    m = report["machine"]
    text = [
        f"Sampling ({m['date_utc']} UTC, torch {m['torch']}, {m['device']} / {m['cpu']} {m['cpu_capability']}, "
        f"{m['threads']} threads, git {m.get('git', '?')})",
        f"`{report['command']}`",
        "",
        markdown_table(
            [
                "shape",
                "batch",
                "code/variant",
                "images/s median (range)",
                "CPU s/image",
                "vs baseline",
                "bare vs pipe",
            ],
            rows,
        ),
        "",
    ]
    for entry in report["identity"]:
        text.append(
            f"- temperature-0 latents of {entry['shape']} batch {entry['batch']} {entry['variant']} "
            f"{'identical to' if entry['identical'] else '**differ from**'} {entry['reference']}"
        )
    text += ceiling_notes(report, index)
    kv = report.get("kv_vs_recompute")
    if kv:
        text += [
            "",
            f"KV cache vs full recompute ({kv['shape']}, batch {kv['batch']} + CFG, {kv['steps']} AR steps, "
            f"backbone only): cached {kv['cached_s']:.3g} s, recompute {kv['recompute_s']:.3g} s, "
            f"**{kv['speedup']:.1f}×**",
        ]
    return "\n".join(text)


def ceiling_notes(report: dict, index: dict) -> list[str]:
    """Per (shape, batch) and generation variant of the new code: executed GFLOP/s, as a fraction of the BLAS rate on
    the head's GEMM shapes (CPU) and of the chip's peak (`--peak-tflops`), and end-to-end images/s with the decode."""
    text, peak = [""], report.get("peak_tflops")
    latent = report.get("output_type") == "latent"
    for c in report.get("ceiling", []):
        key, gemm = (c["shape"], c["batch"]), c.get("gemm_gflops")
        decode = index.get((*key, "new", "decode"))
        prefix = f"- {c['shape']} batch {c['batch']}"
        head = f"{prefix}: executed {c['flops_per_image'] / 1e9:.3g} GFLOP/image (`FlopCounterMode`, new/eager)"
        text.append(head + (f"; the tokenizer decode alone {decode:.3g} img/s" if decode else ""))
        for (shape, batch, code, variant), ips in index.items():
            if (shape, batch) != key or variant in ("decode", "bare-loop") or (code, variant) == ("new", "decode"):
                continue
            achieved = ips * c["flops_per_image"] / 1e9
            parts = [f"{achieved:.3g} GFLOP/s"]
            if gemm:
                parts.append(f"{achieved / gemm:.0%} of the BLAS rate on the head's GEMM shapes ({gemm:.3g} GFLOP/s)")
            if peak:
                parts.append(f"{achieved / (peak * 1e3):.1%} of the chip's {peak:g} TFLOP/s")
            if latent and decode:
                parts.append(f"end to end with the decode {1 / (1 / ips + 1 / decode):.3g} img/s")
            text.append(f"{prefix} {code}/{variant}: " + ", ".join(parts))
    return text


if __name__ == "__main__":
    main()
