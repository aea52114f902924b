"""BAR bit-prediction heads (docs/method.md §4-5): the Masked Bit Modeling head and the bitwise / linear baselines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..bits import MASK_BIT, ids_to_bits
from .configuration_bar import BARConfig
from .layers import BARRMSNorm, BARSwiGLU, adaln_modulation, modulate


# ---------------------------------------------------------------------------------------------------- heads
class BARFourierEmbedding(nn.Module):
    """Mask-ratio embedding: `[sin(2π r W), cos(2π r W)]` with a fixed random `W ~ N(0, 1)` (a saved, non-trainable
    parameter: loaded, never redrawn) → Linear → SiLU → Linear."""

    def __init__(self, fourier_size: int, hidden_size: int):
        super().__init__()
        self.W = nn.Parameter(torch.randn(fourier_size), requires_grad=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * fourier_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, mask_ratio: torch.Tensor) -> torch.Tensor:
        projected = mask_ratio[:, None] * self.W[None, :] * 2 * torch.pi
        # compute dtype = the (never cast) `W` parameter's, not a Linear weight's: under layerwise casting or weight
        # quantization the Linear weights hold their storage dtype (float8, int8) outside their own forward
        return self.mlp(torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1).to(self.W.dtype))


class BARHeadResBlock(nn.Module):
    """`x + g * SwiGLU(modulate(RMSNorm(x), sh, sc))` with `(sh, sc, g)` from the conditioning vector."""

    def __init__(self, width: int, intermediate: int, eps: float):
        super().__init__()
        self.in_ln = BARRMSNorm(width, eps=eps)
        self.mlp = BARSwiGLU(width, intermediate)
        self.adaLN_modulation = adaln_modulation(width, 3)

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(condition).chunk(3, dim=-1)
        return hidden_states + gate * self.mlp(modulate(self.in_ln(hidden_states), shift, scale))


class BARHeadFinalLayer(nn.Module):
    """Final AdaLN: note the chunk order **(scale, shift)**."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.norm_final = BARRMSNorm(width, eps=eps)
        self.adaLN_modulation = adaln_modulation(width, 2)

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.adaLN_modulation(condition).chunk(2, dim=-1)
        return modulate(self.norm_final(hidden_states), shift, scale)


