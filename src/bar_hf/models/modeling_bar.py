"""BAR generator: class-conditional causal transformer + Masked Bit Modeling head (docs/method.md §3-4).

Sequence layout (P = 1 + R prefix slots, N AR tokens in generation order)::

    slot:     0     1 … R        P … P+N-1
    content:  cls   y (R copies)  e(x_{o_0}) … e(x_{o_{N-1}})

The output at slot ``P - 1 + i`` predicts token ``x_{o_i}``; each position gets an absolute position embedding (own
position), a target-aware position embedding (next position), 2-D RoPE (keys and the first half of the query heads
rotated by the own position, the second half of the query heads by the target position) and an AdaLN vector
``y + slot_embed[slot]``.

Building blocks live in `layers_bar` (norm, RoPE, attention, decoder layer) and the bit heads in `heads_bar`; both
are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, StaticCache
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from ..bits import MASK_BIT, bits_to_ids, check_bits, patchify_bits
from .configuration_bar import CLASS_ROW_OFFSET, BARConfig
from .heads import HEAD_CLASSES, BARBitwiseHead, BARFourierEmbedding, BARLinearHead, BARMaskedBitHead
from .layers import BARAttention, BARDecoderLayer, BARRMSNorm, build_2d_rope_table, query_key_rope, resolve_cache_alias
from .layerwise_casting import LayerwiseCastingMixin

__all__ = [
    "BARPreTrainedModel",
    "BARModel",
    "BARForCausalImageModeling",
    "BARMaskedBitHead",
    "BARBitwiseHead",
    "BARLinearHead",
    "BARModelOutput",
    "BARCausalImageModelingOutput",
    "build_2d_rope_table",
    "order_annealing_ratio",
    "weight_decay_parameter_groups",
]


# ---------------------------------------------------------------------------------------------------- outputs
@dataclass
class BARModelOutput(ModelOutput):
    """Backbone output.

    Args:
        conditions (`torch.Tensor` of shape `(batch, m, head_hidden_size)`): latent conditions `z_i` for the AR tokens
            whose predicting slot was processed in this call (`m = N` for a full pass, 1 for a prefix pass or a
            cached step; 0 after the last token).
        last_hidden_state (`torch.Tensor` of shape `(batch, slots, hidden_size)`): block outputs before the final norm.
        cache (`Cache`, *optional*): the KV cache, updated in place and returned.
        hidden_states (`tuple(torch.Tensor)`, *optional*): per-layer inputs plus the last output (returned with
            `output_hidden_states=True` or `config.output_hidden_states`).
        attentions (`tuple(torch.Tensor)`, *optional*): per-layer attention weights `(batch, heads, slots, keys)`
            (returned with `output_attentions=True` or `config.output_attentions` under the eager attention
            implementation; other kernels do not materialize the weights).
    """

    conditions: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class BARCausalImageModelingOutput(ModelOutput):
    """Output of [`BARForCausalImageModeling.forward`].

    Args:
        loss (`torch.Tensor`, *optional*): the head's training loss (MBM: weighted bit cross-entropy, §4.2).
        bit_logits (`torch.Tensor`, *optional*): head logits of the training step, `(batch, N, k, 2)` (`(batch, N,
            2**k)` id logits for `head_type="linear"`), in generation order (see `orders`).
        conditions (`torch.Tensor` of shape `(batch, N, head_hidden_size)`): latent conditions, in generation order.
        orders (`torch.Tensor` of shape `(batch, N)`): generation order used (raster unless random orders were used).
        cache (`Cache`, *optional*), hidden_states (`tuple`, *optional*), attentions (`tuple`, *optional*): as in
            [`BARModelOutput`].
    """

    loss: torch.Tensor | None = None
    bit_logits: torch.Tensor | None = None
    conditions: torch.Tensor | None = None
    orders: torch.Tensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def _draw(sampler: Callable, shape: tuple[int, ...], generator: torch.Generator | None, device) -> torch.Tensor:
    """`torch.rand` / `torch.randn` of `shape` from `generator` (on the generator's device) or the global RNG."""
    if generator is None:
        return sampler(shape, device=device)
    return sampler(shape, generator=generator, device=generator.device).to(device)


def order_annealing_ratio(step: int, anneal_start: int, anneal_end: int) -> float:
    """RAR-style random-order ratio (docs/method.md §3.7): 1 before `anneal_start`, 0 after `anneal_end`, linear between."""
    if anneal_end < anneal_start:
        raise ValueError(f"`anneal_end` ({anneal_end}) must be >= `anneal_start` ({anneal_start}).")
    if step < anneal_start:
        return 1.0
    if step > anneal_end:
        return 0.0
    if anneal_end == anneal_start:
        return 0.0
    return 1.0 - (step - anneal_start) / (anneal_end - anneal_start)


_NO_DECAY_SUBSTRINGS = ("norm", "ln", "bias", "embedding", "embed")


def weight_decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The authors' AdamW groups (docs/method.md §7): no decay for parameters with `ndim < 2` or whose name contains
    "norm", "ln", "bias", "embedding" or "embed" (case-insensitive); `cls_token` (3-D) is decayed."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lowered = name.lower()
        if param.ndim < 2 or any(s in lowered for s in _NO_DECAY_SUBSTRINGS):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------------- models
class BARPreTrainedModel(PreTrainedModel):
    config: BARConfig
    config_class = BARConfig
    base_model_prefix = "model"
    main_input_name = "bits"
    supports_gradient_checkpointing = True
    _no_split_modules = ["BARDecoderLayer", "BARHeadResBlock"]
    _supports_sdpa = True
    _supports_flex_attn = False
    _supports_attention_backend = True
    _skip_keys_device_placement = ["cache"]
    # `get_input_embeddings()` / `set_input_embeddings()`: the per-bit embedding table of the backbone input (so that
    # `enable_input_require_grads()`, used by PEFT with gradient checkpointing, hooks it)
    _input_embed_layer = "bit_embed"
    # `output_hidden_states` / `output_attentions` are recorded by transformers' output-capturing hooks
    _can_record_outputs = {"hidden_states": BARDecoderLayer, "attentions": BARAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "_zero_init", False):  # AdaLN-zero: last Linear of every adaLN_modulation
                init.zeros_(module.weight)
                init.zeros_(module.bias)
            else:
                init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, BARRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, BARFourierEmbedding):
            init.normal_(module.W, std=1.0)
        elif isinstance(module, BARModel):
            for param in (module.cls_token, module.pos_embed, module.target_aware_pos_embed, module.slot_embed):
                init.trunc_normal_(param, std=std)
            cos, sin = module.compute_rope_table()
            init.copy_(module.rope_cos, cos)
            init.copy_(module.rope_sin, sin)


