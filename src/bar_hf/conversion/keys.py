"""Read the authors' BAR checkpoints and YAML configs, and map keys between their layouts and `bar_hf`'s.

Part of the checkpoint conversion (see [`bar_hf.conversion.convert`]): loading (`torch.load(weights_only=True)` or safetensors,
training-wrapper prefixes stripped), the key maps of docs/method.md §8.2/§8.3 (the layouts are identical up to module
names), the names dropped or optional on the tokenizer side, and the [`ConversionReport`] a conversion returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Prefixes the authors' training wrappers add to keys (`torch.compile` → `_orig_mod.`, DDP → `module.`).
AUTHORS_KEY_PREFIXES = ("_orig_mod.module.", "_orig_mod.", "module.")

#: Tokenizer keys that exist in the authors' files but are not part of the inference model (docs/method.md §8.3): the
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
ROPE_KEY = re.compile(r"^blocks\.(\d+)\.attn\.rope\.freqs_(cos|sin)$")
ROPE_ATOL = 1e-5

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


UNSET = object()
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
            f"checkpoint {path} must map names to tensors; {len(bad)} entries are not tensors: {short_list(bad)}."
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
    path = Path(__file__).resolve().parents[1] / "data" / "imagenet_classes.json"
    with open(path, encoding="utf-8") as handle:
        return {int(key): value for key, value in json.load(handle).items()}


def yaml_get(config: Mapping, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return UNSET
        node = node[part]
    return node


def yaml_token_size(cfg: Any, errors: list[str]) -> Any:
    """`model.vq_model.token_size` from the YAML (or `UNSET`), checking `codebook_size == 2 ** token_size`."""
    yaml_bits = yaml_get(cfg, "model.vq_model.token_size")
    yaml_codebook = yaml_get(cfg, "model.vq_model.codebook_size")
    if yaml_bits is not UNSET and yaml_codebook is not UNSET and yaml_codebook != 2**yaml_bits:
        errors.append(
            f"YAML model.vq_model.codebook_size={yaml_codebook!r} must equal 2 ** model.vq_model.token_size "
            f"(token_size={yaml_bits!r}): BAR-FSQ has 2 levels per channel"
        )
    return yaml_bits


def short_list(items, limit: int = _LIST_LIMIT) -> str:
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
    """`BARForCausalImageModeling` state-dict key → the authors' generator key (docs/method.md §8.2)."""
    return _apply_rules(key, _GENERATOR_RULES)


def tokenizer_key_to_authors(key: str) -> str:
    """`BARVQModel` state-dict key → the authors' BAR-FSQ key (docs/method.md §8.3)."""
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
    if ROPE_KEY.match(key):
        return "blocks.*.attn.rope.*"
    return key


def raise_key_errors(what: str, missing: list[str], unexpected: list[str], mismatched: list[str], hint: str = ""):
    if not (missing or unexpected or mismatched):
        return
    lines = [f"the {what} checkpoint does not match the model built from the inferred config:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {short_list(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {short_list(unexpected)}")
    if mismatched:
        lines.append(f"  mis-shaped keys ({len(mismatched)}): {short_list(mismatched)}")
    if hint:
        lines.append(hint)
    raise ValueError("\n".join(lines))
