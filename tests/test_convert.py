"""Conversion of the authors' checkpoints (docs/method.md §8): synthetic authors'-layout files for tiny configs, written
with `torch.save`, converted, checked tensor by tensor and round-tripped; corrupted files are refused; the full-size
presets accept the exact §8.2 key sets and shapes (meta device)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from bar_hf import BARConfig, BARForCausalImageModeling, BARVQModel
from bar_hf.conversion.convert import (
    check_generator_state_dict,
    check_tokenizer_state_dict,
    convert_generator,
    convert_tokenizer,
    detect_preset,
    generator_to_authors_state_dict,
    imagenet_id2label,
    infer_generator_config,
    infer_tokenizer_config,
    load_authors_checkpoint,
    strip_key_prefixes,
    tokenizer_to_authors_state_dict,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- authors' layout
def authors_rope(grid_h: int, grid_w: int, head_dim: int, prefix: int, theta: float = 10000.0):
    """§3.5 written independently: interleaved pairs, row half then column half, `prefix` identity rows."""
    d = head_dim // 2
    cos = torch.ones(prefix + grid_h * grid_w, head_dim)
    sin = torch.zeros(prefix + grid_h * grid_w, head_dim)
    for row in range(grid_h):
        for col in range(grid_w):
            for half, pos in ((0, row), (1, col)):
                for j in range(d // 2):
                    angle = pos * theta ** (-2 * j / d)
                    for c in (half * d + 2 * j, half * d + 2 * j + 1):
                        cos[prefix + row * grid_w + col, c] = math.cos(angle)
                        sin[prefix + row * grid_w + col, c] = math.sin(angle)
    return cos, sin


def authors_generator_shapes(
    D, depth, heads, F, N, k, classes=1000, R=32, W=2048, FH=5461, head_layers=3, fourier=256, rope=True
) -> dict[str, tuple[int, ...]]:
    """Every key and shape of §8.2 (i = block, j = head ResBlock)."""
    e, eh, hd = math.ceil(D / k), math.ceil(W / k), D // heads
    shapes = {
        "cls_token": (1, 1, D),
        "pos_embed": (1, N + 128, D),
        "target_aware_pos_embed": (1, N + 128, D),
        "timesteps_embeddings": (1, N + 100, D),
        "embeddings.weight": (classes + 4, D),
        "input_embeddings.weight": (3, e),
        "input_merge.weight": (D, k * e),
        "input_merge.bias": (D,),
        "norm.weight": (D,),
        "latent_condition_proj.weight": (W, D),
        "latent_condition_proj.bias": (W,),
        "lm_head.input_embed.weight": (3, eh),
        "lm_head.input_proj.weight": (W, k * eh),
        "lm_head.input_proj.bias": (W,),
        "lm_head.ln_pre.weight": (W,),
        "lm_head.t_embedder.W": (fourier,),
        "lm_head.t_embedder.mlp.0.weight": (W, 2 * fourier),
        "lm_head.t_embedder.mlp.0.bias": (W,),
        "lm_head.t_embedder.mlp.2.weight": (W, W),
        "lm_head.t_embedder.mlp.2.bias": (W,),
        "lm_head.adaln_before_head.norm_final.weight": (W,),
        "lm_head.adaln_before_head.adaLN_modulation.1.weight": (2 * W, W),
        "lm_head.adaln_before_head.adaLN_modulation.1.bias": (2 * W,),
        "lm_head.output_embed.weight": (2 * k, W),
        "lm_head.output_embed.bias": (2 * k,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (D,),
            b + "norm2.weight": (D,),
            b + "attn.qkv.weight": (3 * D, D),
            b + "attn.qkv.bias": (3 * D,),
            b + "attn.q_norm.weight": (hd,),
            b + "attn.k_norm.weight": (hd,),
            b + "attn.proj.weight": (D, D),
            b + "attn.proj.bias": (D,),
            b + "mlp.w12.weight": (2 * F, D),
            b + "mlp.w12.bias": (2 * F,),
            b + "mlp.w3.weight": (D, F),
            b + "mlp.w3.bias": (D,),
            b + "adaLN_modulation.1.weight": (6 * D, D),
            b + "adaLN_modulation.1.bias": (6 * D,),
        }
        if rope:
            shapes[b + "attn.rope.freqs_cos"] = (1 + R + N, hd)
            shapes[b + "attn.rope.freqs_sin"] = (1 + R + N, hd)
    for j in range(head_layers):
        h = f"lm_head.transformer.{j}."
        shapes |= {
            h + "in_ln.weight": (W,),
            h + "mlp.w12.weight": (2 * FH, W),
            h + "mlp.w12.bias": (2 * FH,),
            h + "mlp.w3.weight": (W, FH),
            h + "mlp.w3.bias": (W,),
            h + "adaLN_modulation.1.weight": (3 * W, W),
            h + "adaLN_modulation.1.bias": (3 * W,),
        }
    return shapes


# Tiny generator: latent 4x4, 6 bits, patch 2 → N = 4 AR steps of k = 24 bits; 10 classes, 3 class tokens.
TINY_G = dict(D=32, depth=2, heads=4, F=21, N=4, k=24, classes=10, R=3, W=32, FH=40, head_layers=2, fourier=8)
TINY_G_OVERRIDES = {"num_class_tokens": 3}


def tiny_generator_state_dict(seed: int = 0, rope: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = authors_generator_shapes(**TINY_G, rope=False)
    sd = {key: torch.randn(shape, generator=gen) for key, shape in shapes.items()}
    if rope:
        cos, sin = authors_rope(2, 2, TINY_G["D"] // TINY_G["heads"], 1 + TINY_G["R"])
        for i in range(TINY_G["depth"]):
            sd[f"blocks.{i}.attn.rope.freqs_cos"] = cos.clone()
            sd[f"blocks.{i}.attn.rope.freqs_sin"] = sin.clone()
    return sd


def siglip_layer_shapes(prefix: str, width: int, mlp: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name in ("layer_norm1", "layer_norm2"):
        shapes |= {f"{prefix}{name}.weight": (width,), f"{prefix}{name}.bias": (width,)}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes |= {f"{prefix}self_attn.{name}.weight": (width, width), f"{prefix}self_attn.{name}.bias": (width,)}
    return shapes | {
        f"{prefix}mlp.fc1.weight": (mlp, width),
        f"{prefix}mlp.fc1.bias": (mlp,),
        f"{prefix}mlp.fc2.weight": (width, mlp),
        f"{prefix}mlp.fc2.bias": (width,),
    }


def authors_tokenizer_shapes(
    bits=16,
    tokens=256,
    patch=16,
    E=1152,
    E_layers=27,
    E_mlp=4304,
    E_pos=256,
    Dd=1024,
    D_layers=24,
    D_mlp=4096,
    full=True,
    P=2048,
) -> dict[str, tuple[int, ...]]:
    """The keys of §8.3; `full` adds the frozen SigLIP2 copies, its aliases, the pooling head and the projector."""
    s = {
        "quantize.in_proj.weight": (bits, E),
        "quantize.in_proj.bias": (bits,),
        "quantize.out_proj.weight": (Dd, bits),
        "quantize.out_proj.bias": (Dd,),
        "decoder.class_embedding": (1, Dd),
        "decoder.positional_embedding": (tokens + 1, Dd),
        "decoder.ffn.0.weight": (patch * patch * 3, Dd, 1, 1),
        "decoder.ffn.0.bias": (patch * patch * 3,),
        "decoder.conv_out.weight": (3, 3, 3, 3),
        "decoder.conv_out.bias": (3,),
        "encoder.siglip.embeddings.patch_embedding.weight": (E, patch * patch * 3),
        "encoder.siglip.embeddings.patch_embedding.bias": (E,),
        "encoder.siglip.embeddings.position_embedding.weight": (E_pos, E),
        "encoder.trainable_post_layernorm.weight": (E,),
        "encoder.trainable_post_layernorm.bias": (E,),
    }
    for name in ("ln_pre", "ln_post"):
        s |= {f"decoder.{name}.weight": (Dd,), f"decoder.{name}.bias": (Dd,)}
    for j in range(D_layers):
        p = f"decoder.transformer.{j}."
        for name in ("norm1", "norm2"):
            s |= {p + name + ".weight": (Dd,), p + name + ".bias": (Dd,)}
        s |= {
            p + "attn.qkv.weight": (3 * Dd, Dd),
            p + "attn.qkv.bias": (3 * Dd,),
            p + "attn.proj.weight": (Dd, Dd),
            p + "attn.proj.bias": (Dd,),
            p + "mlp.fc1.weight": (D_mlp, Dd),
            p + "mlp.fc1.bias": (D_mlp,),
            p + "mlp.fc2.weight": (Dd, D_mlp),
            p + "mlp.fc2.bias": (Dd,),
        }
    for i in range(E_layers):
        s |= siglip_layer_shapes(f"encoder.trainable_encoder.layers.{i}.", E, E_mlp)
    if full:
        for i in range(E_layers):
            s |= siglip_layer_shapes(f"encoder.siglip.encoder.layers.{i}.", E, E_mlp)
            s |= siglip_layer_shapes(f"encoder.frozen_encoder.layers.{i}.", E, E_mlp)
        for name in (
            "encoder.siglip.post_layernorm",
            "encoder.frozen_post_layernorm",
            "encoder.siglip.head.layernorm",
        ):
            s |= {name + ".weight": (E,), name + ".bias": (E,)}
        s |= {
            "encoder.siglip.head.probe": (1, 1, E),
            "encoder.siglip.head.attention.in_proj_weight": (3 * E, E),
            "encoder.siglip.head.attention.in_proj_bias": (3 * E,),
            "encoder.siglip.head.attention.out_proj.weight": (E, E),
            "encoder.siglip.head.attention.out_proj.bias": (E,),
            "encoder.siglip.head.mlp.fc1.weight": (E_mlp, E),
            "encoder.siglip.head.mlp.fc1.bias": (E_mlp,),
            "encoder.siglip.head.mlp.fc2.weight": (E, E_mlp),
            "encoder.siglip.head.mlp.fc2.bias": (E,),
            "decoder.clip_projector.0.weight": (P, Dd),
            "decoder.clip_projector.0.bias": (P,),
            "decoder.clip_projector.2.weight": (P, P),
            "decoder.clip_projector.2.bias": (P,),
            "decoder.clip_projector.4.weight": (E, P),
            "decoder.clip_projector.4.bias": (E,),
        }
    return s


# Tiny tokenizer: 32 px, patch 8 → 4x4 grid, 6 bits; encoder 32 wide (2 layers), decoder 24 wide (2 layers).
TINY_T = dict(bits=6, tokens=16, patch=8, E=32, E_layers=2, E_mlp=48, E_pos=16, Dd=24, D_layers=2, D_mlp=40)
TINY_T_OVERRIDES = {"encoder_num_heads": 2, "decoder_num_heads": 2}


def tiny_tokenizer_state_dict(
    seed: int = 1, full: bool = True, prefix: str = "", projector_width: int = 2048
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = authors_tokenizer_shapes(**TINY_T, full=full, P=projector_width)
    return {prefix + key: torch.randn(shape, generator=gen) for key, shape in shapes.items()}


# Expected bar_hf names, written from the mapping table (independent of convert.py's rules).
def expected_generator_name(key: str) -> str:
    for theirs, ours in [
        ("blocks.", "model.layers."),
        ("timesteps_embeddings", "model.slot_embed"),
        ("embeddings.weight", "model.class_embed.weight"),
        ("input_embeddings.weight", "model.bit_embed.weight"),
        ("lm_head.transformer.", "head.res_blocks."),
        ("lm_head.adaln_before_head.", "head.final_layer."),
        ("lm_head.", "head."),
    ]:
        if key.startswith(theirs) and not (theirs == "embeddings.weight" and key != "embeddings.weight"):
            return ours + key[len(theirs) :]
    return "model." + key


def expected_tokenizer_name(key: str) -> str:
    for theirs, ours in [
        ("encoder.siglip.embeddings.", "encoder.embeddings."),
        ("encoder.trainable_encoder.", "encoder.encoder."),
        ("encoder.trainable_post_layernorm.", "encoder.post_layernorm."),
    ]:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    return key


_DROPPED = (
    "encoder.siglip.encoder.",
    "encoder.frozen_encoder.",
    "encoder.frozen_post_layernorm.",
    "encoder.siglip.post_layernorm.",
    "encoder.siglip.head.",
    "decoder.clip_projector.",
)


@pytest.fixture
def files(tmp_path):
    gen_path, tok_path = tmp_path / "bar_tiny.bin", tmp_path / "bar_fsq_tiny.bin"
    torch.save(tiny_generator_state_dict(), gen_path)
    torch.save(tiny_tokenizer_state_dict(prefix="_orig_mod.module."), tok_path)
    return gen_path, tok_path


def convert_tiny_generator(state_dict, **kwargs):
    kwargs.setdefault("overrides", TINY_G_OVERRIDES)
    return convert_generator(state_dict, num_bits=6, latent_size=(4, 4), **kwargs)


# ---------------------------------------------------------------------------------------------------- generator
def test_generator_every_tensor_lands_and_round_trips(files):
    gen_path, _ = files
    source = tiny_generator_state_dict()
    model, report = convert_tiny_generator(gen_path, return_report=True)
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (32, 2, 4, 21)
    assert (c.patch_size, c.num_ar_steps, c.bits_per_token, c.num_classes, c.num_class_tokens) == (2, 4, 24, 10, 3)
    assert (c.head_hidden_size, c.head_num_layers, c.head_intermediate_size, c.head_fourier_size) == (32, 2, 40, 8)
    ours = model.state_dict()
    rope_keys = [k for k in source if ".attn.rope." in k]
    assert len(ours) == len(source) - len(rope_keys)
    for key, value in source.items():
        if key in rope_keys:
            continue
        assert torch.equal(ours[expected_generator_name(key)], value), key
    assert torch.equal(model.head.t_embedder.W, source["lm_head.t_embedder.W"])  # loaded, not redrawn
    assert report.rope_buffers_verified == 4 and report.loaded == len(ours)
    back = generator_to_authors_state_dict(model)
    assert set(back) == set(source)
    for key, value in source.items():
        tol = 1e-5 if key in rope_keys else 0.0
        assert torch.allclose(back[key], value, atol=tol, rtol=0), key


def test_generator_without_rope_buffers_and_with_prefix():
    source = {"_orig_mod." + k: v for k, v in tiny_generator_state_dict(rope=False).items()}
    model = convert_tiny_generator(source)
    assert torch.equal(model.model.cls_token, source["_orig_mod.cls_token"])
    assert model.config.num_class_tokens == 3  # from the override (no RoPE table to read it from)


def test_generator_reads_class_tokens_from_rope_rows():
    model = convert_generator(tiny_generator_state_dict(), num_bits=6, latent_size=(4, 4))
    assert model.config.num_class_tokens == 3


def test_generator_output_matches_authors_formula_on_a_token():
    # The loaded MBM head reproduces §4.1 computed by hand from the authors' tensors (chunk orders, SwiGLU gate rows).
    sd = tiny_generator_state_dict()
    model = convert_tiny_generator(sd)
    k, W = 24, 32
    bits = torch.randint(0, 3, (2, k))
    ratio = torch.tensor([1.0, 0.25])
    z = torch.randn(2, W)

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    def swiglu(x, p):
        a, b = lin(x, p + ".w12").chunk(2, dim=-1)
        return lin(torch.nn.functional.silu(a) * b, p + ".w3")

    e = sd["lm_head.input_embed.weight"][bits].reshape(2, -1)
    x = rms(lin(e, "lm_head.input_proj"), sd["lm_head.ln_pre.weight"])
    proj = ratio[:, None] * sd["lm_head.t_embedder.W"][None] * 2 * math.pi
    t = lin(
        torch.nn.functional.silu(lin(torch.cat([proj.sin(), proj.cos()], -1), "lm_head.t_embedder.mlp.0")),
        "lm_head.t_embedder.mlp.2",
    )
    s = torch.nn.functional.silu(t + z)
    for j in range(2):
        p = f"lm_head.transformer.{j}"
        sh, sc, g = lin(torch.nn.functional.silu(s), p + ".adaLN_modulation.1").chunk(3, -1)
        x = x + g * swiglu(rms(x, sd[p + ".in_ln.weight"]) * (1 + sc) + sh, p + ".mlp")
    sc, sh = lin(torch.nn.functional.silu(s), "lm_head.adaln_before_head.adaLN_modulation.1").chunk(2, -1)
    x = rms(x, sd["lm_head.adaln_before_head.norm_final.weight"]) * (1 + sc) + sh
    expected = lin(x, "lm_head.output_embed").reshape(2, k, 2)
    with torch.no_grad():
        got = model.head_logits(bits, ratio, z)
    assert torch.allclose(got.reshape(2, k, 2), expected, atol=1e-4)


@pytest.mark.parametrize(
    "corruption, message",
    [
        ("missing", "missing keys (1): blocks.1.mlp.w3.bias"),
        ("shape", "mis-shaped keys (1): blocks.0.attn.proj.weight"),
        ("extra", "unexpected keys (1): blocks.0.attn.extra_scale"),
        ("rope", "stored RoPE tables differ"),
        ("rope_shape", "blocks.1.attn.rope.freqs_sin: file [7, 8]"),
        ("core", "cannot infer the generator architecture"),
    ],
)
def test_generator_refuses_corrupted_files(tmp_path, corruption, message):
    sd = tiny_generator_state_dict()
    if corruption == "missing":
        del sd["blocks.1.mlp.w3.bias"]
    elif corruption == "shape":
        sd["blocks.0.attn.proj.weight"] = torch.zeros(32, 31)
    elif corruption == "extra":
        sd["blocks.0.attn.extra_scale"] = torch.zeros(1)
    elif corruption == "rope":
        sd["blocks.1.attn.rope.freqs_cos"][6, 0] += 1e-3
    elif corruption == "rope_shape":
        sd["blocks.1.attn.rope.freqs_sin"] = sd["blocks.1.attn.rope.freqs_sin"][:7]
    elif corruption == "core":
        del sd["lm_head.output_embed.weight"]
    path = tmp_path / "corrupt.bin"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_tiny_generator(path)


def test_generator_needs_bits_and_grid():
    with pytest.raises(ValueError, match="`num_bits` cannot be determined"):
        infer_generator_config(tiny_generator_state_dict())


def test_generator_yaml_agreement_and_disagreement(tmp_path):
    sd = tiny_generator_state_dict()
    good = {
        "model": {
            "vq_model": {"codebook_size": 64, "token_size": 6, "vit_dec_patch_size": 8},
            "generator": {
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "class_label_dropout": 0.1,
                "image_seq_len": 16,
                "condition_num_classes": 10,
                "target_codebook_size": 2,
                "repeat_class_condition": 3,
                "patch_size": 2,
                "dropout": 0.1,
                "attn_drop": 0.1,
                "guidance_scale": 3.0,
                "mbm_head": {
                    "width": 32,
                    "num_layers": 2,
                    "randomize_temperature": 1.5,
                    "tokens_allocation": [12, 12],
                },
            },
        }
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(good))
    config = infer_generator_config(sd, yaml_config=path)  # bits and grid from the YAML alone
    assert (config.patch_size, config.latent_height, config.hidden_dropout, config.num_class_tokens) == (2, 4, 0.1, 3)

    bad = json.loads(json.dumps(good))
    bad["model"]["generator"]["hidden_size"] = 64
    bad["model"]["generator"]["condition_num_classes"] = 1000
    bad["model"]["generator"]["num_attention_heads"] = 2
    with pytest.raises(ValueError) as error:
        infer_generator_config(sd, yaml_config=bad)
    text = str(error.value)
    assert "`hidden_size` disagrees" in text and "yaml 64 (YAML model.generator.hidden_size)" in text
    assert "checkpoint 32" in text and "`num_classes` disagrees" in text and "`num_attention_heads` disagrees" in text

    bad = json.loads(json.dumps(good))
    bad["model"]["generator"]["patch_size"] = 1
    with pytest.raises(ValueError, match="`patch_size` disagrees"):
        infer_generator_config(sd, yaml_config=bad)
    with pytest.raises(ValueError, match="`num_bits` disagrees"):
        infer_generator_config(sd, yaml_config=good, num_bits=24)
    bad = json.loads(json.dumps(good))
    bad["model"]["vq_model"]["codebook_size"] = 65536
    with pytest.raises(ValueError, match="codebook_size=65536 must equal 2 \\*\\* model.vq_model.token_size"):
        infer_generator_config(sd, yaml_config=bad)


def test_generator_overrides():
    sd = tiny_generator_state_dict(rope=False)
    config = infer_generator_config(
        sd,
        num_bits=6,
        latent_size=(4, 4),
        overrides={"num_class_tokens": 3, "rope_theta": 100.0, "hidden_dropout": 0.3},
    )
    assert (config.rope_theta, config.hidden_dropout) == (100.0, 0.3)
    with pytest.raises(ValueError, match=r"`hidden_size` disagrees.*override 64"):
        infer_generator_config(sd, num_bits=6, latent_size=(4, 4), overrides={"hidden_size": 64})
    with pytest.raises(ValueError, match=r"unknown fields \['hiden_size'\]"):
        infer_generator_config(sd, num_bits=6, latent_size=(4, 4), overrides={"hiden_size": 64})
    # a RoPE theta that contradicts the stored tables is caught
    with pytest.raises(ValueError, match="stored RoPE tables differ"):
        convert_generator(tiny_generator_state_dict(), num_bits=6, latent_size=(4, 4), overrides={"rope_theta": 100.0})


def test_strip_prefixes_and_nested_files(tmp_path):
    sd = {"_orig_mod.module.a": torch.zeros(1), "module.b": torch.ones(1), "_orig_mod.c": torch.ones(2)}
    assert set(strip_key_prefixes(sd)) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="both become 'a'"):
        strip_key_prefixes({"module.a": torch.zeros(1), "a": torch.zeros(1)})
    torch.save({"state_dict": sd, "step": 5}, tmp_path / "nested.bin")
    assert set(load_authors_checkpoint(tmp_path / "nested.bin")) == {"a", "b", "c"}
    torch.save({"a": torch.zeros(1), "b": 3}, tmp_path / "bad.bin")
    with pytest.raises(ValueError, match="1 entries are not tensors: b"):
        load_authors_checkpoint(tmp_path / "bad.bin")
    with pytest.raises(FileNotFoundError):
        load_authors_checkpoint(tmp_path / "nope.bin")


# ---------------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_every_tensor_lands_and_round_trips(files):
    _, tok_path = files
    source = tiny_tokenizer_state_dict()  # same seed as the prefixed file
    vq, report = convert_tokenizer(tok_path, overrides=TINY_T_OVERRIDES, return_report=True)
    c = vq.config
    assert (c.sample_size, c.patch_size, c.num_bits, c.in_channels, c.out_channels) == (32, 8, 6, 3, 3)
    assert (c.encoder_hidden_size, c.encoder_num_layers, c.encoder_intermediate_size) == (32, 2, 48)
    assert (c.encoder_num_position_embeddings, c.decoder_hidden_size, c.decoder_num_layers) == (16, 24, 2)
    assert (c.decoder_intermediate_size, c.distill_projector_dim) == (40, None)
    ours = vq.state_dict()
    kept = {k: v for k, v in source.items() if not k.startswith(_DROPPED)}
    assert len(ours) == len(kept) and len(report.dropped) == len(source) - len(kept)
    for key, value in kept.items():
        assert torch.equal(ours[expected_tokenizer_name(key)], value), key
    back = tokenizer_to_authors_state_dict(vq)
    assert set(back) == set(kept) and all(torch.equal(back[k], v) for k, v in kept.items())


def test_tokenizer_keeps_projector_when_asked():
    vq = convert_tokenizer(
        tiny_tokenizer_state_dict(),
        overrides={**TINY_T_OVERRIDES, "distill_projector_dim": 32, "distill_layer_index": 1},
    )
    assert torch.equal(vq.decoder.clip_projector[4].bias, tiny_tokenizer_state_dict()["decoder.clip_projector.4.bias"])
    assert vq.config.distill_projector_hidden_size == 2048


def test_tokenizer_projector_width_is_read_from_the_file(tmp_path):
    sd = tiny_tokenizer_state_dict(projector_width=48)
    keep = {**TINY_T_OVERRIDES, "distill_projector_dim": 32, "distill_layer_index": 1}
    vq = convert_tokenizer(sd, overrides=keep)
    assert vq.config.distill_projector_hidden_size == 48
    for index in (0, 2, 4):
        assert torch.equal(vq.decoder.clip_projector[index].weight, sd[f"decoder.clip_projector.{index}.weight"])
    vq.save_pretrained(tmp_path)
    assert BARVQModel.from_pretrained(tmp_path).decoder.clip_projector[2].weight.shape == (48, 48)
    assert convert_tokenizer(sd, overrides=TINY_T_OVERRIDES).config.distill_projector_hidden_size == 48  # dropped
    with pytest.raises(ValueError, match="`distill_projector_hidden_size` disagrees"):
        convert_tokenizer(sd, overrides={**keep, "distill_projector_hidden_size": 2048})


@pytest.mark.parametrize(
    "corruption, message",
    [
        ("missing", r"missing keys \(1\): decoder\.transformer\.1\.mlp\.fc2\.bias"),
        ("shape", r"mis-shaped keys \(1\): decoder\.ln_post\.weight: file \[23\]"),
        ("extra", r"unexpected keys \(1\): decoder\.extra"),
        ("encoder", r"missing keys \(2\): encoder\.siglip\.embeddings\.patch_embedding\.bias.*allow_missing"),
        ("heads", r"`encoder_num_heads` cannot be read from weights"),
        ("core", r"cannot infer the tokenizer architecture.*decoder\.conv_out\.weight"),
    ],
)
def test_tokenizer_refuses_corrupted_files(tmp_path, corruption, message):
    sd = tiny_tokenizer_state_dict()
    overrides = TINY_T_OVERRIDES
    if corruption == "missing":
        del sd["decoder.transformer.1.mlp.fc2.bias"]
    elif corruption == "shape":
        sd["decoder.ln_post.weight"] = torch.zeros(23)
    elif corruption == "extra":
        sd["decoder.extra"] = torch.zeros(1)
    elif corruption == "encoder":
        del sd["encoder.siglip.embeddings.patch_embedding.bias"]
        del sd["encoder.trainable_encoder.layers.1.mlp.fc1.bias"]
    elif corruption == "heads":
        overrides = {"decoder_num_heads": 2}
    elif corruption == "core":
        del sd["decoder.conv_out.weight"]
    torch.save(sd, tmp_path / "corrupt.bin")
    with pytest.raises(ValueError, match="(?s)" + message):
        convert_tokenizer(tmp_path / "corrupt.bin", overrides=overrides)


def test_tokenizer_allow_missing_encoder_only(caplog):
    sd = {k: v for k, v in tiny_tokenizer_state_dict().items() if not k.startswith("encoder.")}
    del sd["quantize.in_proj.weight"], sd["quantize.in_proj.bias"]
    overrides = {
        **TINY_T_OVERRIDES,
        "encoder_hidden_size": 32,
        "encoder_num_layers": 1,
        "encoder_intermediate_size": 8,
    }
    overrides |= {"encoder_num_position_embeddings": 16}
    with pytest.raises(ValueError, match="cannot infer the tokenizer architecture"):
        convert_tokenizer(sd, overrides=overrides)
    vq, report = convert_tokenizer(sd, overrides=overrides, allow_missing=True, return_report=True)
    assert report.missing_allowed and all(
        k.startswith(("encoder.", "quantize.in_proj")) for k in report.missing_allowed
    )
    assert torch.equal(vq.decoder.conv_out.weight, sd["decoder.conv_out.weight"])
    assert "encode` is meaningless" in caplog.text
    del sd["decoder.ln_pre.bias"]  # decoder keys are never optional
    with pytest.raises(ValueError, match=r"missing keys \(1\): decoder\.ln_pre\.bias"):
        convert_tokenizer(sd, overrides=overrides, allow_missing=True)


def test_tokenizer_yaml_cross_check():
    sd = tiny_tokenizer_state_dict()
    good = {
        "model": {
            "vq_model": {"codebook_size": 64, "token_size": 6, "vit_dec_patch_size": 8, "clip_align_layer_id": 1}
        },
        "dataset": {"preprocessing": {"crop_size": 32}},
    }
    assert infer_tokenizer_config(sd, yaml_config=good, overrides=TINY_T_OVERRIDES)["distill_layer_index"] == 1
    bad = {
        "model": {"vq_model": {"codebook_size": 65536, "token_size": 16, "vit_dec_patch_size": 16}},
        "dataset": {"preprocessing": {"crop_size": 256}},
    }
    with pytest.raises(ValueError) as error:
        infer_tokenizer_config(sd, yaml_config=bad, overrides=TINY_T_OVERRIDES)
    text = str(error.value)
    for name in ("num_bits", "patch_size", "sample_size"):
        assert f"`{name}` disagrees" in text
    assert "yaml 16 (YAML model.vq_model.token_size)" in text and "checkpoint 6" in text


# ---------------------------------------------------------------------------------------------------- full size (meta)
# §8.2 table: D, F, N, k, pos rows, timestep rows, rope rows × hd, input_embeddings, head input_embed, output rows.
SECTION_8_2 = {
    "bar-b-4": (768, 2048, 16, 256, 144, 116, (49, 64), (3, 3), (3, 8), 512),
    "bar-b-2": (768, 2048, 64, 64, 192, 164, (97, 64), (3, 12), (3, 32), 128),
    "bar-b": (768, 2048, 256, 16, 384, 356, (289, 64), (3, 48), (3, 128), 32),
    "bar-l": (1280, 3413, 256, 16, 384, 356, (289, 80), (3, 80), (3, 128), 32),
    "bar-l-512": (1280, 3413, 1024, 10, 1152, 1124, (1057, 80), (3, 128), (3, 205), 20),
}


@pytest.mark.parametrize("preset", sorted(SECTION_8_2))
def test_full_size_presets_accept_section_8_2_layout(preset):
    D, F, N, k, pos_rows, ts_rows, rope, in_emb, head_emb, out_rows = SECTION_8_2[preset]
    depth, heads = (24, 12) if D == 768 else (32, 16)
    shapes = authors_generator_shapes(D, depth, heads, F, N, k)
    assert len(shapes) == (430 if D == 768 else 558)
    assert shapes["pos_embed"][1] == pos_rows and shapes["timesteps_embeddings"][1] == ts_rows
    assert shapes["blocks.0.attn.rope.freqs_cos"] == rope and shapes["input_embeddings.weight"] == in_emb
    assert shapes["lm_head.input_embed.weight"] == head_emb and shapes["lm_head.output_embed.weight"][0] == out_rows
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    bits, side = (10, 32) if preset == "bar-l-512" else (16, 16)
    config = infer_generator_config(meta, num_bits=bits, latent_size=(side, side), preset=preset)
    reference = BARConfig.from_preset(preset)
    assert config.to_dict() == reference.to_dict() | {"transformers_version": config.to_dict()["transformers_version"]}
    assert detect_preset(config) == preset
    mapping = check_generator_state_dict(meta, config)
    assert len(mapping) == (382 if D == 768 else 494)
    with torch.device("meta"):
        model = BARForCausalImageModeling(reference)
    authors = generator_to_authors_state_dict(model)
    assert {key: tuple(v.shape) for key, v in authors.items()} == shapes


def test_full_size_preset_disagreement_is_reported():
    shapes = authors_generator_shapes(768, 24, 12, 2048, 64, 64)  # BAR-B/2 file
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    with pytest.raises(ValueError, match=r"`patch_size` disagrees.*checkpoint 2.*preset 1"):
        infer_generator_config(meta, num_bits=16, latent_size=(16, 16), preset="bar-b")


@pytest.mark.parametrize("bits, tokens, count", [(16, 256, 1624), (10, 1024, 1624)])
def test_full_size_tokenizer_layout(bits, tokens, count):
    shapes = authors_tokenizer_shapes(bits=bits, tokens=tokens)
    assert len(shapes) == count
    meta = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    kwargs = infer_tokenizer_config(meta)
    assert kwargs["sample_size"] == 16 * int(math.isqrt(tokens)) and kwargs["num_bits"] == bits
    assert (kwargs["encoder_num_layers"], kwargs["decoder_num_layers"], kwargs["encoder_num_heads"]) == (27, 24, 16)
    mapping, dropped, missing = check_tokenizer_state_dict(meta, kwargs)
    assert len(mapping) == 739 and len(dropped) == count - 739 and not missing


# ---------------------------------------------------------------------------------------------------- pipeline
def test_imagenet_class_names():
    names = imagenet_id2label()
    assert len(names) == 1000 and sorted(names) == list(range(1000))
    assert names[0] == "tench, Tinca tinca" and names[207] == "golden retriever"
    assert names[999] == "toilet tissue, toilet paper, bathroom tissue"


def test_convert_to_pipeline_saves_and_samples(files, tmp_path):
    pytest.importorskip("bar_hf.pipelines.pipeline_bar")
    from bar_hf.conversion.convert import convert_to_pipeline
    from bar_hf.pipelines.pipeline_bar import BARPipeline

    gen_path, tok_path = files
    out = tmp_path / "pipe"
    pipe = convert_to_pipeline(
        gen_path,
        tok_path,
        out,
        generator_overrides=TINY_G_OVERRIDES,
        tokenizer_overrides=TINY_T_OVERRIDES,
        sampling_overrides={"guidance_scale": 2.0, "temperature": 1.0, "tokens_allocation": [4, 4, 8, 8]},
        id2label={i: f"class {i}" for i in range(10)},
    )
    assert (out / "model_index.json").exists() and (out / "conversion_info.json").exists()
    info = json.loads((out / "conversion_info.json").read_text())
    assert info["generator"]["rope_buffers_verified"] == 4 and info["sampling"]["guidance_scale"] == 2.0
    loaded = BARPipeline.from_pretrained(out)
    assert loaded.scheduler.config.tokens_allocation == [4, 4, 8, 8]
    reference = generator_to_authors_state_dict(pipe.transformer)
    for key, value in generator_to_authors_state_dict(loaded.transformer).items():
        assert torch.equal(value, reference[key]), key
    bits = loaded(class_labels=[1, "class 3"], generator=torch.Generator().manual_seed(0), output_type="latent")
    bits = bits.images if hasattr(bits, "images") else bits[0]
    assert bits.shape == (2, 16, 6) and set(bits.unique().tolist()) <= {0, 1}
    images = loaded(class_labels=[2], generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 32, 32, 3)


def _load_script():
    spec = importlib.util.spec_from_file_location("convert_bar_official", REPO / "scripts" / "convert_bar_official.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_converts_with_json_overrides_and_pushes(files, tmp_path, monkeypatch, capsys):
    pytest.importorskip("bar_hf.pipelines.pipeline_bar")
    import huggingface_hub

    script = _load_script()
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0 and "--allow_missing" in capsys.readouterr().out

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs.get("private")))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    gen_path, tok_path = files
    out = tmp_path / "cli_pipe"
    argv = ["--generator_checkpoint", str(gen_path), "--tokenizer_checkpoint", str(tok_path), "--output_dir", str(out)]
    argv += [
        "--generator_overrides",
        json.dumps(TINY_G_OVERRIDES),
        "--tokenizer_overrides",
        json.dumps(TINY_T_OVERRIDES),
    ]
    argv += ["--push_to_hub", "user/bar-tiny", "--private"]
    assert script.main(argv) == 0
    assert "wrote a BARPipeline" in capsys.readouterr().out
    assert calls[0] == ("create", "user/bar-tiny", True)
    assert calls[1][0] == "upload" and {"model_index.json", "README.md", "transformer", "vqvae"} <= set(calls[1][2])
    # no id2label for a 10-class model without names; defaults: scheduler's own
    info = json.loads((out / "conversion_info.json").read_text())
    assert info["preset"] is None and info["sampling"] == {}
    # a bad JSON override is a clear error (exit code 2)
    assert script.main(argv[:6] + ["--generator_overrides", "[1]"]) == 2
    assert "`--generator_overrides` must be a JSON object" in capsys.readouterr().err


def test_sampling_settings_sources():
    from bar_hf.conversion.convert import _sampling_settings

    yaml_cfg = {"model": {"generator": {"guidance_scale": 5.0, "mbm_head": {"randomize_temperature": 1.0}}}}
    settings, source = _sampling_settings("bar-b", yaml_cfg, None)
    assert settings == {"guidance_scale": 5.0, "temperature": 2.5, "tokens_allocation": [2, 2, 5, 7]}
    assert "evaluation settings" in source
    settings, source = _sampling_settings(None, yaml_cfg, {"guidance_scale": 3.0})
    assert settings == {"guidance_scale": 3.0, "temperature": 1.0} and "YAML" in source
    with pytest.raises(ValueError, match=r"unknown fields \['cfg'\]"):
        _sampling_settings(None, {}, {"cfg": 1})
