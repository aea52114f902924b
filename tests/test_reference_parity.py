"""Parity of `bar_hf` with an independent spec-only reference of the authors' BAR (`tests/reference_bar.py`).

The reference reads the AUTHORS' state-dict layout, produced here by `bar_hf.conversion.convert.*_to_authors_state_dict`, and
shares no code with `bar_hf`. Tiny seeded models with every weight perturbed (AdaLN-zero layers included), float32.
"""

import math

import pytest
import torch
from reference_bar import (
    RefGenConfig,
    RefTokConfig,
    reference_conditions,
    reference_decode,
    reference_fsq_bits,
    reference_fsq_constants,
    reference_generate,
    reference_head_logits,
    reference_patchify,
    reference_rope_table,
    reference_unpatchify,
)

from bar_hf import BARBitQuantizer, BARBitScheduler, BARConfig, BARForCausalImageModeling, BARPipeline, BARVQModel
from bar_hf.bits import patchify_bits, unpatchify_bits
from bar_hf.conversion.convert import generator_to_authors_state_dict, tokenizer_to_authors_state_dict

ATOL = 1e-5
NUM_CLASSES = 7
ALLOCATION = {1: [1, 2, 2], 2: [2, 4, 6, 8]}  # k = 5 (p = 1) and k = 20 (p = 2); non-decreasing, sum k


def _perturb(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Add N(0, std²) to every parameter so zero-initialized AdaLN / gate paths matter too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            param.add_(torch.randn(param.shape, generator=gen) * std)


def _generator(patch_size: int) -> BARForCausalImageModeling:
    torch.manual_seed(100 + patch_size)
    config = BARConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        latent_height=4,
        latent_width=4,
        num_bits=5,
        patch_size=patch_size,
        num_classes=NUM_CLASSES,
        num_class_tokens=3,
        head_hidden_size=24,
        head_num_layers=2,
        head_fourier_size=8,
    )
    model = BARForCausalImageModeling(config).eval()
    _perturb(model, seed=200 + patch_size)
    return model


def _ref_config(config: BARConfig) -> RefGenConfig:
    return RefGenConfig(
        latent_height=config.latent_height,
        latent_width=config.latent_width,
        num_bits=config.num_bits,
        patch_size=config.patch_size,
        num_classes=config.num_classes,
        num_class_tokens=config.num_class_tokens,
    )


def _tokenizer() -> BARVQModel:
    torch.manual_seed(7)
    vq = BARVQModel(
        sample_size=16,
        patch_size=4,
        num_bits=5,
        encoder_hidden_size=16,
        encoder_num_layers=1,
        encoder_num_heads=2,
        encoder_intermediate_size=32,
        encoder_num_position_embeddings=16,
        decoder_hidden_size=16,
        decoder_num_layers=2,
        decoder_num_heads=2,
        decoder_intermediate_size=64,
    ).eval()
    _perturb(vq, seed=8)
    return vq


TOK_CFG = RefTokConfig(grid_height=4, grid_width=4, patch_size=4, num_heads=2)


@pytest.fixture(scope="module")
def generators():
    return {p: _generator(p) for p in (1, 2)}


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ---------------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("patch_size", [1, 2])
def test_patchify_and_rope_table(generators, patch_size):
    model = generators[patch_size]
    cfg = _ref_config(model.config)
    bits = torch.randint(0, 2, (3, 16, 5))
    ar = reference_patchify(bits, cfg)
    assert torch.equal(ar, patchify_bits(bits, (4, 4), patch_size))
    assert torch.equal(reference_unpatchify(ar, cfg), bits)
    assert torch.equal(unpatchify_bits(ar, (4, 4), patch_size), bits)
    # the RoPE tables the authors store per block (§8.2), as bar_hf regenerates them
    sd = generator_to_authors_state_dict(model)
    cos, sin = reference_rope_table(cfg, head_dim=8)
    assert _max_diff(cos, sd["blocks.0.attn.rope.freqs_cos"]) < 1e-6
    assert _max_diff(sin, sd["blocks.0.attn.rope.freqs_sin"]) < 1e-6


