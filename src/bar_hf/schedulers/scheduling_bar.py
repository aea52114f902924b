"""Bit-unmasking schedulers: which bits of one AR token to reveal at each head step (docs/method.md §4.3)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

from ..bits import MASK_BIT

__all__ = [
    "BARAdaptiveBitScheduler",
    "BARBitScheduler",
    "BARLogProbBitScheduler",
    "BARBitSchedulerOutput",
    "BARSchedulerMixin",
    "derive_tokens_allocation",
    "validate_tokens_allocation",
]

_RULES = ("uniform", "cosine")


@dataclass
class BARBitSchedulerOutput(BaseOutput):
    """Output of a bit scheduler step.

    Args:
        prev_sample (`torch.LongTensor` of shape `(batch, k)`): new bit states (0, 1, or 2 = still masked).
        pred_original_sample (`torch.LongTensor` of shape `(batch, k)`): every bit as sampled at this step (fixed bits
            keep their value); equals `prev_sample` after the last step.
    """

    prev_sample: torch.LongTensor
    pred_original_sample: torch.LongTensor


def validate_tokens_allocation(tokens_allocation, bits_per_token: int) -> list[int]:
    """Check an allocation: positive ints, non-decreasing, summing to `bits_per_token` (the authors' rule)."""
    if isinstance(tokens_allocation, (np.ndarray, torch.Tensor)) and tokens_allocation.ndim == 1:
        tokens_allocation = tokens_allocation.tolist()  # numpy / torch integer vectors are accepted
    if not isinstance(tokens_allocation, (list, tuple)) or len(tokens_allocation) == 0:
        raise ValueError(f"`tokens_allocation` must be a non-empty list of ints, got {tokens_allocation!r}.")
    values = []
    for value in tokens_allocation:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`tokens_allocation` entries must be positive ints, got {list(tokens_allocation)}.")
        values.append(int(value))
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"`tokens_allocation` must be non-decreasing, got {values}.")
    if sum(values) != bits_per_token:
        raise ValueError(
            f"`tokens_allocation` must sum to the bits per token k={bits_per_token}, got {values} (sum {sum(values)})."
        )
    return values


def derive_tokens_allocation(num_inference_steps: int, bits_per_token: int, rule: str = "uniform") -> list[int]:
    """A non-decreasing allocation of `bits_per_token` bits over `num_inference_steps` head steps.

    * `"uniform"`: `k // S` bits per step, the remainder added one bit each to the last steps
      (16 bits / 4 steps → `[4, 4, 4, 4]`; 10 / 4 → `[2, 2, 3, 3]`).
    * `"cosine"`: MaskGIT's cosine schedule — the fraction still masked after step `s` is `cos(π/2 · s/S)`; the
      per-step increments are rounded by largest remainder, every step gets at least one bit, then sorted
      ascending (16 / 4 → `[1, 4, 5, 6]`).
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral):
        raise ValueError(f"`num_inference_steps` must be an int, got {num_inference_steps!r}.")
    num_inference_steps = int(num_inference_steps)
    if not 1 <= num_inference_steps <= bits_per_token:
        raise ValueError(
            f"`num_inference_steps` must be in 1..k={bits_per_token} (each step reveals >= 1 bit), "
            f"got {num_inference_steps}."
        )
    if rule not in _RULES:
        raise ValueError(f"`allocation_rule` must be one of {_RULES}, got {rule!r}.")
    S, k = num_inference_steps, bits_per_token
    if rule == "uniform":
        base, extra = divmod(k, S)
        return [base + (1 if s >= S - extra else 0) for s in range(S)]
    real = [k * (math.cos(math.pi / 2 * s / S) - math.cos(math.pi / 2 * (s + 1) / S)) for s in range(S)]
    alloc = [math.floor(r) for r in real]
    by_remainder = sorted(range(S), key=lambda s: (real[s] - alloc[s], s), reverse=True)
    for s in by_remainder[: k - sum(alloc)]:
        alloc[s] += 1
    while min(alloc) == 0:
        alloc[alloc.index(max(alloc))] -= 1
        alloc[alloc.index(0)] += 1
    return sorted(alloc)


def _scalar(value):
    """numpy / torch scalars (and one-element tensors / arrays) → Python numbers; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (np.generic, np.ndarray)) and value.size == 1:
        return value.item()
    return value


