"""diffusers-equivalent generic checks (tests/diffusers_common.py) run against BAR's diffusers classes, plus the
BAR-specific layerwise-casting and callback-`latents` checks they motivated."""

from __future__ import annotations

import pytest
import torch
from diffusers_common import ModelTesterMixin, PipelineTesterMixin, SchedulerCommonTest
from test_pipeline_bar import gens, get_dummy_components
from test_vq_model_bar import TINY as TINY_VQ

from bar_hf import (
    BARBitScheduler,
    BARForCausalImageModeling,
    BARLogProbBitScheduler,
    BARPipeline,
    BARVQModel,
    enable_layerwise_casting,
)
from bar_hf.bits import MASK_BIT, patchify_bits

#: every bit scheduler class the generic scheduler checks run for; add a new scheduler class here (one line)
SCHEDULER_CLASSES = [BARBitScheduler, BARLogProbBitScheduler]


# ---------------------------------------------------------------------------------------------------- pipeline
class TestBARPipelineConformance(PipelineTesterMixin):
    pipeline_class = BARPipeline
    batch_arg = "class_labels"
    images_per_item_arg = "num_images_per_label"
    config_overrides = {
        "id2label": {0: "zero, nought", 1: "one"},
        "guidance_scale": 2.5,
        "guidance_schedule": "constant",
    }

    def get_dummy_components(self):
        return get_dummy_components()

    def get_dummy_inputs(self, seed=0, batch=2):
        labels = [1, 3, 0, 5, 2, 6][:batch]
        return dict(
            class_labels=labels,
            generator=gens(batch, offset=seed),
            guidance_scale=2.0,
            output_type="np",
        )


def test_pipeline_layerwise_casting_stays_close_to_float32():
    """float8 storage / bf16 compute of both models: most bits agree with float32, decoded pixels stay close."""
    pipe = BARPipeline(**get_dummy_components())
    pipe.set_progress_bar_config(disable=True)
    labels = [1, 3, 0, 5]
    reference = pipe(labels, generator=gens(4), temperature=0.0, output_type="latent").images
    reference_pixels = pipe.vqvae.decode_bits(reference).sample.detach()
    sizes = {name: m.get_memory_footprint() for name, m in (("t", pipe.transformer), ("v", pipe.vqvae))}
    pipe.enable_layerwise_casting(torch.float8_e4m3fn, torch.bfloat16)
    # the weights rest in float8 (smaller), the FSQ quantizer stays float32, the models compute in bfloat16
    assert pipe.transformer.get_memory_footprint() < 0.6 * sizes["t"]
    assert pipe.vqvae.get_memory_footprint() < 0.6 * sizes["v"]
    assert pipe.transformer.model.layers[0].attn.qkv.weight.dtype == torch.float8_e4m3fn
    assert {p.dtype for p in pipe.vqvae.quantize.parameters()} == {torch.float32}
    assert pipe.vqvae.dtype == torch.bfloat16
    low = pipe(labels, generator=gens(4), temperature=0.0, output_type="latent").images
    assert low.shape == reference.shape and set(low.unique().tolist()) <= {0, 1}
    assert (low == reference).float().mean() >= 0.9  # random weights would agree on ~50% of the bits
    pixels = pipe.vqvae.decode_bits(reference).sample.detach().float()  # same bits, low-precision decoder
    error = (pixels - reference_pixels).abs().mean() / reference_pixels.abs().mean()
    assert 0 < error < 0.1, error
    images = pipe(labels, generator=gens(4), output_type="pt").images
    assert images.shape == (4, 3, 24, 24) and torch.isfinite(images).all()