# ---------------------------------------------------------------------------------------------------- backbone
@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("order_kind", ["raster", "random"])
def test_conditions_match_reference(generators, patch_size, order_kind):
    model = generators[patch_size]
    config = model.config
    cfg = _ref_config(config)
    sd = generator_to_authors_state_dict(model)
    N = config.num_ar_steps
    gen = torch.Generator().manual_seed(11 + patch_size)
    bits = torch.randint(0, 2, (4, 16, 5), generator=gen)
    labels = torch.tensor([0, NUM_CLASSES, 3, 6])  # includes the null class
    if order_kind == "raster":
        orders = torch.arange(N)[None].repeat(4, 1)
    else:
        orders = torch.stack([torch.randperm(N, generator=gen) for _ in range(4)])

    with torch.no_grad():
        expected = reference_conditions(sd, cfg, bits, labels, orders)
        ar = patchify_bits(bits, (4, 4), patch_size)
        ordered = ar.gather(1, orders[:, :, None].expand(-1, -1, ar.shape[2]))
        got = model.compute_conditions(ordered, labels, orders=orders).conditions
        got_forward = model(bits, labels, orders=orders).conditions
    assert expected.shape == (4, N, config.head_hidden_size)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_forward, expected, atol=ATOL, rtol=0)
    # real and null rows must differ (the class path is live)
    assert _max_diff(expected[0], expected[1]) > 1e-3


# ---------------------------------------------------------------------------------------------------- head
@pytest.mark.parametrize("patch_size", [1, 2])
def test_head_logits_match_reference(generators, patch_size):
    model = generators[patch_size]
    config = model.config
    cfg = _ref_config(config)
    sd = generator_to_authors_state_dict(model)
    k = config.bits_per_step
    gen = torch.Generator().manual_seed(21)
    states = torch.randint(0, 3, (6, k), generator=gen)
    states[0] = 2  # fully masked, as every first head step at inference
    ratio = torch.rand(6, generator=gen)
    ratio[0] = 1.0
    z = torch.randn(6, config.head_hidden_size, generator=gen)
    with torch.no_grad():
        got = model.head_logits(states, ratio, z)
        expected = reference_head_logits(sd, cfg, states, ratio, z)
        got_scalar = model.head_logits(states, 0.375, z)
        expected_scalar = reference_head_logits(sd, cfg, states, 0.375, z)
    assert got.shape == expected.shape == (6, k, 2)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_scalar, expected_scalar, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------- generation
