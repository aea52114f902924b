import pytest
import torch

from bar_hf import BARBitScheduler, BARLogProbBitScheduler
from bar_hf.bits import MASK_BIT
from bar_hf.schedulers.scheduling_bar import BARSchedulerMixin, derive_tokens_allocation


def run_token(scheduler, logits_fn, batch=3, generator=None):
    k = scheduler.config.bits_per_token
    states = torch.full((batch, k), MASK_BIT)
    history = [states]
    for t in scheduler.timesteps:
        states = scheduler.step(logits_fn(states, t), t, states, generator=generator).prev_sample
        history.append(states)
    return history


def random_logits(seed=0):
    gen = torch.Generator().manual_seed(seed)

    def fn(states, t):
        return torch.randn(states.shape[0], states.shape[1], 2, generator=gen) * 3

    return fn


@pytest.mark.parametrize("allocation", [[2, 2, 5, 7], [4, 4, 4, 4], [16], [1] * 16, [3, 13]])
def test_bits_revealed_per_step(allocation):
    scheduler = BARBitScheduler(bits_per_token=16, tokens_allocation=allocation, temperature=1.5)
    history = run_token(scheduler, random_logits(), generator=torch.Generator().manual_seed(0))
    cumulative = 0
    for before, after, count in zip(history, history[1:], allocation):
        cumulative += count
        assert ((after != MASK_BIT).sum(-1) == cumulative).all()
        fixed = before != MASK_BIT
        assert torch.equal(after[fixed], before[fixed])  # fixed bits never change
    assert set(history[-1].unique().tolist()) <= {0, 1}  # nothing masked at the end


def test_temperature_and_mask_ratio_schedule():
    scheduler = BARBitScheduler(bits_per_token=16, tokens_allocation=[2, 2, 5, 7], temperature=2.5)
    assert scheduler.temperatures == [2.5, 1.875, 1.25, 0.625]  # tau0 * (1 - s/S): never 0
    assert scheduler.mask_ratios == [1.0, 14 / 16, 12 / 16, 7 / 16]
    assert scheduler.mask_ratio(torch.tensor(2)) == 0.75


def test_zero_temperature_is_deterministic_argmax_and_logit_confidence():
    scheduler = BARBitScheduler(bits_per_token=6, tokens_allocation=[2, 4], temperature=0.0)
    logits = torch.tensor([[[0.0, 5.0], [1.0, 0.0], [0.0, 0.5], [3.0, 0.0], [0.0, 0.1], [0.2, 0.0]]])
    out = scheduler.step(logits, 0, torch.full((1, 6), MASK_BIT))
    assert out.pred_original_sample.tolist() == [[1, 0, 1, 0, 1, 0]]
    # the two most confident raw logits (5.0 and 3.0) are kept, the rest re-masked
    assert out.prev_sample.tolist() == [[1, 2, 2, 0, 2, 2]]
    a = run_token(scheduler, lambda s, t: logits.expand(s.shape[0], -1, -1), batch=2)[-1]
    assert torch.equal(a, torch.tensor([[1, 0, 1, 0, 1, 0]] * 2))


def test_logprob_variant_differs_in_confidence():
    logits = torch.tensor([[[0.0, 5.0], [4.0, 2.0]]])
    raw = BARBitScheduler(bits_per_token=2, tokens_allocation=[1, 1], temperature=0.0)
    logprob = BARLogProbBitScheduler.from_config(raw.config)
    assert raw.step(logits, 0, torch.full((1, 2), 2)).prev_sample.tolist() == [[1, 2]]  # 5.0 > 4.0
    # log-softmax: bit 0 -> log p = -0.0067; bit 1 -> log p = -0.127: bit 0 more confident
    assert logprob.step(logits, 0, torch.full((1, 2), 2)).prev_sample.tolist() == [[1, 2]]
    logits2 = torch.tensor([[[0.0, 1.0], [9.0, 0.0]]])
    assert raw.step(logits2, 0, torch.full((1, 2), 2)).prev_sample.tolist() == [[2, 0]]
    assert logprob.step(logits2, 0, torch.full((1, 2), 2)).prev_sample.tolist() == [[2, 0]]
    logits3 = torch.tensor([[[10.0, 12.0], [0.0, 8.0]]])
    assert raw.step(logits3, 0, torch.full((1, 2), 2)).prev_sample.tolist() == [[1, 2]]  # raw 12 > 8
    assert logprob.step(logits3, 0, torch.full((1, 2), 2)).prev_sample.tolist() == [[2, 1]]  # log p: -0.127 < -0.0003


def test_seeded_determinism_and_batch_invariance():
    scheduler = BARBitScheduler(bits_per_token=8, num_inference_steps=3, temperature=1.0)
    logits = torch.randn(4, 8, 2, generator=torch.Generator().manual_seed(1))

    def fn(states, t):
        return logits[: states.shape[0]]

    gens = lambda n: [torch.Generator().manual_seed(10 + i) for i in range(n)]  # noqa: E731
    a = run_token(scheduler, fn, batch=4, generator=gens(4))[-1]
    b = run_token(scheduler, fn, batch=4, generator=gens(4))[-1]
    assert torch.equal(a, b)
    c = run_token(scheduler, fn, batch=2, generator=gens(2))[-1]
    assert torch.equal(a[:2], c)
    d = run_token(scheduler, fn, batch=4, generator=torch.Generator().manual_seed(3))[-1]
    e = run_token(scheduler, fn, batch=4, generator=torch.Generator().manual_seed(3))[-1]
    assert torch.equal(d, e)


