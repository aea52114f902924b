"""The sampling fast path (`bar_hf.pipelines.sampling`, used by `BARPipeline`) against an explicit reference computation:
the generic per-step API (`compute_conditions` with a `DynamicCache`, `head_logits` with the mask ratio) and a
sort-based scheduler step. float32 results must be bit-identical; compiled sampling must not recompile per AR step."""

import pytest
import torch
from test_pipeline_bar import gens, make_pipe
from transformers.cache_utils import DynamicCache

from bar_hf import BARBitScheduler
from bar_hf.bits import MASK_BIT
from bar_hf.pipelines.sampling import SamplingState
from bar_hf.schedulers.scheduling_bar import _gumbel


def _wake(pipe, seed=0):
    """Perturb every transformer weight (AdaLN-zero layers included) so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(pipe.transformer.named_parameters()):
            param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    return pipe


@torch.no_grad()
def reference_sample(pipe, labels, guidance_scale, temperature, generators):
    """The pipeline's loop written with the public per-step API (what the pipeline did before the fast path)."""
    model, config = pipe.transformer, pipe.transformer.config
    scheduler = pipe.scheduler
    scheduler.set_timesteps(temperature=temperature)
    cfg = guidance_scale > 1
    ids = torch.tensor(labels)
    if cfg:
        ids = torch.cat([ids, torch.full_like(ids, config.null_class_id)])
    cache = DynamicCache()
    z = model.compute_conditions(None, ids, cache=cache).conditions[:, -1]
    tokens = []
    for i in range(config.num_ar_steps):
        w = 1 + (guidance_scale - 1) * i / config.num_ar_steps
        states = torch.full((len(labels), config.bits_per_token), MASK_BIT)
        for t in scheduler.timesteps:
            ratio = torch.full((z.shape[0],), scheduler.mask_ratio(t))
            logits = model.head_logits(torch.cat([states, states]) if cfg else states, ratio, z).float()
            if cfg:
                cond, uncond = logits.chunk(2)
                logits = uncond + w * (cond - uncond)
            states = scheduler.step(logits, t, states, generator=generators).prev_sample
        tokens.append(states)
        if i < config.num_ar_steps - 1:
            step = states[:, None]
            z = model.compute_conditions(torch.cat([step, step]) if cfg else step, ids, cache=cache).conditions[:, -1]
    return torch.stack(tokens, 1)


@pytest.mark.parametrize("patch_size", [1, 2])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_fast_path_bits_equal_reference(patch_size, batch, guidance_scale, cache_implementation):
    pipe = _wake(make_pipe(patch_size=patch_size), seed=patch_size)
    labels = [(3 * j + 1) % 7 for j in range(batch)]
    for temperature in (0.0, 1.5):  # temperature > 0: the same seeded draws too
        expected = reference_sample(pipe, labels, guidance_scale, temperature, gens(batch, offset=7))
        got = pipe(
            labels,
            guidance_scale=guidance_scale,
            temperature=temperature,
            generator=gens(batch, offset=7),
            output_type="latent",
            cache_implementation=cache_implementation,
        ).images
        config = pipe.transformer.config
        from bar_hf.bits import patchify_bits

        got = patchify_bits(got, (config.latent_height, config.latent_width), config.patch_size)
        assert torch.equal(got, expected), (temperature, (got != expected).sum())


def test_precomputed_modulations_equal_per_step_ones():
    """The per-slot AdaLN block (one GEMM) gives the same conditions as computing AdaLN per step."""
    pipe = _wake(make_pipe())
    ids = torch.tensor([1, 2, 3, 4, 7, 7, 7, 7])
    bits = torch.randint(
        0, 2, (8, pipe.transformer.config.num_ar_steps, 5), generator=torch.Generator().manual_seed(0)
    )
    runs = []
    for exact in (None, False):  # None: decided by the exactness check; False: per step (the fallback)
        state = SamplingState(pipe.transformer, ids, static=False)
        state.exact_modulations = exact
        conditions = [state.prefill()] + [state.step(bits[:, i : i + 1]) for i in range(bits.shape[1] - 1)]
        runs.append(torch.stack(conditions))
    assert torch.equal(runs[0], runs[1])
    cache = DynamicCache()
    full = pipe.transformer.compute_conditions(bits, ids).conditions.transpose(0, 1)
    torch.testing.assert_close(runs[0], full, atol=1e-5, rtol=0)
    del cache


