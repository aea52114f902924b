"""LoRA fine-tuning of the generator for `train_bar.py --lora_rank` (the adapter is saved alone and loaded with
`pipe.load_lora_weights`, see [`bar_hf.pipelines.lora`])."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..pipelines.lora import DEFAULT_LORA_TARGET_MODULES, add_lora_adapter, bar_lora_config, save_lora_adapter

__all__ = ["add_lora_args", "save_lora_output", "setup_lora_training"]


def add_lora_args(parser) -> None:
    """`--lora_rank` and friends for `examples/generator/train_bar.py`."""
    group = parser.add_argument_group("LoRA (needs peft; trains and saves only the adapter)")
    group.add_argument("--lora_rank", type=int, default=None, help="train a LoRA adapter of this rank")
    group.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: the rank, scale 1)")
    group.add_argument("--lora_dropout", type=float, default=0.0)
    group.add_argument(
        "--lora_target_modules",
        default=",".join(DEFAULT_LORA_TARGET_MODULES),
        help="comma-separated module names (suffixes) to adapt",
    )


def setup_lora_training(model: nn.Module, args) -> list[nn.Parameter] | None:
    """With `--lora_rank`: freeze the (pretrained) model and add a trainable adapter; returns its parameters."""
    if not getattr(args, "lora_rank", None):
        return None
    if not getattr(args, "pretrained_model_name_or_path", None):
        raise ValueError("`--lora_rank` fine-tunes a trained generator: pass `--pretrained_model_name_or_path`.")
    targets = [name.strip() for name in args.lora_target_modules.split(",") if name.strip()]
    config = bar_lora_config(args.lora_rank, args.lora_alpha, targets, args.lora_dropout)
    params = add_lora_adapter(model, config)
    model.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    if getattr(args, "gradient_checkpointing", False):
        model.enable_input_require_grads()  # frozen embeddings: let gradients reach the checkpointed blocks
    return params


def save_lora_output(model: nn.Module, output_dir: Path) -> Path:
    """Write the adapter (`adapter_config.json` + `adapter_model.safetensors`) to `<output_dir>/lora`."""
    return save_lora_adapter(model, Path(output_dir) / "lora")
