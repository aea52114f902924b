import numpy as np
import pytest
import torch

from bar_hf import (
    BARBitScheduler,
    BARConfig,
    BARForCausalImageModeling,
    BARLogProbBitScheduler,
    BARPipeline,
    BARVQModel,
)
from bar_hf.bits import patchify_bits
from bar_hf.pipelines.pipeline_bar import guidance_weight


def get_dummy_components(patch_size=1, num_bits=5):
    torch.manual_seed(0)
    vqvae = BARVQModel(
        sample_size=24,
        patch_size=4,
        num_bits=num_bits,
        encoder_hidden_size=24,
        encoder_num_layers=1,
        encoder_num_heads=3,
        encoder_intermediate_size=37,
        encoder_num_position_embeddings=16,
        decoder_hidden_size=20,
        decoder_num_layers=1,
        decoder_num_heads=2,
        decoder_intermediate_size=33,
    ).eval()
    torch.manual_seed(0)
    config = BARConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        latent_height=6,
        latent_width=6,
        num_bits=num_bits,
        patch_size=patch_size,
        num_classes=7,
        num_class_tokens=3,
        head_hidden_size=24,
        head_num_layers=1,
        head_fourier_size=8,
    )
    transformer = BARForCausalImageModeling(config).eval()
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "adaLN_modulation" in name:
                param.normal_(0, 0.3)
        # make classes (and so CFG) matter and logits large enough to compete with the Gumbel noise
        transformer.model.class_embed.weight.normal_(0, 1.0)
        transformer.head.output_embed.weight.normal_(0, 0.3)
    scheduler = BARBitScheduler(bits_per_token=config.bits_per_token, num_inference_steps=2, temperature=1.0)
    return dict(vqvae=vqvae, transformer=transformer, scheduler=scheduler)


