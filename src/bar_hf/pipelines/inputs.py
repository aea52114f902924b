"""Checking and normalising `BARPipeline` inputs (class labels, numbers, generators, callback outputs, batch size).

Every function raises `ValueError` (bad value) or `TypeError` (wrong type) naming the argument, the rule and the
value. Only [`check_callback_bits`] reads tensor values (one device sync, and only when a callback is given).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping

import numpy as np
import torch

__all__ = [
    "LabelIndex",
    "as_float",
    "as_int",
    "check_batch_size",
    "check_callback_bits",
    "check_callback_outputs",
    "check_generator",
    "check_guidance_scale",
    "check_guidance_schedule",
    "estimate_sampling_memory",
    "parse_id2label",
]

GUIDANCE_SCHEDULES = ("linear", "constant")
# the largest batch (`len(class_labels) * num_images_per_label`) one pipeline call accepts; split bigger jobs
MAX_BATCH_SIZE = 65536


def _scalar(value):
    """numpy scalars and 0-d arrays / tensors → the Python number they hold; anything else unchanged."""
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return value.item()
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    return value


def as_int(value, name: str, minimum: int | None = None) -> int:
    """An int (numpy / 0-d tensor integers accepted; bools and floats rejected) `>= minimum`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return value


def as_float(value, name: str, minimum: float | None = None) -> float:
    """A finite real number (numpy / 0-d tensor scalars accepted; bools, NaN and ±inf rejected) `>= minimum`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be a number >= {minimum}, got {value!r}.")
    return value


def check_guidance_scale(value, name: str = "guidance_scale") -> float:
    """CFG scale: a finite number >= 0 (CFG is on above 1)."""
    return as_float(value, name, minimum=0.0)


def check_guidance_schedule(value, name: str = "guidance_schedule") -> str:
    if not isinstance(value, str) or value not in GUIDANCE_SCHEDULES:
        raise ValueError(f"`{name}` must be one of {GUIDANCE_SCHEDULES}, got {value!r}.")
    return value


def check_generator(generator, batch_size: int) -> None:
    """`None`, a `torch.Generator`, or a list/tuple of exactly `batch_size` generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, (list, tuple)):
        bad = [g for g in generator if not isinstance(g, torch.Generator)]
        if bad:
            raise TypeError(
                f"`generator` list entries must be `torch.Generator`s, got {type(bad[0]).__name__} ({bad[0]!r})."
            )
        if len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)} generators but {batch_size} images are requested; pass "
                "one generator per image."
            )
        return
    raise TypeError(
        f"`generator` must be a `torch.Generator`, a list of them or None, got {type(generator).__name__} "
        f"({generator!r}); to seed, pass `torch.Generator().manual_seed(seed)`."
    )


def parse_id2label(id2label, num_classes: int) -> dict[int, str] | None:
    """`{class id: "name, synonym, ..."}` with int (or int-string) keys in `[0, num_classes)` and string values."""
    if id2label is None:
        return None
    if not isinstance(id2label, Mapping):
        raise TypeError(f"`id2label` must be a dict {{class id: name}}, got {type(id2label).__name__}.")
    parsed = {}
    for key, value in id2label.items():
        try:
            class_id = as_int(int(key) if isinstance(key, str) and key.strip().lstrip("-").isdigit() else key, "")
        except TypeError:
            raise ValueError(f"`id2label` keys must be integer class ids, got {key!r}.") from None
        if not 0 <= class_id < num_classes:
            raise ValueError(f"`id2label` keys must be class ids in [0, {num_classes}), got {class_id}.")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`id2label` values must be non-empty strings, got {value!r} for class {class_id}.")
        parsed[class_id] = value
    return parsed


class LabelIndex:
    """Class-name lookup built from `id2label` (every comma-separated synonym is a name).

    Names match exactly first, then case-insensitively (`str.casefold`, surrounding spaces ignored). A name that
    belongs to several classes (exactly, like ImageNet's two `"crane"` classes, or only case-insensitively) is an
    error listing the candidates: use the class id or the exact spelling.
    """

    def __init__(self, id2label: Mapping[int, str] | None):
        exact: dict[str, set[int]] = {}
        folded: dict[str, set[int]] = {}
        for class_id, names in (id2label or {}).items():
            for name in names.split(","):
                name = name.strip()
                if name:
                    exact.setdefault(name, set()).add(class_id)
                    folded.setdefault(name.casefold(), set()).add(class_id)
        self.exact = {name: min(ids) for name, ids in sorted(exact.items())}
        self.exact_ids = exact
        self.folded = folded

    def lookup(self, name: str) -> int:
        stripped = name.strip()
        ids = self.exact_ids.get(stripped) or self.folded.get(stripped.casefold(), set())
        if len(ids) == 1:
            return next(iter(ids))
        if len(ids) > 1:
            spellings = [n for n in self.exact if n.casefold() == stripped.casefold()]
            raise ValueError(
                f"`class_labels`: class name {name!r} is ambiguous: it names classes {sorted(ids)} ({spellings}); "
                "use the class id or the exact spelling of one class."
            )
        known = ", ".join(list(self.exact)[:20])
        raise ValueError(f"`class_labels`: {name!r} is not a known class name. Known names include: {known}.")

    def resolve(self, class_labels, num_classes: int) -> list[int]:
        """Class ids from ids, names, numpy / torch arrays, or nested lists (flattened in row-major order)."""
        flat = _flatten_labels(class_labels)
        if not flat:
            raise ValueError(f"`class_labels` must be a non-empty list of class ids or names, got {class_labels!r}.")
        ids = []
        for label in flat:
            if isinstance(label, str):
                if not label.strip().lstrip("-").isdigit():
                    ids.append(self.lookup(label))
                    continue
                label = int(label)
            if isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise TypeError(
                    f"`class_labels` entries must be int class ids or names, got {label!r} ({type(label).__name__})."
                )
            if not 0 <= int(label) < num_classes:
                raise ValueError(
                    f"`class_labels` entry {int(label)} is out of range: ids must be in [0, {num_classes})."
                )
            ids.append(int(label))
        return ids


