"""Layerwise casting: a second enable is refused before anything changes, dtype moves and saving are refused at the
call (not later), every castable layer of both models is stored in float8; the denoiser-level API diffusers' and
transformers' generic tests call (`transformer.enable_layerwise_casting`, `past_key_values=`)."""

import re

import pytest
import torch
from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN
from test_pipeline_bar import gens, get_dummy_components
from transformers import DynamicCache

from bar_hf import BARInpaintPipeline, BARPipeline


def layerwise_casting_dtypes(model):
    hooks = [m._diffusers_hook.get_hook("layerwise_casting") for m in model.modules() if hasattr(m, "_diffusers_hook")]
    hooks = [hook for hook in hooks if hook is not None]
    return (hooks[0].storage_dtype, hooks[0].compute_dtype) if hooks else None


CASTABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, torch.nn.Conv1d)


@pytest.fixture
def cast_pipe():
    pipe = BARPipeline(**get_dummy_components())
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_layerwise_casting(torch.float8_e4m3fn, torch.bfloat16)
    return pipe


def state(pipe):
    return {
        (name, key): value.clone()
        for name in ("transformer", "vqvae")
        for key, value in getattr(pipe, name).state_dict().items()
    }


def test_every_castable_layer_of_both_models_is_stored_in_float8(cast_pipe):
    for name in ("transformer", "vqvae"):
        model = getattr(cast_pipe, name)
        skip = (
            DEFAULT_SKIP_MODULES_PATTERN
            + tuple(model._keep_in_fp32_modules or ())
            + tuple(getattr(model, "_skip_layerwise_casting_patterns", None) or ())
        )
        checked = 0
        for module_name, module in model.named_modules():
            if not isinstance(module, CASTABLE) or any(re.search(p, module_name) for p in skip):
                continue
            assert module.weight.dtype == torch.float8_e4m3fn, f"{name}.{module_name}"
            checked += 1
        assert checked >= 10, (name, checked)
    head_linears = [m for m in cast_pipe.transformer.head.modules() if isinstance(m, torch.nn.Linear)]
    assert any(m.weight.dtype == torch.float8_e4m3fn for m in head_linears)


def test_second_enable_is_refused_and_changes_nothing(cast_pipe):
    before = state(cast_pipe)
    for call in (
        lambda: cast_pipe.enable_layerwise_casting(torch.float8_e5m2, torch.bfloat16),
        lambda: cast_pipe.transformer.enable_layerwise_casting(torch.float8_e4m3fn, torch.bfloat16),
    ):
        with pytest.raises(ValueError, match="already enabled.*Nothing was changed"):
            call()
    after = state(cast_pipe)
    assert all(after[k].dtype == before[k].dtype and torch.equal(after[k].float(), before[k].float()) for k in before)
    edit = BARInpaintPipeline.from_pipe(cast_pipe)  # failed with a dtype mismatch after the refused call
    edit.set_progress_bar_config(disable=True)
    out = edit(torch.rand(3, 24, 24), torch.ones(24, 24), 1, generator=gens(1), output_type="latent").images
    assert set(out.unique().tolist()) <= {0, 1}


def test_dtype_moves_and_saving_are_refused_at_the_call(cast_pipe, tmp_path):
    before = state(cast_pipe)
    for call, match in (
        (lambda: cast_pipe.to(torch.float32), "`to\\(dtype=torch.float32\\)` is refused"),
        (lambda: cast_pipe.to("cpu", dtype=torch.float16), "is refused: layerwise casting is enabled"),
        (lambda: cast_pipe.save_pretrained(tmp_path / "saved"), "`save_pretrained` is refused"),
    ):
        with pytest.raises(ValueError, match=match):
            call()
    assert not (tmp_path / "saved").exists()
    after = state(cast_pipe)
    assert all(after[k].dtype == before[k].dtype for k in before)
    assert cast_pipe.to("cpu") is not None  # device moves work
    assert layerwise_casting_dtypes(cast_pipe.transformer) == (torch.float8_e4m3fn, torch.bfloat16)
    assert cast_pipe([1], generator=gens(1), output_type="latent").images.shape[0] == 1


def test_transformer_level_enable_layerwise_casting():
    transformer = get_dummy_components()["transformer"]
    transformer.enable_layerwise_casting(torch.float8_e4m3fn, torch.bfloat16)
    assert transformer.model.layers[0].attn.qkv.weight.dtype == torch.float8_e4m3fn
    assert layerwise_casting_dtypes(transformer) == (torch.float8_e4m3fn, torch.bfloat16)


def test_past_key_values_is_an_alias_of_cache():
    transformer = get_dummy_components()["transformer"]
    bits = torch.randint(0, 2, (2, 3, transformer.config.bits_per_token), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        by_cache = transformer.model(bits=bits, class_labels=labels, cache=DynamicCache())
        by_alias = transformer.model(bits=bits, class_labels=labels, past_key_values=DynamicCache())
        alias_conditions = transformer.compute_conditions(bits, labels, past_key_values=DynamicCache()).conditions
    assert torch.equal(by_cache.conditions, by_alias.conditions) and torch.equal(alias_conditions, by_cache.conditions)
    assert by_alias.cache.get_seq_length() == by_cache.cache.get_seq_length() > 0
    with pytest.raises(ValueError, match="`cache` or as `past_key_values`.*not both"):
        transformer.model(bits=bits, class_labels=labels, cache=DynamicCache(), past_key_values=DynamicCache())
