"""`BARAdaptiveBitScheduler`: confidence-adaptive unmasking with early stop of the head loop."""

import json

import pytest
import torch

from bar_hf import BARAdaptiveBitScheduler, BARBitScheduler, BARLogProbBitScheduler, BARPipeline
from bar_hf.bits import MASK_BIT


def run_token(scheduler, logits_fn, batch, generator, early_stop=True):
    """Drive the scheduler like `BARPipeline._sample_token`; returns final states and the per-step history."""
    k = scheduler.config.bits_per_token
    states = torch.full((batch, k), MASK_BIT, dtype=torch.long)
    history = [states]
    for t in scheduler.timesteps:
        states = scheduler.step(logits_fn(states, int(t)), t, states, generator=generator).prev_sample
        history.append(states)
        if early_stop and scheduler.is_finished(states):
            break
    return states, history


def random_logits(seed, scale=3.0):
    def fn(states, t):
        g = torch.Generator().manual_seed(seed * 100 + t)
        return torch.randn(states.shape[0], states.shape[1], 2, generator=g) * scale

    return fn


@pytest.mark.parametrize("threshold,min_bits,max_bits,steps", [(0.9, 1, None, 8), (0.7, 2, 3, 4), (0.99, 1, 1, 8)])
def test_reveals_all_never_remasks_and_respects_threshold_and_caps(threshold, min_bits, max_bits, steps):
    k = 8
    scheduler = BARAdaptiveBitScheduler(
        bits_per_token=k,
        num_inference_steps=steps,
        temperature=1.0,
        confidence_threshold=threshold,
        min_bits_per_step=min_bits,
        max_bits_per_step=max_bits,
    )
    for seed in range(5):
        logits_fn = random_logits(seed)
        final, history = run_token(scheduler, logits_fn, 6, torch.Generator().manual_seed(seed), early_stop=False)
        assert (final != MASK_BIT).all() and set(final.unique().tolist()) <= {0, 1}
        for s, (before, after) in enumerate(zip(history, history[1:])):
            fixed = before != MASK_BIT
            assert torch.equal(after[fixed], before[fixed])  # revealed bits never change nor get re-masked
            revealed = (after != MASK_BIT).sum(-1) - fixed.sum(-1)
            masked = (~fixed).sum(-1)
            if s == steps - 1:
                assert torch.equal(revealed, masked)  # everything on the last step
                continue
            probs = logits_fn(before, s).softmax(-1).amax(-1)
            confident = ((probs >= threshold) & ~fixed).sum(-1)
            floor = torch.clamp(scheduler.cumulative[s + 1] - fixed.sum(-1), min=min_bits).minimum(masked)
            cap = floor.clamp(min=max_bits) if max_bits is not None else masked
            assert torch.equal(revealed, confident.clamp(min=0).maximum(floor).minimum(cap).minimum(masked))
            # the revealed bits are the most confident masked ones
            new = (after != MASK_BIT) & ~fixed
            for row in range(before.shape[0]):
                if new[row].any() and (~fixed[row] & ~new[row]).any():
                    assert probs[row][new[row]].min() >= probs[row][~fixed[row] & ~new[row]].max()


def test_threshold_controls_head_steps():
    k = 10
    calls = []
    for threshold in (0.6, 0.9, 0.999):
        scheduler = BARAdaptiveBitScheduler(bits_per_token=k, num_inference_steps=k, confidence_threshold=threshold)
        _, history = run_token(scheduler, random_logits(1), 1, torch.Generator().manual_seed(0))
        calls.append(len(history) - 1)
    assert calls[0] < calls[-1] <= k and calls == sorted(calls)


def test_deterministic_at_temperature_zero():
    scheduler = BARAdaptiveBitScheduler(bits_per_token=8, num_inference_steps=8, temperature=0.0)
    a, _ = run_token(scheduler, random_logits(3), 4, torch.Generator().manual_seed(0))
    b, _ = run_token(scheduler, random_logits(3), 4, torch.Generator().manual_seed(123))
    assert torch.equal(a, b)
    # the first step fixes the argmax of every revealed bit
    logits = random_logits(3)(a, 0)
    first = scheduler.step(logits, 0, torch.full((4, 8), MASK_BIT)).prev_sample
    shown = first != MASK_BIT
    assert shown.any() and torch.equal(first[shown], logits.argmax(-1)[shown])


def test_batch_invariant_with_per_row_generators_and_early_stop():
    """A row's bits do not depend on when the other rows finish (all noise is drawn at step 0)."""
    k = 8
    scheduler = BARAdaptiveBitScheduler(bits_per_token=k, num_inference_steps=k, temperature=1.5)
    easy = torch.tensor([[8.0, -8.0]]).expand(k, 2)  # every bit confident → done in one step

    def logits_fn(states, t):
        g = torch.Generator().manual_seed(50 + t)
        out = torch.randn(states.shape[0], k, 2, generator=g) * 0.3  # not confident → one bit per step
        out[0] = easy
        return out

    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    tokens = [run_token(scheduler, logits_fn, 3, gens)[0] for _ in range(3)]  # three tokens in a row
    alone_gen = [torch.Generator().manual_seed(0)]
    alone = [run_token(scheduler, lambda s, t: easy[None].expand(1, k, 2), 1, alone_gen) for _ in range(3)]
    assert len(alone[0][1]) == 2  # alone, the easy row stops after one head step ...
    for token, (single, _) in zip(tokens, alone):
        assert torch.equal(token[0], single[0])  # ... and its bits equal those drawn in the slower batch