def test_high_temperature_samples_both_values():
    scheduler = BARBitScheduler(bits_per_token=4, tokens_allocation=[4], temperature=1.0)
    logits = torch.zeros(2000, 4, 2)
    bits = scheduler.step(logits, 0, torch.full((2000, 4), 2), generator=torch.Generator().manual_seed(0)).prev_sample
    assert 0.45 < bits.float().mean() < 0.55  # Gumbel-max on equal logits: fair coin


def test_derived_allocations():
    assert derive_tokens_allocation(4, 16, "uniform") == [4, 4, 4, 4]
    assert derive_tokens_allocation(4, 10, "uniform") == [2, 2, 3, 3]
    assert derive_tokens_allocation(4, 16, "cosine") == [1, 4, 5, 6]
    for k in (1, 5, 10, 16, 64):
        for steps in range(1, k + 1):
            for rule in ("uniform", "cosine"):
                alloc = derive_tokens_allocation(steps, k, rule)
                assert sum(alloc) == k and len(alloc) == steps and min(alloc) >= 1
                assert alloc == sorted(alloc)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tokens_allocation=[7, 2, 2, 5]), "non-decreasing"),
        (dict(tokens_allocation=[2, 2, 5, 6]), "sum to"),
        (dict(tokens_allocation=[0, 16]), "positive"),
        (dict(tokens_allocation=[]), "non-empty"),
        (dict(num_inference_steps=17), r"1\.\.k=16"),
        (dict(num_inference_steps=0), r"1\.\.k=16"),
        (dict(temperature=-1.0), "temperature"),
        (dict(num_inference_steps=3, tokens_allocation=[4, 4, 4, 4]), "disagrees"),
    ],
)
def test_invalid_set_timesteps(kwargs, match):
    scheduler = BARBitScheduler(bits_per_token=16)
    with pytest.raises(ValueError, match=match):
        scheduler.set_timesteps(**kwargs)


def test_invalid_config_and_step_inputs():
    with pytest.raises(ValueError, match="sum to"):
        BARBitScheduler(bits_per_token=16, tokens_allocation=[4, 4])
    with pytest.raises(ValueError, match="allocation_rule"):
        BARBitScheduler(bits_per_token=16, allocation_rule="exp")
    scheduler = BARBitScheduler(bits_per_token=4, num_inference_steps=2)
    with pytest.raises(ValueError, match="model_output"):
        scheduler.step(torch.zeros(1, 5, 2), 0, torch.full((1, 5), 2))
    with pytest.raises(ValueError, match="timestep"):
        scheduler.step(torch.zeros(1, 4, 2), 5, torch.full((1, 4), 2))
    with pytest.raises(ValueError, match="generator"):
        scheduler.step(torch.zeros(2, 4, 2), 0, torch.full((2, 4), 2), generator=[torch.Generator()])


def test_config_round_trip_and_swap(tmp_path):
    scheduler = BARBitScheduler(bits_per_token=16, tokens_allocation=[2, 2, 5, 7], temperature=2.5)
    scheduler.save_pretrained(tmp_path)
    loaded = BARBitScheduler.from_pretrained(tmp_path)
    assert loaded.tokens_allocation == [2, 2, 5, 7] and loaded.base_temperature == 2.5
    swapped = BARBitScheduler.from_config(loaded.config, tokens_allocation=[8, 8])
    assert swapped.tokens_allocation == [8, 8] and swapped.base_temperature == 2.5
    other = BARLogProbBitScheduler.from_config(loaded.config)
    assert isinstance(other, BARLogProbBitScheduler) and other.tokens_allocation == [2, 2, 5, 7]
    names = {c.__name__ for c in scheduler.compatibles}
    assert {"BARBitScheduler", "BARLogProbBitScheduler"} <= names

    class ThirdPartyScheduler(BARBitScheduler):  # a user's own variant becomes compatible automatically
        pass

    assert ThirdPartyScheduler in scheduler.compatibles
    assert issubclass(ThirdPartyScheduler, BARSchedulerMixin)


def test_return_dict_false_and_add_noise():
    scheduler = BARBitScheduler(bits_per_token=8, num_inference_steps=2)
    logits = torch.randn(2, 8, 2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = scheduler.step(logits, 0, torch.full((2, 8), 2), generator=gen())
    tup = scheduler.step(logits, 0, torch.full((2, 8), 2), generator=gen(), return_dict=False)
    assert torch.equal(out.prev_sample, tup[0]) and torch.equal(out.pred_original_sample, tup[1])
    bits = torch.randint(0, 2, (4, 8))
    noised = scheduler.add_noise(bits, torch.tensor([0.0, 0.5, 1.0, 0.3]), generator=gen())
    assert (noised == 2).sum(-1).tolist() == [1, 4, 8, 2]
    assert torch.equal(noised[noised != 2], bits[noised != 2])


def test_allocation_wins_and_config_stays_consistent():
    scheduler = BARBitScheduler(bits_per_token=16, tokens_allocation=[2, 2, 5, 7])
    assert scheduler.config.num_inference_steps == 4
    three = BARBitScheduler(bits_per_token=16, tokens_allocation=[4, 6, 6])
    assert three.config.num_inference_steps == 3 and three.tokens_allocation == [4, 6, 6]
    derived = BARBitScheduler.from_config(three.config, tokens_allocation=None, num_inference_steps=2)
    assert derived.tokens_allocation == [8, 8]
    with pytest.raises(ValueError, match=r"mask_ratio.*\[0, 1\]"):
        three.add_noise(torch.zeros(2, 16, dtype=torch.long), 1.5)
    assert (three.add_noise(torch.zeros(2, 16, dtype=torch.long), 0.5) == 2).sum(-1).tolist() == [8, 8]
