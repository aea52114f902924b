"""`BARConfig`: configuration of the BAR generator (backbone + Masked Bit Modeling head)."""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

__all__ = ["BARConfig", "BAR_PRESETS", "BAR_SAMPLING_DEFAULTS", "CLASS_ROW_OFFSET"]

#: Class ``c`` uses row ``c + 3`` of the authors' class table (offset = target_codebook_size + 1, a legacy of shared
#: token/class vocabularies); the null class is ``num_classes`` and therefore uses row ``num_classes + 3``.
CLASS_ROW_OFFSET = 3

_B = dict(hidden_size=768, num_hidden_layers=24, num_attention_heads=12, hidden_dropout=0.0)
_L = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, hidden_dropout=0.2)

#: The authors' five released generators (docs/method.md §3.1).
BAR_PRESETS: dict[str, dict] = {
    "bar-b-4": dict(**_B, latent_height=16, latent_width=16, num_bits=16, patch_size=4),
    "bar-b-2": dict(**_B, latent_height=16, latent_width=16, num_bits=16, patch_size=2),
    "bar-b": dict(**_B, latent_height=16, latent_width=16, num_bits=16, patch_size=1),
    "bar-l": dict(**_L, latent_height=16, latent_width=16, num_bits=16, patch_size=1),
    "bar-l-512": dict(**_L, latent_height=32, latent_width=32, num_bits=10, patch_size=1),
}

#: The authors' evaluation sampling settings (README, docs/method.md §4.5) — not the YAML defaults.
BAR_SAMPLING_DEFAULTS: dict[str, dict] = {
    "bar-b-4": dict(guidance_scale=9.6, temperature=1.4, tokens_allocation=[64, 64, 64, 64]),
    "bar-b-2": dict(guidance_scale=5.5, temperature=2.0, tokens_allocation=[16, 16, 16, 16]),
    "bar-b": dict(guidance_scale=5.0, temperature=2.5, tokens_allocation=[2, 2, 5, 7]),
    "bar-l": dict(guidance_scale=5.3, temperature=3.0, tokens_allocation=[2, 2, 5, 7]),
    "bar-l-512": dict(guidance_scale=4.2, temperature=2.8, tokens_allocation=[2, 2, 2, 4]),
}

_HEAD_TYPES = ("mbm", "bitwise", "linear")


def _swiglu_hidden(width: int) -> int:
    """The authors' SwiGLU hidden size: ``int(2/3 * int(4 * width))``."""
    return int(2 / 3 * int(4 * width))


#: `BARConfig` arguments that must be positive ints.
_POSITIVE_INT_ARGUMENTS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "latent_height",
    "latent_width",
    "num_bits",
    "patch_size",
    "num_classes",
    "num_class_tokens",
    "head_hidden_size",
    "head_num_layers",
    "head_fourier_size",
)


