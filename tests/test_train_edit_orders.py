"""`train_bar.py --edit_order_ratio`: "kept first" editing orders mixed into training."""

import json

import torch
from test_examples import load_script, tokens, trained_vq, workdir  # noqa: F401
from test_training_reliability import bar_argv, run_in_process

from bar_hf import BARConfig, BARForCausalImageModeling
from bar_hf.masks import kept_first_orders, random_token_masks

train_bar = load_script("train_bar")


def tiny_model():
    config = BARConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_bits=4, latent_height=4, latent_width=4,
        patch_size=1, head_hidden_size=16, head_num_layers=1, num_classes=3, num_class_tokens=1,
    )  # fmt: skip
    return BARForCausalImageModeling(config)


def test_without_edit_orders_matches_the_previous_sampler():
    model = tiny_model()
    for ratio in (0.0, 0.5, 1.0):
        expected = model.random_orders(8, ratio, "cpu", generator=torch.Generator().manual_seed(0))
        got = train_bar.training_orders(model, 8, ratio, 0.0, torch.Generator().manual_seed(0))
        assert torch.equal(got, expected)


def test_edit_orders_are_kept_first_orders_of_random_masks():
    model = tiny_model()
    got = train_bar.training_orders(model, 32, 0.0, 1.0, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    expected = kept_first_orders(random_token_masks(32, (4, 4), generator=generator))
    assert torch.equal(got, expected)
    assert (got != torch.arange(16)).any(-1).float().mean() > 0.5  # most rows are not raster


def test_random_permutations_are_left_alone():
    model = tiny_model()
    random_only = model.random_orders(64, 0.5, "cpu", generator=torch.Generator().manual_seed(2))
    mixed = train_bar.training_orders(model, 64, 0.5, 1.0, torch.Generator().manual_seed(2))
    permuted = (random_only != torch.arange(16)).any(-1)
    assert permuted.any() and torch.equal(mixed[permuted], random_only[permuted])
    assert (mixed[~permuted] != torch.arange(16)).any(-1).any()


def test_training_records_its_orders_in_the_config(workdir, tokens, trained_vq, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    argv = bar_argv(workdir, tokens, trained_vq, out, "--edit_order_ratio", "0.3")
    argv[argv.index("--max_train_steps") + 1] = "2"
    run_in_process("train_bar", argv)
    config = json.loads((out / "pipeline" / "transformer" / "config.json").read_text())
    assert config["training_orders"] == {
        "random_order_anneal_start": 1, "random_order_anneal_end": 3, "edit_order_ratio": 0.3,
    }  # fmt: skip


def test_edit_order_ratio_is_validated():
    import pytest

    with pytest.raises(SystemExit):
        train_bar.parse_args(["--use_dummy_data", "--preset", "bar-b", "--output_dir", "x", "--edit_order_ratio", "2"])
