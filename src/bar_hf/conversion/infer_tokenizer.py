"""Infer the `BARVQModel` sizes of an authors' BAR-FSQ tokenizer from its tensors (part of [`bar_hf.conversion.convert`]).

Every size the tensors reveal is read from their shapes and cross-checked with the authors' YAML and user overrides;
what the tensors cannot reveal (attention heads, an absent encoder) takes the authors' values.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..models.vq_model import BARVQModel
from .keys import UNSET, load_authors_yaml, short_list, yaml_get, yaml_token_size
from .resolve import (
    Resolver,
    count_layers,
    init_parameters,
    perfect_square_root,
    source_of,
    validate_overrides,
)

# The authors' values for what tokenizer tensors cannot reveal (docs/method.md §2.2/§2.4).
_TOKENIZER_DEFAULTS = dict(
    encoder_hidden_size=1152,
    encoder_num_layers=27,
    encoder_num_heads=16,
    encoder_intermediate_size=4304,
    encoder_num_position_embeddings=256,
    decoder_hidden_size=1024,
    decoder_num_layers=24,
    decoder_num_heads=16,
)
_AUTHORS_ENCODER_WIDTH_HEADS = {1152: 16}
_AUTHORS_DECODER_WIDTH_HEADS = {1024: 16}


#: Tokenizer keys every authors' BAR-FSQ file must have (sizes are read from them).
_TOKENIZER_CORE_KEYS = (
    "quantize.out_proj.weight",
    "decoder.positional_embedding",
    "decoder.ffn.0.weight",
    "decoder.conv_out.weight",
    "decoder.transformer.0.mlp.fc1.weight",
)
#: Encoder-side keys the sizes are read from (optional with `allow_missing=True`).
_TOKENIZER_ENCODER_KEYS = (
    "quantize.in_proj.weight",
    "encoder.siglip.embeddings.patch_embedding.weight",
    "encoder.siglip.embeddings.position_embedding.weight",
    "encoder.trainable_encoder.layers.0.mlp.fc1.weight",
)


def _shape_or_none(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    return tuple(state_dict[key].shape) if key in state_dict else None


def infer_tokenizer_config(
    state_dict: Mapping[str, torch.Tensor],
    *,
    yaml_config: Mapping | str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """The `BARVQModel` init kwargs of an authors'-layout BAR-FSQ state dict (prefixes already stripped).

    Read from tensors: `num_bits` (`quantize.*_proj`), decoder width/depth/MLP, latent grid (decoder positions − 1),
    `patch_size` (`decoder.ffn.0` rows / output channels), encoder width/depth/MLP/position grid, input channels and
    the distillation projector's hidden width (`decoder.clip_projector.0` rows, when present; default 2048).
    Attention head counts cannot be read from weights: 16 for the authors' widths (encoder 1152, decoder 1024),
    otherwise `encoder_num_heads` / `decoder_num_heads` must come from `overrides`. Cross-checked with the YAML
    (`model.vq_model.token_size`, `codebook_size`, `vit_dec_patch_size`, `clip_align_layer_id`,
    `dataset.preprocessing.crop_size`).

    Raises:
        ValueError: on missing inference keys or any disagreement.
    """
    overrides = validate_overrides("tokenizer", overrides, init_parameters(BARVQModel))
    cfg = load_authors_yaml(yaml_config)
    missing = [key for key in _TOKENIZER_CORE_KEYS if key not in state_dict]
    missing_encoder = [key for key in _TOKENIZER_ENCODER_KEYS if key not in state_dict]
    if missing or (missing_encoder and not allow_missing):
        raise ValueError(
            "cannot infer the tokenizer architecture: the checkpoint lacks "
            f"{missing + ([] if allow_missing else missing_encoder)} (is this an authors' BAR-FSQ file? it has "
            f"{len(state_dict)} keys, e.g. {short_list(list(state_dict)[:5])})."
            + ("" if missing else " The encoder keys are optional only with `allow_missing=True`.")
        )
    r = Resolver("tokenizer", overrides)
    values: dict[str, Any] = {}
    _resolve_tokenizer_decoder(r, values, state_dict, cfg)
    _resolve_tokenizer_grid(r, values, state_dict, cfg)
    _resolve_tokenizer_encoder(r, values, state_dict, cfg)
    _resolve_tokenizer_heads_and_distillation(r, values, state_dict, cfg)
    for name in sorted(set(overrides) - set(values)):
        values[name] = r.resolve(name)
    r.raise_errors()
    return values


def _resolve_tokenizer_decoder(r: Resolver, values: dict[str, Any], state_dict: Mapping, cfg: Mapping) -> None:
    """Bits per token, decoder width/depth/MLP, output channels and patch size."""
    sh = partial(_shape_or_none, state_dict)
    out_proj = sh("quantize.out_proj.weight")
    in_proj = sh("quantize.in_proj.weight")
    yaml_bits = yaml_token_size(cfg, r.errors)
    values["num_bits"] = r.resolve(
        "num_bits",
        checkpoint=(out_proj[1], f"quantize.out_proj.weight {list(out_proj)}"),
        yaml=source_of(yaml_bits, "YAML model.vq_model.token_size"),
    )
    if in_proj is not None and in_proj[0] != out_proj[1]:
        r.errors.append(
            f"quantize.in_proj.weight {list(in_proj)} and quantize.out_proj.weight {list(out_proj)} disagree on num_bits"
        )
    values["decoder_hidden_size"] = r.resolve(
        "decoder_hidden_size", checkpoint=(out_proj[0], f"quantize.out_proj.weight {list(out_proj)}")
    )
    values["decoder_num_layers"] = r.resolve(
        "decoder_num_layers",
        checkpoint=(
            count_layers(state_dict, "decoder.transformer.", "tokenizer decoder"),
            "number of decoder.transformer.j",
        ),
    )
    fc1 = sh("decoder.transformer.0.mlp.fc1.weight")
    values["decoder_intermediate_size"] = r.resolve(
        "decoder_intermediate_size", checkpoint=(fc1[0], f"decoder.transformer.0.mlp.fc1.weight {list(fc1)}")
    )
    conv_out = sh("decoder.conv_out.weight")
    values["out_channels"] = r.resolve(
        "out_channels", checkpoint=(conv_out[0], f"decoder.conv_out.weight {list(conv_out)}")
    )
    ffn = sh("decoder.ffn.0.weight")
    patch = UNSET
    if values["out_channels"] and ffn[0] % values["out_channels"] == 0:
        root = perfect_square_root(ffn[0] // values["out_channels"])
        patch = root if root else UNSET
    if patch is UNSET:
        r.errors.append(
            f"`patch_size` impossible: decoder.ffn.0.weight {list(ffn)} rows are not patch² × out_channels "
            f"({values['out_channels']})"
        )
    values["patch_size"] = r.resolve(
        "patch_size",
        checkpoint=source_of(patch, f"sqrt(decoder.ffn.0 rows {ffn[0]} / out_channels {values['out_channels']})"),
        yaml=source_of(yaml_get(cfg, "model.vq_model.vit_dec_patch_size"), "YAML model.vq_model.vit_dec_patch_size"),
    )


def _resolve_tokenizer_grid(r: Resolver, values: dict[str, Any], state_dict: Mapping, cfg: Mapping) -> None:
    """The image size from the decoder's position table (or the YAML crop size)."""
    sh = partial(_shape_or_none, state_dict)
    positions = sh("decoder.positional_embedding")
    num_tokens = positions[0] - 1
    side = perfect_square_root(num_tokens)
    grid_sample = side * values["patch_size"] if side and values["patch_size"] else UNSET
    if side is None and "sample_size" not in r.overrides:
        r.errors.append(
            f"the latent grid is not square (decoder.positional_embedding {list(positions)} → {num_tokens} tokens); "
            "pass `sample_size` as [height, width] in `tokenizer_overrides`"
        )
    crop = yaml_get(cfg, "dataset.preprocessing.crop_size")
    values["sample_size"] = r.resolve(
        "sample_size",
        checkpoint=source_of(grid_sample, f"sqrt(decoder.positional_embedding rows {positions[0]} - 1) × patch_size"),
        yaml=source_of(crop, "YAML dataset.preprocessing.crop_size"),
    )