def _sort_step(scheduler, logits, t, sample, generator):
    """The scheduler step as first written: Gumbel noise at every temperature, full sort for the cutoff."""
    k, s = scheduler.config.bits_per_token, int(t)
    temperature = scheduler.temperatures[s]
    noise = _gumbel(tuple(logits.shape), generator, logits.device)
    sampled = (logits + temperature * noise).argmax(-1)
    confidence = logits.gather(-1, sampled[..., None]).squeeze(-1)
    fixed = sample != MASK_BIT
    sampled = torch.where(fixed, sample, sampled)
    if s == scheduler.num_inference_steps - 1:
        return sampled
    confidence = torch.where(fixed, torch.full_like(confidence, float("inf")), confidence)
    num_masked = (~fixed).sum(-1)
    keep = torch.minimum(torch.full_like(num_masked, k - scheduler.cumulative[s + 1]).clamp(min=1), num_masked - 1)
    keep = keep.clamp(min=0)
    noisy = confidence + temperature * _gumbel(tuple(sample.shape), generator, logits.device)
    cutoff = noisy.sort(-1).values.gather(-1, (keep - 1).clamp(min=0)[:, None])
    return torch.where((noisy <= cutoff) & (keep[:, None] > 0), torch.full_like(sampled, MASK_BIT), sampled)


@pytest.mark.parametrize("temperature", [0.0, 2.0])
def test_scheduler_step_equals_sort_reference(temperature):
    scheduler = BARBitScheduler(bits_per_token=12, tokens_allocation=[1, 2, 4, 5], temperature=temperature)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        states = torch.full((6, 12), MASK_BIT)
        states_ref = states.clone()
        seed = int(torch.randint(0, 10**6, (1,), generator=gen))
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for t in scheduler.timesteps:
            logits = torch.randn(6, 12, 2, generator=gen)
            logits[0] = 0.5  # ties
            states = scheduler.step(logits, t, states, generator=g1).prev_sample
            states_ref = _sort_step(scheduler, logits, t, states_ref, g2)
            assert torch.equal(states, states_ref)


def _counting_backend(counter):
    def backend(graph_module, example_inputs):
        counter.append(graph_module)
        return graph_module.forward

    return backend


def test_compiled_sampling_has_no_graph_breaks_or_recompiles():
    torch._dynamo.reset()
    pipe = _wake(make_pipe())
    eager = pipe([1, 3], guidance_scale=3.0, generator=gens(2), output_type="latent").images
    graphs = []
    pipe.enable_compile(backend=_counting_backend(graphs))  # fullgraph=True: a graph break would raise
    for _ in range(2):  # two generations of 16 AR steps x 2 head steps each
        compiled = pipe([1, 3], guidance_scale=3.0, generator=gens(2), output_type="latent").images
        assert torch.equal(compiled, eager)
    assert len(graphs) == 2, [g.code[:200] for g in graphs]  # one backbone-step graph, one head-step graph
    pipe.disable_compile()
    assert torch.equal(pipe([1, 3], guidance_scale=3.0, generator=gens(2), output_type="latent").images, eager)


def test_compile_falls_back_with_a_clear_message(caplog):
    torch._dynamo.reset()
    pipe = make_pipe()
    eager = pipe([1], generator=gens(1), output_type="latent").images

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler here")

    pipe.enable_compile(backend=broken_backend)
    import logging

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        got = pipe([1], generator=gens(1), output_type="latent").images
    diffusers_logging.disable_propagation()
    assert torch.equal(got, eager)
    assert "torch.compile is unavailable" in caplog.text and "sampling eagerly" in caplog.text


def test_bfloat16_sampling_keeps_the_quantizer_in_float32(tmp_path):
    pipe = make_pipe()
    pipe.save_pretrained(tmp_path)
    from bar_hf import BARPipeline

    bf16 = BARPipeline.from_pretrained(tmp_path, dtype=torch.bfloat16)
    bf16.set_progress_bar_config(disable=True)
    assert bf16.transformer.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.vqvae.quantize.parameters())
    images = bf16([1, 3], guidance_scale=2.0, generator=gens(2), output_type="pt").images
    assert images.shape[0] == 2 and torch.isfinite(images).all()
    latents = bf16([1, 3], guidance_scale=2.0, generator=gens(2), output_type="latent").images
    assert latents.dtype == torch.long and set(latents.unique().tolist()) <= {0, 1}
