"""Infer the `BARConfig` of an authors' BAR generator from its tensors (part of [`bar_hf.conversion.convert`]).

Every size the tensors reveal is read from their shapes; the authors' YAML, a preset and user overrides must agree
with them (one error lists every disagreement, naming the field and every value).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..models.configuration_bar import BAR_PRESETS, CLASS_ROW_OFFSET, BARConfig
from .keys import UNSET, load_authors_yaml, short_list, yaml_get, yaml_token_size
from .resolve import (
    Resolver,
    count_layers,
    init_parameters,
    perfect_square_root,
    source_of,
    validate_overrides,
)

_GENERATOR_CORE_KEYS = (
    "embeddings.weight",
    "pos_embed",
    "target_aware_pos_embed",
    "timesteps_embeddings",
    "blocks.0.attn.q_norm.weight",
    "blocks.0.mlp.w12.weight",
    "lm_head.output_embed.weight",
    "lm_head.transformer.0.mlp.w12.weight",
    "lm_head.t_embedder.W",
)


class _GeneratorFiles(NamedTuple):
    """What the generator sizes are read from: tensors (`shape` of the core keys), YAML and preset accessors."""

    state_dict: Mapping[str, torch.Tensor]
    cfg: Mapping
    shape: dict[str, tuple[int, ...]]
    ypath: Callable[[str], Any]
    pval: Callable[[str], Any]
    has_generator_yaml: bool


def infer_generator_config(
    state_dict: Mapping[str, torch.Tensor],
    *,
    num_bits: int | None = None,
    latent_size: tuple[int, int] | None = None,
    yaml_config: Mapping | str | Path | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BARConfig:
    """Build the [`BARConfig`] of an authors'-layout generator state dict (prefixes already stripped).

    Sizes read from tensors: `hidden_size` (class table width), `num_hidden_layers`, `num_attention_heads`
    (`hidden_size / q_norm width`), `intermediate_size`, `num_classes` (class table rows − 4), position/slot table
    sizes, `k` (head output / 2) and hence `patch_size = sqrt(k / num_bits)`, head width/depth/MLP/Fourier size, and
    `num_class_tokens` from the RoPE table rows when present. `num_bits` and the latent grid come from the tokenizer
    (`num_bits`, `latent_size`), the YAML (`model.vq_model.token_size`, `model.generator.image_seq_len`), a preset
    or `overrides`; every source present must agree.

    Args:
        state_dict: the authors' generator tensors (meta tensors are fine: only shapes are read).
        num_bits (`int`, *optional*): tokenizer bits per latent token.
        latent_size (`tuple[int, int]`, *optional*): tokenizer latent grid `(H', W')`.
        yaml_config: the authors' generator YAML (path or parsed mapping).
        preset (`str`, *optional*): one of `BAR_PRESETS`.
        overrides (`dict`, *optional*): `BARConfig` fields to force (checked against tensor-revealed values).

    Raises:
        ValueError: on missing inference keys, impossible shapes or any disagreement between sources.
    """
    if preset is not None and preset not in BAR_PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(BAR_PRESETS)}, got {preset!r}.")
    overrides = validate_overrides("generator", overrides, init_parameters(BARConfig))
    cfg = load_authors_yaml(yaml_config)
    missing = [key for key in _GENERATOR_CORE_KEYS if key not in state_dict]
    if missing:
        raise ValueError(
            f"cannot infer the generator architecture: the checkpoint lacks {missing} (is this an authors' BAR "
            f"generator file with the MBM head? it has {len(state_dict)} keys, e.g. {short_list(list(state_dict)[:5])})."
        )
    shape = {key: tuple(state_dict[key].shape) for key in _GENERATOR_CORE_KEYS}
    preset_values = BARConfig.from_preset(preset).to_dict() if preset else {}

    def ypath(path: str) -> tuple[Any, str] | object:
        return source_of(yaml_get(cfg, path), f"YAML {path}")

    def pval(name: str) -> tuple[Any, str] | object:
        return source_of(preset_values.get(name, UNSET), f"preset {preset!r}") if preset else UNSET

    has_generator_yaml = isinstance(yaml_get(cfg, "model.generator"), Mapping)
    r = Resolver("generator", overrides)
    files = _GeneratorFiles(state_dict, cfg, shape, ypath, pval, has_generator_yaml)
    values: dict[str, Any] = {}
    _resolve_generator_backbone(r, values, files)
    _resolve_generator_classes(r, values, files)
    bits_per_token = _resolve_generator_grid(r, values, files, num_bits, latent_size)
    _resolve_generator_tables(r, values, files)
    _resolve_generator_head(r, values, files)
    for name in sorted(set(overrides) - set(values)):
        values[name] = r.resolve(name, preset=pval(name))
    r.raise_errors()
    try:
        config = BARConfig(**values)
    except ValueError as error:
        raise ValueError(f"the inferred generator config is invalid ({error}); resolved values: {values}") from error
    if config.bits_per_token != bits_per_token:
        raise ValueError(
            f"generator head predicts k = {bits_per_token} bits per step, but num_bits {config.num_bits} × patch_size² "
            f"{config.patch_size**2} = {config.bits_per_token}."
        )
    return config


def _resolve_generator_backbone(r: Resolver, values: dict[str, Any], files: _GeneratorFiles) -> None:
    """Width, depth, attention heads and MLP size of the backbone."""
    state_dict, shape, ypath, pval = files.state_dict, files.shape, files.ypath, files.pval
    hidden = shape["embeddings.weight"][1]
    head_dim = shape["blocks.0.attn.q_norm.weight"][0]
    values["hidden_size"] = r.resolve(
        "hidden_size",
        checkpoint=(hidden, f"embeddings.weight {list(shape['embeddings.weight'])}"),
        yaml=ypath("model.generator.hidden_size"),
        preset=pval("hidden_size"),
    )
    values["num_hidden_layers"] = r.resolve(
        "num_hidden_layers",
        checkpoint=(count_layers(state_dict, "blocks.", "generator"), "number of blocks.i"),
        yaml=ypath("model.generator.num_hidden_layers"),
        preset=pval("num_hidden_layers"),
    )
    heads = hidden // head_dim if head_dim and hidden % head_dim == 0 else UNSET
    values["num_attention_heads"] = r.resolve(
        "num_attention_heads",
        checkpoint=source_of(heads, f"hidden_size {hidden} / q_norm width {head_dim}"),
        yaml=ypath("model.generator.num_attention_heads"),
        preset=pval("num_attention_heads"),
    )
    values["intermediate_size"] = r.resolve(
        "intermediate_size",
        checkpoint=(
            shape["blocks.0.mlp.w12.weight"][0] // 2,
            f"blocks.0.mlp.w12.weight {list(shape['blocks.0.mlp.w12.weight'])} / 2",
        ),
        preset=pval("intermediate_size"),
    )


def _resolve_generator_classes(r: Resolver, values: dict[str, Any], files: _GeneratorFiles) -> None:
    """Dropout, number of classes, class-label dropout; binary targets only."""
    cfg, shape, ypath, pval, has_generator_yaml = (
        files.cfg,
        files.shape,
        files.ypath,
        files.pval,
        files.has_generator_yaml,
    )
    yaml_dropout = yaml_get(cfg, "model.generator.dropout")
    if yaml_dropout is UNSET and has_generator_yaml:
        yaml_dropout = 0.0  # the authors' default when the YAML has no `dropout`
    values["hidden_dropout"] = r.resolve(
        "hidden_dropout",
        yaml=source_of(yaml_dropout, "YAML model.generator.dropout (default 0.0)"),
        preset=pval("hidden_dropout"),
        default=0.0,
    )
    values["num_classes"] = r.resolve(
        "num_classes",
        checkpoint=(
            shape["embeddings.weight"][0] - CLASS_ROW_OFFSET - 1,
            f"embeddings.weight rows {shape['embeddings.weight'][0]} - {CLASS_ROW_OFFSET + 1}",
        ),
        yaml=ypath("model.generator.condition_num_classes"),
        preset=pval("num_classes"),
    )
    values["class_dropout_prob"] = r.resolve(
        "class_dropout_prob",
        yaml=ypath("model.generator.class_label_dropout"),
        preset=pval("class_dropout_prob"),
        default=0.1,
    )
    target_codebook = yaml_get(cfg, "model.generator.target_codebook_size")
    if target_codebook is not UNSET and target_codebook != 2:
        r.errors.append(
            f"`target_codebook_size` must be 2 (binary bits, class row offset 3), got YAML "
            f"model.generator.target_codebook_size={target_codebook!r}"
        )


def _resolve_generator_grid(
    r: Resolver,
    values: dict[str, Any],
    files: _GeneratorFiles,
    num_bits: int | None,
    latent_size: tuple[int, int] | None,
) -> int:
    """Bits per token, latent grid and patch size (tokenizer > YAML > preset > overrides); returns k."""
    cfg, shape, pval, has_generator_yaml = files.cfg, files.shape, files.pval, files.has_generator_yaml
    # bits per token and latent grid: tokenizer > YAML > preset > overrides
    yaml_bits = yaml_token_size(cfg, r.errors)
    values["num_bits"] = r.resolve(
        "num_bits",
        tokenizer=source_of(num_bits, "tokenizer num_bits"),
        yaml=source_of(yaml_bits, "YAML model.vq_model.token_size"),
        preset=pval("num_bits"),
    )
    seq_len = yaml_get(cfg, "model.generator.image_seq_len")
    yaml_side = perfect_square_root(seq_len) if isinstance(seq_len, int) else None
    if seq_len is not UNSET and yaml_side is None:
        r.errors.append(f"YAML model.generator.image_seq_len={seq_len!r} must be a square number of latent tokens")
    for index, name in enumerate(("latent_height", "latent_width")):
        values[name] = r.resolve(
            name,
            tokenizer=source_of(latent_size[index] if latent_size else None, "tokenizer latent grid"),
            yaml=source_of(yaml_side, f"YAML model.generator.image_seq_len={seq_len}"),
            preset=pval(name),
        )
    k2 = shape["lm_head.output_embed.weight"][0]
    bits_per_token = k2 // 2
    patch = UNSET
    if values["num_bits"]:
        ratio = bits_per_token / values["num_bits"]
        root = perfect_square_root(int(ratio)) if ratio == int(ratio) else None
        if root is None:
            r.errors.append(
                f"`patch_size` impossible: the head predicts k = {bits_per_token} bits per step (lm_head.output_embed "
                f"rows {k2} / 2), which is not num_bits ({values['num_bits']}) times a square"
            )
        else:
            patch = root
    yaml_patch = yaml_get(cfg, "model.generator.patch_size")
    if yaml_patch is UNSET and has_generator_yaml:
        yaml_patch = 1  # the authors' default when the YAML has no patch_size
    values["patch_size"] = r.resolve(
        "patch_size",
        checkpoint=source_of(patch, f"sqrt(k {bits_per_token} / num_bits {values['num_bits']})"),
        yaml=source_of(yaml_patch, "YAML model.generator.patch_size (default 1)"),
        preset=pval("patch_size"),
    )
    return bits_per_token


def _resolve_generator_tables(r: Resolver, values: dict[str, Any], files: _GeneratorFiles) -> None:
    """Position / slot table sizes and the number of class tokens."""
    state_dict, shape, ypath, pval = files.state_dict, files.shape, files.ypath, files.pval
    values["position_embedding_size"] = r.resolve(
        "position_embedding_size",
        checkpoint=(shape["pos_embed"][1], f"pos_embed {list(shape['pos_embed'])}"),
        preset=pval("position_embedding_size"),
    )
    if shape["target_aware_pos_embed"] != shape["pos_embed"]:
        r.errors.append(
            f"target_aware_pos_embed {list(shape['target_aware_pos_embed'])} must have the shape of pos_embed "
            f"{list(shape['pos_embed'])}"
        )
    values["slot_embedding_size"] = r.resolve(
        "slot_embedding_size",
        checkpoint=(shape["timesteps_embeddings"][1], f"timesteps_embeddings {list(shape['timesteps_embeddings'])}"),
        preset=pval("slot_embedding_size"),
    )
    num_ar = None
    if values["latent_height"] and values["latent_width"] and values["patch_size"]:
        num_ar = (values["latent_height"] // values["patch_size"]) * (values["latent_width"] // values["patch_size"])
    rope = state_dict.get("blocks.0.attn.rope.freqs_cos")
    rope_tokens = UNSET
    if rope is not None and num_ar is not None and rope.dim() == 2:
        rope_tokens = (rope.shape[0] - num_ar - 1, f"RoPE rows {rope.shape[0]} - N {num_ar} - 1 cls")
    values["num_class_tokens"] = r.resolve(
        "num_class_tokens",
        checkpoint=rope_tokens if rope_tokens is not UNSET and rope_tokens[0] > 0 else UNSET,
        yaml=ypath("model.generator.repeat_class_condition"),
        preset=pval("num_class_tokens"),
        default=32,
    )


def _resolve_generator_head(r: Resolver, values: dict[str, Any], files: _GeneratorFiles) -> None:
    """The MBM head: type, width, depth, MLP and Fourier sizes."""
    state_dict, shape, ypath, pval = files.state_dict, files.shape, files.ypath, files.pval
    values["head_type"] = r.resolve("head_type", default="mbm")
    if values["head_type"] != "mbm":
        r.errors.append(f"`head_type` must be 'mbm' for the authors' checkpoints, got {values['head_type']!r}")
    head_width = shape["lm_head.output_embed.weight"][1]
    values["head_hidden_size"] = r.resolve(
        "head_hidden_size",
        checkpoint=(head_width, f"lm_head.output_embed.weight {list(shape['lm_head.output_embed.weight'])}"),
        yaml=ypath("model.generator.mbm_head.width"),
        preset=pval("head_hidden_size"),
    )
    values["head_num_layers"] = r.resolve(
        "head_num_layers",
        checkpoint=(
            count_layers(state_dict, "lm_head.transformer.", "generator head"),
            "number of lm_head.transformer.j",
        ),
        yaml=ypath("model.generator.mbm_head.num_layers"),
        preset=pval("head_num_layers"),
    )
    w12 = shape["lm_head.transformer.0.mlp.w12.weight"]
    values["head_intermediate_size"] = r.resolve(
        "head_intermediate_size",
        checkpoint=(w12[0] // 2, f"lm_head.transformer.0.mlp.w12.weight {list(w12)} / 2"),
        preset=pval("head_intermediate_size"),
    )
    values["head_fourier_size"] = r.resolve(
        "head_fourier_size",
        checkpoint=(shape["lm_head.t_embedder.W"][0], f"lm_head.t_embedder.W {list(shape['lm_head.t_embedder.W'])}"),
        preset=pval("head_fourier_size"),
    )
