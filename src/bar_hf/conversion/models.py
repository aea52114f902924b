"""Check, verify and load the authors' tensors into `bar_hf` models, and the inverse maps (part of [`bar_hf.conversion.convert`]).

Key sets and shapes are compared with a model built on the meta device (one error lists every missing, unexpected or
mis-shaped key), the stored RoPE tables are verified against the recomputed ones, and the weights are loaded strictly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.configuration_bar import BARConfig
from ..models.modeling_bar import BARForCausalImageModeling
from ..models.vq_model import BARVQModel
from .infer import infer_generator_config
from .infer_tokenizer import infer_tokenizer_config
from .keys import (
    ROPE_ATOL,
    ROPE_KEY,
    TOKENIZER_DROPPED_PREFIXES,
    TOKENIZER_OPTIONAL_PREFIXES,
    ConversionReport,
    generator_key_to_authors,
    load_authors_checkpoint,
    raise_key_errors,
    short_list,
    strip_key_prefixes,
    tokenizer_key_to_authors,
)

logger = logging.getLogger("bar_hf.conversion.convert")  # one logger name for the whole conversion


def check_generator_state_dict(state_dict: Mapping[str, torch.Tensor], config: BARConfig) -> dict[str, str]:
    """Check an authors'-layout generator state dict against `config` without loading anything.

    Builds the model on the meta device, maps every one of its keys to the authors' name and compares key sets and
    shapes. RoPE buffers (`blocks.i.attn.rope.freqs_{cos,sin}`) are optional; when present their shapes must be
    `(P + N, head_dim)` (values are checked by [`convert_generator`]).

    Returns:
        `dict`: authors' key → `bar_hf` key for every tensor to load.

    Raises:
        ValueError: listing every missing, unexpected or mis-shaped key.
    """
    with torch.device("meta"):
        model = BARForCausalImageModeling(config)
    expected = {generator_key_to_authors(key): (key, tuple(value.shape)) for key, value in model.state_dict().items()}
    rope_shape = (config.prefix_length + config.num_ar_steps, config.head_dim)
    missing, unexpected, mismatched = [], [], []
    for key, value in state_dict.items():
        rope = ROPE_KEY.match(key)
        if rope and int(rope.group(1)) < config.num_hidden_layers:
            if tuple(value.shape) != rope_shape:
                mismatched.append(f"{key}: file {list(value.shape)} vs expected {list(rope_shape)}")
            continue
        if key not in expected:
            unexpected.append(key)
        elif tuple(value.shape) != expected[key][1]:
            mismatched.append(f"{key}: file {list(value.shape)} vs expected {list(expected[key][1])}")
    missing = [key for key in expected if key not in state_dict]
    raise_key_errors(
        "generator",
        missing,
        unexpected,
        mismatched,
        "  (sizes were inferred from the tensors; a wrong `patch_size`/`num_bits`/grid or override shows up as "
        "mis-shaped position tables or RoPE buffers)",
    )
    return {theirs: ours for theirs, (ours, _) in expected.items()}


def convert_generator(
    state_dict: Mapping[str, torch.Tensor] | str | Path,
    *,
    num_bits: int | None = None,
    latent_size: tuple[int, int] | None = None,
    yaml_config: Mapping | str | Path | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    return_report: bool = False,
) -> BARForCausalImageModeling | tuple[BARForCausalImageModeling, ConversionReport]:
    """Convert an authors' BAR generator into a [`BARForCausalImageModeling`] (float32, eval mode).

    Args:
        state_dict: the authors' tensors, or a path to their `.bin` file (prefixes are stripped either way).
        num_bits, latent_size, yaml_config, preset, overrides: see [`infer_generator_config`].
        return_report (`bool`, *optional*, defaults to `False`): also return a [`ConversionReport`].

    Raises:
        ValueError: on any missing, unexpected or mis-shaped key, on a stored RoPE table that differs from the
            recomputed one (atol 1e-5), or on config disagreements.
    """
    if isinstance(state_dict, (str, Path)):
        state_dict = load_authors_checkpoint(state_dict)
    else:
        state_dict = strip_key_prefixes(state_dict)
    config = infer_generator_config(
        state_dict,
        num_bits=num_bits,
        latent_size=latent_size,
        yaml_config=yaml_config,
        preset=preset,
        overrides=overrides,
    )
    mapping = check_generator_state_dict(state_dict, config)
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every parameter is overwritten below; RoPE buffers are computed in __init__
        model = BARForCausalImageModeling(config)
    cos, sin = model.model.compute_rope_table()
    model.model.rope_cos.copy_(cos)
    model.model.rope_sin.copy_(sin)
    report = ConversionReport(config=config.to_dict())
    _verify_rope_tables(state_dict, cos, sin, config, report)
    loaded = {ours: state_dict[theirs] for theirs, ours in mapping.items()}
    report.source_dtypes = sorted({str(value.dtype).replace("torch.", "") for value in loaded.values()})
    model.load_state_dict(loaded, strict=True)  # complete by construction (check_generator_state_dict)
    report.loaded = len(loaded)
    model.eval()
    return (model, report) if return_report else model


def _verify_rope_tables(
    state_dict: Mapping[str, torch.Tensor],
    cos: torch.Tensor,
    sin: torch.Tensor,
    config: BARConfig,
    report: ConversionReport,
) -> None:
    """Compare every stored `blocks.i.attn.rope.freqs_{cos,sin}` with the recomputed table (atol 1e-5); the verified
    buffers are recorded in `report` as dropped (the model computes its own)."""
    bad_rope = []
    for key, value in state_dict.items():
        match = ROPE_KEY.match(key)
        if not match:
            continue
        reference = cos if match.group(2) == "cos" else sin
        diff = (value.detach().float() - reference).abs().max().item()
        if not diff <= ROPE_ATOL:
            bad_rope.append(f"{key} (max |diff| {diff:.3g})")
        report.dropped.append(key)
        report.rope_buffers_verified += 1
    if bad_rope:
        raise ValueError(
            f"stored RoPE tables differ from the recomputed 2-D RoPE (grid {config.grid_height}×{config.grid_width}, "
            f"head_dim {config.head_dim}, {config.prefix_length} prefix rows, theta {config.rope_theta}) by more than "
            f"{ROPE_ATOL}: {short_list(bad_rope)}. The checkpoint was trained with a different RoPE; pass the right "
            "`rope_theta`/grid in `generator_overrides` or check the files."
        )


def generator_to_authors_state_dict(
    model: BARForCausalImageModeling, include_rope: bool = True
) -> dict[str, torch.Tensor]:
    """Inverse of [`convert_generator`]: the authors' key layout (docs/method.md §8.2), with the per-block RoPE buffers
    regenerated from `model.model.rope_cos/rope_sin` when `include_rope` (430 keys for BAR-B, 558 for BAR-L)."""
    if model.config.head_type != "mbm":
        raise ValueError(
            f"`model.config.head_type` must be 'mbm' for the authors' layout, got {model.config.head_type!r}."
        )
    out = {generator_key_to_authors(key): value.detach() for key, value in model.state_dict().items()}
    if include_rope:
        cos, sin = model.model.rope_cos.detach(), model.model.rope_sin.detach()
        for index in range(model.config.num_hidden_layers):
            out[f"blocks.{index}.attn.rope.freqs_cos"] = cos.clone()
            out[f"blocks.{index}.attn.rope.freqs_sin"] = sin.clone()
    return out


def check_tokenizer_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model_or_config: BARVQModel | Mapping[str, Any],
    allow_missing: bool = False,
) -> tuple[dict[str, str], list[str], list[str]]:
    """Check an authors'-layout tokenizer state dict against a `BARVQModel` (or its init kwargs) without loading.

    Returns:
        `(mapping, dropped, missing_allowed)`: authors' key → `bar_hf` key for every tensor to load, the dropped keys
        (frozen SigLIP2 copies, pooling head, distillation projector unless kept) and the optional keys that are absent
        (only with `allow_missing`).

    Raises:
        ValueError: listing every missing (non-optional), unexpected or mis-shaped key.
    """
    if isinstance(model_or_config, BARVQModel):
        reference = model_or_config
    else:
        with torch.device("meta"):
            reference = BARVQModel(**model_or_config)
    expected = {tokenizer_key_to_authors(key): (key, tuple(v.shape)) for key, v in reference.state_dict().items()}
    keep_projector = reference.config.distill_projector_dim is not None
    dropped_prefixes = tuple(
        p for p in TOKENIZER_DROPPED_PREFIXES if not (keep_projector and p == "decoder.clip_projector.")
    )
    unexpected, mismatched, dropped = [], [], []
    for key, value in state_dict.items():
        if key in expected:
            if tuple(value.shape) != expected[key][1]:
                mismatched.append(f"{key}: file {list(value.shape)} vs expected {list(expected[key][1])}")
        elif key.startswith(dropped_prefixes):
            dropped.append(key)
        else:
            unexpected.append(key)
    absent = [key for key in expected if key not in state_dict]
    missing_allowed = [key for key in absent if allow_missing and key.startswith(TOKENIZER_OPTIONAL_PREFIXES)]
    missing = [key for key in absent if key not in missing_allowed]
    hint = ""
    if any(key.startswith(TOKENIZER_OPTIONAL_PREFIXES) for key in missing):
        hint = (
            "  (encoder-side keys may be omitted with `allow_missing=True` / --allow_missing: sampling only decodes, "
            "but `encode` of the converted tokenizer would then be meaningless)"
        )
    raise_key_errors("tokenizer", missing, unexpected, mismatched, hint)
    return {theirs: ours for theirs, (ours, _) in expected.items() if theirs in state_dict}, dropped, missing_allowed


def convert_tokenizer(
    state_dict: Mapping[str, torch.Tensor] | str | Path,
    *,
    yaml_config: Mapping | str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    allow_missing: bool = False,
    return_report: bool = False,
) -> BARVQModel | tuple[BARVQModel, ConversionReport]:
    """Convert an authors' BAR-FSQ tokenizer into a [`BARVQModel`] (float32, eval mode).

    Keeps the trainable SigLIP2 copy (`encoder.trainable_encoder.*` → `encoder.encoder.*`,
    `encoder.trainable_post_layernorm.*` → `encoder.post_layernorm.*`), the shared frozen embeddings
    (`encoder.siglip.embeddings.*` → `encoder.embeddings.*`), `quantize.*` and `decoder.*`; drops the frozen SigLIP2
    stack and its aliases, the pooling head and `decoder.clip_projector.*` (kept when `overrides` sets
    `distill_projector_dim`).

    Args:
        state_dict: the authors' tensors, or a path to their `.bin` file (`_orig_mod.`/`module.` prefixes stripped).
        yaml_config: the authors' tokenizer YAML (path or parsed mapping), cross-checked.
        overrides (`dict`, *optional*): `BARVQModel` init kwargs to force (e.g. head counts of a non-standard model).
        allow_missing (`bool`, *optional*, defaults to `False`): accept a file without the encoder-side keys
            ([`TOKENIZER_OPTIONAL_PREFIXES`]); they keep their random initialization and a warning is logged.
        return_report (`bool`, *optional*, defaults to `False`): also return a [`ConversionReport`].
    """
    if isinstance(state_dict, (str, Path)):
        state_dict = load_authors_checkpoint(state_dict)
    else:
        state_dict = strip_key_prefixes(state_dict)
    kwargs = infer_tokenizer_config(
        state_dict, yaml_config=yaml_config, overrides=overrides, allow_missing=allow_missing
    )
    try:
        with torch.device("meta"):
            meta_model = BARVQModel(**kwargs)
    except ValueError as error:
        raise ValueError(f"the inferred tokenizer config is invalid ({error}); resolved values: {kwargs}") from error
    mapping, dropped, missing_allowed = check_tokenizer_state_dict(state_dict, meta_model, allow_missing=allow_missing)
    model = _new_tokenizer(kwargs, missing_allowed)
    loaded = {ours: state_dict[theirs] for theirs, ours in mapping.items()}
    result = model.load_state_dict(loaded, strict=not missing_allowed)
    ours_of = {tokenizer_key_to_authors(key): key for key in model.state_dict()}
    unexpected_missing = sorted(set(result.missing_keys) - {ours_of[key] for key in missing_allowed})
    if result.unexpected_keys or unexpected_missing:
        raise ValueError(
            f"internal key-mapping error: missing {unexpected_missing}, unexpected {result.unexpected_keys}"
        )
    model.eval()
    report = ConversionReport(
        loaded=len(loaded),
        dropped=dropped,
        missing_allowed=missing_allowed,
        source_dtypes=sorted({str(value.dtype).replace("torch.", "") for value in loaded.values()}),
        config=dict(model.config),
    )
    if missing_allowed:
        report.notes.append(
            f"{len(missing_allowed)} encoder-side tensors were absent and keep random weights: encode() is not usable"
        )
    return (model, report) if return_report else model


def _new_tokenizer(kwargs: Mapping[str, Any], missing_allowed: list[str]) -> BARVQModel:
    """A `BARVQModel` to load into: initialized only when some (encoder-side) tensors will stay unloaded."""
    if missing_allowed:
        model = BARVQModel(**kwargs)  # initialized: the missing encoder keeps deterministic-seeded random weights
        logger.warning(
            "tokenizer checkpoint lacks %d encoder-side tensors (%s); they keep random weights: the converted "
            "tokenizer decodes correctly but its `encode` is meaningless.",
            len(missing_allowed),
            short_list(missing_allowed, 5),
        )
        return model
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return BARVQModel(**kwargs)


def tokenizer_to_authors_state_dict(model: BARVQModel) -> dict[str, torch.Tensor]:
    """Inverse of [`convert_tokenizer`] for the kept tensors (the authors' minimal inference set, docs/method.md §8.3)."""
    return {tokenizer_key_to_authors(key): value.detach() for key, value in model.state_dict().items()}
