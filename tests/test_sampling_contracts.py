"""Contracts that earlier tests could not tell apart from plausible mistakes: an explicit `tokens_allocation` that
differs from the default one is the one sampled with; the MBM loss weights masked and visible bits differently;
bit-level editing tells the head the true fraction of masked bits."""

import torch
import torch.nn.functional as F
from test_pipeline_bar import gens, make_pipe

from bar_hf import BARConfig, BARForCausalImageModeling, BARInpaintPipeline
from bar_hf.bits import MASK_BIT
from bar_hf.pipelines.sampling import SamplingState


def test_explicit_tokens_allocation_is_the_one_sampled_with():
    pipe = make_pipe()
    default = list(pipe.scheduler.tokens_allocation)
    explicit = [1, 4]  # k = 5; the default for 2 steps is [2, 3]
    assert explicit != default
    seen = []

    def record(p, i, t, kwargs):
        seen.append(list(p.scheduler.tokens_allocation))
        return kwargs

    out = pipe([1, 3], tokens_allocation=explicit, temperature=0.0, output_type="latent", callback_on_step_end=record)
    assert seen and all(allocation == explicit for allocation in seen)
    scheduler = pipe.scheduler
    pipe.scheduler = type(scheduler).from_config(scheduler.config, tokens_allocation=explicit)  # the same, by config
    assert torch.equal(pipe([1, 3], temperature=0.0, output_type="latent").images, out.images)
    pipe.scheduler = type(scheduler).from_config(scheduler.config, tokens_allocation=default)
    assert not torch.equal(pipe([1, 3], temperature=0.0, output_type="latent").images, out.images)


def test_mbm_loss_weights_masked_and_visible_bits_as_configured():
    torch.manual_seed(0)
    config = BARConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, latent_height=2, latent_width=2, num_bits=6,
        num_classes=3, num_class_tokens=1, head_hidden_size=16, head_num_layers=1, head_fourier_size=8,
        masked_bit_loss_weight=1.0, visible_bit_loss_weight=0.1,
    )  # fmt: skip
    model = BARForCausalImageModeling(config).eval()
    with torch.no_grad():
        for param in model.head.parameters():
            param.normal_(0, 0.5)  # logits far from uniform
    gen = torch.Generator().manual_seed(1)
    tokens, k = 12, config.bits_per_token
    conditions = torch.randn(tokens, config.head_hidden_size, generator=gen)
    targets = torch.randint(0, 2, (tokens, k), generator=gen)
    ratio_noise, mask_noise = torch.zeros(tokens), torch.rand(tokens, k, generator=gen)  # ratio noise 0: about half
    with torch.no_grad():
        loss, logits = model.head_loss(conditions, targets, mask_ratio_noise=ratio_noise, mask_noise=mask_noise)
    zeta = ratio_noise * config.mask_ratio_std + config.mask_ratio_mean
    num_masked = torch.round(k * (1 - torch.sigmoid(zeta)).clamp(1.0 / k, 1.0)).clamp(min=1)
    masked = mask_noise.argsort(-1) < num_masked[:, None]
    assert masked.any() and (~masked).any()
    ce = F.cross_entropy(logits.float().reshape(-1, 2), targets.reshape(-1), reduction="none").view(tokens, k)
    assert abs(ce[masked].mean() - ce[~masked].mean()) > 0.05  # the weights matter for this batch
    weights = torch.where(masked, 1.0, 0.1)
    torch.testing.assert_close(loss, (ce * weights).sum() / weights.sum(), rtol=1e-5, atol=1e-6)
    assert abs(float(loss) - float(ce.mean())) > 1e-3  # not the unweighted mean


def test_keep_bits_tells_the_head_the_true_masked_fraction(monkeypatch):
    pipe = make_pipe()
    edit = BARInpaintPipeline.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    k = pipe.transformer.config.bits_per_token
    ratios, states_seen = [], []
    original = SamplingState.head_logits

    def spy(self, states, step_index, mask_ratio, conditions, weight, guided):
        ratios.append(torch.as_tensor(mask_ratio).clone())
        states_seen.append((states == MASK_BIT).float().mean(-1))
        return original(self, states, step_index, mask_ratio, conditions, weight, guided)

    monkeypatch.setattr(SamplingState, "head_logits", spy)
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(24, 24)
    mask[8:16, 8:16] = 1
    edit(image, mask, 1, keep_bits=2, generator=gens(1), output_type="latent")
    assert ratios
    first = ratios[0].reshape(-1)
    assert torch.allclose(first, torch.full_like(first, (k - 2) / k))  # 2 of k bits kept: not the schedule's 1.0
    for ratio, truth in zip(ratios, states_seen):
        assert torch.allclose(ratio.reshape(-1).float(), truth)
