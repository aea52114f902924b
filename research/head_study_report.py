"""Markdown tables and the PNG plot of `head_study.py` (drawn with Pillow through `sweep_plots.py`)."""

from __future__ import annotations

import time
from pathlib import Path

from sweep_plots import quality_plot


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _steps(train: dict | None) -> str:
    if not train or train.get("step_seconds_median") is None:
        return "–"
    return f"{train['step_seconds_median']:.3f} ({train['steps_timed']})"


def tokenizer_table(tokenizers: dict) -> str:
    lines = [
        "| bits/token | codebook | params | PSNR (dB) | rFID | distinct tokens (test) | train s/step (steps timed) | "
        "peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for bits, r in sorted(tokenizers.items()):
        lines.append(
            f"| {bits} | 2^{bits} | {r['params']:,} | {r['psnr_db']:.2f} | {_f(r['rfid'], 2)} | "
            f"{r['distinct_tokens']:,} | {_steps(r['train'])} | {r['train']['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def generator_table(generators: dict) -> str:
    lines = [
        "| bits | head | width | head params (x MBM) | gen FID | precision | recall | class acc. | best (g, T) | "
        "head steps | train s/step (steps timed) | peak RSS MiB | sampling s/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bits, head), r in sorted(generators.items(), key=lambda item: (item[0][0], item[0][1] != "mbm", item[0][1])):
        ratio = r["head_params"] / r["reference_params"]
        params = f"{r['head_params']:,} ({ratio:.2f}x)"
        if not r["feasible"]:
            lines.append(
                f"| {bits} | {head} | {r['head_width']} | {params} | **infeasible**: {r['infeasible_reason']} "
                "| | | | | | | | |"
            )
            continue
        best = r["best_setting"]
        lines.append(
            f"| {bits} | {head} | {r['head_width']} | {params} | {_f(r['gen_fid'], 2)} | {_f(r['precision'])} | "
            f"{_f(r['recall'])} | {_f(r['class_accuracy'])} | ({best['guidance_scale']:g}, {best['temperature']:g}) | "
            f"{r['head_steps']} | {_steps(r['train'])} | {r['train']['peak_rss_mib']:.0f} | "
            f"{r['sampling_seconds_per_image']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def study_seconds(tokenizers: dict, generators: dict) -> float:
    cells = [*tokenizers.values(), *generators.values()]
    return sum(r.get("cell_seconds", 0.0) for r in cells)


def write_report(args, tokenizers: dict, generators: dict, root: Path) -> None:
    """`<root>/head_study.md` (settings, both tables) and `<root>/head_study.png` (metric vs bits, line per head)."""
    feature = next((r["feature_source"] for r in generators.values() if r.get("feature_source")), None)
    header = [
        f"# Head study ({'quick smoke run' if args.quick else 'study'}), report written "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Seed {args.seed}; one training per cell. Tokenizers: {args.tokenizer_steps} steps. Generators: backbone "
        f"D={args.hidden_size}, {args.num_layers} layers, {args.generator_steps} steps x batch {args.train_batch_size}, "
        f"lr {args.learning_rate}. FID / precision / recall: {args.num_samples} samples vs {args.num_reference} real "
        f"test images, features `{args.features}` ({feature}). Sweep {[(s['guidance_scale'], s['temperature']) for s in args.sweep]} "
        f"on {args.sweep_samples} samples, chosen by the classifier-feature Fréchet distance. Sum of cell wall-clock "
        f"times: {study_seconds(tokenizers, generators) / 60:.1f} min.",
        "",
        "## Tokenizers",
        "",
        tokenizer_table(tokenizers),
        "## Generators",
        "",
        generator_table(generators),
    ]
    (root / "head_study.md").write_text("\n".join(header))
    lines = {"generation FID (lower is better)": {}, "classifier accuracy (higher is better)": {}}
    for (bits, head), r in sorted(generators.items()):
        if r["feasible"]:
            lines["generation FID (lower is better)"].setdefault(head, []).append((bits, r["gen_fid"]))
            lines["classifier accuracy (higher is better)"].setdefault(head, []).append((bits, r["class_accuracy"]))
    lines["generation FID (lower is better)"]["tokenizer reconstruction (rFID)"] = [
        (bits, r["rfid"]) for bits, r in sorted(tokenizers.items())
    ]
    quality_plot(lines, root / "head_study.png", "bits per token")