def check_bit_states(sample, model_output: torch.Tensor) -> None:
    """`sample` must be an integer `(batch, k)` tensor of bit states in {0, 1, MASK_BIT} matching `model_output`."""
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"`sample` must be a torch.LongTensor of bit states, got {type(sample).__name__}.")
    if sample.shape != model_output.shape[:2]:
        raise ValueError(
            f"`sample` must have shape {tuple(model_output.shape[:2])} (batch, k), got {tuple(sample.shape)}."
        )
    if sample.is_floating_point() or sample.is_complex() or sample.dtype == torch.bool:
        raise TypeError(f"`sample` must hold integer bit states (0, 1, {MASK_BIT}), got dtype {sample.dtype}.")
    valid = (sample == 0) | (sample == 1) | (sample == MASK_BIT)
    if sample.numel() and not bool(valid.all()):  # one device sync per head step
        bad = sample[~valid].unique()[:5].tolist()
        raise ValueError(f"`sample` bit states must be 0, 1 or {MASK_BIT} (MASK_BIT), got values {bad}.")


def _uniform(shape: tuple[int, ...], generator, device: torch.device) -> torch.Tensor:
    """U(0, 1) noise; a list of generators draws one row per generator (batch-invariant seeding)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"`generator` list has {len(generator)} entries but the batch has {shape[0]} rows.")
        if not all(isinstance(g, torch.Generator) for g in generator):
            raise TypeError(f"`generator` list entries must be `torch.Generator`s, got {generator!r}.")
        if not generator:
            return torch.empty(shape, device=device)
        rows = [torch.rand(shape[1:], generator=g, device=g.device) for g in generator]
        return torch.stack(rows).to(device)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a `torch.Generator`, a list of them or None, got {generator!r}.")
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _gumbel(shape: tuple[int, ...], generator, device: torch.device) -> torch.Tensor:
    """`-log(-log(u))` with both logs clamped at 1e-20, as in the authors' sampler."""
    u = _uniform(shape, generator, device)
    return -torch.log((-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20))


class BARSchedulerMixin(SchedulerMixin, ConfigMixin):
    """Base of bar_hf bit schedulers. `compatibles` resolves every bit scheduler class, including third-party
    subclasses, so `OtherScheduler.from_config(pipe.scheduler.config)` works without warnings."""

    config_name = "scheduler_config.json"
    order = 1
    has_compatibles = True
    _compatibles: list[str] = []

    @classmethod
    def _get_compatibles(cls):
        found, stack = {}, [BARSchedulerMixin]
        while stack:
            klass = stack.pop()
            stack.extend(klass.__subclasses__())
            if klass is not BARSchedulerMixin:
                found[klass.__name__] = klass
        return list(found.values())

    # early-stop hooks used by `BARPipeline`; fixed schedules keep these defaults (no extra work, no device sync)
    supports_early_stop = False

    def head_mask_ratio(self, timestep: int | torch.Tensor, sample: torch.LongTensor) -> torch.Tensor:
        """Mask ratio fed to the MBM head for each row of `sample` `(batch, k)` at head step `timestep`: by default
        the schedule's `mask_ratio(timestep)` for every row."""
        return torch.full((sample.shape[0],), self.mask_ratio(timestep), device=sample.device)

    def is_finished(self, sample: torch.LongTensor) -> bool:
        """Whether the head loop may stop before the last timestep because every bit of every row is revealed.
        Always `False` unless `supports_early_stop` (then it may read one value back from the device)."""
        return False


