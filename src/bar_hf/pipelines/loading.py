"""Load-time check of a pipeline folder: every model component's weights must match its config exactly.

transformers and diffusers only *warn* about missing or unexpected checkpoint keys (missing ones are randomly
initialised or left on the meta device), so a folder whose config and weights disagree would load and then
generate garbage. [`check_component_weights`] compares the safetensors headers of a component's folder (keys and
shapes, no tensor data is read) with the loaded model's `state_dict` and raises a `ValueError` naming the component
and the keys.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re

import torch
from safetensors import safe_open

__all__ = ["check_component_weights", "check_folder_before_load", "checkpoint_shapes"]

_LIST_LIMIT = 8


def _short(keys) -> str:
    keys = sorted(keys)
    more = f" … (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    return ", ".join(keys[:_LIST_LIMIT]) + more


def _weight_files(folder: str, variant: str | None) -> list[str]:
    names = sorted(os.listdir(folder))
    indexes = [n for n in names if n.endswith(".safetensors.index.json")]
    if variant is not None:
        indexes = [n for n in indexes if f".{variant}." in n] or indexes
    if indexes:
        with open(os.path.join(folder, indexes[0]), encoding="utf-8") as handle:
            return sorted({os.path.join(folder, f) for f in json.load(handle)["weight_map"].values()})
    files = [n for n in names if n.endswith(".safetensors")]
    if variant is not None:
        files = [n for n in files if f".{variant}." in n] or files
    else:
        files = [n for n in files if n.count(".") == 1] or files  # `model.safetensors`, not `model.fp16.safetensors`
    return [os.path.join(folder, n) for n in files]


def checkpoint_shapes(folder: str, variant: str | None = None) -> dict[str, tuple[int, ...]] | None:
    """`{key: shape}` from the safetensors headers in `folder` (None when it holds no safetensors file)."""
    files = _weight_files(folder, variant)
    if not files:
        return None
    shapes = {}
    for path in files:
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _ignored(model, key: str, kind: str) -> bool:
    patterns = list(getattr(model, f"_keys_to_ignore_on_load_{kind}", None) or [])
    if kind == "missing":
        tied = getattr(model, "_tied_weights_keys", None) or []
        patterns += list(tied.keys() if isinstance(tied, dict) else tied)
    return any(re.search(p, key) or fnmatch.fnmatch(key, p) for p in patterns)


def check_component_weights(
    name: str, model: torch.nn.Module, folder: str, variant: str | None = None, loaded: bool = True
) -> None:
    """Raise a `ValueError` if `model`'s parameters and the checkpoint in `folder` differ in keys or shapes
    (`loaded=False`: `model` was only built, e.g. on the meta device, so meta tensors are not "missing")."""
    if not os.path.isdir(folder):
        return
    shapes = checkpoint_shapes(folder, variant)
    if shapes is None:
        return
    state = model.state_dict()
    missing = [k for k in state if k not in shapes and not _ignored(model, k, "missing")]
    if loaded:
        missing += [k for k, v in state.items() if k in shapes and v.device.type == "meta"]
    unexpected = [k for k in shapes if k not in state and not _ignored(model, k, "unexpected")]
    mismatched = [
        f"{k} {shapes[k]} vs {tuple(state[k].shape)}"
        for k in shapes
        if k in state and shapes[k] != tuple(state[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(keys)}): {_short(keys)}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if keys
        ]
        raise ValueError(
            f"the `{name}` weights in {folder} do not match its config ({type(model).__name__}): "
            + "; ".join(parts)
            + ". The checkpoint and config.json must describe the same architecture."
        )


def check_folder_before_load(folder: str, components: dict[str, type], variant: str | None = None) -> None:
    """Build each model component of a local pipeline folder from its config on the meta device (no memory, no
    weights read) and compare it with the checkpoint's keys and shapes: a config that no longer describes its
    weights (e.g. a changed `head_type`) is a `ValueError` naming the component, before the libraries' loaders
    fail with a size-mismatch error or warn and initialise weights randomly."""
    for name, model_class in components.items():
        sub = os.path.join(folder, name)
        if not os.path.isfile(os.path.join(sub, "config.json")):
            continue
        with torch.device("meta"):
            if hasattr(model_class, "from_config") and hasattr(model_class, "load_config"):  # diffusers ModelMixin
                model = model_class.from_config(model_class.load_config(sub))
            else:  # transformers PreTrainedModel
                model = model_class(model_class.config_class.from_pretrained(sub))
        check_component_weights(name, model, sub, variant, loaded=False)
