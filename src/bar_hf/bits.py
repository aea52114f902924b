"""The one definition of BAR's token/bit layout.

A BAR token *is* a vector of bits: bit ``c`` is latent channel ``c`` of the tokenizer's ``in_proj`` output. When a
scalar id is needed (linear-head baseline, debugging) it is formed LSB-first, exactly as the authors' unused
``_basis = [1, 2, 4, ...]`` buffer implies: ``id = sum_c bit_c * 2**c``.

Token patchification (``patch_size = p > 1``) groups each non-overlapping ``p x p`` block of the latent grid into one
autoregressive (AR) token whose bits are concatenated in the order *(row-in-block, col-in-block, bit)*; blocks are
visited in raster order (docs/method.md §3.2).

Shapes used throughout the package:

* ``bits``: ``(batch, num_tokens, num_bits)`` integer tensor with values in ``{0, 1}``, tokens in raster order;
* ``ar_bits``: ``(batch, num_ar_tokens, num_bits * p * p)`` after :func:`patchify_bits`.
"""

from __future__ import annotations

import torch

__all__ = [
    "MASK_BIT",
    "MAX_ID_BITS",
    "bits_to_ids",
    "ids_to_bits",
    "patchify_bits",
    "unpatchify_bits",
    "check_bits",
]

#: Value used for a still-masked bit in MBM head inputs and scheduler states (rows of the 3-row bit embedding).
MASK_BIT = 2

#: Largest bit count whose ids fit in a signed int64.
MAX_ID_BITS = 63


def check_bits(bits: torch.Tensor, name: str = "bits", allow_mask: bool = False) -> None:
    """Raise a `ValueError` if `bits` is not an integer/bool tensor with values in {0, 1} (or {0, 1, 2} if
    `allow_mask`)."""
    if not isinstance(bits, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor, got {type(bits).__name__}.")
    if bits.is_floating_point() or bits.is_complex():
        raise ValueError(f"`{name}` must be an integer or bool tensor of 0/1 values, got dtype {bits.dtype}.")
    if bits.numel() == 0:
        return
    high = MASK_BIT if allow_mask else 1
    lo, hi = int(bits.min()), int(bits.max())
    if lo < 0 or hi > high:
        allowed = "{0, 1, 2 (mask)}" if allow_mask else "{0, 1}"
        raise ValueError(f"`{name}` values must be in {allowed}, got values in [{lo}, {hi}].")


def _basis(num_bits: int, device: torch.device) -> torch.Tensor:
    return torch.bitwise_left_shift(
        torch.ones(num_bits, dtype=torch.int64, device=device), torch.arange(num_bits, device=device)
    )


def bits_to_ids(bits: torch.Tensor) -> torch.Tensor:
    """Bits ``(..., num_bits)`` → LSB-first integer ids ``(...)`` (int64).

    Raises:
        ValueError: if the values are not 0/1 or ``num_bits > 63`` (ids would not fit in int64; keep bits instead).
    """
    check_bits(bits)
    if bits.dim() == 0:
        raise ValueError("`bits` must have at least one dimension (the bit axis), got a 0-d tensor.")
    num_bits = bits.shape[-1]
    if num_bits < 1 or num_bits > MAX_ID_BITS:
        raise ValueError(
            f"`bits` must have 1..{MAX_ID_BITS} bits on its last axis to form int64 ids, got {num_bits}; "
            "bits are the native BAR format, use them directly."
        )
    return (bits.to(torch.int64) * _basis(num_bits, bits.device)).sum(-1)


def ids_to_bits(ids: torch.Tensor, num_bits: int) -> torch.Tensor:
    """LSB-first integer ids ``(...)`` → bits ``(..., num_bits)`` (int64 0/1).

    Raises:
        ValueError: on non-integer ids, a bit count outside 1..63 or ids outside ``[0, 2**num_bits)``.
    """
    if not isinstance(num_bits, int) or isinstance(num_bits, bool) or not 1 <= num_bits <= MAX_ID_BITS:
        raise ValueError(f"`num_bits` must be an int in 1..{MAX_ID_BITS}, got {num_bits!r}.")
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"`ids` must be an integer tensor, got {getattr(ids, 'dtype', type(ids).__name__)}.")
    ids = ids.to(torch.int64)
    if ids.numel() > 0:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or (num_bits < MAX_ID_BITS and hi >= (1 << num_bits)):
            raise ValueError(f"`ids` must be in [0, 2**{num_bits}), got values in [{lo}, {hi}].")
    return torch.bitwise_and(
        torch.bitwise_right_shift(ids.unsqueeze(-1), torch.arange(num_bits, device=ids.device)), 1
    )


def _check_grid(bits: torch.Tensor, grid_size: tuple[int, int], patch_size: int, name: str) -> tuple[int, int]:
    if bits.dim() != 3:
        raise ValueError(f"`{name}` must have shape (batch, tokens, bits), got shape {tuple(bits.shape)}.")
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"`patch_size` must be a positive int, got {patch_size!r}.")
    height, width = (int(v) for v in grid_size)
    if height < 1 or width < 1:
        raise ValueError(f"`grid_size` must be two positive ints, got {tuple(grid_size)}.")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"`grid_size` {(height, width)} must be divisible by `patch_size` {patch_size} in both dimensions."
        )
    return height, width


def patchify_bits(bits: torch.Tensor, grid_size: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Group ``p x p`` blocks of latent tokens into AR tokens.

    Args:
        bits: ``(batch, H * W, num_bits)`` tokens in raster order over the ``(H, W)`` latent grid.
        grid_size: ``(H, W)``.
        patch_size: ``p``; ``H`` and ``W`` must be multiples of it.

    Returns:
        ``(batch, (H / p) * (W / p), p * p * num_bits)``: blocks in raster order, bits ordered
        (row-in-block, col-in-block, bit).
    """
    height, width = _check_grid(bits, grid_size, patch_size, "bits")
    batch, num_tokens, num_bits = bits.shape
    if num_tokens != height * width:
        raise ValueError(f"`bits` has {num_tokens} tokens but `grid_size` {(height, width)} needs {height * width}.")
    p = patch_size
    x = bits.reshape(batch, height // p, p, width // p, p, num_bits)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, block_row, block_col, row_in_block, col_in_block, bit)
    return x.reshape(batch, (height // p) * (width // p), p * p * num_bits)


def unpatchify_bits(ar_bits: torch.Tensor, grid_size: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Inverse of :func:`patchify_bits`: ``(batch, N, p*p*num_bits)`` → ``(batch, H * W, num_bits)``."""
    height, width = _check_grid(ar_bits, grid_size, patch_size, "ar_bits")
    batch, num_ar_tokens, bits_per_token = ar_bits.shape
    p = patch_size
    if num_ar_tokens != (height // p) * (width // p):
        raise ValueError(
            f"`ar_bits` has {num_ar_tokens} tokens but `grid_size` {(height, width)} with `patch_size` {p} "
            f"needs {(height // p) * (width // p)}."
        )
    if bits_per_token % (p * p):
        raise ValueError(f"`ar_bits` last axis ({bits_per_token}) must be a multiple of patch_size**2 = {p * p}.")
    num_bits = bits_per_token // (p * p)
    x = ar_bits.reshape(batch, height // p, width // p, p, p, num_bits)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, block_row, row_in_block, block_col, col_in_block, bit)
    return x.reshape(batch, height * width, num_bits)
