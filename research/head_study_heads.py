"""Head configurations of `head_study.py`: generator configs per (bits, head), head widths matched on parameter count,
and the linear head's feasibility decided from the configuration alone (nothing is allocated).

Head parameters = the head module plus `latent_condition_proj` (the backbone's `D → W_h` projection whose size is set
by the head width); the rest of the backbone is identical for every head of a bit width.
"""

from __future__ import annotations

import math

import torch

from bar_hf import BARConfig
from bar_hf.models.heads import HEAD_CLASSES

MIN_HEAD_WIDTH = 16
#: Candidate head widths searched when matching parameter counts.
WIDTH_CANDIDATES = tuple(range(MIN_HEAD_WIDTH, 1025, 8))
FLOAT_BYTES = 4  # fp32 logits


def generator_config(args, bits: int, head_type: str, head_width: int) -> dict:
    """`BARConfig` arguments of one study generator: 8x8 grid of `bits`-bit tokens, the study's backbone."""
    grid = args.image_size // args.tokenizer_patch_size
    return dict(
        hidden_size=args.hidden_size, num_hidden_layers=args.num_layers, num_attention_heads=args.num_attention_heads,
        hidden_dropout=0.0, latent_height=grid, latent_width=grid, num_bits=bits, patch_size=1, num_classes=10,
        num_class_tokens=args.num_class_tokens, class_dropout_prob=0.1, head_type=head_type,
        head_hidden_size=head_width, head_num_layers=args.head_layers, head_fourier_size=args.head_fourier_size,
        linear_head_max_bits=max(20, bits),  # the study decides feasibility itself (`linear_feasibility`)
    )  # fmt: skip


def head_parameters(config_kwargs: dict) -> int:
    """Exact parameter count of the head + `latent_condition_proj`, built on the meta device (no memory used)."""
    config = BARConfig(**config_kwargs)
    with torch.device("meta"):
        head = HEAD_CLASSES[config.head_type](config)
    projection = config.hidden_size * config.head_hidden_size + config.head_hidden_size
    return sum(p.numel() for p in head.parameters()) + projection


def linear_output_parameters(bits: int, width: int) -> int:
    """Parameters of the linear head's output layer `W_h → 2**k` (with bias)."""
    return (width + 1) * 2**bits


def linear_feasibility(args, bits: int, width: int) -> tuple[bool, str, dict]:
    """Whether a linear head over `2**bits` ids fits the study's limits, from the configuration alone.

    Checked: output-layer parameters against `--max_linear_params`; the fp32 id-logits of one training batch
    (`batch x tokens x 2**k`) and the largest sampling intermediate of `BARLinearHead.forward` (`2·sample_batch x
    2**k x k`, the consistent-id log-marginals with CFG rows) against `--max_logits_mib`.
    """
    tokens = (args.image_size // args.tokenizer_patch_size) ** 2
    estimate = {
        "output_layer_params": linear_output_parameters(bits, width),
        "train_logits_mib": args.train_batch_size * tokens * 2**bits * FLOAT_BYTES / 2**20,
        "sampling_intermediate_mib": 2 * args.sample_batch_size * 2**bits * bits * FLOAT_BYTES / 2**20,
    }
    reasons = []
    if estimate["output_layer_params"] > args.max_linear_params:
        reasons.append(
            f"output layer {estimate['output_layer_params']:,} params (2^{bits} ids x {width + 1}) > "
            f"--max_linear_params {args.max_linear_params:,}"
        )
    for key, label in (("train_logits_mib", "training logits"), ("sampling_intermediate_mib", "sampling tensor")):
        if estimate[key] > args.max_logits_mib:
            reasons.append(f"{label} {estimate[key]:,.0f} MiB > --max_logits_mib {args.max_logits_mib:,}")
    return not reasons, "; ".join(reasons), estimate


def matched_width(args, bits: int, head_type: str, target: int) -> tuple[int, int]:
    """The candidate head width whose head-parameter count is closest to `target` on a log scale.

    Returns `(width, params)`. For the linear head only the `2**k`-wide output layer is counted analytically first
    (candidates whose output layer alone exceeds 4x the target are skipped without building)."""
    best = None
    for width in WIDTH_CANDIDATES:
        if head_type == "linear" and linear_output_parameters(bits, width) > 4 * target and best is not None:
            break
        params = head_parameters(generator_config(args, bits, head_type, width))
        score = abs(math.log(params / target))
        if best is None or score < best[0]:
            best = (score, width, params)
        elif params > target:  # counts grow with the width: past the target nothing gets closer
            break
    return best[1], best[2]


def plan_heads(args, bits: int) -> dict[str, dict]:
    """Per head: width, head parameters (or the analytic estimate) and feasibility with its reason."""
    reference = head_parameters(generator_config(args, bits, "mbm", args.head_width))
    plan = {}
    for head_type in args.heads:
        if head_type == "mbm":
            width, params = args.head_width, reference
        elif head_type == "linear":
            width, params = matched_linear_width(args, bits, reference)
        else:
            width, params = matched_width(args, bits, head_type, reference)
        entry = {"head_width": width, "head_params": params, "reference_params": reference, "feasible": True}
        if head_type == "linear":
            feasible, reason, estimate = linear_feasibility(args, bits, width)
            entry.update(feasible=feasible, infeasible_reason=reason or None, estimate=estimate)
        plan[head_type] = entry
    return plan


def matched_linear_width(args, bits: int, reference: int) -> tuple[int, int | None]:
    """Linear head: the matched width when even the smallest width is buildable under the limits, else the smallest
    width with its analytic parameter count (the cell is then reported infeasible without building anything)."""
    if not linear_feasibility(args, bits, MIN_HEAD_WIDTH)[0]:
        return MIN_HEAD_WIDTH, linear_output_parameters(bits, MIN_HEAD_WIDTH)
    return matched_width(args, bits, "linear", reference)
