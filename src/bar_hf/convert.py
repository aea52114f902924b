"""Convert the authors' released BAR checkpoints into `bar_hf` models and a `BARPipeline` folder.

The authors publish plain `torch.save(state_dict)` pickles (BAR_METHOD §8): five generators (loaded strictly, keys
exactly as in §8.2) and three BAR-FSQ tokenizers (loaded with `strict=False` after stripping a `_orig_mod.module.`
prefix, §8.3). This module

* loads a file with `torch.load(..., weights_only=True)` and strips the training-wrapper prefixes,
* infers every architecture size the tensors reveal (widths, depths, MLP sizes, head width/depth, attention heads of
  the generator from the QK-norm width, bits per token, grid, patch size, number of classes) and cross-checks them
  with the authors' YAML config, a preset and user overrides (any disagreement is an error naming the field and every
  value),
* maps every key to the `bar_hf` module names (the layouts are identical: fused qkv, SwiGLU `w12` = [gate; value],
  AdaLN chunk orders — no tensor is split or reordered), drops what inference does not need (frozen SigLIP2 copy,
  pooling head, distillation projector) and verifies the stored RoPE tables against the recomputed ones,
* refuses unknown, missing or mis-shaped keys with one error listing all of them (never a silent partial load).

The inverse maps ([`generator_to_authors_state_dict`], [`tokenizer_to_authors_state_dict`]) make the round trip
testable. [`convert_to_pipeline`] assembles a `BARPipeline` with the authors' evaluation sampling settings
(BAR_METHOD §4.5) and ImageNet-1k class names and saves (and optionally pushes) it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_bar import BAR_PRESETS, BAR_SAMPLING_DEFAULTS, CLASS_ROW_OFFSET, BARConfig
from .modeling_bar import BARForCausalImageModeling
from .vq_model_bar import BARVQModel

__all__ = [
    "AUTHORS_KEY_PREFIXES",
    "TOKENIZER_DROPPED_PREFIXES",
    "TOKENIZER_OPTIONAL_PREFIXES",
    "ConversionReport",
    "load_authors_checkpoint",
    "strip_key_prefixes",
    "load_authors_yaml",
    "imagenet_id2label",
    "generator_key_to_authors",
    "tokenizer_key_to_authors",
    "infer_generator_config",
    "infer_tokenizer_config",
    "check_generator_state_dict",
    "check_tokenizer_state_dict",
    "convert_generator",
    "convert_tokenizer",
    "generator_to_authors_state_dict",
    "tokenizer_to_authors_state_dict",
    "detect_preset",
    "convert_to_pipeline",
    "add_convert_arguments",
    "add_convert_subparser",
    "run_convert",
]

logger = logging.getLogger(__name__)

#: Prefixes the authors' training wrappers add to keys (`torch.compile` → `_orig_mod.`, DDP → `module.`).
AUTHORS_KEY_PREFIXES = ("_orig_mod.module.", "_orig_mod.", "module.")

#: Tokenizer keys that exist in the authors' files but are not part of the inference model (BAR_METHOD §8.3): the
#: frozen SigLIP2 stack (and its aliases) that only produced the distillation target, the unused SigLIP2 pooling head
#: and the training-only distillation projector (kept only when `distill_projector_dim` is set).
TOKENIZER_DROPPED_PREFIXES = (
    "encoder.siglip.encoder.",
    "encoder.frozen_encoder.",
    "encoder.frozen_post_layernorm.",
    "encoder.siglip.post_layernorm.",
    "encoder.siglip.head.",
    "decoder.clip_projector.",
)

#: Tokenizer keys that `allow_missing=True` lets a file omit (documented in docs/guides/convert.md): the image
#: *encoder* side (SigLIP2 embeddings and trainable stack, post-LayerNorm, `quantize.in_proj`). Sampling only decodes
#: bits, so a converted pipeline still generates; `encode` of such a tokenizer is meaningless (random weights).
TOKENIZER_OPTIONAL_PREFIXES = (
    "encoder.siglip.embeddings.",
    "encoder.trainable_encoder.",
    "encoder.trainable_post_layernorm.",
    "quantize.in_proj.",
)

#: The authors' RoPE tables, one persistent copy per block: `blocks.i.attn.rope.freqs_{cos,sin}` (not loaded; checked).
_ROPE_KEY = re.compile(r"^blocks\.(\d+)\.attn\.rope\.freqs_(cos|sin)$")
_ROPE_ATOL = 1e-5

# bar_hf name prefix → authors' name prefix (first match wins).
_GENERATOR_RULES = (
    ("model.layers.", "blocks."),
    ("model.slot_embed", "timesteps_embeddings"),
    ("model.class_embed.", "embeddings."),
    ("model.bit_embed.", "input_embeddings."),
    ("head.res_blocks.", "lm_head.transformer."),
    ("head.final_layer.", "lm_head.adaln_before_head."),
    ("head.", "lm_head."),
    ("model.", ""),
)
_TOKENIZER_RULES = (
    ("encoder.embeddings.", "encoder.siglip.embeddings."),
    ("encoder.encoder.", "encoder.trainable_encoder."),
    ("encoder.post_layernorm.", "encoder.trainable_post_layernorm."),
)

# The authors' values for what tokenizer tensors cannot reveal (BAR_METHOD §2.2/§2.4).
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

#: Architecture fields that identify a preset (training-only fields such as dropout are ignored).
_PRESET_ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "latent_height",
    "latent_width",
    "num_bits",
    "patch_size",
)

_UNSET = object()
_LIST_LIMIT = 20


# ---------------------------------------------------------------------------------------------------- loading
def strip_key_prefixes(state_dict: Mapping[str, Any], prefixes: tuple[str, ...] = AUTHORS_KEY_PREFIXES) -> dict:
    """Remove the training-wrapper prefixes (`_orig_mod.module.`, `_orig_mod.`, `module.`, repeatedly) from keys.

    Raises:
        ValueError: if two keys collapse onto the same name (e.g. a file holding both `module.x` and `x`).
    """
    stripped: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in state_dict.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    changed = True
                    break
        if name in stripped:
            raise ValueError(
                f"`state_dict` keys {sources[name]!r} and {key!r} both become {name!r} after stripping the prefixes "
                f"{list(prefixes)}; the checkpoint is ambiguous."
            )
        stripped[name] = value
        sources[name] = key
    return stripped


def load_authors_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load one of the authors' checkpoints (a `torch.save`d state dict, or a `.safetensors` file) on the CPU.

    Uses `torch.load(path, map_location="cpu", weights_only=True)`. A dict nesting the weights under `"state_dict"` or
    `"model"` is unwrapped. Training-wrapper prefixes are stripped ([`strip_key_prefixes`]).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file does not hold a flat mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated / not a checkpoint / pickled code that `weights_only=True` refuses
        raise ValueError(
            f"checkpoint {path} could not be read as a PyTorch state dict (a truncated or corrupted file, not a "
            "checkpoint, or a pickle holding objects other than tensors, which `torch.load(weights_only=True)` "
            f"refuses to run): {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    if isinstance(obj, Mapping):
        for nested in ("state_dict", "model"):
            if isinstance(obj.get(nested), Mapping):
                obj = obj[nested]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"checkpoint {path} must hold a non-empty state dict (name → tensor), got {type(obj).__name__}."
        )
    bad = [key for key, value in obj.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise ValueError(
            f"checkpoint {path} must map names to tensors; {len(bad)} entries are not tensors: {_short(bad)}."
        )
    return strip_key_prefixes(obj)


def load_authors_yaml(path: str | Path | Mapping | None) -> dict:
    """Read one of the authors' OmegaConf-style YAML configs with pyyaml (interpolations are kept as strings).

    Accepts a path, an already-parsed mapping, or `None` (→ `{}`).
    """
    if path is None:
        return {}
    if isinstance(path, Mapping):
        return dict(path)
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"config {path} is not a valid YAML file: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"config {path} must be a YAML mapping, got {type(data).__name__}.")
    return dict(data)


def imagenet_id2label() -> dict[int, str]:
    """ImageNet-1k class names in the standard order (`0: "tench, Tinca tinca"` … `999: "toilet tissue, …"`).

    Shipped as `bar_hf/data/imagenet_classes.json` (WordNet lemmas of the 1000 ILSVRC-2012 synsets sorted by synset
    id; see docs/guides/convert.md for provenance).
    """
    path = Path(__file__).resolve().parent / "data" / "imagenet_classes.json"
    with open(path, encoding="utf-8") as handle:
        return {int(key): value for key, value in json.load(handle).items()}


def _yaml_get(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _UNSET
        node = node[part]
    return node


def _yaml_token_size(cfg: Any, errors: list[str]) -> Any:
    """`model.vq_model.token_size` from the YAML (or `_UNSET`), checking `codebook_size == 2 ** token_size`."""
    yaml_bits = _yaml_get(cfg, "model.vq_model.token_size")
    yaml_codebook = _yaml_get(cfg, "model.vq_model.codebook_size")
    if yaml_bits is not _UNSET and yaml_codebook is not _UNSET and yaml_codebook != 2**yaml_bits:
        errors.append(
            f"YAML model.vq_model.codebook_size={yaml_codebook!r} must equal 2 ** model.vq_model.token_size "
            f"(token_size={yaml_bits!r}): BAR-FSQ has 2 levels per channel"
        )
    return yaml_bits


def _short(items, limit: int = _LIST_LIMIT) -> str:
    items = list(items)
    text = ", ".join(str(item) for item in items[:limit])
    return text + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------------- key maps
def _apply_rules(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for ours, theirs in rules:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return key


def generator_key_to_authors(key: str) -> str:
    """`BARForCausalImageModeling` state-dict key → the authors' generator key (BAR_METHOD §8.2)."""
    return _apply_rules(key, _GENERATOR_RULES)


