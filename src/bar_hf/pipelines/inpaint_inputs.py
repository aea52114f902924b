"""Checking and normalising the inputs of [`BARInpaintPipeline`]: images, masks, `keep_bits`, `order`.

Images become float `(B, C, H, W)` tensors in [0, 1] at the model's resolution, masks float `(B, 1, h, w)` tensors in
[0, 1] (1 = regenerate). Every error names the argument, the rule and the value.

One normaliser for images and masks, rescaling by dtype range: PIL images in 8-bit modes (L, RGB, RGBA, P, ...) are
converted as PIL does, 16-bit ones (`I;16`, and `I`, how PIL opens 16-bit PNGs) are divided by 65535, float ones
(`F`) must lie in [0, 1]; numpy arrays and torch tensors of dtype uint8 (/255), uint16 (/65535), bool or float (in
[0, 1]); masks may also be integer 0/1. The array layouts are those diffusers' `VaeImageProcessor` accepts (a numpy
mask `(H, W, 1)` included). Empty images are refused.

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


#: integer dtypes rescaled by their range (the largest value is white); other integer dtypes are refused for images
#: and accepted for masks only when they hold 0/1
_INT_RANGES = {torch.uint8: 255.0, torch.uint16: 65535.0}
#: PIL modes read as single-channel arrays of their own depth (and their range): 16-bit (`I;16*`, and `I`, which is
#: how PIL opens 16-bit PNGs) and float (`F`, values in [0, 1] like the `"np"` outputs)
_PIL_DEEP_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _float01(array: torch.Tensor, name: str, mask: bool = False) -> torch.Tensor:
    """Rescale by dtype range: uint8 → /255, uint16 → /65535, bool → 0/1; floats must already lie in [0, 1]; for masks
    any integer dtype holding only 0/1 is accepted as well."""
    if array.dtype in _INT_RANGES:
        return array.to(torch.float32) / _INT_RANGES[array.dtype]
    if array.dtype == torch.bool:
        return array.float()
    if not array.is_floating_point():
        if mask and array.dtype not in (torch.complex64, torch.complex128):
            if array.numel() and not bool(((array == 0) | (array == 1)).all()):
                raise ValueError(
                    f"`{name}` with integer dtype {array.dtype} must hold only 0/1 (or be uint8 in 0..255, uint16 in "
                    f"0..65535), got values in [{int(array.min())}, {int(array.max())}]."
                )
            return array.float()
        raise TypeError(
            f"`{name}` must hold floats in [0, 1], uint8, uint16 or bool values, got dtype {array.dtype}"
            + (" (integer masks must hold 0/1)." if mask else ".")
        )
    array = array.float()
    if array.numel() and not bool(torch.isfinite(array).all()):
        raise ValueError(f"`{name}` must hold finite values in [0, 1], got NaN or inf.")
    if array.numel() and (float(array.min()) < 0 or float(array.max()) > 1):
        raise ValueError(
            f"`{name}` float values must lie in [0, 1] (as `output_type='pt'/'np'` images), got values in "
            f"[{float(array.min()):.3g}, {float(array.max()):.3g}]; rescale [-1, 1] images with (x + 1) / 2."
        )
    return array


def _pil_to_array(image: Image.Image, mode: str, name: str) -> torch.Tensor:
    """A PIL image → array in its own range: 16-bit and float modes as float32 in [0, 1] (by their range), any other
    mode converted to `mode` ("L" / "RGB") as uint8."""
    if image.width == 0 or image.height == 0:
        raise ValueError(f"`{name}` must not be empty, got a {image.width}x{image.height} (WxH) PIL image.")
    scale = _PIL_DEEP_MODES.get(image.mode)
    if scale is None:
        return torch.from_numpy(np.asarray(image.convert(mode), dtype=np.uint8).copy())
    array = np.asarray(image, dtype=np.float64 if image.mode != "F" else np.float32)
    return torch.from_numpy((array / scale).astype(np.float32))


def _resize_pil(image: Image.Image, mode: str, size: tuple[int, int]) -> Image.Image:
    """PIL's bicubic resize, as the training data were prepared; 16-bit and float images are resized in float
    ("F") so that no precision is lost before rescaling."""
    scale = _PIL_DEEP_MODES.get(image.mode)
    if scale is None:
        return image.convert(mode).resize((size[1], size[0]), Image.BICUBIC)
    array = _pil_to_array(image, mode, "image").numpy()
    return Image.fromarray(array, mode="F").resize((size[1], size[0]), Image.BICUBIC)


def _check_not_empty(array: torch.Tensor, name: str, entry) -> None:
    if array.numel() == 0:
        raise ValueError(f"`{name}` must not be empty, got {_describe(entry)}.")


def _image_nchw(entry, name: str, channels: int) -> tuple[torch.Tensor, bool]:
    """One list entry → `(B, C, H, W)` (not yet in [0, 1]) and whether it was a PIL image."""
    if isinstance(entry, Image.Image):
        array = _pil_to_array(entry, "L" if channels == 1 else "RGB", name)
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
        _check_not_empty(array, name, entry)
        return array, False
    if isinstance(entry, torch.Tensor):
        if entry.dim() not in (3, 4):
            raise ValueError(f"`{name}` tensors must be (C, H, W) or (B, C, H, W), got {_describe(entry)}.")
        _check_not_empty(entry, name, entry)
        return (entry[None] if entry.dim() == 3 else entry), False
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
            resized = _resize_pil(entry, "L" if channels == 1 else "RGB", tuple(size))
            array, _ = _image_nchw(resized, "image", channels)
            if array.is_floating_point():  # bicubic overshoot of a float-resized 16-bit / float image
                array = array.clamp(0, 1)
        images = _fit_channels(_float01(array, "image"), "image", channels)
        if tuple(images.shape[2:]) != tuple(size):
            images = F.interpolate(images, size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
            images = images.clamp(0, 1)
        batches.append(images)
    return torch.cat(batches), input_size


def _mask_nchw(entry, name: str) -> torch.Tensor:
    """One mask entry → `(B, 1, h, w)`; numpy layouts follow diffusers' `VaeImageProcessor` (a 3-D array whose last
    axis is 1 is one `(H, W, 1)` mask, e.g. a channel of an `output_type="np"` image; otherwise `(B, H, W)`)."""
    if isinstance(entry, Image.Image):
        return _pil_to_array(entry, "L", name)[None, None]
    if isinstance(entry, (np.ndarray, torch.Tensor)):
        array = torch.from_numpy(np.ascontiguousarray(entry)) if isinstance(entry, np.ndarray) else entry
        if isinstance(entry, np.ndarray) and array.dim() in (3, 4) and array.shape[-1] == 1:  # (H, W, 1), (B, H, W, 1)
            array = array[..., 0] if array.dim() == 4 else array[None, ..., 0]
        if array.dim() == 2:
            array = array[None, None]
        elif array.dim() == 3:  # (B, H, W)
            array = array[:, None]
        elif not (array.dim() == 4 and array.shape[1] == 1):  # (B, 1, H, W)
            raise ValueError(
                f"`{name}` arrays must be (H, W), (B, H, W), (B, 1, H, W) (tensors), (H, W, 1) or (B, H, W, 1) (numpy), "
                f"got {_describe(entry)}."
            )
        _check_not_empty(array, name, entry)
        return array
    raise TypeError(
        f"`{name}` must be a PIL image, a numpy array, a torch tensor or a list of them, got {_describe(entry)}."
    )


def prepare_masks(mask_image, image_size: tuple[int, int], model_size: tuple[int, int]) -> torch.Tensor:
    """`mask_image` (1 / white = regenerate) → float `(B, 1, h, w)` in [0, 1]; its size must be the image's (as
    given) or the model's."""
    masks = []
    for entry in _as_list(mask_image, "mask_image"):
        mask = _float01(_mask_nchw(entry, "mask_image"), "mask_image", mask=True)
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
