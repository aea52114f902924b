import pytest
import torch
from safetensors.torch import load_file

from bar_hf import BARVQModel
from bar_hf.models.vq_model import FSQ_SHIFT, BARBitQuantizer

TINY = dict(
    sample_size=24,
    patch_size=4,
    num_bits=5,
    encoder_hidden_size=24,
    encoder_num_layers=2,
    encoder_num_heads=3,
    encoder_intermediate_size=37,
    encoder_num_position_embeddings=16,
    decoder_hidden_size=20,
    decoder_num_layers=2,
    decoder_num_heads=2,
    decoder_intermediate_size=33,
)


def tiny_vq(**overrides):
    torch.manual_seed(0)
    return BARVQModel(**{**TINY, **overrides}).eval()


def images(batch=2, size=24, seed=1):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_fsq_shift_value():
    assert abs(FSQ_SHIFT - 3.8007) < 1e-4


@pytest.mark.parametrize(
    "value, bit",
    [(-3.81, 0), (-3.80, 1), (-3.79, 1), (0.0, 1), (5.0, 1), (-5.0, 0), (-FSQ_SHIFT, 1)],
)
def test_fsq_threshold(value, bit):
    codes, bits = BARBitQuantizer.quantize_latents(torch.tensor([value]))
    assert bits.item() == bit
    assert codes.item() == pytest.approx(2 * bit - 1, abs=1e-6)


def test_fsq_threshold_boundary_is_minus_shift():
    shift = torch.tensor(FSQ_SHIFT)
    below = torch.nextafter(-shift, torch.tensor(-10.0))
    _, bits = BARBitQuantizer.quantize_latents(torch.stack([below, -shift]))
    assert bits.tolist() == [0, 1]


def test_fsq_straight_through_gradient():
    u = torch.tensor([-4.0, -3.8, 0.0, 2.0], requires_grad=True)
    codes, _ = BARBitQuantizer.quantize_latents(u)
    codes.sum().backward()
    expected = 2 * 0.5005 * (1 - torch.tanh(u.detach() + FSQ_SHIFT) ** 2)
    assert torch.allclose(u.grad, expected, rtol=1e-4, atol=1e-7)
    assert u.grad[1] > 0.9  # near the threshold the gradient is large, far from it tiny
    assert u.grad[2] < 1e-2


def test_fsq_runs_in_fp32_under_autocast():
    u = torch.randn(3, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes, bits = BARBitQuantizer.quantize_latents(u)
    assert codes.dtype == torch.float32 and bits.dtype == torch.int64


def test_encode_decode_shapes():
    vq = tiny_vq()
    out = vq.encode(images())
    assert out.latents.shape == (2, 36, 5) and out.latents.dtype == torch.float32
    assert out.bits.shape == (2, 36, 5) and out.bits.dtype == torch.int64
    assert set(out.bits.unique().tolist()) <= {0, 1}
    assert torch.equal(out.quantized, 2 * out.bits.float() - 1)
    assert vq.bit_budget == 36 * 5
    sample = vq.decode(out.latents).sample
    assert sample.shape == (2, 3, 24, 24)
    assert torch.allclose(sample, vq.decode_bits(out.bits).sample, atol=1e-6)
    assert torch.allclose(sample, vq.decode(out.quantized, force_not_quantize=True).sample, atol=1e-6)
    flat = out.bits.reshape(2, -1)  # the authors' flat (B, L*num_bits) layout
    assert torch.allclose(sample, vq.decode_bits(flat).sample, atol=1e-6)
    assert torch.allclose(vq(images()).sample, sample, atol=1e-6)
    tup = vq.decode(out.latents, return_dict=False)
    assert torch.equal(tup[0], sample)


def test_bits_follow_in_proj_threshold():
    vq = tiny_vq()
    with torch.no_grad():
        vq.quantize.in_proj.bias.fill_(-100.0)
    assert vq.encode_to_bits(images()).sum() == 0
    with torch.no_grad():
        vq.quantize.in_proj.weight.zero_()
        vq.quantize.in_proj.bias.copy_(torch.tensor([-3.81, -3.79, 0.0, 5.0, -5.0]))
    assert vq.encode_to_bits(images())[0, 0].tolist() == [0, 1, 1, 1, 0]


def test_pixel_head_depth_to_space_layout():
    # channel (p1, p2, c) of the 1x1 conv output lands at pixel (h*p+p1, w*p+p2), channel c
    vq = tiny_vq(num_bits=3)
    dec = vq.decoder
    p, c = 4, 3
    with torch.no_grad():
        dec.conv_out.weight.zero_()
        dec.conv_out.bias.zero_()
        for ch in range(c):
            dec.conv_out.weight[ch, ch, 1, 1] = 1.0  # identity 3x3 conv
        dec.ffn[0].weight.zero_()
        dec.ffn[0].bias.copy_(torch.arange(p * p * c, dtype=torch.float32))
    out, _ = dec(torch.zeros(1, 36, 20))
    p1, p2, ch = 2, 3, 1
    assert out[0, ch, 6 * 0 + p1, 4 * 1 + p2].item() == (p1 * p + p2) * c + ch


def test_patchify_images_layout():
    vq = tiny_vq()
    x = torch.arange(3 * 24 * 24, dtype=torch.float32).view(1, 3, 24, 24)
    patches = vq.patchify_images(x)
    assert patches.shape == (1, 36, 48)
    # second patch of the first row, pixel (row 1, col 2) of the patch, channel 2
    assert patches[0, 1, (1 * 4 + 2) * 3 + 2] == x[0, 2, 1, 4 + 2]


def test_deterministic():
    vq = tiny_vq()
    a = vq.decode_bits(vq.encode_to_bits(images())).sample
    b = vq.decode_bits(vq.encode_to_bits(images())).sample
    assert torch.equal(a, b)


def test_save_load_round_trip(tmp_path):
    vq = tiny_vq()
    vq.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = BARVQModel.from_pretrained(tmp_path)
    strip = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert strip(loaded.config) == strip(vq.config)
    ref = vq.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ref[key]), key
    stored = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    assert set(stored) == set(ref)
    x = images()
    assert torch.equal(loaded.encode_to_bits(x), vq.encode_to_bits(x))
    assert torch.allclose(loaded(x).sample, vq(x).sample, atol=0)


