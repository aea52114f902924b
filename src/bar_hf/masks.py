"""Editing masks for BAR: named pixel masks, their token-level form and the "kept first" generation order.

Convention (as diffusers' inpainting pipelines): a mask is 1 (white) where the image is **regenerated** and 0 where it is
kept. A token is regenerated when any of its pixels is masked (soft masks are binarised at 0.5 first).
"""

from __future__ import annotations

import numpy as np
import torch

MASK_NAMES = ("center", "top_half", "bottom_half", "left_half", "right_half", "outpaint", "random_box")
"""Named masks of [`make_mask`]: `center` regenerates the central half-size box; `bottom_half` regenerates the bottom
half (prefix completion: the top rows are kept); `outpaint` keeps the central half-size box and regenerates the border;
`random_box` regenerates a random box with sides between a quarter and three quarters of the image."""


def _check_size(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def make_mask(name: str, height: int, width: int, generator: torch.Generator | None = None) -> np.ndarray:
    """The named mask of [`MASK_NAMES`] as a `(height, width)` float32 array of 0 (keep) and 1 (regenerate)."""
    if name not in MASK_NAMES:
        raise ValueError(f"`name` must be one of {MASK_NAMES}, got {name!r}.")
    _check_size("height", height)
    _check_size("width", width)
    mask = np.zeros((height, width), dtype=np.float32)
    h2, w2 = height // 2, width // 2
    top, left = (height - h2) // 2, (width - w2) // 2
    if name == "center":
        mask[top : top + h2, left : left + w2] = 1
    elif name == "top_half":
        mask[:h2] = 1
    elif name == "bottom_half":
        mask[h2:] = 1
    elif name == "left_half":
        mask[:, :w2] = 1
    elif name == "right_half":
        mask[:, w2:] = 1
    elif name == "outpaint":
        mask[:] = 1
        mask[top : top + h2, left : left + w2] = 0
    else:  # random_box
        u = torch.rand(4, generator=generator).tolist()
        bh = max(1, round(height * (0.25 + 0.5 * u[0])))
        bw = max(1, round(width * (0.25 + 0.5 * u[1])))
        y0, x0 = int(u[2] * (height - bh + 1)), int(u[3] * (width - bw + 1))
        mask[y0 : y0 + bh, x0 : x0 + bw] = 1
    return mask


def token_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Token-level mask `(B, gh * gw)` (raster order, True = regenerate) of pixel masks `(B, H, W)` or `(B, 1, H, W)`.

    Soft masks are binarised at 0.5; a token is regenerated when any pixel of its cell is. `H` and `W` must be
    multiples of the grid.
    """
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"`mask` must have shape (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}.")
    gh, gw = grid
    height, width = mask.shape[1:]
    if height % gh or width % gw:
        raise ValueError(f"`mask` size {height}x{width} must be a multiple of the token grid {gh}x{gw}.")
    cells = (mask > 0.5).reshape(mask.shape[0], gh, height // gh, gw, width // gw)
    return cells.any(dim=4).any(dim=2).reshape(mask.shape[0], gh * gw)


def overlap_token_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[`token_mask`] for masks of any size: token `(r, c)` is regenerated when any pixel overlapping its cell is masked
    (> 0.5). The cell of token row `r` spans pixel rows `floor(r·H/gh) .. ceil((r+1)·H/gh) - 1` (adaptive max
    pooling), so for sizes that are multiples of the grid it equals [`token_mask`]. Returns `(B, gh * gw)`."""
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"`mask` must have shape (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}.")
    pooled = torch.nn.functional.adaptive_max_pool2d((mask > 0.5).float()[:, None], tuple(grid))
    return (pooled[:, 0] > 0).reshape(mask.shape[0], grid[0] * grid[1])


def kept_first_orders(regenerate: torch.Tensor) -> torch.Tensor:
    """Generation orders `(B, N)`: kept tokens first, then regenerated ones, each group in raster order.

    `regenerate` is a boolean `(B, N)` token mask (True = regenerate). An all-kept or all-regenerated row is raster.
    """
    if regenerate.dim() != 2:
        raise ValueError(f"`regenerate` must have shape (B, N), got {tuple(regenerate.shape)}.")
    n = regenerate.shape[1]
    key = regenerate.long() * n + torch.arange(n, device=regenerate.device)
    return key.argsort(dim=-1)


def random_token_masks(batch: int, grid: tuple[int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Random editing masks `(batch, gh * gw)` (True = regenerate) for training with "kept first" orders.

    Each row is drawn from one of five families with equal probability: a random box, one of the four halves, the
    centre box, the border around the centre box (outpainting) and i.i.d. tokens with a ratio uniform in [0.1, 0.9].
    """
    gh, gw = grid
    rows = []
    for family, u in zip(
        torch.randint(0, 5, (batch,), generator=generator).tolist(), torch.rand(batch, 2, generator=generator)
    ):
        if family == 0:
            cells = make_mask("random_box", gh, gw, generator=generator)
        elif family == 1:
            cells = make_mask(("top_half", "bottom_half", "left_half", "right_half")[int(u[0] * 4)], gh, gw)
        elif family == 2:
            cells = make_mask("center", gh, gw)
        elif family == 3:
            cells = make_mask("outpaint", gh, gw)
        else:
            ratio = 0.1 + 0.8 * float(u[1])
            cells = (torch.rand(gh, gw, generator=generator) < ratio).numpy().astype(np.float32)
        rows.append(torch.from_numpy(cells).reshape(-1) > 0.5)
    return torch.stack(rows)