class _BARHeadBase(nn.Module):
    def __init__(self, config: BARConfig):
        super().__init__()
        self.bits_per_token = config.bits_per_token
        width = config.head_hidden_size
        self.res_blocks = nn.ModuleList(
            [
                BARHeadResBlock(width, config.head_intermediate_size, config.rms_norm_eps)
                for _ in range(config.head_num_layers)
            ]
        )
        self.final_layer = BARHeadFinalLayer(width, config.rms_norm_eps)

    def _trunk(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            hidden_states = block(hidden_states, condition)
        return self.final_layer(hidden_states, condition)

    def _check_inputs(self, bit_states: torch.Tensor, mask_ratio: torch.Tensor, conditions: torch.Tensor) -> None:
        if bit_states.dim() != 2 or bit_states.shape[1] != self.bits_per_token:
            raise ValueError(
                f"`bit_states` must have shape (tokens, k={self.bits_per_token}), got {tuple(bit_states.shape)}."
            )
        if conditions.dim() != 2 or conditions.shape[0] != bit_states.shape[0]:
            raise ValueError(
                f"`conditions` must have shape (tokens={bit_states.shape[0]}, head_hidden_size), "
                f"got {tuple(conditions.shape)}."
            )
        if mask_ratio.shape != (bit_states.shape[0],):
            raise ValueError(f"`mask_ratio` must have shape ({bit_states.shape[0]},), got {tuple(mask_ratio.shape)}.")


class BARMaskedBitHead(_BARHeadBase):
    """Masked Bit Modeling head (docs/method.md §4.1): an AdaLN MLP over one token's whole bit-vector.

    `forward(bit_states, mask_ratio, conditions)` → bit logits `(tokens, k, 2)`; `bit_states` hold 0, 1 or 2 (mask).
    """

    def __init__(self, config: BARConfig):
        super().__init__(config)
        k, width = config.bits_per_token, config.head_hidden_size
        self.input_embed = nn.Embedding(3, config.head_bit_embedding_size)
        self.input_proj = nn.Linear(k * config.head_bit_embedding_size, width)
        self.ln_pre = BARRMSNorm(width, eps=config.rms_norm_eps)
        self.t_embedder = BARFourierEmbedding(config.head_fourier_size, width)
        self.output_embed = nn.Linear(width, 2 * k)

    def forward(self, bit_states: torch.Tensor, mask_ratio: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        self._check_inputs(bit_states, mask_ratio, conditions)
        return self.forward_embedded(bit_states, self.t_embedder(mask_ratio), conditions)

    def forward_embedded(
        self, bit_states: torch.Tensor, ratio_embedding: torch.Tensor, conditions: torch.Tensor
    ) -> torch.Tensor:
        """`forward` with the mask-ratio embedding `t_embedder(mask_ratio)` given (samplers compute it once per head
        step index instead of once per head step)."""
        tokens = bit_states.shape[0]
        embedded = self.input_embed(bit_states).reshape(tokens, -1)  # (M, k * e)
        hidden = self.ln_pre(self.input_proj(embedded))
        condition = F.silu(ratio_embedding + conditions)  # SiLU here and again inside every AdaLN
        hidden = self._trunk(hidden, condition)
        return self.output_embed(hidden).reshape(tokens, self.bits_per_token, 2)


class BARBitwiseHead(_BARHeadBase):
    """Baseline: k independent binary classifiers from the condition alone (one shot; bit states are ignored)."""

    def __init__(self, config: BARConfig):
        super().__init__(config)
        self.ln_pre = BARRMSNorm(config.head_hidden_size, eps=config.rms_norm_eps)
        self.output_embed = nn.Linear(config.head_hidden_size, 2 * config.bits_per_token)

    def forward(self, bit_states: torch.Tensor, mask_ratio: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        self._check_inputs(bit_states, mask_ratio, conditions)
        hidden = self._trunk(self.ln_pre(conditions), F.silu(conditions))
        return self.output_embed(hidden).reshape(conditions.shape[0], self.bits_per_token, 2)


class BARLinearHead(_BARHeadBase):
    """Baseline: softmax over all `2**k` token ids (LSB-first ids of `bits.py`).

    For the sampling API it returns, for every bit, the log-marginal of the id distribution restricted to ids that
    agree with the already fixed bits (`logsumexp` over consistent ids). With one bit per scheduler step this is exact
    ancestral sampling of the joint; with larger steps bits of one step are drawn from their marginals.
    """

    def __init__(self, config: BARConfig):
        super().__init__(config)
        self.ln_pre = BARRMSNorm(config.head_hidden_size, eps=config.rms_norm_eps)
        self.output_embed = nn.Linear(config.head_hidden_size, 2**config.bits_per_token)

    def _id_bits(self, device: torch.device) -> torch.Tensor:
        """The `(2**k, k)` bits of every id, built once per device (not at every head step)."""
        table = getattr(self, "_id_bits_table", None)
        if table is None or table.device != device:
            table = ids_to_bits(torch.arange(2**self.bits_per_token, device=device), self.bits_per_token)
            self._id_bits_table = table
        return table

    def id_logits(self, conditions: torch.Tensor) -> torch.Tensor:
        hidden = self._trunk(self.ln_pre(conditions), F.silu(conditions))
        return self.output_embed(hidden)  # (M, 2**k)

    def forward(self, bit_states: torch.Tensor, mask_ratio: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        self._check_inputs(bit_states, mask_ratio, conditions)
        logits = self.id_logits(conditions).float()
        table = self._id_bits(logits.device)  # (2**k, k)
        fixed = bit_states != MASK_BIT
        consistent = ((table[None] == bit_states[:, None, :]) | ~fixed[:, None, :]).all(-1)  # (M, 2**k)
        logits = logits.masked_fill(~consistent, float("-inf"))
        out = []
        for value in (0, 1):
            chosen = logits.unsqueeze(-1).masked_fill((table != value)[None], float("-inf"))  # (M, 2**k, k)
            out.append(torch.logsumexp(chosen, dim=1))
        return torch.stack(out, dim=-1)  # (M, k, 2)


HEAD_CLASSES = {"mbm": BARMaskedBitHead, "bitwise": BARBitwiseHead, "linear": BARLinearHead}