def test_enable_layerwise_casting_on_the_transformers_model():
    """`bar_hf.enable_layerwise_casting` on a fp32 `BARForCausalImageModeling`: casts to the compute dtype first,
    leaves norms/positional tables out (diffusers' default skip patterns) and keeps the outputs close."""
    transformer = get_dummy_components()["transformer"]
    assert isinstance(transformer, BARForCausalImageModeling)
    bits = torch.randint(0, 2, (2, 3, transformer.config.bits_per_token), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    states = torch.randint(0, 3, (2, transformer.config.bits_per_token), generator=torch.Generator().manual_seed(1))
    ratio = torch.tensor([0.5, 1.0])

    def outputs():
        with torch.no_grad():
            conditions = transformer.compute_conditions(bits, labels).conditions
            logits = transformer.head_logits(states, ratio, conditions[:, -1])  # Fourier mask-ratio embedding
        return conditions.float(), logits.float()

    reference, reference_logits = outputs()
    enable_layerwise_casting(transformer, torch.float8_e4m3fn, torch.bfloat16)
    dtypes = {name: p.dtype for name, p in transformer.named_parameters()}
    assert dtypes["model.layers.0.mlp.w12.weight"] == torch.float8_e4m3fn
    assert dtypes["model.norm.weight"] == dtypes["model.pos_embed"] == torch.bfloat16
    low, low_logits = outputs()  # the head crashed (`mat1 and mat2 must have the same dtype`)
    assert 0 < (low - reference).abs().mean() < 0.1 * reference.abs().mean()
    assert 0 < (low_logits - reference_logits).abs().mean() < 0.1 * reference_logits.abs().mean()
    with pytest.raises(ValueError, match="storage_dtype"):
        enable_layerwise_casting(transformer, torch.int8)


def test_vq_layerwise_casting_encode_regression():
    """encode crashed ("Promotion for Float8 Types is not supported") because SigLIP2 reads its
    position embedding table directly; now it stays in the compute dtype and the bits match float32."""
    vq = get_dummy_components()["vqvae"]
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    reference = vq.encode(images).bits
    vq.to(torch.bfloat16).enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    assert vq.encoder.embeddings.position_embedding.weight.dtype == torch.bfloat16
    assert vq.encoder.embeddings.patch_embedding.weight.dtype == torch.bfloat16  # diffusers' "patch_embed" skip
    assert vq.encoder.encoder.layers[0].mlp.fc1.weight.dtype == torch.float8_e4m3fn
    assert (vq.encode(images).bits == reference).float().mean() >= 0.9


# ---------------------------------------------------------------------------------------------------- callbacks
@pytest.fixture(scope="module")
def pipe():
    pipe = BARPipeline(**get_dummy_components(), guidance_scale=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("patch_size", [1, 2])
def test_callback_latents_are_the_latent_output_layout(patch_size):
    pipe = BARPipeline(**get_dummy_components(patch_size=patch_size))
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def grab(p, i, t, kwargs):
        seen.append(kwargs["latents"].clone())
        assert torch.equal(patchify_bits(kwargs["latents"], (6, 6), patch_size)[:, : i + 1], kwargs["bits"])
        return kwargs

    out = pipe([1, 2], generator=gens(2), output_type="latent", callback_on_step_end=grab).images
    assert seen[0].shape == out.shape and seen[0].dtype == torch.long
    assert (seen[0] == MASK_BIT).sum() == out.numel() - 2 * 5 * patch_size**2  # only token 0 generated
    assert torch.equal(seen[-1], out)  # after the last step: exactly the `output_type="latent"` output


def test_callback_latents_replacement(pipe):
    def flip_first_token(p, i, t, kwargs):
        if i == 0:
            latents = kwargs["latents"].clone()
            latents[:, 0] = 1 - latents[:, 0]
            return {"latents": latents}
        return kwargs

    def conditions_after(callback):
        seen = {}

        def record(p, i, t, kwargs):
            if i == 1:
                seen["conditions"] = kwargs["conditions"].clone()
            return callback(p, i, t, kwargs) if i == 0 else kwargs

        inputs = ["bits", "conditions", "latents"]
        out = pipe(
            [1],
            generator=gens(1),
            output_type="latent",
            callback_on_step_end=record,
            callback_on_step_end_tensor_inputs=inputs,
        ).images
        return out, seen["conditions"]

    base, base_conditions = conditions_after(lambda p, i, t, kwargs: kwargs)
    out, conditions = conditions_after(flip_first_token)
    assert torch.equal(out[0, 0], 1 - base[0, 0])  # written back into the AR buffer
    assert not torch.allclose(conditions, base_conditions)  # and fed to the backbone for the next token

    def in_place(p, i, t, kwargs):  # diffusers-style in-place edit of the passed tensor, then returned
        kwargs["latents"][:, : i + 1] = 0
        return kwargs

    zeros = pipe([1], generator=gens(1), output_type="latent", callback_on_step_end=in_place).images
    assert zeros.sum() == 0

    def corrupt(p, i, t, kwargs):
        kwargs["latents"][:, -1] = 0  # a not-yet-generated position
        return kwargs

    with pytest.raises(ValueError, match="MASK_BIT"):
        pipe([1], generator=gens(1), output_type="latent", callback_on_step_end=corrupt)


def test_callback_default_tensor_inputs(pipe):
    keys = []
    pipe(
        [1],
        generator=gens(1),
        output_type="latent",
        callback_on_step_end=lambda p, i, t, kw: keys.append(set(kw)) or kw,
    )
    assert keys[0] == {"bits", "latents"}


# ---------------------------------------------------------------------------------------------------- VQ model
class TestBARVQModelConformance(ModelTesterMixin):
    model_class = BARVQModel
    output_shape = (2, 3, 24, 24)

    def get_init_dict(self):
        return dict(TINY_VQ)

    def get_inputs(self):
        return {"sample": torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1}


# ---------------------------------------------------------------------------------------------------- schedulers
@pytest.mark.parametrize("scheduler_class", SCHEDULER_CLASSES, ids=lambda c: c.__name__)
class TestBitSchedulerConformance(SchedulerCommonTest):
    compatible_classes = SCHEDULER_CLASSES

    @pytest.fixture(autouse=True)
    def _select(self, scheduler_class):
        self.scheduler_class = scheduler_class

    def get_config(self, **overrides):
        return {"bits_per_token": 8, "num_inference_steps": 3, "temperature": 1.0, **overrides}

    def dummy_model_output(self, batch, generator):
        return torch.randn(batch, 8, 2, generator=generator) * 2

    def dummy_sample(self, batch):
        return torch.full((batch, 8), MASK_BIT, dtype=torch.long)