def _resolve_tokenizer_encoder(r: Resolver, values: dict[str, Any], state_dict: Mapping, cfg: Mapping) -> None:
    """Encoder sizes (the authors' defaults for what an encoder-less file lacks)."""
    sh = partial(_shape_or_none, state_dict)
    in_proj = sh("quantize.in_proj.weight")
    # encoder (optional with allow_missing: the authors' sizes are used)
    patch_embed = sh("encoder.siglip.embeddings.patch_embedding.weight")
    encoder_width = in_proj[1] if in_proj is not None else (patch_embed[0] if patch_embed else UNSET)
    values["encoder_hidden_size"] = r.resolve(
        "encoder_hidden_size",
        checkpoint=source_of(encoder_width, "quantize.in_proj.weight / patch_embedding width"),
        default=_TOKENIZER_DEFAULTS["encoder_hidden_size"],
    )
    if patch_embed is not None and patch_embed[0] != values["encoder_hidden_size"]:
        r.errors.append(
            f"encoder.siglip.embeddings.patch_embedding.weight {list(patch_embed)} disagrees with the encoder width "
            f"{values['encoder_hidden_size']}"
        )
    in_channels = UNSET
    if patch_embed is not None and values["patch_size"]:
        area = values["patch_size"] ** 2
        if patch_embed[1] % area:
            r.errors.append(
                f"encoder.siglip.embeddings.patch_embedding.weight {list(patch_embed)}: {patch_embed[1]} inputs is not "
                f"channels × patch_size² ({area})"
            )
        else:
            in_channels = patch_embed[1] // area
    values["in_channels"] = r.resolve(
        "in_channels",
        checkpoint=source_of(in_channels, "patch_embedding inputs / patch_size²"),
        default=values["out_channels"],
    )
    encoder_layers = count_layers(state_dict, "encoder.trainable_encoder.layers.", "tokenizer encoder")
    values["encoder_num_layers"] = r.resolve(
        "encoder_num_layers",
        checkpoint=source_of(encoder_layers or UNSET, "number of encoder.trainable_encoder.layers.i"),
        default=_TOKENIZER_DEFAULTS["encoder_num_layers"],
    )
    enc_fc1 = sh("encoder.trainable_encoder.layers.0.mlp.fc1.weight")
    values["encoder_intermediate_size"] = r.resolve(
        "encoder_intermediate_size",
        checkpoint=source_of(enc_fc1[0] if enc_fc1 else UNSET, "encoder.trainable_encoder.layers.0.mlp.fc1.weight"),
        default=_TOKENIZER_DEFAULTS["encoder_intermediate_size"],
    )
    pos = sh("encoder.siglip.embeddings.position_embedding.weight")
    values["encoder_num_position_embeddings"] = r.resolve(
        "encoder_num_position_embeddings",
        checkpoint=source_of(pos[0] if pos else UNSET, "encoder.siglip.embeddings.position_embedding.weight rows"),
        default=_TOKENIZER_DEFAULTS["encoder_num_position_embeddings"],
    )