def tokenizer_key_to_authors(key: str) -> str:
    """`BARVQModel` state-dict key → the authors' BAR-FSQ key (BAR_METHOD §8.3)."""
    return _apply_rules(key, _TOKENIZER_RULES)


# ---------------------------------------------------------------------------------------------------- reports
@dataclass
class ConversionReport:
    """What a conversion did: keys loaded, dropped, allowed to be missing, RoPE tables verified, resolved sizes."""

    loaded: int = 0
    dropped: list[str] = field(default_factory=list)
    missing_allowed: list[str] = field(default_factory=list)
    rope_buffers_verified: int = 0
    source_dtypes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "loaded_tensors": self.loaded,
            "dropped_tensors": len(self.dropped),
            "dropped_prefixes": sorted({_drop_group(key) for key in self.dropped}),
            "missing_allowed": self.missing_allowed,
            "rope_buffers_verified": self.rope_buffers_verified,
            "source_dtypes": self.source_dtypes,
            "notes": self.notes,
        }


def _drop_group(key: str) -> str:
    for prefix in TOKENIZER_DROPPED_PREFIXES:
        if key.startswith(prefix):
            return prefix + "*"
    if _ROPE_KEY.match(key):
        return "blocks.*.attn.rope.*"
    return key


def _raise_key_errors(what: str, missing: list[str], unexpected: list[str], mismatched: list[str], hint: str = ""):
    if not (missing or unexpected or mismatched):
        return
    lines = [f"the {what} checkpoint does not match the model built from the inferred config:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if mismatched:
        lines.append(f"  mis-shaped keys ({len(mismatched)}): {_short(mismatched)}")
    if hint:
        lines.append(hint)
    raise ValueError("\n".join(lines))


# ---------------------------------------------------------------------------------------------------- resolution
class _Resolver:
    """Resolve config fields from several sources and collect every disagreement into one error.

    Tensor-revealed values (`checkpoint`, `tokenizer`) are authoritative: all of them, the YAML, the preset and
    any override must agree with them. The YAML and the preset must agree with each other. An override that no tensor
    contradicts wins over the YAML, the preset and the defaults.
    """

    def __init__(self, what: str, overrides: Mapping[str, Any]):
        self.what = what
        self.overrides = dict(overrides)
        self.errors: list[str] = []

    @staticmethod
    def _same(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return a == b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(_Resolver._same(x, y) for x, y in zip(a, b))
        return a == b

    def resolve(self, name: str, *, default: Any = _UNSET, required: bool = True, **sources: Any) -> Any:
        """`sources`: keyword (`checkpoint`, `tokenizer`, `yaml`, `preset`) → `(value, description)` or `_UNSET`.

        Returns the override if given, else the first available of checkpoint, tokenizer, YAML, preset, `default`.
        """
        order = ("checkpoint", "tokenizer", "yaml", "preset")
        given = [(kind, sources[kind]) for kind in order if sources.get(kind, _UNSET) is not _UNSET]
        authoritative = [(kind, src) for kind, src in given if kind in ("checkpoint", "tokenizer")]
        compared = authoritative + [(kind, src) for kind, src in given if kind in ("yaml", "preset")]
        listed = list(given)
        if name in self.overrides:
            override = ("override", (self.overrides[name], f"{self.what}_overrides[{name!r}]"))
            listed.append(override)
            if authoritative:
                compared.append(override)
        if any(not self._same(value, compared[0][1][0]) for _, (value, _) in compared):
            values = "; ".join(f"{kind} {value!r} ({desc})" for kind, (value, desc) in listed)
            self.errors.append(f"`{name}` disagrees between sources: {values}")
        if name in self.overrides:
            return self.overrides[name]
        if given:
            return given[0][1][0]
        if default is not _UNSET:
            return default
        if required:
            self.errors.append(f"`{name}` cannot be determined from the files: pass it in `{self.what}_overrides`")
        return None

    def raise_errors(self) -> None:
        if self.errors:
            raise ValueError(
                f"{self.what} config conflicts ({len(self.errors)}); fix the YAML/preset/overrides or check that the "
                "right files were passed:\n  " + "\n  ".join(self.errors)
            )


def _src(value: Any, description: str) -> tuple[Any, str] | object:
    return _UNSET if value is _UNSET or value is None else (value, description)


def _validate_overrides(what: str, overrides: Mapping[str, Any] | None, allowed: set[str]) -> dict:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"`{what}_overrides` has unknown fields {unknown}; valid fields are {sorted(allowed)}.")
    return overrides


def _layer_indices(state_dict: Mapping[str, Any], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for key in state_dict for m in [pattern.match(key)] if m})


