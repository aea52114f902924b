"""LoRA fine-tuning with peft: train an adapter, save only it, reload it into a fresh pipeline (diffusers-style API)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_pipeline_bar import get_dummy_components

from bar_hf import BARPipeline
from bar_hf.pipelines.lora import add_lora_adapter, bar_lora_config, lora_layers

peft = pytest.importorskip("peft")

LABELS = torch.tensor([0, 1, 0, 1])


def batch(model, seed=0):
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    return {
        "bits": torch.randint(0, 2, (4, c.num_ar_steps, c.bits_per_token), generator=gen),
        "class_labels": LABELS,
        "mask_ratio_noise": torch.randn(4, c.num_ar_steps, generator=gen),
        "mask_noise": torch.rand(4, c.num_ar_steps, c.bits_per_token, generator=gen),
    }


def logits(pipe, inputs):
    with torch.no_grad():
        return pipe.transformer(**inputs).bit_logits


def sample(pipe):
    return pipe([0, 3], generator=[torch.Generator().manual_seed(i) for i in range(2)], output_type="latent").images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base pipeline saved to disk, and the same pipeline with a LoRA adapter trained for a few steps."""
    root = tmp_path_factory.mktemp("lora")
    pipe = BARPipeline(**get_dummy_components())
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(root / "base")
    model = pipe.transformer
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = batch(model)
    params = add_lora_adapter(model, bar_lora_config(4, alpha=8))
    assert all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    model.train()
    for _ in range(6):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    for key, value in model.state_dict().items():  # the base weights did not move
        if "lora_" not in key:
            assert torch.equal(value, base_state[key.replace(".base_layer", "")]), key
    pipe.save_lora_weights(root / "adapter")
    return root, pipe, inputs, losses