def test_gradients_reach_encoder():
    vq = tiny_vq().train()
    with torch.no_grad():
        vq.quantize.in_proj.bias.fill_(-3.8)  # near the threshold the STE gradient is not tiny
    vq(images()).sample.pow(2).mean().backward()
    assert vq.encoder.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert vq.quantize.in_proj.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_same_grads():
    x = images()
    grads = []
    for checkpointing in (False, True):
        vq = tiny_vq().train()
        if checkpointing:
            vq.enable_gradient_checkpointing()
        vq(x).sample.sum().backward()
        grads.append(vq.decoder.transformer[0].mlp.fc1.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_distillation_branch():
    with pytest.raises(ValueError, match="distill_layer_index"):
        tiny_vq(distill_projector_dim=7)  # the default block index 2 does not exist with 2 decoder blocks
    vq = tiny_vq(distill_projector_dim=7, distill_layer_index=1)
    recon, feats, bits = vq.forward_with_distillation(images())
    assert recon.shape == (2, 3, 24, 24) and feats.shape == (2, 36, 7) and bits.shape == (2, 36, 5)
    with pytest.raises(ValueError, match="distill_projector_dim"):
        tiny_vq().forward_with_distillation(images())
    narrow = tiny_vq(distill_projector_dim=7, distill_layer_index=1, distill_projector_hidden_size=12)
    assert [layer.out_features for layer in narrow.decoder.clip_projector[::2]] == [12, 12, 7]
    assert vq.decoder.clip_projector[0].out_features == 2048  # the authors' width by default
    with pytest.raises(ValueError, match="distill_projector_hidden_size"):
        tiny_vq(distill_projector_dim=7, distill_layer_index=1, distill_projector_hidden_size=0)


def test_bad_inputs():
    vq = tiny_vq()
    with pytest.raises(ValueError, match=r"images.*\(batch, 3, 24, 24\)"):
        vq.encode(torch.zeros(1, 3, 20, 20))
    with pytest.raises(ValueError, match="images"):
        vq.encode(torch.zeros(3, 24, 24))
    with pytest.raises(ValueError, match="float"):
        vq.encode(torch.zeros(1, 3, 24, 24, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"bits.*\(batch, 36, 5\)"):
        vq.decode_bits(torch.zeros(1, 36, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        vq.decode_bits(torch.full((1, 36, 5), 2))
    with pytest.raises(ValueError, match="decode_bits"):
        vq.decode(torch.zeros(1, 36, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of `patch_size`"):
        BARVQModel(**{**TINY, "sample_size": 26})
    with pytest.raises(ValueError, match="num_bits"):
        BARVQModel(**{**TINY, "num_bits": 0})
    with pytest.raises(ValueError, match="perfect square"):
        BARVQModel(**{**TINY, "encoder_num_position_embeddings": 15})


def test_official_sizes_on_meta_device():
    # docs/method.md §2.4: decoder 303,364,948 parameters without / 312,020,948 with the distillation projector (256 px),
    # 312,807,380 with the projector at 512 px.
    with torch.device("meta"):
        vq256 = BARVQModel()
        vq256_proj = BARVQModel(distill_projector_dim=1152)
        vq512_proj = BARVQModel(sample_size=512, num_bits=10, distill_projector_dim=1152)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(vq256.decoder) == 303_364_948
    assert count(vq256_proj.decoder) == 312_020_948
    assert count(vq512_proj.decoder) == 312_807_380
    assert vq256.bit_budget == 4096 and vq512_proj.bit_budget == 10240
    # one SigLIP2-so400m vision tower (27 layers, width 1152) without pooling head
    assert vq256.encoder.encoder.layers[0].mlp.fc1.weight.shape == (4304, 1152)
    assert len(vq256.encoder.encoder.layers) == 27


def test_bf16_model_decodes():
    vq = tiny_vq().to(torch.bfloat16)
    bits = vq.encode_to_bits(images().to(torch.bfloat16))
    assert vq.decode_bits(bits).sample.dtype == torch.bfloat16