def _count_layers(state_dict: Mapping[str, Any], prefix: str, what: str) -> int:
    indices = _layer_indices(state_dict, prefix)
    if indices and indices != list(range(len(indices))):
        gaps = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise ValueError(f"{what}: layer indices under `{prefix}` must be 0..n-1, layers {gaps} are missing.")
    return len(indices)


def _perfect_square_root(value: int) -> int | None:
    root = math.isqrt(value) if value >= 0 else -1
    return root if root >= 0 and root * root == value else None


# ---------------------------------------------------------------------------------------------------- generator
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
    overrides = _validate_overrides("generator", overrides, _init_parameters(BARConfig))
    cfg = load_authors_yaml(yaml_config)
    missing = [key for key in _GENERATOR_CORE_KEYS if key not in state_dict]
    if missing:
        raise ValueError(
            f"cannot infer the generator architecture: the checkpoint lacks {missing} (is this an authors' BAR "
            f"generator file with the MBM head? it has {len(state_dict)} keys, e.g. {_short(list(state_dict)[:5])})."
        )
    shape = {key: tuple(state_dict[key].shape) for key in _GENERATOR_CORE_KEYS}
    preset_values = BARConfig.from_preset(preset).to_dict() if preset else {}

    def ypath(path: str) -> tuple[Any, str] | object:
        return _src(_yaml_get(cfg, path), f"YAML {path}")

    def pval(name: str) -> tuple[Any, str] | object:
        return _src(preset_values.get(name, _UNSET), f"preset {preset!r}") if preset else _UNSET

    has_generator_yaml = isinstance(_yaml_get(cfg, "model.generator"), Mapping)
    r = _Resolver("generator", overrides)
    hidden = shape["embeddings.weight"][1]
    head_dim = shape["blocks.0.attn.q_norm.weight"][0]
    values: dict[str, Any] = {}
    values["hidden_size"] = r.resolve(
        "hidden_size",
        checkpoint=(hidden, f"embeddings.weight {list(shape['embeddings.weight'])}"),
        yaml=ypath("model.generator.hidden_size"),
        preset=pval("hidden_size"),
    )
    values["num_hidden_layers"] = r.resolve(
        "num_hidden_layers",
        checkpoint=(_count_layers(state_dict, "blocks.", "generator"), "number of blocks.i"),
        yaml=ypath("model.generator.num_hidden_layers"),
        preset=pval("num_hidden_layers"),
    )
    heads = hidden // head_dim if head_dim and hidden % head_dim == 0 else _UNSET
    values["num_attention_heads"] = r.resolve(
        "num_attention_heads",
        checkpoint=_src(heads, f"hidden_size {hidden} / q_norm width {head_dim}"),
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
    yaml_dropout = _yaml_get(cfg, "model.generator.dropout")
    if yaml_dropout is _UNSET and has_generator_yaml:
        yaml_dropout = 0.0  # the authors' default when the YAML has no `dropout`
    values["hidden_dropout"] = r.resolve(
        "hidden_dropout",
        yaml=_src(yaml_dropout, "YAML model.generator.dropout (default 0.0)"),
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
    target_codebook = _yaml_get(cfg, "model.generator.target_codebook_size")
    if target_codebook is not _UNSET and target_codebook != 2:
        r.errors.append(
            f"`target_codebook_size` must be 2 (binary bits, class row offset 3), got YAML "
            f"model.generator.target_codebook_size={target_codebook!r}"
        )

    # bits per token and latent grid: tokenizer > YAML > preset > overrides
    yaml_bits = _yaml_token_size(cfg, r.errors)
    values["num_bits"] = r.resolve(
        "num_bits",
        tokenizer=_src(num_bits, "tokenizer num_bits"),
        yaml=_src(yaml_bits, "YAML model.vq_model.token_size"),
        preset=pval("num_bits"),
    )
    seq_len = _yaml_get(cfg, "model.generator.image_seq_len")
    yaml_side = _perfect_square_root(seq_len) if isinstance(seq_len, int) else None
    if seq_len is not _UNSET and yaml_side is None:
        r.errors.append(f"YAML model.generator.image_seq_len={seq_len!r} must be a square number of latent tokens")
    for index, name in enumerate(("latent_height", "latent_width")):
        values[name] = r.resolve(
            name,
            tokenizer=_src(latent_size[index] if latent_size else None, "tokenizer latent grid"),
            yaml=_src(yaml_side, f"YAML model.generator.image_seq_len={seq_len}"),
            preset=pval(name),
        )
    k2 = shape["lm_head.output_embed.weight"][0]
    bits_per_step = k2 // 2
    patch = _UNSET
    if values["num_bits"]:
        ratio = bits_per_step / values["num_bits"]
        root = _perfect_square_root(int(ratio)) if ratio == int(ratio) else None
        if root is None:
            r.errors.append(
                f"`patch_size` impossible: the head predicts k = {bits_per_step} bits per step (lm_head.output_embed "
                f"rows {k2} / 2), which is not num_bits ({values['num_bits']}) times a square"
            )
        else:
            patch = root
    yaml_patch = _yaml_get(cfg, "model.generator.patch_size")
    if yaml_patch is _UNSET and has_generator_yaml:
        yaml_patch = 1  # the authors' default when the YAML has no patch_size
    values["patch_size"] = r.resolve(
        "patch_size",
        checkpoint=_src(patch, f"sqrt(k {bits_per_step} / num_bits {values['num_bits']})"),
        yaml=_src(yaml_patch, "YAML model.generator.patch_size (default 1)"),
        preset=pval("patch_size"),
    )
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
    rope_tokens = _UNSET
    if rope is not None and num_ar is not None and rope.dim() == 2:
        rope_tokens = (rope.shape[0] - num_ar - 1, f"RoPE rows {rope.shape[0]} - N {num_ar} - 1 cls")
    values["num_class_tokens"] = r.resolve(
        "num_class_tokens",
        checkpoint=rope_tokens if rope_tokens is not _UNSET and rope_tokens[0] > 0 else _UNSET,
        yaml=ypath("model.generator.repeat_class_condition"),
        preset=pval("num_class_tokens"),
        default=32,
    )
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
            _count_layers(state_dict, "lm_head.transformer.", "generator head"),
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
    for name in sorted(set(overrides) - set(values)):
        values[name] = r.resolve(name, preset=pval(name))
    r.raise_errors()
    try:
        config = BARConfig(**values)
    except ValueError as error:
        raise ValueError(f"the inferred generator config is invalid ({error}); resolved values: {values}") from error
    if config.bits_per_step != bits_per_step:
        raise ValueError(
            f"generator head predicts k = {bits_per_step} bits per step, but num_bits {config.num_bits} × patch_size² "
            f"{config.patch_size**2} = {config.bits_per_step}."
        )
    return config


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
        rope = _ROPE_KEY.match(key)
        if rope and int(rope.group(1)) < config.num_hidden_layers:
            if tuple(value.shape) != rope_shape:
                mismatched.append(f"{key}: file {list(value.shape)} vs expected {list(rope_shape)}")
            continue
        if key not in expected:
            unexpected.append(key)
        elif tuple(value.shape) != expected[key][1]:
            mismatched.append(f"{key}: file {list(value.shape)} vs expected {list(expected[key][1])}")
    missing = [key for key in expected if key not in state_dict]
    _raise_key_errors(
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
    bad_rope = []
    for key, value in state_dict.items():
        match = _ROPE_KEY.match(key)
        if not match:
            continue
        reference = cos if match.group(2) == "cos" else sin
        diff = (value.detach().float() - reference).abs().max().item()
        if not diff <= _ROPE_ATOL:
            bad_rope.append(f"{key} (max |diff| {diff:.3g})")
        report.dropped.append(key)
        report.rope_buffers_verified += 1
    if bad_rope:
        raise ValueError(
            f"stored RoPE tables differ from the recomputed 2-D RoPE (grid {config.grid_height}×{config.grid_width}, "
            f"head_dim {config.head_dim}, {config.prefix_length} prefix rows, theta {config.rope_theta}) by more than "
            f"{_ROPE_ATOL}: {_short(bad_rope)}. The checkpoint was trained with a different RoPE; pass the right "
            "`rope_theta`/grid in `generator_overrides` or check the files."
        )
    loaded = {ours: state_dict[theirs] for theirs, ours in mapping.items()}
    report.source_dtypes = sorted({str(value.dtype).replace("torch.", "") for value in loaded.values()})
    model.load_state_dict(loaded, strict=True)  # complete by construction (check_generator_state_dict)
    report.loaded = len(loaded)
    model.eval()
    return (model, report) if return_report else model


def generator_to_authors_state_dict(
    model: BARForCausalImageModeling, include_rope: bool = True
) -> dict[str, torch.Tensor]:
    """Inverse of [`convert_generator`]: the authors' key layout (BAR_METHOD §8.2), with the per-block RoPE buffers
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


# ---------------------------------------------------------------------------------------------------- tokenizer
def _init_parameters(cls) -> set[str]:
    import inspect

    kinds = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind not in kinds}


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
    overrides = _validate_overrides("tokenizer", overrides, _init_parameters(BARVQModel))
    cfg = load_authors_yaml(yaml_config)
    need = [
        "quantize.out_proj.weight",
        "decoder.positional_embedding",
        "decoder.ffn.0.weight",
        "decoder.conv_out.weight",
        "decoder.transformer.0.mlp.fc1.weight",
    ]
    encoder_need = [
        "quantize.in_proj.weight",
        "encoder.siglip.embeddings.patch_embedding.weight",
        "encoder.siglip.embeddings.position_embedding.weight",
        "encoder.trainable_encoder.layers.0.mlp.fc1.weight",
    ]
    missing = [key for key in need if key not in state_dict]
    missing_encoder = [key for key in encoder_need if key not in state_dict]
    if missing or (missing_encoder and not allow_missing):
        raise ValueError(
            "cannot infer the tokenizer architecture: the checkpoint lacks "
            f"{missing + ([] if allow_missing else missing_encoder)} (is this an authors' BAR-FSQ file? it has "
            f"{len(state_dict)} keys, e.g. {_short(list(state_dict)[:5])})."
            + ("" if missing else " The encoder keys are optional only with `allow_missing=True`.")
        )

    def sh(key: str) -> tuple[int, ...] | None:
        return tuple(state_dict[key].shape) if key in state_dict else None

    r = _Resolver("tokenizer", overrides)
    values: dict[str, Any] = {}
    out_proj = sh("quantize.out_proj.weight")
    in_proj = sh("quantize.in_proj.weight")
    yaml_bits = _yaml_token_size(cfg, r.errors)
    values["num_bits"] = r.resolve(
        "num_bits",
        checkpoint=(out_proj[1], f"quantize.out_proj.weight {list(out_proj)}"),
        yaml=_src(yaml_bits, "YAML model.vq_model.token_size"),
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
            _count_layers(state_dict, "decoder.transformer.", "tokenizer decoder"),
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
    patch = _UNSET
    if values["out_channels"] and ffn[0] % values["out_channels"] == 0:
        root = _perfect_square_root(ffn[0] // values["out_channels"])
        patch = root if root else _UNSET
    if patch is _UNSET:
        r.errors.append(
            f"`patch_size` impossible: decoder.ffn.0.weight {list(ffn)} rows are not patch² × out_channels "
            f"({values['out_channels']})"
        )
    values["patch_size"] = r.resolve(
        "patch_size",
        checkpoint=_src(patch, f"sqrt(decoder.ffn.0 rows {ffn[0]} / out_channels {values['out_channels']})"),
        yaml=_src(_yaml_get(cfg, "model.vq_model.vit_dec_patch_size"), "YAML model.vq_model.vit_dec_patch_size"),
    )
    positions = sh("decoder.positional_embedding")
    num_tokens = positions[0] - 1
    side = _perfect_square_root(num_tokens)
    grid_sample = side * values["patch_size"] if side and values["patch_size"] else _UNSET
    if side is None and "sample_size" not in overrides:
        r.errors.append(
            f"the latent grid is not square (decoder.positional_embedding {list(positions)} → {num_tokens} tokens); "
            "pass `sample_size` as [height, width] in `tokenizer_overrides`"
        )
    crop = _yaml_get(cfg, "dataset.preprocessing.crop_size")
    values["sample_size"] = r.resolve(
        "sample_size",
        checkpoint=_src(grid_sample, f"sqrt(decoder.positional_embedding rows {positions[0]} - 1) × patch_size"),
        yaml=_src(crop, "YAML dataset.preprocessing.crop_size"),
    )
    # encoder (optional with allow_missing: the authors' sizes are used)
    patch_embed = sh("encoder.siglip.embeddings.patch_embedding.weight")
    encoder_width = in_proj[1] if in_proj is not None else (patch_embed[0] if patch_embed else _UNSET)
    values["encoder_hidden_size"] = r.resolve(
        "encoder_hidden_size",
        checkpoint=_src(encoder_width, "quantize.in_proj.weight / patch_embedding width"),
        default=_TOKENIZER_DEFAULTS["encoder_hidden_size"],
    )
    if patch_embed is not None and patch_embed[0] != values["encoder_hidden_size"]:
        r.errors.append(
            f"encoder.siglip.embeddings.patch_embedding.weight {list(patch_embed)} disagrees with the encoder width "
            f"{values['encoder_hidden_size']}"
        )
    in_channels = _UNSET
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
        checkpoint=_src(in_channels, "patch_embedding inputs / patch_size²"),
        default=values["out_channels"],
    )
    encoder_layers = _count_layers(state_dict, "encoder.trainable_encoder.layers.", "tokenizer encoder")
    values["encoder_num_layers"] = r.resolve(
        "encoder_num_layers",
        checkpoint=_src(encoder_layers or _UNSET, "number of encoder.trainable_encoder.layers.i"),
        default=_TOKENIZER_DEFAULTS["encoder_num_layers"],
    )
    enc_fc1 = sh("encoder.trainable_encoder.layers.0.mlp.fc1.weight")
    values["encoder_intermediate_size"] = r.resolve(
        "encoder_intermediate_size",
        checkpoint=_src(enc_fc1[0] if enc_fc1 else _UNSET, "encoder.trainable_encoder.layers.0.mlp.fc1.weight"),
        default=_TOKENIZER_DEFAULTS["encoder_intermediate_size"],
    )
    pos = sh("encoder.siglip.embeddings.position_embedding.weight")
    values["encoder_num_position_embeddings"] = r.resolve(
        "encoder_num_position_embeddings",
        checkpoint=_src(pos[0] if pos else _UNSET, "encoder.siglip.embeddings.position_embedding.weight rows"),
        default=_TOKENIZER_DEFAULTS["encoder_num_position_embeddings"],
    )
    for name, width, table in (
        ("encoder_num_heads", values["encoder_hidden_size"], _AUTHORS_ENCODER_WIDTH_HEADS),
        ("decoder_num_heads", values["decoder_hidden_size"], _AUTHORS_DECODER_WIDTH_HEADS),
    ):
        if name in overrides or width in table:
            values[name] = r.resolve(name, default=table.get(width, _UNSET))
        else:
            r.errors.append(
                f"`{name}` cannot be read from weights and the width {width} is not the authors' "
                f"({sorted(table)}); pass it in `tokenizer_overrides`, e.g. '{{\"{name}\": 16}}'"
            )
    align = _yaml_get(cfg, "model.vq_model.clip_align_layer_id")
    values["distill_layer_index"] = r.resolve(
        "distill_layer_index", yaml=_src(align, "YAML model.vq_model.clip_align_layer_id"), default=2
    )
    projector = sh("decoder.clip_projector.0.weight")  # the training-only distillation MLP, when the file has it
    values["distill_projector_hidden_size"] = r.resolve(
        "distill_projector_hidden_size",
        checkpoint=_src(projector[0] if projector else _UNSET, "decoder.clip_projector.0.weight rows"),
        default=2048,
    )
    for name in sorted(set(overrides) - set(values)):
        values[name] = r.resolve(name)
    r.raise_errors()
    return values


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
    _raise_key_errors("tokenizer", missing, unexpected, mismatched, hint)
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
    if missing_allowed:
        model = BARVQModel(**kwargs)  # initialized: the missing encoder keeps deterministic-seeded random weights
        logger.warning(
            "tokenizer checkpoint lacks %d encoder-side tensors (%s); they keep random weights: the converted "
            "tokenizer decodes correctly but its `encode` is meaningless.",
            len(missing_allowed),
            _short(missing_allowed, 5),
        )
    else:
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = BARVQModel(**kwargs)
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


def tokenizer_to_authors_state_dict(model: BARVQModel) -> dict[str, torch.Tensor]:
    """Inverse of [`convert_tokenizer`] for the kept tensors (the authors' minimal inference set, BAR_METHOD §8.3)."""
    return {tokenizer_key_to_authors(key): value.detach() for key, value in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------- pipeline
def detect_preset(config: BARConfig) -> str | None:
    """The preset whose architecture `config` matches (width, depth, heads, MLP, grid, bits, patch, 1000 classes,
    32 class tokens, the 2048-wide 3-block head), or `None`."""
    fields = _PRESET_ARCH_FIELDS + ("intermediate_size", "num_classes", "num_class_tokens", "head_hidden_size")
    fields += ("head_num_layers", "head_intermediate_size")
    for name in BAR_PRESETS:
        reference = BARConfig.from_preset(name)
        if all(getattr(config, f) == getattr(reference, f) for f in fields):
            return name
    return None


def _sampling_settings(
    preset: str | None, yaml_cfg: Mapping, sampling_overrides: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str]:
    allowed = {"guidance_scale", "guidance_schedule", "temperature", "tokens_allocation", "num_inference_steps"}
    overrides = dict(sampling_overrides or {})
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"`sampling_overrides` has unknown fields {unknown}; valid fields are {sorted(allowed)}.")
    if preset is not None:
        settings, source = dict(BAR_SAMPLING_DEFAULTS[preset]), f"the authors' evaluation settings for {preset}"
    else:
        settings, source = {}, "defaults"
        for name, path in (
            ("guidance_scale", "model.generator.guidance_scale"),
            ("temperature", "model.generator.mbm_head.randomize_temperature"),
            ("tokens_allocation", "model.generator.mbm_head.tokens_allocation"),
        ):
            value = _yaml_get(yaml_cfg, path)
            if value is not _UNSET:
                settings[name] = value
                source = "the generator YAML (config-file defaults, not the README evaluation settings)"
    if overrides:
        source += " + sampling_overrides"
    settings.update(overrides)
    from .pipeline_inputs import check_guidance_scale, check_guidance_schedule

    try:  # checked before converting: a stored bad value would make every call of the saved pipeline fail
        if "guidance_scale" in settings:
            settings["guidance_scale"] = check_guidance_scale(settings["guidance_scale"])
        if "guidance_schedule" in settings:
            check_guidance_schedule(settings["guidance_schedule"])
    except (ValueError, TypeError) as error:
        raise type(error)(f"{error} (sampling settings from {source})") from None
    return settings, source


def _model_card(info: dict) -> str:
    sampling = info["sampling"]
    lines = [
        "---",
        "library_name: diffusers",
        "license: apache-2.0",
        "tags:",
        "- bar_hf",
        "- class-conditional-image-generation",
        "- autoregressive",
        "---",
        "",
        f"# BAR pipeline converted from the authors' checkpoints{' (' + info['preset'] + ')' if info['preset'] else ''}",
        "",
        "Masked Bit AutoRegressive image generation (BAR), converted with `bar_hf` "
        "(`bar-hf convert` / `scripts/convert_bar_official.py`).",
        "",
        f"* generator: `{info['generator_checkpoint']}`",
        f"* tokenizer: `{info['tokenizer_checkpoint']}`",
        f"* default sampling ({info['sampling_source']}): guidance_scale {sampling.get('guidance_scale')}, "
        f"temperature {sampling.get('temperature')}, tokens_allocation {sampling.get('tokens_allocation')}",
        "",
        "```py",
        "import bar_hf  # registers the BAR classes",
        "from bar_hf import BARPipeline",
        "",
        "pipe = BARPipeline.from_pretrained(PATH_OR_REPO)",
        'image = pipe(class_labels=["golden retriever"]).images[0]',
        "```",
        "",
    ]
    if info["tokenizer"]["missing_allowed"]:
        lines += ["**Warning:** the tokenizer encoder was not in the source file; `vqvae.encode` is not usable.", ""]
    return "\n".join(lines)


def convert_to_pipeline(
    generator_checkpoint: str | Path | Mapping[str, torch.Tensor],
    tokenizer_checkpoint: str | Path | Mapping[str, torch.Tensor],
    output_dir: str | Path | None = None,
    *,
    generator_config: str | Path | Mapping | None = None,
    tokenizer_config: str | Path | Mapping | None = None,
    preset: str | None = None,
    generator_overrides: Mapping[str, Any] | None = None,
    tokenizer_overrides: Mapping[str, Any] | None = None,
    sampling_overrides: Mapping[str, Any] | None = None,
    allow_missing: bool = False,
    id2label: Mapping[int, str] | None = None,
    push_to_hub: str | None = None,
    private: bool | None = None,
):
    """Convert an authors' generator + tokenizer pair into a `BARPipeline` and save (and optionally push) it.

    The tokenizer is converted first; its `num_bits` and latent grid fix the generator's patch size. The pipeline
    gets the authors' evaluation sampling settings (BAR_METHOD §4.5) of `preset` (given, or detected from the
    converted architecture): `guidance_scale` on the pipeline, `temperature` and `tokens_allocation` on the scheduler.
    Without a preset, the generator YAML's config-file values are used when present. `sampling_overrides` (keys
    `guidance_scale`, `guidance_schedule`, `temperature`, `tokens_allocation`, `num_inference_steps`) win.
    ImageNet-1k class names are attached when the model has 1000 classes (or pass `id2label`).

    Args:
        generator_checkpoint, tokenizer_checkpoint: paths to the authors' `.bin` files, or loaded state dicts.
        output_dir (`str`, *optional*): folder for `save_pretrained` (plus a `README.md` model card and
            `conversion_info.json`).
        generator_config, tokenizer_config: the authors' YAML configs (optional; cross-checked).
        preset (`str`, *optional*): `bar-b-4`, `bar-b-2`, `bar-b`, `bar-l` or `bar-l-512`.
        generator_overrides, tokenizer_overrides (`dict`, *optional*): config fields to force.
        sampling_overrides (`dict`, *optional*): default sampling settings to store instead.
        allow_missing (`bool`, *optional*, defaults to `False`): see [`convert_tokenizer`].
        id2label (`dict`, *optional*): class names; defaults to ImageNet-1k for 1000-class models.
        push_to_hub (`str`, *optional*): Hub repo id to upload `output_dir` to.
        private (`bool`, *optional*): visibility of a repo created by `push_to_hub`.

    Returns:
        `BARPipeline`: the converted pipeline (float32, CPU).
    """
    from .pipeline_bar import BARPipeline
    from .scheduling_bar import BARBitScheduler

    if preset is not None and preset not in BAR_PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(BAR_PRESETS)}, got {preset!r}.")
    if push_to_hub and output_dir is None:
        raise ValueError("`push_to_hub` needs an `output_dir` to save the pipeline into before uploading.")
    absent = [
        str(path)
        for path in (generator_checkpoint, tokenizer_checkpoint, generator_config, tokenizer_config)
        if isinstance(path, (str, Path)) and not Path(path).is_file()
    ]
    if absent:
        raise FileNotFoundError(f"input files not found: {', '.join(absent)}")
    generator_yaml = load_authors_yaml(generator_config)
    vqvae, tok_report = convert_tokenizer(
        tokenizer_checkpoint,
        yaml_config=tokenizer_config,
        overrides=tokenizer_overrides,
        allow_missing=allow_missing,
        return_report=True,
    )
    transformer, gen_report = convert_generator(
        generator_checkpoint,
        num_bits=vqvae.config.num_bits,
        latent_size=tuple(vqvae.grid_size),
        yaml_config=generator_yaml,
        preset=preset,
        overrides=generator_overrides,
        return_report=True,
    )
    crop = _yaml_get(generator_yaml, "dataset.preprocessing.crop_size")
    sample_size = vqvae.config.sample_size
    image_size = list(sample_size) if isinstance(sample_size, (list, tuple)) else [sample_size] * 2
    if crop is not _UNSET and [crop, crop] != image_size:
        raise ValueError(
            f"generator YAML dataset.preprocessing.crop_size={crop!r} disagrees with the tokenizer image size "
            f"{sample_size!r}: the generator was trained on another resolution's tokens."
        )
    yaml_tokenizer = _yaml_get(generator_yaml, "experiment.tokenizer_checkpoint")
    if yaml_tokenizer is not _UNSET and isinstance(tokenizer_checkpoint, (str, Path)):
        if Path(str(yaml_tokenizer)).name != Path(tokenizer_checkpoint).name:
            logger.warning(
                "the generator YAML names tokenizer %s but %s was given (the authors evaluate BAR-B/BAR-L with "
                "bar_fsq_16bits_ft.bin and BAR-B/2, BAR-B/4 with bar_fsq_16bits.bin).",
                Path(str(yaml_tokenizer)).name,
                Path(tokenizer_checkpoint).name,
            )
    detected = detect_preset(transformer.config)
    if preset is None and detected is not None:
        logger.info("detected preset %s from the checkpoint's architecture", detected)
    sampling_preset = preset or detected
    settings, sampling_source = _sampling_settings(sampling_preset, generator_yaml, sampling_overrides)
    scheduler_kwargs = {
        key: settings[key] for key in ("temperature", "tokens_allocation", "num_inference_steps") if key in settings
    }
    if "tokens_allocation" in scheduler_kwargs:
        scheduler_kwargs["tokens_allocation"] = [int(v) for v in scheduler_kwargs["tokens_allocation"]]
        scheduler_kwargs.setdefault("num_inference_steps", len(scheduler_kwargs["tokens_allocation"]))
    scheduler = BARBitScheduler(bits_per_token=transformer.config.bits_per_step, **scheduler_kwargs)
    if id2label is None and transformer.config.num_classes == 1000:
        id2label = imagenet_id2label()
    pipeline_kwargs = {key: settings[key] for key in ("guidance_scale", "guidance_schedule") if key in settings}
    pipe = BARPipeline(vqvae=vqvae, transformer=transformer, scheduler=scheduler, id2label=id2label, **pipeline_kwargs)
    if output_dir is not None:
        output_dir = Path(output_dir)
        pipe.save_pretrained(output_dir)
        info = {
            "generator_checkpoint": str(generator_checkpoint)
            if isinstance(generator_checkpoint, (str, Path))
            else "<state dict>",
            "tokenizer_checkpoint": str(tokenizer_checkpoint)
            if isinstance(tokenizer_checkpoint, (str, Path))
            else "<state dict>",
            "preset": sampling_preset,
            "sampling": settings,
            "sampling_source": sampling_source,
            "generator": gen_report.to_dict(),
            "tokenizer": tok_report.to_dict(),
        }
        with open(output_dir / "conversion_info.json", "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
            handle.write("\n")
        with open(output_dir / "README.md", "w", encoding="utf-8") as handle:
            handle.write(_model_card(info))
        if push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(push_to_hub, exist_ok=True, private=private, repo_type="model")
            api.upload_folder(
                repo_id=push_to_hub, folder_path=str(output_dir), commit_message="Convert BAR checkpoints"
            )
    return pipe


# ---------------------------------------------------------------------------------------------------- CLI
def _json_dict(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"`{flag}` must be a JSON object, got {text!r} ({error}).") from error
    if not isinstance(value, dict):
        raise ValueError(f"`{flag}` must be a JSON object, got {text!r}.")
    return value


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the conversion flags (each also accepted with dashes: `--output-dir`) to `parser`."""

    def flag(name: str, **kwargs):
        names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*names, dest=name, **kwargs)

    flag("generator_checkpoint", required=True, help="authors' generator .bin (e.g. assets/generator/bar_b.bin)")
    flag(
        "tokenizer_checkpoint",
        required=True,
        help="authors' tokenizer .bin (e.g. assets/tokenizer/bar_fsq_16bits_ft.bin)",
    )
    flag("generator_config", default=None, help="authors' generator YAML (optional; cross-checked)")
    flag("tokenizer_config", default=None, help="authors' tokenizer YAML (optional; cross-checked)")
    flag("output_dir", required=True, help="folder for the converted BARPipeline")
    flag("preset", default=None, choices=sorted(BAR_PRESETS), help="model name (checked; fixes the sampling defaults)")
    flag("push_to_hub", default=None, metavar="REPO_ID", help="also upload the folder to this Hub repo")
    flag("private", action="store_true", help="create the Hub repo as private")
    flag("allow_missing", action="store_true", help="accept a tokenizer file without its encoder (decode-only)")
    flag("generator_overrides", default=None, metavar="JSON", help="BARConfig fields, e.g. '{\"rope_theta\": 10000}'")
    flag(
        "tokenizer_overrides",
        default=None,
        metavar="JSON",
        help="BARVQModel fields, e.g. '{\"encoder_num_heads\": 4}'",
    )
    flag("sampling_overrides", default=None, metavar="JSON", help="e.g. '{\"guidance_scale\": 4.0}'")
    flag("verbose", action="store_true", help="log progress")
    return parser


def add_convert_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `convert` on an `argparse` subparsers object (used by `bar-hf convert`)."""
    parser = subparsers.add_parser(
        "convert",
        help="convert the authors' BAR checkpoints into a BARPipeline folder",
        description="Convert an authors' BAR generator + BAR-FSQ tokenizer (.bin) into a BARPipeline folder.",
    )
    add_convert_arguments(parser)
    parser.set_defaults(func=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """Run a conversion from parsed [`add_convert_arguments`] flags; returns 0."""
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pipe = convert_to_pipeline(
        args.generator_checkpoint,
        args.tokenizer_checkpoint,
        args.output_dir,
        generator_config=args.generator_config,
        tokenizer_config=args.tokenizer_config,
        preset=args.preset,
        generator_overrides=_json_dict(args.generator_overrides, "--generator_overrides"),
        tokenizer_overrides=_json_dict(args.tokenizer_overrides, "--tokenizer_overrides"),
        sampling_overrides=_json_dict(args.sampling_overrides, "--sampling_overrides"),
        allow_missing=args.allow_missing,
        push_to_hub=args.push_to_hub,
        private=args.private or None,
    )
    config = pipe.transformer.config
    print(
        f"wrote a BARPipeline to {args.output_dir} (D={config.hidden_size}, depth {config.num_hidden_layers}, "
        f"N={config.num_ar_steps} steps of k={config.bits_per_step} bits, {config.num_classes} classes)"
        + (f"; pushed to {args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0
