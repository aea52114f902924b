"""The one sampling path of the BAR pipelines (docs/method.md §4.3-4.4, §11): a preallocated KV cache, the
backbone's one-token step, the guided head step and the per-token head loop.

[`BARPipeline`] generates in raster order, which is the identity order; [`BARInpaintPipeline`] walks any per-row
generation order with some tokens teacher-forced. Both run a [`SamplingState`] (one per call) and
[`sample_token`] (one per AR token), eagerly or through `torch.compile` (see [`compile_step_functions`]).

Work done once per generation instead of once per AR step (same arithmetic as [`BARModel.forward`], identical
float32 results, checked in `tests/test_sampling.py`):

* positions, target positions and per-head RoPE tables of every slot ([`BARModel.position_signals`]), for one
  shared order or one order per row;
* every layer's `adaLN_modulation` depends only on (class, slot): computed for a block of slots in one GEMM (used
  only when that GEMM reproduces the per-step rows bit for bit on this device/BLAS, checked once per generation);
* the head's mask-ratio (Fourier) embedding of each head step (fixed schedules);
* the class prefix, once per distinct class (the CFG null class once per batch);
* the KV cache: one preallocated buffer per layer (no concatenation per step).

With `static=True` every step has the same shapes (the whole buffer is attended with a mask, the slot is a tensor):
what `torch.compile` needs to capture one graph for all AR steps (and CUDA graphs for `reduce-overhead`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from diffusers.utils import logging

from ..bits import MASK_BIT, patchify_bits
from ..models.heads import BARMaskedBitHead
from ..models.modeling_bar import BARForCausalImageModeling
from ..schedulers.scheduling_bar import BARSchedulerMixin

__all__ = ["PreallocatedKVCache", "SamplingPlan", "SamplingState", "compile_step_functions", "sample_token"]

logger = logging.get_logger(__name__)

#: memory cap for one block of precomputed AdaLN modulations (all layers), in bytes
MODULATION_BLOCK_BYTES = 256 * 2**20


@dataclass
class SamplingPlan:
    """What one pipeline call generates, in generation order.

    Args:
        bits (`torch.LongTensor` of shape `(B, N, k)`): AR tokens in generation order; filled in place (editing:
            holds the encoded image, kept tokens stay as they are).
        orders (`torch.LongTensor` of shape `(1 or B, N)`, *optional*): generation order (raster cells), shared or
            per row; `None` is raster.
        regenerate (`torch.BoolTensor` of shape `(B, N)`, *optional*): which tokens (generation order) are
            generated; `None`: all.
        keep (`torch.BoolTensor` of shape `(k,)`, *optional*): bits of every generated token copied from `bits`.
        cache_implementation (`str`): `"dynamic"` or `"static"` KV cache.
    """

    bits: torch.Tensor
    orders: torch.Tensor | None = None
    regenerate: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    cache_implementation: str = "dynamic"

    @property
    def start(self) -> int:
        """First slot that any row generates (the slots before it are a teacher-forced prefix all rows share)."""
        if self.regenerate is None:
            return 0
        needed = self.regenerate.any(0).nonzero()
        return int(needed[0]) if needed.numel() else self.bits.shape[1]

    def pending(self, generated: int) -> torch.Tensor:
        """`(B, N)` bool: tokens still to generate once `generated` slots are done."""
        pending = torch.ones(self.bits.shape[:2], dtype=torch.bool, device=self.bits.device)
        if self.regenerate is not None:
            pending &= self.regenerate
        pending[:, :generated] = False
        return pending

    def from_latents(self, latents: torch.Tensor, config) -> torch.Tensor:
        """The `output_type="latent"` layout `(B, L, num_bits)` → AR bits `(B, N, k)` in generation order."""
        bits = patchify_bits(latents, (config.latent_height, config.latent_width), config.patch_size)
        if self.orders is None:
            return bits
        orders = self.orders.expand(bits.shape[0], -1)
        return bits.gather(1, orders[:, :, None].expand_as(bits))


class PreallocatedKVCache:
    """A KV cache with one `(rows, heads, length, head_dim)` buffer per layer; duck-types the two methods of a
    transformers `Cache` that [`BARModel`] calls (`get_seq_length`, `update`).

    Dynamic mode (`slot is None`): writes at `length` and returns exactly the written keys (same attention as
    `DynamicCache`). Static mode (`slot` a 1-element long tensor): writes at `slot` and returns the whole buffer, which
    the caller masks; shapes never change. The owner advances `length`.
    """

    is_compileable = True

    def __init__(self, config, rows: int, length: int, dtype: torch.dtype, device: torch.device):
        shape = (rows, config.num_attention_heads, length, config.head_dim)
        layers = config.num_hidden_layers
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
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
    `(rows, head_hidden_size)`. `tables`: see [`SamplingState`]; `modulations`: per layer `(rows, 1, 6D)`, or `None`
    to compute them here."""
    dtype = model.cls_token.dtype
    hidden = model.embed_bits(bits).to(dtype)
    hidden = hidden + tables["pos"].index_select(1, slot) + tables["target_pos"].index_select(1, slot)
    rope = tuple(table.index_select(2, slot) for table in tables["rope"])  # (1 or rows, H or 1, 1, hd)
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
    conditions are `[cond; uncond]` and `weight` the CFG weight."""
    head_states = torch.cat([states, states]) if guided else states
    logits = head.forward_embedded(head_states, ratio_embedding, conditions).float()
    return cfg_combine(logits, weight, guided)


def cfg_combine(logits: torch.Tensor, weight, guided: bool) -> torch.Tensor:
    """`uncond + w·(cond − uncond)` for `[cond; uncond]` logits (unchanged without guidance)."""
    if not guided:
        return logits
    cond, uncond = logits.chunk(2)
    return uncond + weight * (cond - uncond)


#: most shape keys (rows, guided) compiled per step function; new keys beyond it run eagerly (see [`CompiledOrEager`])
MAX_COMPILED_SHAPES = 32


def _fresh_function(function):
    """A copy of `function` with its own code object: torch.compile keeps its graph cache and recompile count per code
    object, so each copy compiles and caches independently of the others."""
    return types.FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )


class CompiledOrEager:
    """`torch.compile(function)` with one compiled copy per shape key, falling back to `function` with one clear warning
    when compilation fails.

    The key is `(rows, guided)` (the first tensor argument's batch size and whether CFG doubles the rows): each key gets
    its own compiled copy (its own code object, so its own graph cache and its own torch recompile count), and a key
    compiled once stays compiled whatever other batch sizes were used since. At most `MAX_COMPILED_SHAPES` keys are
    compiled per function; calls with further keys run eagerly (a warning says so once, with the fix). A key that still
    reaches torch's recompile limit (`torch._dynamo.config.recompile_limit`) runs eagerly from then on (one warning)."""

    def __init__(self, function, **options):
        self.eager, self.options, self.failed = function, options, False
        self.compiled: dict[tuple, object] = {}
        self.eager_keys: set[tuple] = set()
        self.warned_full = False

    def warn(self, error: Exception) -> None:
        logger.warning(
            f"torch.compile is unavailable for `{self.eager.__name__}` ({type(error).__name__}: {error}); sampling "
            "eagerly instead (same results, no speed-up). Call `pipe.disable_compile()` to silence this."
        )

    @staticmethod
    def key(args) -> tuple:
        rows = next((a.shape[0] for a in args if isinstance(a, torch.Tensor)), None)
        return rows, args[-1] if isinstance(args[-1], bool) else None

    def _compiled_for(self, key):
        if key in self.compiled or key in self.eager_keys:
            return self.compiled.get(key)
        if len(self.compiled) >= MAX_COMPILED_SHAPES:
            if not self.warned_full:
                self.warned_full = True
                logger.warning(
                    f"`{self.eager.__name__}` is compiled for {MAX_COMPILED_SHAPES} batch shapes (rows, guidance) "
                    "already; new shapes run eagerly (compiled shapes stay compiled). Use fewer distinct batch sizes, or "
                    "call `pipe.enable_compile()` again to start a fresh cache."
                )
            return None
        try:
            self.compiled[key] = torch.compile(_fresh_function(self.eager), **self.options)
        except Exception as error:  # e.g. unknown backend, platform without compile support
            self.failed = True
            self.warn(error)
            return None
        return self.compiled[key]

    def __call__(self, *args):
        compiled = None if self.failed else self._compiled_for(self.key(args))
        if compiled is not None:
            try:
                with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                    return compiled(*args)
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                key = self.key(args)
                self.compiled.pop(key, None)
                self.eager_keys.add(key)
                logger.warning(
                    f"`{self.eager.__name__}` reached torch's recompile limit "
                    f"(`torch._dynamo.config.recompile_limit`={torch._dynamo.config.recompile_limit}) for batch shape "
                    f"{key}; that shape runs eagerly from now on (other shapes stay compiled). Raise the limit or call "
                    "`pipe.enable_compile()` again to start a fresh cache."
                )
            except Exception as error:  # compilation happens at the first call: fall back for good
                self.failed = True
                self.compiled.clear()
                self.warn(error)
        return self.eager(*args)


def compile_step_functions(**compile_kwargs) -> dict:
    """`torch.compile` the two per-step functions (`fullgraph=True`: any graph break is an error, reported by the
    fallback warning). One graph each serves every AR step of a batch shape; each batch shape (rows, guidance) has its
    own compiled copy (see [`CompiledOrEager`], [`BARPipeline.enable_compile`])."""
    options = {"fullgraph": True, "dynamic": False, **compile_kwargs}
    return {
        "backbone_step": CompiledOrEager(backbone_step, **options),
        "head_step": CompiledOrEager(guided_head_step, **options),
    }


class SamplingState:
    """Everything one generation needs beyond the weights (see the module docstring).

    Args:
        transformer ([`BARForCausalImageModeling`]): the generator.
        class_ids (`torch.LongTensor` of shape `(rows,)`): class ids of all rows (`[cond; uncond]` with CFG).
        orders (`torch.LongTensor` of shape `(1 or rows, N)`, *optional*): generation order shared by every row, or
            one per row; raster when omitted.
        static (`bool`): static shapes (for `torch.compile` / CUDA graphs).
        step_functions (`dict`, *optional*): compiled `backbone_step` / `head_step` (see [`compile_step_functions`]).
    """

    def __init__(
        self,
        transformer: BARForCausalImageModeling,
        class_ids: torch.Tensor,
        orders: torch.Tensor | None = None,
        static: bool = False,
        step_functions: dict | None = None,
    ):
        self.transformer = transformer
        model, config = transformer.model, transformer.config
        self.model, self.config, self.static = model, config, static
        self.compiled = step_functions is not None
        self.functions = step_functions or {"backbone_step": backbone_step, "head_step": guided_head_step}
        self.device, self.dtype = model.cls_token.device, model.cls_token.dtype
        self.class_ids = class_ids.to(self.device)
        self.rows = self.class_ids.shape[0]
        P, N = config.prefix_length, config.num_ar_steps
        if orders is None:
            orders = torch.arange(N)[None]
        self.orders = orders.to(self.device)
        self.cache = PreallocatedKVCache(config, self.rows, P + N, self.dtype, self.device)
        if self.compiled:  # updated in place inside the graph: CUDA graphs need them at fixed addresses
            for buffer in self.cache.keys + self.cache.values:
                torch._dynamo.mark_static_address(buffer)
        self.tables = self.slot_tables()
        self.block_start, self.block = None, None
        self.exact_modulations = None  # decided at the first step
        self.ratio_embeddings: dict[tuple[int, int], torch.Tensor] = {}

    # -------------------------------------------------------------------------------------------- tables
    @torch.no_grad()
    def slot_tables(self) -> dict:
        """Per-slot position signals (`(1 or rows, P + N, ...)`), class vectors and slot embeddings."""
        model, c = self.model, self.config
        slots = torch.arange(c.prefix_length + c.num_ar_steps, device=self.device)
        pos, target_pos, rope = model.position_signals(slots, self.orders)
        return {
            "pos": pos,
            "target_pos": target_pos,
            "rope": rope,
            "key_slots": slots,
            "class_vectors": model.class_embed(model.class_rows(self.class_ids))[:, None, :],  # (rows, 1, D)
            "slot_embed": model.slot_embed[0, : slots.shape[0]],
        }

    def adaln(self, slots: slice) -> torch.Tensor:
        t = self.tables
        return (t["class_vectors"] + t["slot_embed"][slots][None]).to(self.dtype)  # as BARModel.forward

    @torch.no_grad()
    def modulations(self, slot: int) -> list[torch.Tensor] | None:
        """Per-layer `adaLN_modulation` of `slot`, from a block computed in one GEMM per layer."""
        if self.exact_modulations is False:
            return None
        layers = self.model.layers
        if self.block is None or not self.block_start <= slot < self.block_start + self.block[0].shape[1]:
            c = self.config
            end_slot = c.prefix_length + c.num_ar_steps - 1  # the last token is never fed back
            width = layers[0].adaLN_modulation[1].out_features * self.model.cls_token.element_size()
            per_slot = self.rows * width * len(layers)
            size = max(1, min(end_slot - slot, MODULATION_BLOCK_BYTES // max(per_slot, 1)))
            adaln = self.adaln(slice(slot, slot + size))
            self.block_start, self.block = slot, [layer.adaLN_modulation(adaln) for layer in layers]
            if self.exact_modulations is None:
                # a GEMM over more rows may round differently on some BLAS / devices: keep the big GEMM only when it
                # reproduces the per-step computation exactly (compiled or not: compiled steps then see eager inputs)
                single = self.adaln(slice(slot, slot + 1))
                self.exact_modulations = all(
                    torch.equal(layer.adaLN_modulation(single), block[:, :1])
                    for layer, block in zip(layers, self.block)
                )
                if not self.exact_modulations:
                    self.block = None
                    return None
        offset = slot - self.block_start
        return [block[:, offset : offset + 1] for block in self.block]

    # -------------------------------------------------------------------------------------------- steps
    @torch.no_grad()
    def prefill(self, prefix_bits: torch.Tensor | None = None) -> torch.Tensor:
        """Prefix pass through [`BARModel`] into the cache: the class prefix, then the first `c` tokens
        `prefix_bits (rows, c, k)` in generation order (teacher-forced); returns the conditions of token `c`.

        Without prefix bits the prefix depends only on the class: it is computed once per distinct class id (the
        null class of CFG once for the whole batch) and copied to every row. Every GEMM of this pass has
        `rows × P >= P` rows, so the result rows do not depend on how many distinct classes there are."""
        P = self.config.prefix_length
        if prefix_bits is not None and prefix_bits.shape[1]:
            orders = self.orders.expand(self.rows, -1)
            out = self.model(bits=prefix_bits, class_labels=self.class_ids, orders=orders, cache=self.cache)
            self.cache.length = P + prefix_bits.shape[1]
            return out.conditions[:, -1]
        unique, inverse = torch.unique(self.class_ids, return_inverse=True)
        if unique.shape[0] == self.rows:
            out = self.model(bits=None, class_labels=self.class_ids, cache=self.cache)
            self.cache.length = P
            return out.conditions[:, -1]
        prefix_cache = PreallocatedKVCache(self.config, unique.shape[0], P, self.dtype, self.device)
        out = self.model(bits=None, class_labels=unique, cache=prefix_cache)
        for target, source in zip(self.cache.keys + self.cache.values, prefix_cache.keys + prefix_cache.values):
            target[:, :, :P] = source.index_select(0, inverse)
        self.cache.length = P
        return out.conditions[:, -1].index_select(0, inverse)

    @torch.no_grad()
    def step(self, bits: torch.Tensor) -> torch.Tensor:
        """Feed the next token of every row `bits (rows, 1, k)`; returns the conditions of the following token."""
        slot = self.cache.length
        slot_tensor = torch.tensor([slot], device=self.device)
        self.cache.slot = slot_tensor if self.static else None
        conditions = self.functions["backbone_step"](
            self.model, bits, slot_tensor, self.cache, self.tables, self.modulations(slot)
        )
        self.cache.length = slot + 1
        return conditions

    @torch.no_grad()
    def head_logits(self, states, step_index: int, mask_ratio, conditions, weight: float, guided: bool):
        """Guided float32 logits `(batch, k, 2)` of head step `step_index` for the bit states `(batch, k)`.

        `mask_ratio` is the step's ratio (a float, the same for every row: its embedding is computed once per
        generation and batch size) or one ratio per row `(batch,)` (embedded at every call)."""
        head = self.transformer.head
        per_row = isinstance(mask_ratio, torch.Tensor)
        if per_row:
            ratio = torch.cat([mask_ratio, mask_ratio]) if guided else mask_ratio
            ratio = ratio.to(conditions.device, torch.float32)
        else:
            ratio = torch.full((conditions.shape[0],), mask_ratio, device=conditions.device)
        if not isinstance(head, BARMaskedBitHead):  # baselines: their own forward
            head_states = torch.cat([states, states]) if guided else states
            return cfg_combine(head(head_states, ratio, conditions).float(), weight, guided)
        if per_row:
            ratio_embedding = head.t_embedder(ratio)
        else:
            key = (step_index, conditions.shape[0])  # same ratio for every AR token: once per generation
            if key not in self.ratio_embeddings:
                self.ratio_embeddings[key] = head.t_embedder(ratio)
            ratio_embedding = self.ratio_embeddings[key]
        if self.compiled:  # a python float would be baked into the graph (one recompilation per AR step)
            weight = torch.tensor(weight, dtype=torch.float32, device=conditions.device)
        return self.functions["head_step"](head, states, ratio_embedding, conditions, weight, guided)


def sample_token(
    state: SamplingState,
    scheduler: BARSchedulerMixin,
    conditions: torch.Tensor,
    weight: float,
    guided: bool,
    generator=None,
    kept_bits: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The scheduler-driven head steps of one AR token for `conditions` (`[cond; uncond]` with guidance) →
    bits `(batch, k)`.

    `keep` `(k,)` bool with `kept_bits` `(batch, k)`: those bits start fixed to `kept_bits` (bit-level editing), and
    the head is told the true fraction of bits still masked. Schedulers that override `head_mask_ratio` (adaptive)
    give each row its own ratio; the others one ratio per head step."""
    batch = conditions.shape[0] // (2 if guided else 1)
    states = torch.full((batch, state.config.bits_per_token), MASK_BIT, dtype=torch.long, device=conditions.device)
    if keep is not None:
        states = torch.where(keep.to(states.device), kept_bits, states)
    per_row = type(scheduler).head_mask_ratio is not BARSchedulerMixin.head_mask_ratio
    for index, t in enumerate(scheduler.timesteps):
        if keep is not None:
            ratio = (states == MASK_BIT).float().mean(-1)
        else:
            ratio = scheduler.head_mask_ratio(t, states) if per_row else scheduler.mask_ratio(t)
        logits = state.head_logits(states, index, ratio, conditions, weight, guided)
        states = scheduler.step(logits, t, states, generator=generator).prev_sample
        if scheduler.supports_early_stop and scheduler.is_finished(states):
            break  # every row revealed: skip the remaining head calls (one device-to-host read per step)
    return states