def make_pipe(**kwargs):
    pipe = BARPipeline(
        **get_dummy_components(**kwargs), id2label={0: "zero, nought", 1: "one", 3: "three"}, guidance_scale=2.0
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def test_output_types(pipe):
    np_out = pipe([1, 3], generator=gens(2), output_type="np").images
    assert np_out.shape == (2, 24, 24, 3) and np_out.min() >= 0 and np_out.max() <= 1
    pt_out = pipe([1, 3], generator=gens(2), output_type="pt").images
    assert pt_out.shape == (2, 3, 24, 24)
    assert np.allclose(pt_out.permute(0, 2, 3, 1).numpy(), np_out, atol=1e-6)
    pil = pipe([1, 3], generator=gens(2)).images
    assert len(pil) == 2 and pil[0].size == (24, 24)
    latent = pipe([1, 3], generator=gens(2), output_type="latent").images
    assert latent.shape == (2, 36, 5) and latent.dtype == torch.int64
    assert set(latent.unique().tolist()) <= {0, 1}
    decoded = ((pipe.vqvae.decode_bits(latent).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(decoded, pt_out, atol=1e-6)
    tup = pipe([1, 3], generator=gens(2), output_type="latent", return_dict=False)
    assert isinstance(tup, tuple) and torch.equal(tup[0], latent)


def test_same_seed_same_images_and_batch_invariance(pipe):
    a = pipe([1, 3, 0], generator=gens(3), output_type="latent").images
    b = pipe([1, 3, 0], generator=gens(3), output_type="latent").images
    assert torch.equal(a, b)
    single = pipe([3], generator=gens(1, offset=1), output_type="latent").images
    assert torch.equal(single[0], a[1])  # image i only depends on generator i
    other = pipe([1, 3, 0], generator=gens(3, offset=100), output_type="latent").images
    assert not torch.equal(a, other)


def test_class_names_and_images_per_label(pipe):
    by_name = pipe(["one", "nought"], generator=gens(2), output_type="latent").images
    by_id = pipe([1, 0], generator=gens(2), output_type="latent").images
    assert torch.equal(by_name, by_id)
    assert pipe.get_label_ids("three") == [3]
    out = pipe([1, 3], num_images_per_label=2, generator=gens(4), output_type="latent").images
    assert out.shape[0] == 4
    ref = pipe([1, 1, 3, 3], generator=gens(4), output_type="latent").images
    assert torch.equal(out, ref)


def test_cfg_on_off_and_schedule(pipe):
    on = pipe([1, 3], guidance_scale=4.0, generator=gens(2), output_type="latent").images
    off = pipe([1, 3], guidance_scale=1.0, generator=gens(2), output_type="latent").images
    assert not torch.equal(on, off)
    const = pipe([1, 3], guidance_scale=4.0, guidance_schedule="constant", generator=gens(2), output_type="latent")
    assert not torch.equal(const.images, on)
    assert guidance_weight(5.0, 0, 256) == 1.0  # first token unguided
    assert guidance_weight(5.0, 255, 256) == pytest.approx(1 + 4 * 255 / 256)
    assert guidance_weight(5.0, 7, 256, "constant") == 5.0


def test_cfg_matches_manual_loop(pipe):
    """The pipeline's loop equals a hand-written docs/method.md §4.4 loop (full forward each step, no cache)."""
    config = pipe.transformer.config
    g, labels = 3.0, torch.tensor([1, 3])
    out = pipe([1, 3], guidance_scale=g, temperature=0.0, output_type="latent").images
    ids = torch.cat([labels, torch.full_like(labels, config.null_class_id)])
    bits = torch.empty(2, 0, 5, dtype=torch.long)
    scheduler = BARBitScheduler(bits_per_token=5, num_inference_steps=2, temperature=0.0)
    for i in range(config.num_ar_steps):
        z = pipe.transformer.compute_conditions(torch.cat([bits, bits]), ids).conditions[:, i]
        w = 1 + (g - 1) * i / config.num_ar_steps
        states = torch.full((2, 5), 2)
        for t in scheduler.timesteps:
            logits = pipe.transformer.head_logits(torch.cat([states, states]), scheduler.mask_ratio(t), z)
            cond, uncond = logits.chunk(2)
            states = scheduler.step(uncond + w * (cond - uncond), t, states).prev_sample
        bits = torch.cat([bits, states[:, None]], 1)
    assert torch.equal(out, bits)


def test_patchified_model_unpatchifies():
    pipe = make_pipe(patch_size=2)
    assert pipe.transformer.config.bits_per_token == 20 and pipe.scheduler.config.bits_per_token == 20
    calls = {}

    def grab(p, i, t, kwargs):
        calls["bits"] = kwargs["bits"]
        return kwargs

    latent = pipe([1], generator=gens(1), output_type="latent", callback_on_step_end=grab).images
    assert latent.shape == (1, 36, 5)
    assert torch.equal(patchify_bits(latent, (6, 6), 2), calls["bits"])


def test_scheduler_swap_and_sampling_settings(pipe):
    base = pipe([1], generator=gens(1), output_type="latent").images
    explicit = pipe([1], tokens_allocation=[2, 3], generator=gens(1), output_type="latent").images
    assert torch.equal(base, explicit)  # default = 2 uniform steps of 5 bits = [2, 3]
    one_shot = pipe([1], tokens_allocation=[5], generator=gens(1), output_type="latent").images
    assert one_shot.shape == base.shape
    original = pipe.scheduler
    try:
        pipe.scheduler = BARLogProbBitScheduler.from_config(pipe.scheduler.config)
        assert pipe.config.scheduler[1] == "BARLogProbBitScheduler"
        pipe([1], generator=gens(1), output_type="latent")
    finally:
        pipe.scheduler = original


def test_callbacks(pipe):
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, kwargs["bits"].shape[1], kwargs["conditions"].shape))
        if i == 0:
            kwargs["bits"] = torch.zeros_like(kwargs["bits"])
        return kwargs

    out = pipe(
        [1],
        generator=gens(1),
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["bits", "conditions"],
    ).images
    assert len(seen) == 36 and seen[0][1] == 1 and seen[-1][1] == 36
    assert seen[0][2] == (2, 24)  # cond + uncond conditions with CFG
    assert out[0, 0].sum() == 0  # the callback replaced token 0


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = BARPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.transformer) is BARForCausalImageModeling
    assert type(loaded.vqvae) is BARVQModel and type(loaded.scheduler) is BARBitScheduler
    assert loaded.id2label == {0: "zero, nought", 1: "one", 3: "three"}
    assert loaded.config.guidance_scale == 2.0
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    for name in ("transformer", "vqvae"):
        ref = getattr(pipe, name).state_dict()
        for key, value in getattr(loaded, name).state_dict().items():
            assert torch.equal(value, ref[key]), (name, key)
    a = pipe([1, "three"], generator=gens(2), output_type="latent").images
    b = loaded([1, "three"], generator=gens(2), output_type="latent").images
    assert torch.equal(a, b)
    # with bar_hf imported, diffusers' generic AutoModel resolves the components from model_index.json
    from diffusers import AutoModel

    assert type(AutoModel.from_pretrained(str(tmp_path), subfolder="vqvae")) is BARVQModel
    assert type(AutoModel.from_pretrained(str(tmp_path), subfolder="transformer")) is BARForCausalImageModeling


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="not a known class name"):
        pipe(["unicorn"], output_type="latent")
    with pytest.raises(ValueError, match=r"out of range.*\[0, 7\)"):
        pipe([7], output_type="latent")
    with pytest.raises(ValueError, match="one generator per image"):
        pipe([1, 3], generator=gens(3), output_type="latent")
    with pytest.raises(ValueError, match="output_type"):
        pipe([1], output_type="jpeg")
    with pytest.raises(ValueError, match="guidance_schedule"):
        pipe([1], guidance_schedule="cosine", output_type="latent")
    with pytest.raises(ValueError, match="tokens_allocation"):
        pipe([1], tokens_allocation=[3, 1], output_type="latent")
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        pipe([1], callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"])
    with pytest.raises(ValueError, match="num_images_per_label"):
        pipe([1], num_images_per_label=0)
    components = get_dummy_components()
    other = get_dummy_components(num_bits=6)
    with pytest.raises(ValueError, match="bits per token"):
        BARPipeline(vqvae=other["vqvae"], transformer=components["transformer"], scheduler=components["scheduler"])
    with pytest.raises(ValueError, match="bits_per_token"):
        BARPipeline(
            vqvae=components["vqvae"],
            transformer=components["transformer"],
            scheduler=BARBitScheduler(bits_per_token=4),
        )
    with pytest.raises(ValueError, match="id2label"):
        BARPipeline(**components, id2label={9: "nine"})


def test_interrupt_keeps_the_output_type(pipe):
    def stop(p, i, t, kwargs):
        if i == 4:
            p._interrupt = True
        return kwargs

    full = pipe([1], generator=gens(1), output_type="latent").images
    partial = pipe([1], generator=gens(1), output_type="latent", callback_on_step_end=stop).images
    assert partial.shape == full.shape  # same layout, MASK_BIT where nothing was generated
    done = patchify_bits(partial, (6, 6), 1)
    assert torch.equal(done[:, :5], patchify_bits(full, (6, 6), 1)[:, :5]) and (done[:, 5:] == 2).all()
    images = pipe([1], generator=gens(1), output_type="np", callback_on_step_end=stop).images
    assert images.shape == (1, 24, 24, 3)  # an image, decoded with the missing tokens as zero bits
    with torch.no_grad():
        expected = pipe.vqvae.decode_bits(partial.clamp(max=1)).sample
    np.testing.assert_allclose(images[0], ((expected[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), atol=1e-6)


def test_static_and_dynamic_cache_give_the_same_images(pipe):
    dynamic = pipe([1, 3], generator=gens(2), output_type="latent").images
    static = pipe([1, 3], generator=gens(2), output_type="latent", cache_implementation="static").images
    assert torch.equal(dynamic, static)
    with pytest.raises(ValueError, match="cache_implementation"):
        pipe([1], cache_implementation="paged")
