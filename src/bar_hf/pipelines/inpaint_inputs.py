"""Checking and normalising the inputs of [`BARInpaintPipeline`]: images, masks, `keep_bits`, `order`.

Images become float `(B, C, H, W)` tensors in [0, 1] at the model's resolution, masks float `(B, 1, h, w)` tensors in
[0, 1] (1 = regenerate). Every error names the argument, the rule and the value.

Size rule: an image of the model's size is used as it is; an image with the model's aspect ratio is resized to it
(PIL images with PIL's bicubic filter, as the training data were prepared; arrays and tensors with antialiased bicubic
interpolation, clamped to [0, 1]); any other size is rejected (crop or pad it first: nothing is cropped silently).
A mask must have the size of the image as given or the model's size.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["ORDERS", "check_keep_bits", "check_order", "prepare_images", "prepare_masks", "broadcast_batch"]

ORDERS = ("kept_first", "raster")
# PIL's "L" conversion (ITU-R 601-2 luma), used for 3-channel arrays given to a 1-channel model
_LUMA = (0.299, 0.587, 0.114)


def _describe(value) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _as_list(value, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"`{name}` must not be an empty list.")
        return list(value)
    return [value]


def _float01(array: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 → /255; bool → 0/1; float must already lie in [0, 1]."""
    if array.dtype == torch.uint8:
        return array.float() / 255
    if array.dtype == torch.bool:
        return array.float()
    if not array.is_floating_point():
        raise TypeError(f"`{name}` must hold floats in [0, 1], uint8 or bool values, got dtype {array.dtype}.")
    array = array.float()
    if array.numel() and not bool(torch.isfinite(array).all()):
        raise ValueError(f"`{name}` must hold finite values in [0, 1], got NaN or inf.")
    if array.numel() and (float(array.min()) < 0 or float(array.max()) > 1):
        raise ValueError(
            f"`{name}` float values must lie in [0, 1] (as `output_type='pt'/'np'` images), got values in "
            f"[{float(array.min()):.3g}, {float(array.max()):.3g}]; rescale [-1, 1] images with (x + 1) / 2."
        )
    return array


def _pil_to_array(image: Image.Image, mode: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert(mode), dtype=np.uint8).copy())


def _image_nchw(entry, name: str, channels: int) -> tuple[torch.Tensor, bool]:
    """One list entry → `(B, C, H, W)` (not yet in [0, 1]) and whether it was a PIL image."""
    if isinstance(entry, Image.Image):
        array = _pil_to_array(entry, "L" if channels == 1 else "RGB")
        array = array[None, None] if array.dim() == 2 else array.permute(2, 0, 1)[None]
        return array, True
    if isinstance(entry, np.ndarray):
        array = torch.from_numpy(np.ascontiguousarray(entry))
        if array.dim() == 2:  # (H, W)
            array = array[None, None]
        elif array.dim() == 3:  # (H, W, C)
            array = array.permute(2, 0, 1)[None]
        elif array.dim() == 4:  # (B, H, W, C)
            array = array.permute(0, 3, 1, 2)
        else:
            raise ValueError(
                f"`{name}` numpy arrays must be (H, W), (H, W, C) or (B, H, W, C), got {_describe(entry)}."
            )
        return array, False
    if isinstance(entry, torch.Tensor):
        if entry.dim() == 3:  # (C, H, W)
            return entry[None], False
        if entry.dim() == 4:  # (B, C, H, W)
            return entry, False
        raise ValueError(f"`{name}` tensors must be (C, H, W) or (B, C, H, W), got {_describe(entry)}.")
    raise TypeError(
        f"`{name}` must be a PIL image, a numpy array, a torch tensor or a list of them, got {_describe(entry)}."
    )


def _fit_channels(images: torch.Tensor, name: str, channels: int) -> torch.Tensor:
    found = images.shape[1]
    if found not in (1, 3):
        raise ValueError(f"`{name}` must have 1 or 3 channels, got {found} (shape {tuple(images.shape)}).")
    if found == channels:
        return images
    if channels == 1:
        weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * weights).sum(1, keepdim=True)
    return images.expand(-1, channels, -1, -1)


def _check_aspect(size: tuple[int, int], target: tuple[int, int], name: str) -> None:
    if size != target and size[0] * target[1] != size[1] * target[0]:
        raise ValueError(
            f"`{name}` is {size[0]}x{size[1]} (HxW) but the model works at {target[0]}x{target[1]}: images with the "
            "model's aspect ratio are resized, other sizes are rejected (crop or pad the image first)."
        )


