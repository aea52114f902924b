"""Low-precision weight storage for both BAR models with diffusers' layerwise casting hooks.

diffusers' [`~diffusers.hooks.apply_layerwise_casting`] stores the weights of every `Linear` / `Conv` / `Embedding`
in a small dtype (`torch.float8_e4m3fn`) and upcasts them to the compute dtype (`torch.bfloat16`) around each of
their forward calls. `BARVQModel` is a diffusers `ModelMixin` and has `enable_layerwise_casting` itself; the generator
`BARForCausalImageModeling` is a transformers model, so [`enable_layerwise_casting`] applies the same hook with the
same skip rules (diffusers' default patterns — positional/patch embeddings, norms — plus the model's
`_keep_in_fp32_modules` and `_skip_layerwise_casting_patterns`).
"""

from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.hooks import apply_layerwise_casting
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

__all__ = [
    "LayerwiseCastingMixin",
    "check_layerwise_casting_arguments",
    "enable_layerwise_casting",
    "layerwise_casting_dtypes",
]

_HOOK = "layerwise_casting"  # diffusers' hook name (`diffusers.hooks.layerwise_casting._LAYERWISE_CASTING_HOOK`)


def layerwise_casting_dtypes(model: torch.nn.Module) -> tuple[torch.dtype, torch.dtype] | None:
    """`(storage_dtype, compute_dtype)` when layerwise casting hooks are on `model` (any submodule), else `None`."""
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(_HOOK) if registry is not None else None
        if hook is not None:
            return hook.storage_dtype, hook.compute_dtype
    return None


def check_layerwise_casting_arguments(model: torch.nn.Module, storage_dtype, compute_dtype) -> torch.dtype:
    """Validate before anything changes; returns the compute dtype (`model.dtype` when `None`)."""
    if not isinstance(storage_dtype, torch.dtype) or not storage_dtype.is_floating_point:
        raise ValueError(f"`storage_dtype` must be a floating torch.dtype, got {storage_dtype!r}.")
    if compute_dtype is None:
        compute_dtype = model.dtype
    if not isinstance(compute_dtype, torch.dtype) or not compute_dtype.is_floating_point:
        raise ValueError(f"`compute_dtype` must be a floating torch.dtype, got {compute_dtype!r}.")
    enabled = layerwise_casting_dtypes(model)
    if enabled is not None:
        raise ValueError(
            f"layerwise casting is already enabled on this {type(model).__name__} (storage {enabled[0]}, compute "
            f"{enabled[1]}); it cannot be enabled twice (`storage_dtype`={storage_dtype}): reload the model to change "
            "it. Nothing was changed."
        )
    return compute_dtype


def _fp32_patterns(model: torch.nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "_keep_in_fp32_modules", None) or ())


def _cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters to `dtype` and `_keep_in_fp32_modules` (the FSQ quantizer) to float32, as
    `from_pretrained(torch_dtype=...)` does; buffers keep their dtype (BAR's RoPE table is float32 by design)."""
    keep = _fp32_patterns(model)
    for name, param in model.named_parameters():
        if param.is_floating_point():
            param.data = param.data.to(torch.float32 if any(part in keep for part in name.split(".")) else dtype)


def enable_layerwise_casting(
    model: torch.nn.Module,
    storage_dtype: torch.dtype = torch.float8_e4m3fn,
    compute_dtype: torch.dtype | None = None,
    skip_modules_pattern: tuple[str, ...] | None = None,
    non_blocking: bool = False,
) -> None:
    """Store `model`'s layer weights in `storage_dtype`, compute in `compute_dtype` (in place, not reversible).

    Enabling it twice is refused before anything changes (a `ValueError`). A cast model cannot be saved or moved to
    another dtype through the BAR pipelines (the weights were rounded to `storage_dtype`); reload it instead.

    Args:
        model (`BARVQModel`, `BARForCausalImageModeling` or any `nn.Module`): the model to patch.
        storage_dtype (`torch.dtype`, *optional*, defaults to `torch.float8_e4m3fn`): dtype of the weights at rest.
        compute_dtype (`torch.dtype`, *optional*): dtype of the forward computation; defaults to the model's dtype.
            When it differs, the model's parameters are cast to it first (modules in `_keep_in_fp32_modules`, such
            as the tokenizer's FSQ quantizer, stay float32).
        skip_modules_pattern (`tuple[str, ...]`, *optional*): regexes of module names left in the compute dtype;
            defaults to diffusers' `DEFAULT_SKIP_MODULES_PATTERN` plus the model's own patterns.
        non_blocking (`bool`, *optional*, defaults to `False`): non-blocking weight casts.
    """
    compute_dtype = check_layerwise_casting_arguments(model, storage_dtype, compute_dtype)
    _cast_parameters(model, compute_dtype)
    if isinstance(model, ModelMixin):  # diffusers' own entry point (adds _keep_in_fp32 / _skip patterns itself)
        model.enable_layerwise_casting(storage_dtype, compute_dtype, skip_modules_pattern, None, non_blocking)
        return
    if skip_modules_pattern is None:
        own = tuple(getattr(model, "_skip_layerwise_casting_patterns", None) or ())
        skip_modules_pattern = tuple(sorted(set(DEFAULT_SKIP_MODULES_PATTERN + _fp32_patterns(model) + own)))
    apply_layerwise_casting(model, storage_dtype, compute_dtype, skip_modules_pattern, None, non_blocking)


class LayerwiseCastingMixin:
    """`enable_layerwise_casting` as a model method (diffusers' `ModelMixin` has it; transformers models do not)."""

    def enable_layerwise_casting(
        self,
        storage_dtype: torch.dtype = torch.float8_e4m3fn,
        compute_dtype: torch.dtype | None = None,
        skip_modules_pattern: tuple[str, ...] | None = None,
        non_blocking: bool = False,
    ) -> None:
        """Store the layer weights in `storage_dtype` and compute in `compute_dtype` (diffusers' `ModelMixin` method
        of the same name; see `bar_hf.models.layerwise_casting.enable_layerwise_casting`). Refused, changing
        nothing, when already enabled."""
        enable_layerwise_casting(self, storage_dtype, compute_dtype, skip_modules_pattern, non_blocking)