def test_config_round_trip_and_swaps(tmp_path):
    scheduler = BARAdaptiveBitScheduler(
        bits_per_token=10, num_inference_steps=10, temperature=1.8, confidence_threshold=0.95, max_bits_per_step=4
    )
    scheduler.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert stored["_class_name"] == "BARAdaptiveBitScheduler" and stored["confidence_threshold"] == 0.95
    loaded = BARAdaptiveBitScheduler.from_pretrained(tmp_path)
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(scheduler.config)
    fixed = BARBitScheduler.from_config(loaded.config)  # adaptive → fixed keeps the shared keys
    assert fixed.config.bits_per_token == 10 and fixed.tokens_allocation == [1] * 10 and fixed.base_temperature == 1.8
    back = BARAdaptiveBitScheduler.from_config(BARLogProbBitScheduler(bits_per_token=10, temperature=2.0).config)
    assert back.config.confidence_threshold == 0.9 and back.tokens_allocation == [2, 2, 3, 3]
    assert BARAdaptiveBitScheduler in BARBitScheduler(bits_per_token=4).compatibles
    assert BARAdaptiveBitScheduler.supports_early_stop and not BARBitScheduler.supports_early_stop


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"confidence_threshold": 0.0}, "confidence_threshold"),
        ({"confidence_threshold": 1.5}, "confidence_threshold"),
        ({"confidence_threshold": True}, "confidence_threshold"),
        ({"min_bits_per_step": 0}, "min_bits_per_step"),
        ({"max_bits_per_step": 0}, "max_bits_per_step"),
        ({"min_bits_per_step": 3, "max_bits_per_step": 2}, "max_bits_per_step"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BARAdaptiveBitScheduler(bits_per_token=8, **kwargs)


def test_step_without_step_zero_is_an_error():
    scheduler = BARAdaptiveBitScheduler(bits_per_token=4, num_inference_steps=4)
    with pytest.raises(ValueError, match="timestep 0"):
        scheduler.step(torch.zeros(2, 4, 2), 1, torch.full((2, 4), MASK_BIT))


# ------------------------------------------------------------------------------------------------ pipeline level
@pytest.fixture(scope="module")
def pipe():
    from test_pipeline_bar import make_pipe

    return make_pipe()


def count_head_calls(pipe):
    """Record the mask ratio of every head call (rows `[cond; uncond]` under CFG) the pipeline's sampler makes."""
    from bar_hf.pipelines.sampling import SamplingState

    calls = []
    original = SamplingState.head_logits

    def wrapped(self, states, step_index, mask_ratio, conditions, weight, guided):
        if isinstance(mask_ratio, torch.Tensor):
            ratio = torch.cat([mask_ratio, mask_ratio]) if guided else mask_ratio
        else:
            ratio = torch.full((conditions.shape[0],), mask_ratio)
        calls.append(ratio.detach().clone())
        return original(self, states, step_index, mask_ratio, conditions, weight, guided)

    SamplingState.head_logits = wrapped
    return calls, lambda: setattr(SamplingState, "head_logits", original)


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_pipeline_batch_invariance_and_early_stop(pipe, guidance_scale):
    original = pipe.scheduler
    k = pipe.transformer.config.bits_per_token
    try:
        pipe.scheduler = BARAdaptiveBitScheduler.from_config(
            original.config, num_inference_steps=k, confidence_threshold=0.7
        )
        calls, restore = count_head_calls(pipe)
        try:
            batch = pipe([1, 3, 0], generator=gens(3), guidance_scale=guidance_scale, output_type="latent").images
        finally:
            restore()
        num_tokens = pipe.transformer.config.num_ar_steps
        assert num_tokens <= len(calls) < num_tokens * k  # early stop saved head calls
        assert all(ratio.shape == (3 * (2 if guidance_scale > 1 else 1),) for ratio in calls)
        assert any(len(set(ratio.tolist())) > 1 for ratio in calls)  # each row's own masked fraction
        for i, label in enumerate([1, 3, 0]):
            single = pipe([label], generator=gens(1, offset=i), guidance_scale=guidance_scale, output_type="latent")
            assert torch.equal(single.images[0], batch[i])
        again = pipe([1, 3, 0], generator=gens(3), guidance_scale=guidance_scale, output_type="latent").images
        assert torch.equal(again, batch)
    finally:
        pipe.scheduler = original


def test_pipeline_fixed_schedulers_run_every_head_step(pipe):
    calls, restore = count_head_calls(pipe)
    try:
        pipe([1], generator=gens(1), output_type="latent")
    finally:
        restore()
    assert len(calls) == pipe.transformer.config.num_ar_steps * pipe.scheduler.num_inference_steps


def test_pipeline_temperature_zero_is_deterministic(pipe):
    original = pipe.scheduler
    try:
        pipe.scheduler = BARAdaptiveBitScheduler.from_config(original.config, temperature=0.0)
        a = pipe([1, 3], generator=gens(2), output_type="latent").images
        b = pipe([1, 3], generator=gens(2, offset=7), output_type="latent").images
        assert torch.equal(a, b)
    finally:
        pipe.scheduler = original


def test_pipeline_saves_and_loads_adaptive_scheduler(pipe, tmp_path):
    original = pipe.scheduler
    try:
        pipe.scheduler = BARAdaptiveBitScheduler.from_config(original.config, confidence_threshold=0.8)
        pipe.save_pretrained(tmp_path)
        loaded = BARPipeline.from_pretrained(tmp_path)
        assert isinstance(loaded.scheduler, BARAdaptiveBitScheduler)
        assert loaded.scheduler.config.confidence_threshold == 0.8
    finally:
        pipe.scheduler = original
