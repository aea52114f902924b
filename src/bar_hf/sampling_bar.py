"""Per-generation sampling state of [`BARPipeline`]: a preallocated KV cache, per-slot tables computed once per
generation, and the two per-step functions (backbone one-token step, guided head step) that `torch.compile` can
capture as static graphs.

Work removed from every AR step compared with calling `compute_conditions` / `head_logits` per step (same arithmetic,
identical float32 results; checked in `tests/test_sampling_bar.py` against the generic path):

* every layer's `adaLN_modulation` depends only on (class, slot): computed for a block of slots in one GEMM instead
  of once per layer per step (used only when the big GEMM reproduces the per-step rows bit for bit on this
  device/BLAS, checked once per generation; otherwise it is computed per step as before);
* positions, target positions and the per-head RoPE tables of each slot are gathered from tables built once;
* the head's mask-ratio (Fourier) embedding depends only on the head step index: computed once per generation;
* the KV cache is one preallocated buffer per layer (no concatenation per step);
* the class prefix is computed once per distinct class (the CFG null class once per batch).

With `static=True` every step has the same shapes (the whole buffer is attended with a mask, the slot is a tensor),
which is what `torch.compile` needs to capture one graph for all AR steps (and CUDA graphs for `reduce-overhead`).
"""

from __future__ import annotations

import torch
from diffusers.utils import logging

from .heads_bar import BARMaskedBitHead
from .layers_bar import query_key_rope
from .modeling_bar import BARForCausalImageModeling

__all__ = ["BARSamplingState", "compile_step_functions"]

logger = logging.get_logger(__name__)

#: memory cap for one block of precomputed AdaLN modulations (all layers), in bytes
MODULATION_BLOCK_BYTES = 256 * 2**20