class BARModel(BARPreTrainedModel):
    """The BAR backbone: embeds the class prefix and bit tokens, runs the causal AdaLN transformer and returns the
    latent conditions `z_i` (width `head_hidden_size`) that the head turns into bits."""

    def __init__(self, config: BARConfig):
        super().__init__(config)
        D = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.position_embedding_size, D))
        self.target_aware_pos_embed = nn.Parameter(torch.zeros(1, config.position_embedding_size, D))
        self.slot_embed = nn.Parameter(torch.zeros(1, config.slot_embedding_size, D))
        self.class_embed = nn.Embedding(config.num_classes + CLASS_ROW_OFFSET + 1, D)
        self.bit_embed = nn.Embedding(3, config.bit_embedding_size)
        self.input_merge = nn.Linear(config.bits_per_token * config.bit_embedding_size, D)
        self.layers = nn.ModuleList([BARDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = BARRMSNorm(D, eps=config.rms_norm_eps)
        self.latent_condition_proj = nn.Linear(D, config.head_hidden_size)
        cos, sin = self.compute_rope_table()
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False
        self.post_init()

    def _apply(self, fn, recurse=True):
        # The RoPE table is always float32 (it is applied in float32): recompute it after `.to(dtype)` / `.half()`.
        # It is a non-persistent buffer, which `_keep_in_fp32_modules` (parameters at load time) does not cover, and
        # `nn.Module.to(dtype)` casts every floating buffer with no public way to exempt one.
        super()._apply(fn, recurse)
        if self.rope_cos.dtype != torch.float32:
            cos, sin = self.compute_rope_table()
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)
        return self

    def compute_rope_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        return build_2d_rope_table(c.grid_height, c.grid_width, c.head_dim, c.prefix_length, c.rope_theta)

    def class_rows(self, class_labels: torch.Tensor) -> torch.Tensor:
        """Map public class ids (`0..num_classes-1`, null = `num_classes`) to rows of the class table."""
        return class_labels + CLASS_ROW_OFFSET

    def embed_bits(self, bits: torch.Tensor) -> torch.Tensor:
        """`(B, n, k)` bits → `(B, n, D)`: per-bit embeddings concatenated, then `input_merge`."""
        batch, length, _ = bits.shape
        return self.input_merge(self.bit_embed(bits).reshape(batch, length, -1))

    def position_signals(self, slots: torch.Tensor, orders: torch.Tensor):
        """Position signals of sequence `slots` `(T,)` for generation `orders` `(R, N)` (docs/method.md §3.5).

        Slot `s < P` is a prefix slot (own position `s`); slot `s >= P` holds token `orders[:, s - P]` and predicts
        token `orders[:, s - P + 1]` (the last slot repeats its own target). Returns the absolute and target-aware
        position embeddings `(R, T, D)` in the model dtype and the per-head RoPE tables of [`query_key_rope`]
        `(R, H or 1, T, head_dim)`. The forward pass computes them per call, samplers once per generation.
        """
        c, dtype = self.config, self.cls_token.dtype
        P, N = c.prefix_length, c.num_ar_steps
        rows, length = orders.shape[0], slots.shape[0]
        own = torch.where(
            slots[None] < P,
            slots[None].expand(rows, length),
            P + orders.gather(1, (slots - P).clamp(0, N - 1)[None].expand(rows, length)),
        )
        target = P + orders.gather(1, (slots - P + 1).clamp(0, N - 1)[None].expand(rows, length))
        pos = self.pos_embed[0, own].to(dtype)
        target_pos = self.target_aware_pos_embed[0, target].to(dtype)
        rope = query_key_rope(
            self.rope_cos[own], self.rope_sin[own], self.rope_cos[target], self.rope_sin[target], c.num_attention_heads
        )
        return pos, target_pos, rope

    def _validate(self, bits, class_labels, orders, past_length) -> None:
        c = self.config
        if not isinstance(class_labels, torch.Tensor) or class_labels.dim() != 1:
            raise ValueError(f"`class_labels` must be a 1-D tensor of class ids, got {class_labels!r}.")
        if class_labels.is_floating_point():
            raise ValueError(f"`class_labels` must be integers, got dtype {class_labels.dtype}.")
        if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) > c.null_class_id):
            raise ValueError(
                f"`class_labels` must be in [0, {c.num_classes}] ({c.null_class_id} = null class), got values in "
                f"[{int(class_labels.min())}, {int(class_labels.max())}]."
            )
        if bits is not None:
            if bits.dim() != 3 or bits.shape[2] != c.bits_per_token or bits.shape[0] != class_labels.shape[0]:
                raise ValueError(
                    f"`bits` must have shape (batch={class_labels.shape[0]}, tokens, k={c.bits_per_token}), "
                    f"got {tuple(bits.shape)}."
                )
            check_bits(bits)
        new_tokens = 0 if bits is None else bits.shape[1]
        if past_length == 0:
            if new_tokens > c.num_ar_steps:
                raise ValueError(f"`bits` has {new_tokens} tokens, more than the {c.num_ar_steps} AR steps.")
        else:
            if past_length < c.prefix_length:
                raise ValueError(f"the cache holds {past_length} slots, fewer than the prefix ({c.prefix_length}).")
            if new_tokens == 0:
                raise ValueError("`bits` must hold at least one new token when continuing from a cache.")
            if past_length + new_tokens > c.prefix_length + c.num_ar_steps:
                raise ValueError(
                    f"cache ({past_length} slots) + {new_tokens} tokens exceeds the sequence length "
                    f"{c.prefix_length + c.num_ar_steps}."
                )
        if orders is not None and (
            orders.dim() != 2 or tuple(orders.shape) != (class_labels.shape[0], c.num_ar_steps)
        ):
            raise ValueError(
                f"`orders` must have shape (batch={class_labels.shape[0]}, N={c.num_ar_steps}), "
                f"got {tuple(orders.shape)}."
            )

    @capture_outputs
    def forward(
        self,
        bits: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        orders: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        past_key_values: Cache | None = None,
    ) -> BARModelOutput | tuple:
        r"""
        Args:
            bits (`torch.LongTensor` of shape `(batch, n, k)`, *optional*):
                AR tokens **in generation order** that follow what the cache holds: the first `n` tokens on a fresh
                pass (the prefix is added automatically), or the newest token(s) when continuing from a cache.
            class_labels (`torch.LongTensor` of shape `(batch,)`):
                class ids in `0..num_classes-1`, or `num_classes` for the null (unconditional) class.
            orders (`torch.LongTensor` of shape `(batch, N)`, *optional*):
                generation order (a permutation of the AR grid cells per sample); raster when omitted.
            cache (`Cache`, *optional*): a transformers cache (e.g. `DynamicCache()`), updated in place.
            use_cache (`bool`, *optional*): create a `DynamicCache` when none is passed.
            output_hidden_states (`bool`, *optional*): return the per-layer hidden states; defaults to
                `config.output_hidden_states`.
            output_attentions (`bool`, *optional*): return the per-layer attention weights (eager attention only);
                defaults to `config.output_attentions`.
            return_dict (`bool`, *optional*): return a [`BARModelOutput`] (default) or a tuple; defaults to
                `config.return_dict`.
            past_key_values (`Cache`, *optional*): transformers' name of `cache` (either, not both).
        """
        cache = resolve_cache_alias(cache, past_key_values)
        c = self.config
        if use_cache and cache is None:
            cache = DynamicCache()
        past_length = int(cache.get_seq_length()) if cache is not None else 0
        # a static cache (e.g. `StaticCache(config, max_cache_len=P + N)`) returns its whole preallocated buffer:
        # the keys beyond what has been written must be masked out
        static_length = int(cache.get_max_length()) if isinstance(cache, StaticCache) else None
        self._validate(bits, class_labels, orders, past_length)
        batch = class_labels.shape[0]
        device = self.cls_token.device
        dtype = self.cls_token.dtype

        class_vectors = self.class_embed(self.class_rows(class_labels.to(device)))  # (B, D)
        pieces = []
        if past_length == 0:
            pieces += [
                self.cls_token.expand(batch, 1, -1),
                class_vectors[:, None, :].expand(batch, c.num_class_tokens, -1),
            ]
        if bits is not None and bits.shape[1] > 0:
            pieces.append(self.embed_bits(bits.to(device)))
        hidden = torch.cat(pieces, dim=1).to(dtype)
        length = hidden.shape[1]

        P, N = c.prefix_length, c.num_ar_steps
        slots = torch.arange(past_length, past_length + length, device=device)
        if orders is None:
            orders = torch.arange(N, device=device).expand(batch, N)
        pos, target_pos, rope = self.position_signals(slots, orders.to(device))
        hidden = hidden + pos + target_pos
        adaln = (class_vectors[:, None, :] + self.slot_embed[0, slots][None]).to(dtype)
        attention_mask = None
        if static_length is not None or (length > 1 and (past_length > 0 or c._attn_implementation != "sdpa")):
            total = past_length + length if static_length is None else static_length
            allowed = torch.arange(total, device=device)[None, :] <= slots[:, None]
            attention_mask = torch.zeros(length, total, device=device, dtype=dtype).masked_fill(
                ~allowed, torch.finfo(dtype).min
            )[None, None]

        for layer in self.layers:  # hidden states / attentions are recorded by `capture_outputs` hooks
            hidden = layer(hidden, adaln, rope=rope, attention_mask=attention_mask, cache=cache)

        # slots P-1 .. P+N-2 predict tokens 0 .. N-1 (python ints: no device synchronization)
        first, last = max(past_length, P - 1), min(past_length + length - 1, P + N - 2)
        kept = hidden[:, first - past_length : last - past_length + 1]
        conditions = self.latent_condition_proj(self.norm(kept))
        return BARModelOutput(conditions=conditions, last_hidden_state=hidden, cache=cache)


