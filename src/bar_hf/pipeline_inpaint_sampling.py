"""Lock-step sampling over per-sample generation orders for [`BARInpaintPipeline`].

Every row walks the N AR slots together; row `b` feeds, at slot `i`, the token `orders[b, i]` (its own position and
target-aware position signals come from its order, BAR_METHOD §3.5). The backbone runs [`BARModel.forward`] with
`orders` and a preallocated KV cache (one slot per call after a prefill), so a step costs one single-token backbone
pass for all rows whatever their orders; the prefill feeds the teacher-forced prefix that every row shares (slots
where all rows hold kept tokens) in one forward.
"""

from __future__ import annotations

import torch

from .heads_bar import BARMaskedBitHead
from .modeling_bar import BARForCausalImageModeling
from .sampling_bar import PreallocatedKVCache, guided_head_step

__all__ = ["OrderedSamplingState", "guided_logits"]


class OrderedSamplingState:
    """KV-cached backbone passes for rows with their own generation orders.

    Args:
        transformer ([`BARForCausalImageModeling`]): the generator.
        class_ids (`torch.LongTensor` of shape `(rows,)`): class ids of all rows (`[cond; uncond]` with CFG).
        orders (`torch.LongTensor` of shape `(rows, N)`): generation order of every row.
    """

    def __init__(self, transformer: BARForCausalImageModeling, class_ids: torch.Tensor, orders: torch.Tensor):
        model, config = transformer.model, transformer.config
        device, dtype = model.cls_token.device, model.cls_token.dtype
        self.model, self.config = model, config
        self.class_ids, self.orders = class_ids.to(device), orders.to(device)
        self.cache = PreallocatedKVCache(
            config.num_hidden_layers, class_ids.shape[0], config.num_attention_heads,
            config.prefix_length + config.num_ar_steps, config.head_dim, dtype, device,
        )  # fmt: skip

    @torch.no_grad()
    def _forward(self, bits: torch.Tensor | None, new_slots: int) -> torch.Tensor:
        out = self.model(
            bits=bits, class_labels=self.class_ids, orders=self.orders, cache=self.cache, validate_inputs=False
        )
        self.cache.length += new_slots  # the preallocated cache writes at `length` but does not advance it
        return out.conditions[:, -1]

    def prefill(self, prefix_bits: torch.Tensor | None = None) -> torch.Tensor:
        """Class prefix plus the first `c` tokens `prefix_bits (rows, c, k)` in generation order (teacher-forced) in
        one forward; returns the conditions `(rows, W_h)` of token `c`."""
        if self.cache.length:
            raise ValueError("`prefill` must be the first call of a sampling state.")
        if prefix_bits is not None and prefix_bits.shape[1] == 0:
            prefix_bits = None
        count = 0 if prefix_bits is None else prefix_bits.shape[1]
        return self._forward(prefix_bits, self.config.prefix_length + count)

    def step(self, bits: torch.Tensor) -> torch.Tensor:
        """Feed the next token of every row `bits (rows, 1, k)`; returns the conditions of the following token."""
        return self._forward(bits, bits.shape[1])


def guided_logits(transformer, states, mask_ratio, conditions, weight: float, guided: bool) -> torch.Tensor:
    """Guided float32 bit logits `(n, k, 2)` for bit states `(n, k)`; `conditions` are `[cond; uncond]` `(2n, W_h)`
    with guidance. `mask_ratio` is a float (one ratio for every row) or a `(n,)` tensor. For the MBM head the
    arithmetic is the one of `BARPipeline`'s sampling state (identical float32 results)."""
    rows = conditions.shape[0]
    if isinstance(mask_ratio, torch.Tensor):
        ratio = torch.cat([mask_ratio, mask_ratio]) if guided else mask_ratio
        ratio = ratio.to(conditions.device, torch.float32)
    else:
        ratio = torch.full((rows,), mask_ratio, device=conditions.device)
    head = transformer.head
    if isinstance(head, BARMaskedBitHead):
        return guided_head_step(head, states, head.t_embedder(ratio), conditions, weight, guided)
    head_states = torch.cat([states, states]) if guided else states
    logits = transformer.head_logits(head_states, ratio, conditions, validate_inputs=False).float()
    if guided:
        cond, uncond = logits.chunk(2)
        logits = uncond + weight * (cond - uncond)
    return logits