class BARBitScheduler(BARSchedulerMixin):
    r"""The authors' per-token iterative unmasking (docs/method.md §4.3).

    At head step `s` of `S` the temperature is `T_s = τ0·(1 − s/S)`; every masked bit is sampled by Gumbel-max at
    `T_s`; its confidence is the raw (guided) logit of the sampled value plus fresh Gumbel noise at `T_s`; all but
    `k − C_{s+1}` bits are kept and the least confident are re-masked. Fixed bits never change. `temperature=0`
    is fully deterministic (argmax bits, confidence = logits).

    Args:
        bits_per_token (`int`, *optional*, defaults to 16): `k`, bits generated per AR token (the head's sequence
            length; `num_bits·p²` for patch size `p`).
        num_inference_steps (`int`, *optional*, defaults to 4): head steps `S` when no allocation is given.
        tokens_allocation (`list[int]`, *optional*): bits revealed per step, e.g. the authors' `[2, 2, 5, 7]`;
            positive, non-decreasing, summing to `k`. Takes precedence over `num_inference_steps` (which is then
            stored as the allocation's length); to derive an allocation from a step count with `from_config`, pass
            `tokens_allocation=None` too.
        temperature (`float`, *optional*, defaults to 1.0): base temperature `τ0` (`randomize_temperature`).
        allocation_rule (`str`, *optional*, defaults to `"uniform"`): how an allocation is derived from a step count
            (see [`derive_tokens_allocation`]).
    """

    _compatibles = ["BARBitScheduler", "BARLogProbBitScheduler", "BARAdaptiveBitScheduler"]

    @register_to_config
    def __init__(
        self,
        bits_per_token: int = 16,
        num_inference_steps: int = 4,
        tokens_allocation: list[int] | None = None,
        temperature: float = 1.0,
        allocation_rule: str = "uniform",
    ):
        self._init_schedule(bits_per_token, num_inference_steps, tokens_allocation, temperature)

    def _init_schedule(self, bits_per_token: int, num_inference_steps, tokens_allocation, temperature) -> None:
        bits_per_token = _scalar(bits_per_token)
        if isinstance(bits_per_token, bool) or not isinstance(bits_per_token, numbers.Integral) or bits_per_token < 1:
            raise ValueError(f"`bits_per_token` must be a positive int, got {bits_per_token!r}.")
        self.register_to_config(bits_per_token=int(bits_per_token))
        rule = self.config.allocation_rule
        if not isinstance(rule, str) or rule not in _RULES:
            raise ValueError(f"`allocation_rule` must be one of {_RULES}, got {rule!r}.")
        steps = _scalar(num_inference_steps)
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
            raise ValueError(f"`num_inference_steps` must be an int, got {num_inference_steps!r}.")
        if tokens_allocation is not None:
            # the allocation wins over `num_inference_steps`; keep the stored config consistent with it
            allocation = validate_tokens_allocation(tokens_allocation, bits_per_token)
            self.register_to_config(num_inference_steps=len(allocation), tokens_allocation=allocation)
        else:
            self.register_to_config(num_inference_steps=int(steps))  # JSON-serialisable config
        if isinstance(temperature, (np.generic, torch.Tensor)) and np.ndim(temperature) == 0:
            self.register_to_config(temperature=temperature.item())
        self.set_timesteps()

    # ------------------------------------------------------------------------------------------------ schedule
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        tokens_allocation: list[int] | None = None,
        temperature: float | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        """Choose the head schedule for the next tokens.

        Args:
            num_inference_steps (`int`, *optional*): number of head steps `S` (1..k); the allocation is derived with
                `allocation_rule`.
            tokens_allocation (`list[int]`, *optional*): explicit allocation (overrides `num_inference_steps`; they
                must agree if both are given).
            temperature (`float`, *optional*): base temperature `τ0 >= 0`; defaults to the config value.
            device: device of `timesteps`.
        """
        k = self.config.bits_per_token
        if tokens_allocation is not None:
            allocation = validate_tokens_allocation(tokens_allocation, k)
            if num_inference_steps is not None and num_inference_steps != len(allocation):
                raise ValueError(
                    f"`num_inference_steps` ({num_inference_steps}) disagrees with `tokens_allocation` {allocation} "
                    f"({len(allocation)} steps); pass one of them."
                )
        elif num_inference_steps is not None:
            allocation = derive_tokens_allocation(num_inference_steps, k, self.config.allocation_rule)
        elif self.config.tokens_allocation is not None:
            allocation = validate_tokens_allocation(list(self.config.tokens_allocation), k)
        else:
            allocation = derive_tokens_allocation(self.config.num_inference_steps, k, self.config.allocation_rule)
        temperature = self.config.temperature if temperature is None else temperature
        if isinstance(temperature, (np.generic, torch.Tensor)) and np.ndim(temperature) == 0:
            temperature = temperature.item()  # numpy / torch scalars are accepted
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
            raise ValueError(f"`temperature` must be a number >= 0, got {temperature!r}.")
        if not math.isfinite(temperature):
            raise ValueError(f"`temperature` must be finite, got {temperature!r}.")

        steps = len(allocation)
        self.tokens_allocation = allocation
        self.num_inference_steps = steps
        self.base_temperature = float(temperature)
        self.cumulative = [sum(allocation[:s]) for s in range(steps + 1)]  # C_0 .. C_S
        self.temperatures = [self.base_temperature * (1 - s / steps) for s in range(steps)]
        self.mask_ratios = [1 - self.cumulative[s] / k for s in range(steps)]
        self.timesteps = torch.arange(steps, device=device)

    def mask_ratio(self, timestep: int | torch.Tensor) -> float:
        """Fraction of bits still masked at the start of head step `timestep` (fed to the MBM head)."""
        return self.mask_ratios[self._step_index(timestep)]

    def _step_index(self, timestep: int | torch.Tensor) -> int:
        """`timestep` (an int, numpy / torch integer scalar or one-element tensor, or an integral float) → head step."""
        value = _scalar(timestep)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
            raise ValueError(f"`timestep` must be an integer head step index, got {timestep!r}.")
        if not float(value).is_integer():
            raise ValueError(f"`timestep` must be an integral head step index, got {value!r} (it is never rounded).")
        index = int(value)
        if not 0 <= index < self.num_inference_steps:
            raise ValueError(f"`timestep` must be in 0..{self.num_inference_steps - 1}, got {index}.")
        return index

    # ------------------------------------------------------------------------------------------------ step
    def confidence(self, logits: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """Confidence of each sampled bit: the raw (guided) logit of the sampled value, as the authors."""
        return logits.gather(-1, sampled[..., None]).squeeze(-1)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> BARBitSchedulerOutput | tuple:
        """One head step.

        Args:
            model_output (`torch.Tensor` of shape `(batch, k, 2)`): (guided) bit logits from the head.
            timestep (`int`): head step index `s` (iterate over `scheduler.timesteps`).
            sample (`torch.LongTensor` of shape `(batch, k)`): current bit states (2 = masked).
            generator (`torch.Generator` or list of them, *optional*): source of all randomness; a list gives one
                generator per row (batch-invariant results).
        """
        k = self.config.bits_per_token
        if model_output.dim() != 3 or tuple(model_output.shape[1:]) != (k, 2):
            raise ValueError(f"`model_output` must have shape (batch, {k}, 2), got {tuple(model_output.shape)}.")
        check_bit_states(sample, model_output)
        s = self._step_index(timestep)
        temperature = self.temperatures[s]
        batch, device = sample.shape[0], model_output.device
        logits = model_output.float()
        sample = sample.to(device)

        # temperature 0: `logits + 0 · noise == logits`, so no noise is drawn (the generator is left untouched)
        noisy_logits = logits + temperature * _gumbel((batch, k, 2), generator, device) if temperature else logits
        sampled = noisy_logits.argmax(-1)
        confidence = self.confidence(logits, sampled)
        fixed = sample != MASK_BIT
        sampled = torch.where(fixed, sample, sampled)
        if s == self.num_inference_steps - 1:
            prev = sampled
        else:
            confidence = torch.where(fixed, torch.full_like(confidence, float("inf")), confidence)
            num_masked = (~fixed).sum(-1)
            keep_masked = torch.full_like(num_masked, k - self.cumulative[s + 1])
            keep_masked = torch.minimum(keep_masked.clamp(min=1), num_masked - 1).clamp(min=0)
            noisy = confidence + temperature * _gumbel((batch, k), generator, device) if temperature else confidence
            # the `keep_masked`-th smallest value; keep_masked <= max(1, k - C_{s+1}), so a partial sort suffices
            smallest = noisy.topk(max(1, k - self.cumulative[s + 1]), dim=-1, largest=False).values
            cutoff = smallest.gather(-1, (keep_masked - 1).clamp(min=0)[:, None])
            remask = (noisy <= cutoff) & (keep_masked[:, None] > 0)
            prev = torch.where(remask, torch.full_like(sampled, MASK_BIT), sampled)
        if not return_dict:
            return (prev, sampled)
        return BARBitSchedulerOutput(prev_sample=prev, pred_original_sample=sampled)

    # ------------------------------------------------------------------------------------------------ training
    def add_noise(
        self,
        original_samples: torch.LongTensor,
        mask_ratio: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.LongTensor:
        """Mask `max(1, round(k·r))` uniformly chosen bits per row (the MBM training corruption, §4.2).

        The masked bits are those with `rand(batch, k).argsort(-1) < n` (the authors' rule), so a seeded generator
        masks the same bits as their code and as [`BARForCausalImageModeling.head_loss`] given the same noise.
        """
        k = self.config.bits_per_token
        if original_samples.dim() != 2 or original_samples.shape[1] != k:
            raise ValueError(f"`original_samples` must have shape (batch, {k}), got {tuple(original_samples.shape)}.")
        mask_ratio = torch.as_tensor(mask_ratio, dtype=torch.float32)
        if not ((mask_ratio >= 0) & (mask_ratio <= 1)).all():
            raise ValueError(f"`mask_ratio` must be in [0, 1], got {mask_ratio.tolist()}.")
        if mask_ratio.dim() > 1 or mask_ratio.numel() not in (1, original_samples.shape[0]):
            raise ValueError(
                f"`mask_ratio` must be a scalar or one value per row ({original_samples.shape[0]}), got shape "
                f"{tuple(mask_ratio.shape)}."
            )
        mask_ratio = mask_ratio.reshape(-1).expand(original_samples.shape[0])
        ranks = _uniform(tuple(original_samples.shape), generator, original_samples.device).argsort(-1)
        num_masked = torch.round(k * mask_ratio.to(original_samples.device)).clamp(min=1)
        return torch.where(ranks < num_masked[:, None], torch.full_like(original_samples, MASK_BIT), original_samples)

    def __len__(self) -> int:
        return self.config.bits_per_token


class BARLogProbBitScheduler(BARBitScheduler):
    """Variant: confidence is the log-probability (log-softmax of the guided logits) of the sampled value, as in
    MaskGIT, instead of the raw logit. Same config keys, swappable with `from_config`."""

    def confidence(self, logits: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        return logits.log_softmax(-1).gather(-1, sampled[..., None]).squeeze(-1)


class BARAdaptiveBitScheduler(BARBitScheduler):
    r"""Confidence-adaptive unmasking: each token reveals, at every head step, all still-masked bits whose
    probability is high enough, so easy tokens finish in fewer head calls (not in the paper; a bar_hf option).

    The schedule (`num_inference_steps` / `tokens_allocation` / `allocation_rule`, as in [`BARBitScheduler`]) gives
    the **maximum** number of head steps `S` and a floor: after step `s` at least `C_{s+1}` bits are revealed (the
    fixed allocation), so every bit is revealed by the last step. Use `num_inference_steps=k` for the widest range
    (a floor of one bit per step). At head step `s` (temperature `T_s = τ0·(1 − s/S)` as in the fixed schedulers):

    1. every masked bit is sampled by Gumbel-max at `T_s` from the (guided) logits;
    2. its confidence is `max_v softmax(ℓ)[v]` (the guided probability of the more likely value, temperature 1);
    3. the row reveals its `n` most confident masked bits, `n` = number of masked bits with confidence
       `>= confidence_threshold`, raised to the floor `max(min_bits_per_step, C_{s+1} − revealed)` and lowered to
       `max_bits_per_step` (never below the floor); the last step reveals everything. Ties keep bit order.

    Revealed bits never change. All Gumbel noise of a token (`S` steps) is drawn at step 0, one block per row
    generator, so a row's bits do not depend on how many head steps the batch runs (`BARPipeline` stops the head
    loop once [`~BARAdaptiveBitScheduler.is_finished`] — one device-to-host read per head step). The MBM head is
    fed each row's actual masked fraction ([`~BARAdaptiveBitScheduler.head_mask_ratio`]). `temperature=0` is
    deterministic.

    Args:
        bits_per_token, num_inference_steps, tokens_allocation, temperature, allocation_rule: as in
            [`BARBitScheduler`] (the allocation is the floor described above).
        confidence_threshold (`float`, *optional*, defaults to 0.9): reveal masked bits whose guided probability is
            at least this (in (0, 1]; a binary bit's confidence is always >= 0.5, so <= 0.5 reveals everything at
            step 0).
        min_bits_per_step (`int`, *optional*, defaults to 1): reveal at least this many bits per step (>= 1).
        max_bits_per_step (`int`, *optional*): reveal at most this many bits per step (before the last step), unless
            the floor needs more; `None` means no cap.
    """

    supports_early_stop = True

    @register_to_config
    def __init__(
        self,
        bits_per_token: int = 16,
        num_inference_steps: int = 4,
        tokens_allocation: list[int] | None = None,
        temperature: float = 1.0,
        allocation_rule: str = "uniform",
        confidence_threshold: float = 0.9,
        min_bits_per_step: int = 1,
        max_bits_per_step: int | None = None,
    ):
        confidence_threshold, min_bits_per_step, max_bits_per_step = (
            _scalar(v) for v in (confidence_threshold, min_bits_per_step, max_bits_per_step)
        )  # numpy / torch scalars of any width are accepted alike
        if isinstance(confidence_threshold, bool) or not isinstance(confidence_threshold, numbers.Real):
            raise ValueError(f"`confidence_threshold` must be a number in (0, 1], got {confidence_threshold!r}.")
        if not 0 < confidence_threshold <= 1:
            raise ValueError(f"`confidence_threshold` must be in (0, 1], got {confidence_threshold!r}.")
        for name, value in (("min_bits_per_step", min_bits_per_step), ("max_bits_per_step", max_bits_per_step)):
            if value is None and name == "max_bits_per_step":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        k = _scalar(bits_per_token)
        if isinstance(k, numbers.Integral) and not isinstance(k, bool) and min_bits_per_step > k:
            raise ValueError(
                f"`min_bits_per_step` ({min_bits_per_step}) must be <= `bits_per_token` ({k}): a token has only {k} bits."
            )
        if max_bits_per_step is not None and max_bits_per_step < min_bits_per_step:
            raise ValueError(
                f"`max_bits_per_step` ({max_bits_per_step}) must be >= `min_bits_per_step` ({min_bits_per_step})."
            )
        self.register_to_config(
            confidence_threshold=float(confidence_threshold),
            min_bits_per_step=int(min_bits_per_step),
            max_bits_per_step=None if max_bits_per_step is None else int(max_bits_per_step),
        )
        self._noise = None
        self._last_step = None
        # not `super().__init__`: it would re-register the config
        self._init_schedule(bits_per_token, num_inference_steps, tokens_allocation, temperature)

    def head_mask_ratio(self, timestep: int | torch.Tensor, sample: torch.LongTensor) -> torch.Tensor:
        """Each row's actual fraction of still-masked bits (rows finish at different steps)."""
        self._step_index(timestep)
        return (sample == MASK_BIT).float().mean(-1)

    def is_finished(self, sample: torch.LongTensor) -> bool:
        """`True` when no bit of `sample` is masked (one device-to-host read); free after the last step."""
        if self._last_step == self.num_inference_steps - 1:
            return True
        return not bool((sample == MASK_BIT).any())

    def confidence(self, logits: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
        """Guided probability of the more likely value of each bit (independent of the sampled value)."""
        return logits.softmax(-1).amax(-1)

    def _bits_to_reveal(self, s: int, confidence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """How many masked bits each row reveals at step `s` (all on the last step)."""
        num_masked = masked.sum(-1)
        if s == self.num_inference_steps - 1:
            return num_masked
        k, config = self.config.bits_per_token, self.config
        confident = (masked & (confidence >= config.confidence_threshold)).sum(-1)
        floor = torch.clamp(self.cumulative[s + 1] - (k - num_masked), min=config.min_bits_per_step)
        count = torch.maximum(confident, floor)
        if config.max_bits_per_step is not None:
            count = torch.minimum(count, floor.clamp(min=config.max_bits_per_step))
        return torch.minimum(count, num_masked)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> BARBitSchedulerOutput | tuple:
        """One head step (arguments as [`BARBitScheduler.step`]). Step 0 draws the token's noise for all `S` steps;
        later steps must follow on the same batch."""
        k = self.config.bits_per_token
        if model_output.dim() != 3 or tuple(model_output.shape[1:]) != (k, 2):
            raise ValueError(f"`model_output` must have shape (batch, {k}, 2), got {tuple(model_output.shape)}.")
        check_bit_states(sample, model_output)
        s = self._step_index(timestep)
        batch, device = sample.shape[0], model_output.device
        if s == 0:  # the whole token's noise at once: draws per row do not depend on when the loop stops
            self._noise = _gumbel((batch, self.num_inference_steps, k, 2), generator, device)
        elif self._noise is None or self._noise.shape[0] != batch or self._last_step != s - 1:
            raise ValueError(
                f"`step` got timestep {s} without the preceding steps of this token (start each token at timestep 0)."
            )
        self._last_step = s
        logits = model_output.float()
        sample = sample.to(device)
        masked = sample == MASK_BIT
        sampled = (logits + self.temperatures[s] * self._noise[:, s]).argmax(-1)
        sampled = torch.where(masked, sampled, sample)
        confidence = torch.where(masked, self.confidence(logits, sampled), torch.full_like(logits[..., 0], -1.0))
        count = self._bits_to_reveal(s, confidence, masked)
        rank = torch.sort(confidence, dim=-1, descending=True, stable=True).indices.argsort(-1)
        reveal = masked & (rank < count[:, None])
        prev = torch.where(reveal, sampled, sample)
        if not return_dict:
            return (prev, sampled)
        return BARBitSchedulerOutput(prev_sample=prev, pred_original_sample=sampled)