class PreallocatedKVCache:
    """A KV cache with one `(rows, heads, P + N, head_dim)` buffer per layer; duck-types the two methods of a
    transformers `Cache` that [`BARModel`] calls (`get_seq_length`, `update`).

    Dynamic mode (`slot is None`): writes at `length` and returns exactly the written keys (same attention as
    `DynamicCache`). Static mode (`slot` a 1-element long tensor): writes at `slot` and returns the whole buffer, which
    the caller masks; shapes never change.
    """

    is_compileable = True

    def __init__(self, num_layers, rows, heads, max_length, head_dim, dtype, device):
        shape = (rows, heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0
        self.slot: torch.Tensor | None = None

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def update(self, key, value, layer_idx, cache_kwargs=None):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.slot is not None:
            keys.index_copy_(2, self.slot, key)
            values.index_copy_(2, self.slot, value)
            return keys, values
        end = self.length + key.shape[2]
        keys[:, :, self.length : end] = key
        values[:, :, self.length : end] = value
        return keys[:, :, :end], values[:, :, :end]


def backbone_step(model, bits, slot, cache, tables, modulations):
    """One AR token for every row: `bits (rows, 1, k)` at slot `slot` (1-element long tensor) → conditions
    `(rows, head_hidden_size)`. `modulations`: per layer `(rows, 1, 6D)`, or `None` to compute them here."""
    dtype = model.cls_token.dtype
    hidden = model.embed_bits(bits).to(dtype)
    hidden = hidden + tables["pos"].index_select(0, slot) + tables["target_pos"].index_select(0, slot)
    rope = tuple(table.index_select(0, slot) for table in tables["rope"])  # (1, H or 1, 1, hd)
    mask = None
    if cache.slot is not None:  # static shapes: attend to the whole buffer, masked beyond the current slot
        allowed = tables["key_slots"] <= slot
        mask = torch.zeros_like(tables["key_slots"], dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        mask = mask[None, None, None]
    adaln = None
    if modulations is None:
        adaln = tables["class_vectors"] + tables["slot_embed"].index_select(0, slot).unsqueeze(0)
    for index, layer in enumerate(model.layers):
        modulation = None if modulations is None else modulations[index]
        hidden = layer(hidden, adaln, rope=rope, attention_mask=mask, cache=cache, modulation=modulation)
    return model.latent_condition_proj(model.norm(hidden))[:, -1]


def guided_head_step(head, states, ratio_embedding, conditions, weight, guided: bool):
    """Guided bit logits `(batch, k, 2)` (float32) of the MBM head for bit states `(batch, k)`; with guidance the
    conditions are `[cond; uncond]` and `weight` the CFG weight (0-d tensor)."""
    head_states = torch.cat([states, states]) if guided else states
    logits = head.forward_embedded(head_states, ratio_embedding, conditions).float()
    if guided:
        cond, uncond = logits.chunk(2)
        logits = uncond + weight * (cond - uncond)
    return logits


class CompiledOrEager:
    """`torch.compile(function)`, falling back to `function` with one clear warning when compilation fails."""

    def __init__(self, function, **options):
        self.eager, self.compiled = function, None
        try:
            self.compiled = torch.compile(function, **options)
        except Exception as error:  # e.g. unknown backend, platform without compile support
            self._warn(error)

    def _warn(self, error: Exception) -> None:
        logger.warning(
            f"torch.compile is unavailable for `{self.eager.__name__}` ({type(error).__name__}: {error}); sampling "
            "eagerly instead (same results, no speed-up). Call `pipe.disable_compile()` to silence this."
        )

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:  # compilation happens at the first call: fall back for good
                self.compiled = None
                self._warn(error)
        return self.eager(*args)


def compile_step_functions(**compile_kwargs) -> dict:
    """`torch.compile` the two per-step functions (`fullgraph=True`, `dynamic=False`: one graph each for a whole
    generation; any graph break is an error, reported by the fallback warning)."""
    options = {"fullgraph": True, "dynamic": False, **compile_kwargs}
    return {
        "backbone_step": CompiledOrEager(backbone_step, **options),
        "head_step": CompiledOrEager(guided_head_step, **options),
    }


class BARSamplingState:
    """Everything one generation needs beyond the weights (see the module docstring).

    Args:
        transformer ([`BARForCausalImageModeling`]): the generator.
        class_ids (`torch.LongTensor` of shape `(rows,)`): class ids of all rows (`[cond; uncond]` with CFG).
        static (`bool`): static shapes (for `torch.compile` / CUDA graphs).
        step_functions (`dict`, *optional*): compiled `backbone_step` / `head_step` (see [`compile_step_functions`]).
    """

    def __init__(self, transformer: BARForCausalImageModeling, class_ids, static: bool, step_functions=None):
        self.transformer = transformer
        model, config = transformer.model, transformer.config
        self.model, self.config, self.static = model, config, static
        self.compiled = step_functions is not None
        self.functions = step_functions or {"backbone_step": backbone_step, "head_step": guided_head_step}
        device, dtype = model.cls_token.device, model.cls_token.dtype
        self.device, self.rows = device, class_ids.shape[0]
        P, N = config.prefix_length, config.num_ar_steps
        self.cache = PreallocatedKVCache(
            config.num_hidden_layers, self.rows, config.num_attention_heads, P + N, config.head_dim, dtype, device
        )
        if self.compiled:  # updated in place inside the graph: CUDA graphs need them at fixed addresses
            for buffer in self.cache.keys + self.cache.values:
                torch._dynamo.mark_static_address(buffer)
        self.class_ids = class_ids.to(device)
        self.tables = self._slot_tables(self.class_ids)
        self._block_start, self._block = None, None
        self.exact_modulations = None  # decided at the first step
        self.ratio_embeddings: dict[int, torch.Tensor] = {}

    # -------------------------------------------------------------------------------------------- tables
    @torch.no_grad()
    def _slot_tables(self, class_ids) -> dict:
        """Per-slot rows of the raster order: slot `j >= P` holds token `j - P` and predicts token `j - P + 1`."""
        model, c = self.model, self.config
        dtype = model.cls_token.dtype
        P, N = c.prefix_length, c.num_ar_steps
        slots = torch.arange(P + N, device=self.device)
        target = (slots + 1).clamp(max=P + N - 1)
        own_cos, own_sin = model.rope_cos[slots][:, None], model.rope_sin[slots][:, None]  # (slots, T=1, hd)
        target_cos, target_sin = model.rope_cos[target][:, None], model.rope_sin[target][:, None]
        rope = query_key_rope(own_cos, own_sin, target_cos, target_sin, c.num_attention_heads)  # (slots, H|1, 1, hd)
        return {
            "pos": model.pos_embed[0, slots].to(dtype)[:, None],  # (slots, 1, D): index_select → (1, 1, D)
            "target_pos": model.target_aware_pos_embed[0, target].to(dtype)[:, None],
            "rope": rope,
            "key_slots": slots,
            "class_vectors": model.class_embed(model.class_rows(class_ids))[:, None, :],  # (rows, 1, D)
            "slot_embed": model.slot_embed[0, : P + N],
        }

    def slot_tensor(self, slot: int) -> torch.Tensor:
        return torch.tensor([slot], device=self.device)

    def _adaln(self, slots: slice) -> torch.Tensor:
        t = self.tables
        return (t["class_vectors"] + t["slot_embed"][slots][None]).to(self.model.cls_token.dtype)  # as BARModel

    @torch.no_grad()
    def _modulations(self, slot: int) -> list[torch.Tensor] | None:
        """Per-layer `adaLN_modulation` of `slot`, from a block computed in one GEMM per layer."""
        if self.exact_modulations is False:
            return None
        layers = self.model.layers
        if self._block is None or not self._block_start <= slot < self._block_start + self._block[0].shape[1]:
            c = self.config
            end_slot = c.prefix_length + c.num_ar_steps - 1  # the last token is never fed back
            width = layers[0].adaLN_modulation[1].out_features * self.model.cls_token.element_size()
            per_slot = self.rows * width * len(layers)
            size = max(1, min(end_slot - slot, MODULATION_BLOCK_BYTES // max(per_slot, 1)))
            adaln = self._adaln(slice(slot, slot + size))
            self._block_start, self._block = slot, [layer.adaLN_modulation(adaln) for layer in layers]
            if self.exact_modulations is None:
                # a GEMM over more rows may round differently on some BLAS / devices: keep the big GEMM only when it
                # reproduces the per-step computation exactly (compiled graphs, never bit-exact anyway, always use it)
                single = self._adaln(slice(slot, slot + 1))
                self.exact_modulations = self.compiled or all(
                    torch.equal(layer.adaLN_modulation(single), block[:, :1])
                    for layer, block in zip(layers, self._block)
                )
                if not self.exact_modulations:
                    self._block = None
                    return None
        offset = slot - self._block_start
        return [block[:, offset : offset + 1] for block in self._block]

    # -------------------------------------------------------------------------------------------- steps
    @torch.no_grad()
    def prefill(self) -> torch.Tensor:
        """Prefix pass (cls + class tokens) through [`BARModel`] into the cache; conditions of token 0.

        The prefix depends only on the class: it is computed once per distinct class id (the null class of CFG once
        for the whole batch) and copied to every row. Every GEMM of this pass has `rows × P >= P` rows, so the
        result rows do not depend on how many distinct classes there are."""
        unique, inverse = torch.unique(self.class_ids, return_inverse=True)
        if unique.shape[0] == self.rows:
            conditions = self.model(bits=None, class_labels=self.class_ids, cache=self.cache, validate_inputs=False)
            self.cache.length = self.config.prefix_length
            return conditions.conditions[:, -1]
        c = self.config
        prefix_cache = PreallocatedKVCache(
            c.num_hidden_layers, unique.shape[0], c.num_attention_heads, c.prefix_length, c.head_dim,
            self.cache.keys[0].dtype, self.device,
        )  # fmt: skip
        conditions = self.model(bits=None, class_labels=unique, cache=prefix_cache, validate_inputs=False)
        P = c.prefix_length
        for target, source in zip(self.cache.keys + self.cache.values, prefix_cache.keys + prefix_cache.values):
            target[:, :, :P] = source.index_select(0, inverse)
        self.cache.length = P
        return conditions.conditions[:, -1].index_select(0, inverse)

    @torch.no_grad()
    def step(self, bits: torch.Tensor) -> torch.Tensor:
        """Feed the newest token `bits (rows, 1, k)`; returns the conditions of the next token `(rows, W_h)`."""
        slot = self.cache.length
        slot_tensor = self.slot_tensor(slot)
        self.cache.slot = slot_tensor if self.static else None
        conditions = self.functions["backbone_step"](
            self.model, bits, slot_tensor, self.cache, self.tables, self._modulations(slot)
        )
        self.cache.length = slot + 1
        return conditions

    @torch.no_grad()
    def head_logits(self, states, step_index: int, mask_ratio: float, conditions, weight: float, guided: bool):
        """Guided float32 logits `(batch, k, 2)` of head step `step_index` for the bit states `(batch, k)`.

        `mask_ratio` is the step's ratio (a float, the same for every row: its embedding is computed once per
        generation) or one ratio per row `(batch,)` (adaptive schedulers: embedded at every call)."""
        head = self.transformer.head
        per_row = isinstance(mask_ratio, torch.Tensor)
        if per_row:
            ratio = torch.cat([mask_ratio, mask_ratio]) if guided else mask_ratio
            ratio = ratio.to(conditions.device, torch.float32)
        else:
            ratio = torch.full((conditions.shape[0],), mask_ratio, device=conditions.device)
        if not isinstance(head, BARMaskedBitHead):  # baselines: the generic path
            head_states = torch.cat([states, states]) if guided else states
            logits = self.transformer.head_logits(head_states, ratio, conditions, validate_inputs=False).float()
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + weight * (cond - uncond)
            return logits
        if per_row:
            ratio_embedding = head.t_embedder(ratio)
        else:
            if step_index not in self.ratio_embeddings:  # same ratio for every AR token: once per generation
                self.ratio_embeddings[step_index] = head.t_embedder(ratio)
            ratio_embedding = self.ratio_embeddings[step_index]
        if self.compiled:  # a python float would be baked into the graph (one recompilation per AR step)
            weight = torch.tensor(weight, dtype=torch.float32, device=conditions.device)
        return self.functions["head_step"](head, states, ratio_embedding, conditions, weight, guided)
