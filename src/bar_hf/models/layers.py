"""BAR building blocks (docs/method.md §3.5-3.6): RMSNorm, AdaLN modulation, 2-D RoPE, attention, SwiGLU, the decoder
layer."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_bar import BARConfig


# ---------------------------------------------------------------------------------------------------- helpers
class BARRMSNorm(nn.Module):
    """RMSNorm computed in float32 with a learnable weight and no bias (eps 1e-6 in BAR)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return (hidden_states * self.weight).to(input_dtype)  # weight applied in float32, then cast (the authors')


def adaln_modulation(width: int, chunks: int) -> nn.Sequential:
    """`SiLU → Linear(width, chunks·width)`; the Linear is zero-initialised (AdaLN-zero)."""
    linear = nn.Linear(width, chunks * width)
    linear._zero_init = True
    return nn.Sequential(nn.SiLU(), linear)


def modulate(hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return hidden_states * (1 + scale) + shift


def build_2d_rope_table(
    grid_height: int, grid_width: int, head_dim: int, prefix_length: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' 2-D RoPE table (docs/method.md §3.5): `(prefix_length + H*W, head_dim)` cos and sin in float32.

    Channels `[0, head_dim/2)` rotate by the grid row, `[head_dim/2, head_dim)` by the column, with interleaved
    pairs (each frequency `theta^(-2j/d)`, `d = head_dim/2`, is repeated for channels `2j, 2j+1`). The first
    `prefix_length` rows are the identity (cos 1, sin 0).
    """
    axis_dim = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, axis_dim, 2)[: axis_dim // 2].float() / axis_dim))
    # positions as the authors' EVA-style table computes them: arange(n) / n * n in float32
    rows = (torch.arange(grid_height).float() / grid_height * grid_height)[:, None] * inv_freq[None, :]
    cols = (torch.arange(grid_width).float() / grid_width * grid_width)[:, None] * inv_freq[None, :]
    rows = rows.repeat_interleave(2, dim=-1)  # (H, axis_dim)
    cols = cols.repeat_interleave(2, dim=-1)  # (W, axis_dim)
    freqs = torch.cat(
        [
            rows[:, None, :].expand(grid_height, grid_width, axis_dim),
            cols[None, :, :].expand(grid_height, grid_width, axis_dim),
        ],
        dim=-1,
    ).reshape(grid_height * grid_width, head_dim)
    cos = torch.cat([torch.ones(prefix_length, head_dim), freqs.cos()], dim=0)
    sin = torch.cat([torch.zeros(prefix_length, head_dim), freqs.sin()], dim=0)
    return cos, sin


def apply_interleaved_rope(hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`x * cos + rot(x) * sin` with `rot(x0, x1) = (-x1, x0)` on adjacent channel pairs (GPT-J convention)."""
    return apply_signed_rope(hidden, cos, signed_rope_sin(sin))


def signed_rope_sin(sin: torch.Tensor) -> torch.Tensor:
    """`sin` with the even channels negated, so that `rot(x) * sin == swap_pairs(x) * signed_sin` exactly."""
    sign = torch.ones(sin.shape[-1], dtype=sin.dtype, device=sin.device)
    sign[0::2] = -1
    return sin * sign


def apply_signed_rope(hidden: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE with a pre-signed sin table: one swap of adjacent channels and two products. Bit-identical to
    [`apply_interleaved_rope`] (`(-x1)·s == x1·(-s)` in floating point)."""
    swapped = hidden.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return hidden * cos + swapped * signed_sin


def query_key_rope(
    cos: torch.Tensor, sin: torch.Tensor, target_cos: torch.Tensor, target_sin: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head RoPE tables `(query_cos, query_signed_sin, key_cos, key_signed_sin)` from own/target tables of shape
    `(..., T, head_dim)`: the first half of the query heads use the own position, the second half the target position
    (target-aware RoPE), the keys the own position. Built once per forward, applied with one op per layer."""
    half = num_heads // 2
    lead = cos.shape[:-2]

    def per_head(own: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        own, target = own.unsqueeze(-3), target.unsqueeze(-3)  # (..., 1, T, hd)
        return torch.cat(
            [own.expand(*lead, half, *own.shape[-2:]), target.expand(*lead, num_heads - half, *own.shape[-2:])],
            dim=-3,
        )

    signed_sin = signed_rope_sin(sin)
    return (
        per_head(cos, target_cos),
        per_head(signed_sin, signed_rope_sin(target_sin)),
        cos.unsqueeze(-3),
        signed_sin.unsqueeze(-3),
    )


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


# ---------------------------------------------------------------------------------------------------- backbone
class BARSwiGLU(nn.Module):
    """`w3(dropout(SiLU(a) * b))` with `[a; b] = w12(x)` (gate rows first)."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.w12 = nn.Linear(hidden_size, 2 * intermediate_size)
        self.w3 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(hidden_states).chunk(2, dim=-1)
        return self.w3(self.dropout(F.silu(gate) * value))


class BARAttention(nn.Module):
    """Causal self-attention with fused qkv (bias), QK-RMSNorm, 2-D RoPE with target-aware query heads."""

    def __init__(self, config: BARConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.q_norm = BARRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = BARRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_drop = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, width = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, hd)
        query, key = self.q_norm(query), self.k_norm(key)
        query_cos, query_sin, key_cos, key_sin = rope  # see `query_key_rope`: float32, (B, H or 1, T, hd)
        query = apply_signed_rope(query.float(), query_cos, query_sin).to(value.dtype)
        key = apply_signed_rope(key.float(), key_cos, key_sin).to(value.dtype)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, is_causal=True
        )
        output = output.reshape(batch, length, width)
        return self.proj_drop(self.proj(output)), weights  # weights: recorded by `output_attentions` (eager only)


class BARDecoderLayer(GradientCheckpointingLayer):
    """DiT-style block with 6-way AdaLN (shift/scale/gate for attention, then for SwiGLU), RMSNorm pre-norms."""

    def __init__(self, config: BARConfig, layer_idx: int):
        super().__init__()
        self.norm1 = BARRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attn = BARAttention(config, layer_idx)
        self.norm2 = BARRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = BARSwiGLU(config.hidden_size, config.intermediate_size, config.hidden_dropout)
        self.adaLN_modulation = adaln_modulation(config.hidden_size, 6)

    def forward(
        self,
        hidden_states: torch.Tensor,
        adaln_condition: torch.Tensor,
        rope: tuple[torch.Tensor, ...] = (),
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        modulation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # `modulation`: `adaLN_modulation(adaln_condition)` precomputed by a sampler (it depends only on class and slot)
        if modulation is None:
            modulation = self.adaLN_modulation(adaln_condition)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=-1)
        attn_input = modulate(self.norm1(hidden_states), shift_msa, scale_msa)
        hidden_states = hidden_states + gate_msa * self.attn(attn_input, rope, attention_mask, cache)[0]
        mlp_input = modulate(self.norm2(hidden_states), shift_mlp, scale_mlp)
        return hidden_states + gate_mlp * self.mlp(mlp_input)


def resolve_cache_alias(cache, past_key_values):
    """`cache` or its transformers name `past_key_values` (transformers 5.x tests and peft pass the latter)."""
    if cache is not None and past_key_values is not None:
        raise ValueError(
            "pass the KV cache as `cache` or as `past_key_values` (its transformers alias), not both: got both."
        )
    if past_key_values is not None:  # transformers' convention for a renamed cache argument
        message = "`past_key_values` is deprecated for BAR models: pass the same cache as `cache`."
        warnings.warn(message, FutureWarning, stacklevel=3)
        return past_key_values
    return cache