class BARForCausalImageModeling(LayerwiseCastingMixin, BARPreTrainedModel):
    """BAR generator: backbone ([`BARModel`]) + bit prediction head (`head_type`: MBM by default).

    Training: `model(bits, class_labels)` returns the head loss (§4.2) with label dropout and optional random orders.
    Sampling (see [`BARPipeline`]): `compute_conditions(...)` with a KV cache, then `head_logits(...)` per scheduler
    step; the scheduler decides which bits to reveal.
    """

    def __init__(self, config: BARConfig):
        super().__init__(config)
        self.model = BARModel(config)
        self.head = HEAD_CLASSES[config.head_type](config)
        self.post_init()

    # -------------------------------------------------------------------------------------------- sampling API
    def compute_conditions(
        self,
        bits: torch.Tensor | None,
        class_labels: torch.Tensor,
        orders: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
    ) -> BARModelOutput:
        """Backbone pass; see [`BARModel.forward`] (`past_key_values` is an alias of `cache`)."""
        cache = resolve_cache_alias(cache, past_key_values)
        return self.model(
            bits=bits,
            class_labels=class_labels,
            orders=orders,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
        )

    def head_logits(
        self,
        bit_states: torch.Tensor,
        mask_ratio: torch.Tensor | float,
        conditions: torch.Tensor,
    ) -> torch.Tensor:
        """Bit logits `(tokens, k, 2)` for bit states in {0, 1, 2=mask}, the fraction still masked and conditions."""
        if not isinstance(mask_ratio, torch.Tensor):
            mask_ratio = torch.full((bit_states.shape[0],), float(mask_ratio), device=conditions.device)
        check_bits(bit_states, "bit_states", allow_mask=True)
        return self.head(bit_states.to(conditions.device), mask_ratio.to(conditions.device, torch.float32), conditions)

    # -------------------------------------------------------------------------------------------- training
    def to_ar_bits(self, bits: torch.Tensor) -> torch.Tensor:
        """Accept tokenizer bits `(B, H'W', num_bits)` (patchified here) or AR bits `(B, N, k)`."""
        c = self.config
        if bits.dim() == 3 and tuple(bits.shape[1:]) == (c.num_ar_steps, c.bits_per_token):
            return bits
        if bits.dim() == 3 and tuple(bits.shape[1:]) == (c.latent_height * c.latent_width, c.num_bits):
            return patchify_bits(bits, (c.latent_height, c.latent_width), c.patch_size)
        raise ValueError(
            f"`bits` must have shape (batch, {c.latent_height * c.latent_width}, {c.num_bits}) (tokenizer bits) or "
            f"(batch, {c.num_ar_steps}, {c.bits_per_token}) (AR tokens), got {tuple(bits.shape)}."
        )

    def random_orders(self, batch: int, random_ratio: float, device, generator: torch.Generator | None = None):
        """Per sample: a uniformly random permutation with probability `random_ratio`, else raster (§3.7)."""
        N = self.config.num_ar_steps
        raster = torch.arange(N, device=device).expand(batch, N)
        if random_ratio <= 0:
            return raster.clone()
        perms = torch.rand(batch, N, device=device, generator=generator).argsort(-1)
        use_random = torch.rand(batch, device=device, generator=generator) < random_ratio
        return torch.where(use_random[:, None], perms, raster)

    def head_loss(
        self,
        conditions: torch.Tensor,
        targets: torch.Tensor,
        mask_ratio_noise: torch.Tensor | None = None,
        mask_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training loss of the configured head for conditions `(M, W_h)` and target bits `(M, k)`.

        MBM only: `mask_ratio_noise` `(M,)` (standard normal, `ζ = noise·std + mean`) and `mask_noise` `(M, k)`
        (uniform; the masked bits of a token are those with `mask_noise.argsort(-1) < n`, the authors' rule) make the
        loss deterministic; what is not given is drawn from `generator` (or the global RNG), `ζ` first.
        """
        c = self.config
        k = c.bits_per_token
        tokens = targets.shape[0]
        device = conditions.device
        if c.head_type == "linear":
            logits = self.head.id_logits(conditions)
            return F.cross_entropy(logits.float(), bits_to_ids(targets)), logits
        if c.head_type == "bitwise":
            states = torch.full_like(targets, MASK_BIT)
            logits = self.head(states, torch.ones(tokens, device=device), conditions)
            return F.cross_entropy(logits.float().reshape(-1, 2), targets.reshape(-1)), logits
        # MBM (§4.2): logit-normal mask ratio, >= 1 masked bit, CE weights 1.0 / 0.1, one global normalization
        if mask_ratio_noise is None:
            mask_ratio_noise = _draw(torch.randn, (tokens,), generator, device)
        zeta = mask_ratio_noise.to(device, torch.float32) * c.mask_ratio_std + c.mask_ratio_mean
        mask_ratio = (1 - torch.sigmoid(zeta)).clamp(1.0 / k, 1.0)
        num_masked = torch.round(k * mask_ratio).clamp(min=1)
        if mask_noise is None:
            mask_noise = _draw(torch.rand, (tokens, k), generator, device)
        masked = mask_noise.to(device).argsort(-1) < num_masked[:, None]  # the authors' rule: a random permutation
        states = torch.where(masked, torch.full_like(targets, MASK_BIT), targets)
        logits = self.head(states, mask_ratio, conditions)
        ce = F.cross_entropy(logits.float().reshape(-1, 2), targets.reshape(-1), reduction="none").view(tokens, k)
        weights = torch.where(masked, c.masked_bit_loss_weight, c.visible_bit_loss_weight)
        return (ce * weights).sum() / (weights.sum() + 1e-8), logits

    def _check_noise(self, mask_ratio_noise, mask_noise, batch: int) -> None:
        c = self.config
        expected = {
            "mask_ratio_noise": (batch, c.num_ar_steps),
            "mask_noise": (batch, c.num_ar_steps, c.bits_per_token),
        }
        for name, value in (("mask_ratio_noise", mask_ratio_noise), ("mask_noise", mask_noise)):
            if value is None:
                continue
            if c.head_type != "mbm":
                raise ValueError(f"`{name}` only applies to the 'mbm' head, got head_type={c.head_type!r}.")
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ValueError(f"`{name}` must be a floating-point tensor, got {value!r}.")
            if tuple(value.shape) != expected[name]:
                raise ValueError(
                    f"`{name}` must have shape {expected[name]} (batch, N[, k]) in generation order, "
                    f"got {tuple(value.shape)}."
                )

    def _orders_and_labels(self, orders, random_order_ratio, class_labels, class_dropout_prob, generator):
        """Generation orders (given, random per `random_order_ratio`, or raster), then label dropout in training
        mode; both draw from `generator` in this order."""
        batch, device = class_labels.shape[0], class_labels.device
        if orders is None and random_order_ratio:
            orders = self.random_orders(batch, random_order_ratio, device, generator=generator)
        if orders is None:
            orders = torch.arange(self.config.num_ar_steps, device=device).expand(batch, -1)
        if self.training:
            prob = self.config.class_dropout_prob if class_dropout_prob is None else class_dropout_prob
            drop = _draw(torch.rand, (batch,), generator, device) < prob
            class_labels = torch.where(drop, torch.full_like(class_labels, self.config.null_class_id), class_labels)
        return orders.to(device), class_labels

    @can_return_tuple
    def forward(
        self,
        bits: torch.Tensor,
        class_labels: torch.Tensor,
        orders: torch.Tensor | None = None,
        random_order_ratio: float | None = None,
        class_dropout_prob: float | None = None,
        output_hidden_states: bool | None = None,
        mask_ratio_noise: torch.Tensor | None = None,
        mask_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_attentions: bool | None = None,
    ) -> BARCausalImageModelingOutput | tuple:
        r"""Training / teacher-forced forward.

        Args:
            bits (`torch.LongTensor`): tokenizer bits `(B, H'W', num_bits)` in raster order, or AR bits `(B, N, k)`.
            class_labels (`torch.LongTensor` of shape `(B,)`): class ids (`num_classes` = null).
            orders (`torch.LongTensor` of shape `(B, N)`, *optional*): generation orders; default raster, or random
                per `random_order_ratio`.
            random_order_ratio (`float`, *optional*): probability of a random order per sample (see
                [`order_annealing_ratio`]); ignored when `orders` is given.
            class_dropout_prob (`float`, *optional*): label dropout in training mode; defaults to the config value.
            output_hidden_states (`bool`, *optional*): return the backbone's per-layer hidden states; defaults to
                `config.output_hidden_states`.
            mask_ratio_noise (`torch.FloatTensor` of shape `(B, N)`, *optional*): MBM head only: standard-normal draws
                giving each token's mask ratio `1 - sigmoid(noise·mask_ratio_std + mask_ratio_mean)`, in generation
                order. With `mask_noise` it makes the loss and `bit_logits` deterministic (and per-sample independent
                of the batch), like ViTMAE's `noise`.
            mask_noise (`torch.FloatTensor` of shape `(B, N, k)`, *optional*): MBM head only: uniform draws choosing
                the masked bits of each token (`mask_noise.argsort(-1) < n`, the authors' rule), in generation order.
            generator (`torch.Generator`, *optional*): source of every random draw not given explicitly (random
                orders, label dropout, mask ratios, masked bits), in this order; the global RNG when omitted.
            output_attentions (`bool`, *optional*): return the backbone's attention weights (eager attention only);
                defaults to `config.output_attentions`.
            return_dict (`bool`, *optional*): return a [`BARCausalImageModelingOutput`] (default) or a tuple;
                defaults to `config.return_dict`.
        """
        ar_bits = self.to_ar_bits(bits)
        check_bits(ar_bits)
        batch = ar_bits.shape[0]
        device = self.model.cls_token.device
        ar_bits = ar_bits.to(device)
        class_labels = class_labels.to(device)
        self._check_noise(mask_ratio_noise, mask_noise, batch)
        orders, class_labels = self._orders_and_labels(
            orders, random_order_ratio, class_labels, class_dropout_prob, generator
        )
        ordered = ar_bits.gather(1, orders[:, :, None].expand(-1, -1, ar_bits.shape[2]))  # generation order
        out = self.model(
            bits=ordered,
            class_labels=class_labels,
            orders=orders,
            output_hidden_states=self.config.output_hidden_states
            if output_hidden_states is None
            else output_hidden_states,
            output_attentions=self.config.output_attentions if output_attentions is None else output_attentions,
            return_dict=True,
        )
        conditions = out.conditions  # (B, N, W_h): conditions[:, i] predicts ordered[:, i]
        loss, logits = self.head_loss(
            conditions.reshape(-1, conditions.shape[-1]),
            ordered.reshape(-1, ordered.shape[-1]),
            mask_ratio_noise=None if mask_ratio_noise is None else mask_ratio_noise.reshape(-1),
            mask_noise=None if mask_noise is None else mask_noise.reshape(-1, mask_noise.shape[-1]),
            generator=generator,
        )
        return BARCausalImageModelingOutput(
            loss=loss,
            bit_logits=logits.reshape(batch, self.config.num_ar_steps, *logits.shape[1:]),
            conditions=conditions,
            orders=orders,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