def _check_arguments(sizes: dict, head_type: str, dropouts: dict, mask_ratio_std: float) -> None:
    """`ValueError` naming the first `BARConfig` argument that breaks its rule."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    hidden_size, num_attention_heads = sizes["hidden_size"], sizes["num_attention_heads"]
    latent_height, latent_width, patch_size = sizes["latent_height"], sizes["latent_width"], sizes["patch_size"]
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"`hidden_size` ({hidden_size}) must be divisible by `num_attention_heads` ({num_attention_heads})."
        )
    head_dim = hidden_size // num_attention_heads
    if head_dim % 4:
        raise ValueError(
            f"head_dim = hidden_size / num_attention_heads must be divisible by 4 for 2-D RoPE (row and column "
            f"halves of interleaved pairs), got {head_dim}."
        )
    if num_attention_heads < 2:
        raise ValueError(
            "`num_attention_heads` must be >= 2: the second half of the query heads uses target-aware RoPE, "
            f"got {num_attention_heads}."
        )
    if latent_height % patch_size or latent_width % patch_size:
        raise ValueError(
            f"latent grid ({latent_height}, {latent_width}) must be divisible by `patch_size` {patch_size}."
        )
    if head_type not in _HEAD_TYPES:
        raise ValueError(f"`head_type` must be one of {_HEAD_TYPES}, got {head_type!r}.")
    for name, value in dropouts.items():
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
    if mask_ratio_std <= 0:
        raise ValueError(f"`mask_ratio_std` must be > 0, got {mask_ratio_std!r}.")


class BARConfig(PreTrainedConfig):
    r"""Configuration of [`BARForCausalImageModeling`].

    Sizes default to BAR-B (the authors' 415M model on 16×16×16-bit tokens). Use [`BARConfig.from_preset`] for the
    five released models.

    Args:
        hidden_size (`int`, *optional*, defaults to 768): backbone width `D`.
        num_hidden_layers (`int`, *optional*, defaults to 24): backbone depth.
        num_attention_heads (`int`, *optional*, defaults to 12): heads; `head_dim = D / heads` must be divisible by 4
            (2-D RoPE rotates interleaved pairs in a row half and a column half).
        intermediate_size (`int`, *optional*): SwiGLU hidden size; defaults to `int(2/3 * int(4 * D))`.
        hidden_dropout (`float`, *optional*, defaults to 0.0): dropout after the attention projection and inside
            SwiGLU (0.2 for BAR-L). The authors' `attn_drop` has no effect in their code and has no field here.
        rms_norm_eps (`float`, *optional*, defaults to 1e-6): epsilon of every RMSNorm (backbone, QK-norm, head).
        rope_theta (`float`, *optional*, defaults to 10000.0): 2-D RoPE base.
        latent_height (`int`, *optional*, defaults to 16): tokenizer latent grid height `H'`.
        latent_width (`int`, *optional*, defaults to 16): tokenizer latent grid width `W'`.
        num_bits (`int`, *optional*, defaults to 16): tokenizer bits per latent token.
        patch_size (`int`, *optional*, defaults to 1): `p`; each AR step generates a `p×p` block of latent tokens,
            so `N = H'W'/p²` AR steps of `k = num_bits·p²` bits.
        num_classes (`int`, *optional*, defaults to 1000): class ids are `0..num_classes-1`; the null
            (unconditional) class id is `num_classes`.
        num_class_tokens (`int`, *optional*, defaults to 32): repeated class tokens `R` after the cls token.
        class_dropout_prob (`float`, *optional*, defaults to 0.1): training probability of replacing the class by null.
        position_embedding_size (`int`, *optional*): rows of the absolute and target-aware position tables;
            defaults to `N + 128` as in the authors' code.
        slot_embedding_size (`int`, *optional*): rows of the per-slot AdaLN table; defaults to `N + 100`.
        head_type (`str`, *optional*, defaults to `"mbm"`): `"mbm"` (Masked Bit Modeling, the paper's head),
            `"bitwise"` (k independent binary classifiers, one shot) or `"linear"` (softmax over `2**k` ids).
        head_hidden_size (`int`, *optional*, defaults to 2048): head width `W_h`; also the condition size.
        head_num_layers (`int`, *optional*, defaults to 3): head AdaLN ResBlocks.
        head_intermediate_size (`int`, *optional*): head SwiGLU hidden size; defaults to `int(2/3 * int(4 * W_h))`.
        head_fourier_size (`int`, *optional*, defaults to 256): size of the fixed random Fourier vector of the
            mask-ratio embedding.
        linear_head_max_bits (`int`, *optional*, defaults to 20): `"linear"` heads refuse `k` above this.
        mask_ratio_mean (`float`, *optional*, defaults to 0.0): mean of the logit-normal mask-ratio distribution.
        mask_ratio_std (`float`, *optional*, defaults to 0.8): its standard deviation.
        masked_bit_loss_weight (`float`, *optional*, defaults to 1.0): CE weight of masked bits.
        visible_bit_loss_weight (`float`, *optional*, defaults to 0.1): CE weight of visible bits.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the truncated-normal init.
    """

    model_type = "bar"

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 12,
        intermediate_size: int | None = None,
        hidden_dropout: float = 0.0,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        latent_height: int = 16,
        latent_width: int = 16,
        num_bits: int = 16,
        patch_size: int = 1,
        num_classes: int = 1000,
        num_class_tokens: int = 32,
        class_dropout_prob: float = 0.1,
        position_embedding_size: int | None = None,
        slot_embedding_size: int | None = None,
        head_type: str = "mbm",
        head_hidden_size: int = 2048,
        head_num_layers: int = 3,
        head_intermediate_size: int | None = None,
        head_fourier_size: int = 256,
        linear_head_max_bits: int = 20,
        mask_ratio_mean: float = 0.0,
        mask_ratio_std: float = 0.8,
        masked_bit_loss_weight: float = 1.0,
        visible_bit_loss_weight: float = 0.1,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        arguments = locals()
        _check_arguments(
            sizes={name: arguments[name] for name in _POSITIVE_INT_ARGUMENTS},
            head_type=head_type,
            dropouts={"hidden_dropout": hidden_dropout, "class_dropout_prob": class_dropout_prob},
            mask_ratio_std=mask_ratio_std,
        )
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else _swiglu_hidden(hidden_size)
        self.hidden_dropout = hidden_dropout
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.latent_height = latent_height
        self.latent_width = latent_width
        self.num_bits = num_bits
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.num_class_tokens = num_class_tokens
        self.class_dropout_prob = class_dropout_prob
        num_ar = (latent_height // patch_size) * (latent_width // patch_size)
        self.position_embedding_size = position_embedding_size if position_embedding_size is not None else num_ar + 128
        self.slot_embedding_size = slot_embedding_size if slot_embedding_size is not None else num_ar + 100
        self.head_type = head_type
        self.head_hidden_size = head_hidden_size
        self.head_num_layers = head_num_layers
        self.head_intermediate_size = (
            head_intermediate_size if head_intermediate_size is not None else _swiglu_hidden(head_hidden_size)
        )
        self.head_fourier_size = head_fourier_size
        self.linear_head_max_bits = linear_head_max_bits
        self.mask_ratio_mean = mask_ratio_mean
        self.mask_ratio_std = mask_ratio_std
        self.masked_bit_loss_weight = masked_bit_loss_weight
        self.visible_bit_loss_weight = visible_bit_loss_weight
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

        self._check_derived_sizes()

    def _check_derived_sizes(self) -> None:
        """Sizes that depend on several arguments (and on transformers' own `__init__`)."""
        if self.position_embedding_size < self.prefix_length + self.num_ar_steps:
            raise ValueError(
                f"`position_embedding_size` must be >= prefix_length + N = {self.prefix_length + self.num_ar_steps}, "
                f"got {self.position_embedding_size}."
            )
        if self.slot_embedding_size < self.prefix_length + self.num_ar_steps:
            raise ValueError(
                f"`slot_embedding_size` must be >= prefix_length + N = {self.prefix_length + self.num_ar_steps}, "
                f"got {self.slot_embedding_size}."
            )
        if self.head_type == "linear" and self.bits_per_token > self.linear_head_max_bits:
            raise ValueError(
                f"`head_type='linear'` needs a softmax over 2**k ids; k = {self.bits_per_token} exceeds "
                f"`linear_head_max_bits` = {self.linear_head_max_bits}. Use the 'mbm' or 'bitwise' head, or raise the limit."
            )

    # ------------------------------------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_height(self) -> int:
        """AR grid height `H'/p`."""
        return self.latent_height // self.patch_size

    @property
    def grid_width(self) -> int:
        """AR grid width `W'/p`."""
        return self.latent_width // self.patch_size

    @property
    def num_ar_steps(self) -> int:
        """`N`: number of AR tokens (steps)."""
        return self.grid_height * self.grid_width

    @property
    def bits_per_token(self) -> int:
        """`k = num_bits * p**2`: bits of one AR token (the head's sequence length); the schedulers' `bits_per_token`."""
        return self.num_bits * self.patch_size**2

    @property
    def bits_per_step(self) -> int:
        """The 0.1.0 name of [`bits_per_token`], kept so code written against 0.1.0 keeps working."""
        return self.bits_per_token

    @property
    def prefix_length(self) -> int:
        """`P = 1 + R`: cls token plus repeated class tokens."""
        return 1 + self.num_class_tokens

    @property
    def null_class_id(self) -> int:
        """Class id of the unconditional (null) class: `num_classes`."""
        return self.num_classes

    @property
    def bit_embedding_size(self) -> int:
        """Per-bit embedding width of the backbone input: `ceil(D / k)`."""
        return math.ceil(self.hidden_size / self.bits_per_token)

    @property
    def head_bit_embedding_size(self) -> int:
        """Per-bit embedding width of the MBM head input: `ceil(W_h / k)`."""
        return math.ceil(self.head_hidden_size / self.bits_per_token)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> BARConfig:
        """One of the authors' models: `bar-b-4`, `bar-b-2`, `bar-b`, `bar-l`, `bar-l-512` (docs/method.md §3.1)."""
        if name not in BAR_PRESETS:
            raise ValueError(f"`name` must be one of {sorted(BAR_PRESETS)}, got {name!r}.")
        return cls(**{**BAR_PRESETS[name], **overrides})