def test_training_lowers_the_loss_and_saves_only_the_adapter(trained):
    root, pipe, _, losses = trained
    assert losses[-1] < losses[0]
    assert sorted(p.name for p in (root / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    tensors = load_file(root / "adapter" / "adapter_model.safetensors")
    assert tensors and all(k.startswith("base_model.model.") and "lora_" in k for k in tensors)
    config = json.loads((root / "adapter" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8)
    assert sorted(config["target_modules"]) == ["proj", "qkv", "w12", "w3"]
    # qkv/proj/w12/w3 of both backbone blocks + w12/w3 of the head's ResBlock
    assert len(lora_layers(pipe.transformer)) == 2 * 4 + 2


def test_reloaded_adapter_reproduces_the_trained_model(trained):
    root, pipe, inputs, _ = trained
    fresh = BARPipeline.from_pretrained(root / "base")
    fresh.set_progress_bar_config(disable=True)
    base_logits, base_bits = logits(fresh, inputs), sample(fresh)
    fresh.load_lora_weights(root / "adapter")
    assert fresh.get_active_adapters() == ["default"]
    torch.testing.assert_close(logits(fresh, inputs), logits(pipe, inputs), rtol=0, atol=1e-6)
    assert not torch.allclose(logits(fresh, inputs), base_logits, atol=1e-3)
    assert torch.equal(sample(fresh), sample(pipe))
    assert not torch.equal(sample(fresh), base_bits)
    fresh.disable_lora()
    torch.testing.assert_close(logits(fresh, inputs), base_logits, rtol=0, atol=1e-6)
    fresh.enable_lora()
    fresh.set_adapters("default", 0.0)  # weight 0: the adapter contributes nothing
    torch.testing.assert_close(logits(fresh, inputs), base_logits, rtol=0, atol=1e-6)
    fresh.set_adapters("default", 1.0)
    torch.testing.assert_close(logits(fresh, inputs), logits(pipe, inputs), rtol=0, atol=1e-6)
    fresh.unload_lora_weights()
    assert fresh.get_active_adapters() == [] and not lora_layers(fresh.transformer)
    torch.testing.assert_close(logits(fresh, inputs), base_logits, rtol=0, atol=0)


def test_fuse_unfuse_and_save_a_fused_pipeline(trained, tmp_path):
    root, pipe, inputs, _ = trained
    fresh = BARPipeline.from_pretrained(root / "base")
    fresh.load_lora_weights(root / "adapter", adapter_name="boots")
    with pytest.raises(ValueError, match="save_lora_weights"):
        fresh.save_pretrained(tmp_path / "refused")
    with_lora = logits(fresh, inputs)
    fresh.set_adapters("boots", 0.5)
    half = logits(fresh, inputs)
    fresh.set_adapters("boots", 1.0)
    fresh.fuse_lora(lora_scale=0.5)  # merged into the base weights at half strength
    torch.testing.assert_close(logits(fresh, inputs), half, rtol=0, atol=1e-5)
    fresh.unfuse_lora()
    torch.testing.assert_close(logits(fresh, inputs), with_lora, rtol=0, atol=1e-5)
    fresh.fuse_lora()
    fresh.unload_lora_weights()
    torch.testing.assert_close(logits(fresh, inputs), with_lora, rtol=0, atol=1e-5)
    fresh.save_pretrained(tmp_path / "fused")
    reloaded = BARPipeline.from_pretrained(tmp_path / "fused")
    torch.testing.assert_close(logits(reloaded, inputs), with_lora, rtol=0, atol=1e-5)
    assert not torch.allclose(half, with_lora, atol=1e-4)


def test_peft_reads_the_adapter_and_bad_inputs_are_refused(trained, tmp_path):
    root, pipe, inputs, _ = trained
    base = BARPipeline.from_pretrained(root / "base").transformer
    peft_model = peft.PeftModel.from_pretrained(base, root / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).bit_logits, logits(pipe, inputs), rtol=0, atol=1e-6)
    fresh = BARPipeline.from_pretrained(root / "base")
    with pytest.raises(ValueError, match="not a LoRA adapter folder"):
        fresh.load_lora_weights(root / "base")
    fresh.load_lora_weights(root / "adapter")
    with pytest.raises(ValueError, match="already loaded"):
        add_lora_adapter(fresh.transformer, bar_lora_config(2), adapter_name="default")
    with pytest.raises(ValueError, match="not all loaded"):
        fresh.set_adapters(["nope"])
    with pytest.raises(ValueError, match="`rank` must be a positive int"):
        bar_lora_config(0)
    with pytest.raises(ValueError, match="not found in the base model"):
        add_lora_adapter(
            BARPipeline.from_pretrained(root / "base").transformer, bar_lora_config(2, target_modules=["nothing"])
        )


def test_train_bar_lora_rank_saves_a_resumable_adapter(tmp_path):
    from test_examples import load_script

    components = get_dummy_components()
    components["vqvae"].save_pretrained(tmp_path / "vqvae")
    components["transformer"].save_pretrained(tmp_path / "transformer")
    train_bar = load_script("train_bar")
    common = [
        "--use_dummy_data", "--vqvae_model_name_or_path", str(tmp_path / "vqvae"), "--lora_rank", "2",
        "--output_dir", str(tmp_path / "run"), "--train_batch_size", "4", "--checkpointing_steps", "2",
        "--learning_rate", "1e-2", "--lr_warmup_steps", "0", "--logging_steps", "1",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="--pretrained_model_name_or_path"):
        train_bar.main(
            train_bar.parse_args(common + ["--model_config", str(tmp_path / "transformer" / "config.json")])
        )
    common += ["--pretrained_model_name_or_path", str(tmp_path / "transformer")]
    train_bar.main(train_bar.parse_args(common + ["--max_train_steps", "2"]))
    run = tmp_path / "run"
    assert (run / "checkpoint-2").is_dir() and not (run / "pipeline").exists()
    first = load_file(run / "lora" / "adapter_model.safetensors")
    train_bar.main(train_bar.parse_args(common + ["--max_train_steps", "3", "--resume_from_checkpoint", "latest"]))
    second = load_file(run / "lora" / "adapter_model.safetensors")
    assert first.keys() == second.keys() and any(not torch.equal(first[k], second[k]) for k in first)
    steps = [
        json.loads(line)["step"] for line in (run / "logs" / "train_bar" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3]  # the second invocation resumed from checkpoint-2 and ran one step
    pipe = BARPipeline(**get_dummy_components())
    inputs = batch(pipe.transformer)
    base = logits(pipe, inputs)
    pipe.load_lora_weights(run / "lora")
    assert not torch.allclose(logits(pipe, inputs), base, atol=1e-4)
