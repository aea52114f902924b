"""LoRA loading is strict and atomic: an adapter that does not fit the model (rank / width / depth) is refused before
any module changes; bad `set_adapters` / `fuse_lora` arguments are refused with the argument named."""

import json

import pytest
import torch
from test_pipeline_bar import get_dummy_components

from bar_hf import BARConfig, BARForCausalImageModeling, BARPipeline
from bar_hf.pipelines.lora import add_lora_adapter, bar_lora_config, lora_layers

peft = pytest.importorskip("peft")


def tiny_transformer(**overrides):
    torch.manual_seed(0)
    kw = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, latent_height=6, latent_width=6, num_bits=5,
        num_classes=7, num_class_tokens=3, head_hidden_size=24, head_num_layers=1, head_fourier_size=8,
    )  # fmt: skip
    return BARForCausalImageModeling(BARConfig(**{**kw, **overrides})).eval()


def adapter_of(model, rank=2):
    """(state dict, config dict) of a random LoRA adapter trained on `model` (weights made non-zero)."""
    add_lora_adapter(model, bar_lora_config(rank))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    state = peft.functional.get_peft_model_state_dict(model, adapter_name="default")
    return state, model.peft_config["default"].to_dict()


@pytest.fixture
def pipe():
    pipe = BARPipeline(**get_dummy_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [type(m) for m in model.modules()]


def assert_unchanged(model, before):
    state, types = snapshot(model)
    assert [type(m) for m in model.modules()] == before[1]
    assert state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
    assert not lora_layers(model) and not getattr(model, "peft_config", None)


@pytest.mark.parametrize(
    "source, match",
    [
        (dict(hidden_size=24, num_attention_heads=2), "does not fit this model.*expected \\(r, 32\\)"),  # width
        (
            dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=1),
            "no weights for adapted layer `model.layers.1",
        ),
        (dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=3), "matches no adapted layer"),  # deeper
    ],
)
def test_an_adapter_that_does_not_fit_is_refused_and_nothing_changes(pipe, tmp_path, source, match):
    state, config = adapter_of(tiny_transformer(**source))
    before = snapshot(pipe.transformer)
    with pytest.raises(ValueError, match=match):
        pipe.load_lora_weights(state, adapter_config=config)
    assert_unchanged(pipe.transformer, before)
    pipe.save_pretrained(tmp_path / "saved")  # no half-loaded adapter blocks saving


def test_wrong_rank_in_the_config_and_a_second_adapter_roll_back(pipe):
    good_state, good_config = adapter_of(tiny_transformer(hidden_size=32, num_attention_heads=4), rank=2)
    pipe.load_lora_weights(good_state, adapter_config=good_config, adapter_name="good")
    before = snapshot(pipe.transformer)
    bad_config = {**good_config, "r": 4}
    with pytest.raises(ValueError, match="rank 2 but the adapter config says r=4"):
        pipe.load_lora_weights(good_state, adapter_config=bad_config, adapter_name="bad")
    state, _ = snapshot(pipe.transformer)
    assert all(torch.equal(state[k], before[0][k]) for k in state) and state.keys() == before[0].keys()
    assert list(pipe.transformer.peft_config) == ["good"] and pipe.get_active_adapters() == ["good"]


def test_set_adapters_and_fuse_refuse_bad_weights_without_changes(pipe):
    state, config = adapter_of(tiny_transformer(hidden_size=32, num_attention_heads=4))
    pipe.load_lora_weights(state, adapter_config=config, adapter_name="a")
    layer = lora_layers(pipe.transformer)[0][1]
    scale = layer.scaling["a"]
    for weights, error, match in [
        (float("nan"), ValueError, "`adapter_weights` must be finite"),
        ("x", TypeError, "`adapter_weights` must be a finite number"),
        ([1.0, 2.0], ValueError, "`adapter_weights` has 2 entries"),
    ]:
        with pytest.raises(error, match=match):
            pipe.set_adapters("a", weights)
        assert layer.scaling["a"] == scale
    with pytest.raises(TypeError, match="`adapter_names` must be"):
        pipe.set_adapters(3)
    before = snapshot(pipe.transformer)
    with pytest.raises(ValueError, match="`lora_scale` must be finite"):
        pipe.fuse_lora(lora_scale=float("inf"))
    with pytest.raises(ValueError, match="`adapter_names` must name loaded adapters"):
        pipe.fuse_lora(adapter_names=["nope"])
    assert all(torch.equal(v, before[0][k]) for k, v in pipe.transformer.state_dict().items())
    pipe.set_adapters("a", 0.5)
    assert layer.scaling["a"] == pytest.approx(scale * 0.5)


def test_folder_with_only_the_config_is_a_clear_error(pipe, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(bar_lora_config(2).to_dict(), default=list))
    with pytest.raises(ValueError, match="no adapter weights"):
        pipe.load_lora_weights(folder)
    with pytest.raises(ValueError, match="is a file, not an adapter folder"):
        pipe.load_lora_weights(folder / "adapter_config.json")
    assert not lora_layers(pipe.transformer)