def _resolve_tokenizer_heads_and_distillation(
    r: Resolver, values: dict[str, Any], state_dict: Mapping, cfg: Mapping
) -> None:
    """Attention heads (not in the weights) and distillation sizes."""
    sh = partial(_shape_or_none, state_dict)
    for name, width, table in (
        ("encoder_num_heads", values["encoder_hidden_size"], _AUTHORS_ENCODER_WIDTH_HEADS),
        ("decoder_num_heads", values["decoder_hidden_size"], _AUTHORS_DECODER_WIDTH_HEADS),
    ):
        if name in r.overrides or width in table:
            values[name] = r.resolve(name, default=table.get(width, UNSET))
        else:
            r.errors.append(
                f"`{name}` cannot be read from weights and the width {width} is not the authors' "
                f"({sorted(table)}); pass it in `tokenizer_overrides`, e.g. '{{\"{name}\": 16}}'"
            )
    align = yaml_get(cfg, "model.vq_model.clip_align_layer_id")
    values["distill_layer_index"] = r.resolve(
        "distill_layer_index", yaml=source_of(align, "YAML model.vq_model.clip_align_layer_id"), default=2
    )
    projector = sh("decoder.clip_projector.0.weight")  # the training-only distillation MLP, when the file has it
    values["distill_projector_hidden_size"] = r.resolve(
        "distill_projector_hidden_size",
        checkpoint=source_of(projector[0] if projector else UNSET, "decoder.clip_projector.0.weight rows"),
        default=2048,
    )
