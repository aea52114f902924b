"""The tokenizer's perceptual and adversarial loss terms (`bar_hf.training.losses`, `bar_hf.training.discriminator`) on tiny random
images: finite, differentiable, zero where they must be, hinge losses on hand-made logits."""

import logging
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bar_hf.training.discriminator import (
    BatchNormLocal,
    DINODiscriminator,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    quantize_to_8_bits,
)
from bar_hf.training.losses import ClassifierLogitLoss, LPIPSLoss, PerceptualLoss, imagenet_normalize

ROOT = Path(__file__).resolve().parents[1]
FMNIST_CLASSIFIER = ROOT / "tests" / "data" / "fmnist_classifier.safetensors"


def tiny_vit(image_size=16):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=16, num_hidden_layers=12, num_attention_heads=2, intermediate_size=32, patch_size=8,
        image_size=image_size,
    )  # fmt: skip
    return ViTModel(config, add_pooling_layer=False)


def tiny_convnext():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=5, image_size=32)
    return ConvNextForImageClassification(config)


def images(batch=4, channels=3, size=16, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def fmnist_classifier():
    from bar_hf.evaluation.fashion_mnist_classifier import load_classifier

    return load_classifier(str(FMNIST_CLASSIFIER))


@pytest.mark.parametrize("kind", ["convnext", "fmnist"])
def test_logit_loss_zero_for_identical_finite_and_differentiable(kind):
    if kind == "convnext":  # transformers classifier: ImageNet normalisation, resized to its input size
        loss_fn, x = ClassifierLogitLoss(tiny_convnext(), image_size=32), images(channels=3)
    else:  # the real Fashion-MNIST classifier: 1 channel, 32 px, [-1, 1]
        loss_fn, x = ClassifierLogitLoss(fmnist_classifier(), image_size=32, normalization="none"), images(4, 1, 32)
    assert loss_fn(x, x.clone()).item() == 0.0
    reconstruction = (x + 0.3 * images(seed=1, channels=x.shape[1], size=x.shape[-1])).requires_grad_()
    loss = loss_fn(reconstruction, x)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert reconstruction.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.classifier.parameters())  # the backbone is frozen


def test_perceptual_loss_is_the_weighted_average_of_its_terms():
    class Constant(nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, reconstruction, target):
            return torch.tensor(self.value)

    total, terms = PerceptualLoss(Constant(2.0), Constant(30.0), lpips_weight=1.0, logit_weight=0.1)(None, None)
    assert total.item() == pytest.approx((1.0 * 2.0 + 0.1 * 30.0) / 1.1)
    assert {k: v.item() for k, v in terms.items()} == {"lpips": 2.0, "logit": 30.0}
    total, terms = PerceptualLoss(None, Constant(30.0), logit_weight=0.1)(None, None)  # logit only: its own value
    assert total.item() == pytest.approx(30.0) and set(terms) == {"logit"}
    with pytest.raises(ValueError, match="at least one"):
        PerceptualLoss(None, None)


def test_lpips_without_the_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` raises ImportError
    with pytest.raises(ImportError, match="pip install lpips torchvision"):
        LPIPSLoss(pretrained_backbone=False)


def test_lpips_zero_for_identical_and_differentiable(caplog):
    pytest.importorskip("lpips", exc_type=ImportError)  # needs torchvision matching torch (absent on CPU-only CI)
    with caplog.at_level(logging.WARNING):
        loss_fn = LPIPSLoss(pretrained_backbone=False)
    assert "NOT perceptual" in caplog.text
    x = images(2, 1, 32)
    assert loss_fn(x, x.clone()).item() == 0.0
    reconstruction = (x.flip(-1)).requires_grad_()
    loss = loss_fn(reconstruction, x)
    loss.backward()
    assert torch.isfinite(loss) and reconstruction.grad.abs().sum() > 0


def test_hinge_losses_on_hand_made_logits():
    real, fake = torch.tensor([[2.0, 0.5]]), torch.tensor([[-2.0, 0.5]])
    # 0.5 * (mean(relu(1 - [2, .5])) + mean(relu(1 + [-2, .5]))) = 0.5 * (0.25 + 0.75)
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5)
    assert hinge_discriminator_loss(torch.full((3, 4), 5.0), torch.full((3, 4), -5.0)).item() == 0.0
    assert generator_adversarial_loss(torch.tensor([[1.0, -3.0], [2.0, 4.0]])).item() == pytest.approx(-1.0)


def test_quantize_to_8_bits():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.3, 1.0, 7.0])
    q = quantize_to_8_bits(x)
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and q.min() == -1 and q.max() == 1
    assert (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_batch_norm_local_normalises_each_virtual_batch():
    norm = BatchNormLocal(3, virtual_batch_size=8)
    x = torch.randn(16, 3, 5) * torch.arange(1, 17.0)[:, None, None]  # very different scales per sample
    y = norm(x)
    for group in (y[:8], y[8:]):  # two groups of 8, each zero-mean unit-variance per channel
        assert torch.allclose(group.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5)
        assert torch.allclose(group.var(dim=(0, 2), unbiased=False), torch.ones(3), atol=1e-3)
    assert torch.equal(norm(x[:8]), y[:8])  # a group does not see the other one
    with pytest.raises(ValueError, match="divisible"):
        norm(torch.randn(9, 3, 5))


def test_discriminator_shapes_gradients_and_frozen_backbone(caplog):
    with caplog.at_level(logging.WARNING):
        disc = DINODiscriminator(tiny_vit(), image_size=16, pretrained=False)
    assert "RANDOMLY INITIALISED" in caplog.text
    assert all(layer.attention.k_proj.bias.abs().sum() == 0 for layer in disc.backbone.layers)  # k-bias zeroed
    x = images(4, 1, 16).requires_grad_()  # grayscale: replicated to 3 channels
    logits = disc(x)
    assert logits.shape == (4, 5 * 4) and torch.isfinite(logits).all()  # 5 heads x (16/8)^2 patches
    generator_adversarial_loss(logits).backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is None for p in disc.backbone.parameters())
    assert all(p.grad is not None for p in disc.heads.parameters())
    with pytest.raises(ValueError, match="multiple of the patch size"):
        DINODiscriminator(tiny_vit(), image_size=12)


def test_discriminator_augmentation_crops_or_resizes_with_its_generator():
    disc = DINODiscriminator(tiny_vit(), image_size=16)
    x = images(2, 3, 24)
    prepared = [disc.prepare_images(x, torch.Generator().manual_seed(s)) for s in range(8)]
    assert all(p.shape == (2, 3, 16, 16) for p in prepared)
    crops = {tuple(p.flatten()[:3].tolist()) for p in prepared}
    assert len(crops) > 2  # some crops at different positions and some resizes
    resized = torch.nn.functional.interpolate(imagenet_normalize(x), size=(16, 16), mode="area")
    assert any(torch.allclose(p, resized) for p in prepared)
    again = disc.prepare_images(x, torch.Generator().manual_seed(3))
    assert torch.equal(again, prepared[3])  # reproducible from the (checkpointed) generator state
    small = disc.prepare_images(images(2, 3, 8))  # smaller than image_size: bicubic up, no randomness
    assert small.shape == (2, 3, 16, 16)