def prepare_images(image, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """`image` (PIL / np / pt, or a list of them) → float `(B, channels, *size)` in [0, 1], and the input size."""
    batches, input_size = [], None
    for entry in _as_list(image, "image"):
        array, is_pil = _image_nchw(entry, "image", channels)
        entry_size = tuple(array.shape[2:])
        if input_size is not None and entry_size != input_size:
            raise ValueError(f"all `image` entries must have the same size, got {input_size} and {entry_size}.")
        input_size = entry_size
        _check_aspect(entry_size, tuple(size), "image")
        if is_pil and entry_size != tuple(size):  # PIL's bicubic resize, as the training data were prepared
            mode = "L" if channels == 1 else "RGB"
            resized = entry.convert(mode).resize((size[1], size[0]), Image.BICUBIC)
            array, _ = _image_nchw(resized, "image", channels)
        images = _fit_channels(_float01(array, "image"), "image", channels)
        if tuple(images.shape[2:]) != tuple(size):
            images = F.interpolate(images, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
            images = images.clamp(0, 1)
        batches.append(images)
    return torch.cat(batches), input_size


def _mask_nchw(entry, name: str) -> torch.Tensor:
    if isinstance(entry, Image.Image):
        return _pil_to_array(entry, "L")[None, None]
    if isinstance(entry, (np.ndarray, torch.Tensor)):
        array = torch.from_numpy(np.ascontiguousarray(entry)) if isinstance(entry, np.ndarray) else entry
        if array.dim() == 4 and array.shape[-1] == 1 and isinstance(entry, np.ndarray):  # (B, H, W, 1)
            array = array[..., 0]
        if array.dim() == 2:
            return array[None, None]
        if array.dim() == 3:  # (B, H, W)
            return array[:, None]
        if array.dim() == 4 and array.shape[1] == 1:  # (B, 1, H, W)
            return array
        raise ValueError(
            f"`{name}` arrays must be (H, W), (B, H, W), (B, 1, H, W) (tensors) or (B, H, W, 1) (numpy), "
            f"got {_describe(entry)}."
        )
    raise TypeError(
        f"`{name}` must be a PIL image, a numpy array, a torch tensor or a list of them, got {_describe(entry)}."
    )


def prepare_masks(mask_image, image_size: tuple[int, int], model_size: tuple[int, int]) -> torch.Tensor:
    """`mask_image` (1 / white = regenerate) → float `(B, 1, h, w)` in [0, 1]; its size must be the image's (as
    given) or the model's."""
    masks = []
    for entry in _as_list(mask_image, "mask_image"):
        mask = _float01(_mask_nchw(entry, "mask_image"), "mask_image")
        found = tuple(mask.shape[2:])
        if found not in (tuple(image_size), tuple(model_size)):
            raise ValueError(
                f"`mask_image` is {found[0]}x{found[1]} (HxW) but must have the size of `image` "
                f"({image_size[0]}x{image_size[1]}) or the model's size ({model_size[0]}x{model_size[1]})."
            )
        if masks and found != tuple(masks[0].shape[2:]):
            raise ValueError(
                f"all `mask_image` entries must have the same size, got {tuple(masks[0].shape[2:])} and {found}."
            )
        masks.append(mask)
    return torch.cat(masks)


def broadcast_batch(**sizes: int) -> int:
    """The common batch size: every named count must be 1 or the largest one."""
    batch = max(sizes.values())
    bad = {name: n for name, n in sizes.items() if n not in (1, batch)}
    if bad:
        raise ValueError(
            f"batch sizes disagree: {sizes}; each of {list(sizes)} must give 1 entry (used for every image) or "
            f"{batch} entries."
        )
    return batch


def check_order(order) -> str | None:
    if order is not None and (not isinstance(order, str) or order not in ORDERS):
        raise ValueError(f"`order` must be one of {ORDERS} or None (from the model's training), got {order!r}.")
    return order


def check_keep_bits(keep_bits, k: int) -> torch.Tensor | None:
    """`keep_bits` → boolean `(k,)` (True = the bit is copied from the source image) or None.

    An int `j` keeps the first `j` bits of each regenerated AR token in the head's bit order (0 keeps none); a boolean
    sequence / array / tensor of length `k` picks them individually."""
    if keep_bits is None:
        return None
    if isinstance(keep_bits, (numbers.Integral, np.integer)) and not isinstance(keep_bits, (bool, np.bool_)):
        if not 0 <= int(keep_bits) <= k:
            raise ValueError(f"`keep_bits` as an int must be in [0, k={k}] (bits per AR token), got {int(keep_bits)}.")
        chosen = torch.arange(k) < int(keep_bits)
        return chosen if chosen.any() else None
    if isinstance(keep_bits, (list, tuple, np.ndarray, torch.Tensor)):
        values = torch.as_tensor(np.asarray(keep_bits) if not isinstance(keep_bits, torch.Tensor) else keep_bits)
        if values.dtype != torch.bool:
            raise TypeError(
                f"`keep_bits` as a sequence must be a boolean mask of length k={k}, got dtype {values.dtype} "
                "(pass an int to keep the first bits)."
            )
        if tuple(values.shape) != (k,):
            raise ValueError(
                f"`keep_bits` boolean mask must have shape ({k},) (bits per AR token), got {tuple(values.shape)}."
            )
        return values.cpu() if values.any() else None
    raise TypeError(
        f"`keep_bits` must be None, an int in [0, {k}] or a boolean mask of length {k}, got {keep_bits!r}."
    )