def _pipeline(model: BARForCausalImageModeling, vq: BARVQModel) -> BARPipeline:
    k = model.config.bits_per_step
    scheduler = BARBitScheduler(
        bits_per_token=k, tokens_allocation=ALLOCATION[model.config.patch_size], temperature=0.0
    )
    pipe = BARPipeline(vqvae=vq, transformer=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_pipeline_matches_reference_generation(generators, tokenizer, patch_size, guidance_scale):
    model = generators[patch_size]
    cfg = _ref_config(model.config)
    sd = generator_to_authors_state_dict(model)
    pipe = _pipeline(model, tokenizer)
    labels = [1, 6]
    stats: dict = {}

    # record what the (KV-cached) pipeline computes: per-AR-step conditions and the guided logits of every head step
    seen_conditions, seen_logits = [], []
    step = pipe.scheduler.step

    def recording_step(model_output, *args, **kwargs):
        seen_logits.append(model_output.detach().clone())
        return step(model_output, *args, **kwargs)

    def on_step_end(_pipe, _i, _t, kwargs):
        seen_conditions.append(kwargs["conditions"].detach().clone())
        return {}

    pipe.scheduler.step = recording_step
    with torch.no_grad():
        expected = reference_generate(sd, cfg, labels, guidance_scale, ALLOCATION[patch_size], stats)
        got = pipe(
            labels,
            guidance_scale=guidance_scale,
            output_type="latent",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["conditions"],
        ).images
    pipe.scheduler.step = step
    # every discrete decision had a margin well above the ~1e-6 float noise, so exact equality is meaningful
    assert stats["min_margin"] > 1e-5, stats
    assert got.shape == expected.shape == (2, 16, 5)
    assert torch.equal(got.cpu(), expected)
    torch.testing.assert_close(torch.stack(seen_conditions), torch.stack(stats["conditions"]), atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.stack(seen_logits), torch.stack(stats["logits"]), atol=ATOL, rtol=0)
    if guidance_scale > 1:
        with torch.no_grad():
            images = pipe(labels, guidance_scale=guidance_scale, output_type="pt").images
            reference_images = (
                reference_decode(tokenizer_to_authors_state_dict(tokenizer), TOK_CFG, expected) + 1
            ) / 2
        torch.testing.assert_close(images, reference_images.clamp(0, 1), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------- tokenizer
def test_fsq_threshold_matches_reference():
    _, _, shift = reference_fsq_constants()
    threshold = -shift
    # the spec's statement: bit 1 iff u >= -s (float32 s = atanh(0.5 / 0.5005) ≈ 3.800685)
    assert abs(float(shift) - 3.800701) < 5e-5
    steps = [threshold]
    below = above = threshold
    for _ in range(8):
        below = torch.nextafter(below, torch.tensor(-math.inf))
        above = torch.nextafter(above, torch.tensor(math.inf))
        steps += [below, above]
    gen = torch.Generator().manual_seed(31)
    u = torch.cat(
        [
            torch.stack(steps).reshape(-1),
            threshold + (torch.rand(500, generator=gen) - 0.5) * 2e-4,
            torch.randn(500, generator=gen) * 6,
            torch.tensor([0.0, -0.0, 10.0, -10.0, 1e4, -1e4, 3.8, -3.8]),
        ]
    ).reshape(-1, 5)
    expected = reference_fsq_bits(u)
    assert torch.equal(expected, (u >= threshold).long())
    _, got = BARBitQuantizer.quantize_latents(u)
    assert torch.equal(got, expected)


def test_encode_bits_match_reference(tokenizer):
    vq = _tokenizer()  # a private copy: the in_proj is moved to put channel values around the FSQ threshold
    _, _, shift = reference_fsq_constants()
    with torch.no_grad():
        vq.quantize.in_proj.weight.mul_(2e-4)
        vq.quantize.in_proj.bias.fill_(-float(shift))
    captured = {}
    handle = vq.quantize.in_proj.register_forward_pre_hook(lambda _, args: captured.setdefault("z", args[0]))
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(41)) * 2 - 1
    try:
        with torch.no_grad():
            encoded = vq.encode(images)
    finally:
        handle.remove()
    sd = tokenizer_to_authors_state_dict(vq)
    u_ref = captured["z"] @ sd["quantize.in_proj.weight"].t() + sd["quantize.in_proj.bias"]
    torch.testing.assert_close(encoded.latents, u_ref, atol=1e-6, rtol=0)
    expected = reference_fsq_bits(encoded.latents)
    assert torch.equal(encoded.bits, expected)
    assert 0.1 < expected.float().mean() < 0.9  # both sides of the threshold are exercised
    assert float((encoded.latents + shift).abs().max()) < 1e-3


def test_decode_matches_reference(tokenizer):
    sd = tokenizer_to_authors_state_dict(tokenizer)
    gen = torch.Generator().manual_seed(51)
    bits = torch.randint(0, 2, (3, 16, 5), generator=gen)
    u = torch.randn(3, 16, 5, generator=gen) * 4 - 3.8
    with torch.no_grad():
        expected = reference_decode(sd, TOK_CFG, bits)
        got = tokenizer.decode_bits(bits).sample
        got_flat = tokenizer.decode_bits(bits.reshape(3, -1)).sample  # the authors' flat (B, L·t) layout
        got_latents = tokenizer.decode(u).sample
        expected_latents = reference_decode(sd, TOK_CFG, reference_fsq_bits(u))
    assert got.shape == expected.shape == (3, 3, 16, 16)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_flat, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(got_latents, expected_latents, atol=ATOL, rtol=0)