def _flatten_labels(class_labels, depth: int = 0) -> list:
    if depth > 8:
        raise ValueError("`class_labels` is nested more than 8 levels deep.")
    if isinstance(class_labels, torch.Tensor):
        if class_labels.is_floating_point() or class_labels.is_complex() or class_labels.dtype == torch.bool:
            raise TypeError(f"`class_labels` tensors must hold integer class ids, got dtype {class_labels.dtype}.")
        return class_labels.flatten().tolist()
    if isinstance(class_labels, np.ndarray):
        if class_labels.dtype.kind not in "iuUSO":
            raise TypeError(
                f"`class_labels` arrays must hold integer class ids or names, got dtype {class_labels.dtype}."
            )
        return [_scalar(v) if not isinstance(v, bytes) else v.decode() for v in class_labels.flatten().tolist()]
    if isinstance(class_labels, (list, tuple)):
        flat = []
        for entry in class_labels:
            if isinstance(entry, (list, tuple, np.ndarray, torch.Tensor)) and np.ndim(entry) > 0:
                flat.extend(_flatten_labels(entry, depth + 1))
            else:
                flat.append(_scalar(entry))
        return flat
    value = _scalar(class_labels)
    if isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool):
        return [value]
    raise TypeError(
        f"`class_labels` must be a class id, a name, or a (nested) list / array of them, got "
        f"{type(class_labels).__name__} ({class_labels!r})."
    )


def check_callback_outputs(outputs, step: int) -> dict:
    """A step-end callback must return a dict (its `callback_kwargs`, possibly with replaced tensors)."""
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"`callback_on_step_end` must return a dict (the `callback_kwargs` it received, with any tensors it "
            f"replaced), got {type(outputs).__name__} at step {step}."
        )
    return dict(outputs)


def check_callback_bits(bits: torch.Tensor, expected_shape: tuple[int, ...], step: int) -> None:
    """Bits returned or edited by a callback: integer tensor of `expected_shape` holding only 0/1 (one sync)."""
    if not isinstance(bits, torch.Tensor) or bits.is_floating_point() or bits.is_complex():
        raise TypeError(
            f"`callback_on_step_end` must return `bits` as an integer/bool tensor of 0/1, got "
            f"{type(bits).__name__}{'' if not isinstance(bits, torch.Tensor) else ' ' + str(bits.dtype)} at step {step}."
        )
    if tuple(bits.shape) != tuple(expected_shape):
        raise ValueError(
            f"`callback_on_step_end` returned `bits` of shape {tuple(bits.shape)} at step {step}, expected "
            f"{tuple(expected_shape)} (batch, tokens so far, k)."
        )
    if bits.numel() and not bool(((bits == 0) | (bits == 1)).all()):
        bad = sorted(set(bits[(bits != 0) & (bits != 1)].unique().tolist()))[:5]
        raise ValueError(
            f"`callback_on_step_end` returned `bits` with values {bad} at step {step}; generated bits must be 0 or 1 "
            "(2 is the mask value and is never a valid generated bit)."
        )


def estimate_sampling_memory(config, batch_size: int, cfg: bool, dtype: torch.dtype, image_pixels: int) -> int:
    """Lower bound (bytes) of what one call allocates: the backbone KV cache, the bits buffer and the images."""
    rows = batch_size * (2 if cfg else 1)
    seq = config.prefix_length + config.num_ar_steps
    kv_width = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    elem = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    kv_cache = 2 * config.num_hidden_layers * rows * seq * kv_width * head_dim * elem
    bits = batch_size * config.num_ar_steps * config.bits_per_token * 8
    return kv_cache + bits + batch_size * image_pixels * 4


def _device_memory(device: torch.device) -> int | None:
    """Total memory of `device` in bytes (CUDA: the GPU's; CPU: physical RAM), or None when unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AttributeError):
        return None
    return None


def check_batch_size(batch_size: int, estimate: int, device: torch.device, limit: int = MAX_BATCH_SIZE) -> None:
    """Reject a batch above `limit` images, or whose lower-bound memory estimate exceeds the device's memory."""
    if batch_size > limit:
        raise ValueError(
            f"`num_images_per_label` × number of labels = {batch_size} images exceeds the per-call limit of {limit} "
            "(`BARPipeline.max_batch_size`); generate in several calls."
        )
    total = _device_memory(device)
    if total is not None and estimate > total:
        raise ValueError(
            f"`num_images_per_label` × number of labels = {batch_size} images needs at least "
            f"{estimate / 2**30:.1f} GiB (KV cache + bits + images) but the {device.type} device has "
            f"{total / 2**30:.1f} GiB; generate in several calls."
        )
