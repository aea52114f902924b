"""transformers conventions of the BAR generator's public forward (deterministic path, outputs, embeddings)."""

import pytest
import torch
from test_modeling_bar import LABELS, random_bits, tiny_model

from bar_hf import BARBitScheduler, BARForCausalImageModeling


def noise(model, batch=3, seed=2):
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    return {
        "mask_ratio_noise": torch.randn(batch, c.num_ar_steps, generator=gen),
        "mask_noise": torch.rand(batch, c.num_ar_steps, c.bits_per_token, generator=gen),
    }


def test_explicit_noise_is_deterministic_and_per_sample(tmp_path):
    model = tiny_model()
    bits = random_bits(model)
    kwargs = noise(model)
    first = model(bits, LABELS, **kwargs)
    second = model(bits, LABELS, **kwargs)
    assert torch.equal(first.loss, second.loss) and torch.equal(first.bit_logits, second.bit_logits)
    # each sample's logits depend only on its own noise row: the first row alone gives the same logits
    single = model(bits[:1], LABELS[:1], **{k: v[:1] for k, v in kwargs.items()})
    torch.testing.assert_close(single.bit_logits[0], first.bit_logits[0], atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = BARForCausalImageModeling.from_pretrained(tmp_path).eval()
    again = reloaded(bits, LABELS, **kwargs)
    assert torch.equal(again.loss, first.loss) and torch.equal(again.bit_logits, first.bit_logits)


def test_generator_makes_training_forward_reproducible():
    model = tiny_model().train()
    bits = random_bits(model)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return model(bits, LABELS, random_order_ratio=0.5, class_dropout_prob=0.5, generator=gen)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.orders, b.orders)
    assert not torch.equal(a.bit_logits, c.bit_logits)


def test_mask_uses_the_authors_rank_rule(monkeypatch):
    """Masked bits = `noise.argsort(-1) < n` (not the inverse permutation), in the head loss and in `add_noise`."""
    model = tiny_model()
    k = model.config.bits_per_token
    conditions, targets = torch.randn(40, 24), torch.randint(0, 2, (40, k))
    ratio_noise, mask_noise = torch.randn(40), torch.rand(40, k)
    seen = {}

    def spy(states, ratio, cond):
        seen["states"], seen["ratio"] = states.clone(), ratio.clone()
        return torch.zeros(states.shape[0], k, 2)

    monkeypatch.setattr(model.head, "forward", spy)
    model.head_loss(conditions, targets, mask_ratio_noise=ratio_noise, mask_noise=mask_noise)
    c = model.config
    ratio = (1 - torch.sigmoid(ratio_noise * c.mask_ratio_std + c.mask_ratio_mean)).clamp(1 / k, 1)
    n = torch.round(k * ratio).clamp(min=1)
    assert torch.equal(seen["ratio"], ratio)
    assert torch.equal(seen["states"] == 2, mask_noise.argsort(-1) < n[:, None])

    scheduler = BARBitScheduler(bits_per_token=8)
    bits = torch.randint(0, 2, (16, 8))
    noised = scheduler.add_noise(bits, 0.25, generator=torch.Generator().manual_seed(4))
    expected = torch.rand(16, 8, generator=torch.Generator().manual_seed(4)).argsort(-1) < 2
    assert torch.equal(noised == 2, expected)


def test_noise_validation():
    model = tiny_model()
    bits = random_bits(model)
    with pytest.raises(ValueError, match=r"`mask_noise` must have shape \(3, 16, 5\)"):
        model(bits, LABELS, mask_noise=torch.rand(3, 16, 4))
    with pytest.raises(ValueError, match="`mask_ratio_noise` must be a floating-point tensor"):
        model(bits, LABELS, mask_ratio_noise=torch.zeros(3, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="only applies to the 'mbm' head"):
        tiny_model(head_type="bitwise")(bits, LABELS, mask_noise=torch.rand(3, 16, 5))


def test_return_dict_and_output_flags_follow_the_config():
    model = tiny_model()
    bits, kwargs = random_bits(model), noise(model)
    as_tuple = model(bits, LABELS, return_dict=False, **kwargs)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], model(bits, LABELS, **kwargs).loss)
    model.config.return_dict = False
    assert isinstance(model(bits, LABELS, **kwargs), tuple)
    assert isinstance(model.model(None, LABELS), tuple)
    # the sampling API keeps returning outputs with attributes whatever the config says
    assert model.compute_conditions(None, LABELS).conditions.shape[1] == 1
    model.config.return_dict = True
    assert model(bits, LABELS, **kwargs).hidden_states is None
    model.config.output_hidden_states = True
    hidden = model(bits, LABELS, **kwargs).hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert hidden[0].shape == (3, model.config.prefix_length + model.config.num_ar_steps, 32)
    assert model(bits, LABELS, output_hidden_states=False, **kwargs).hidden_states is None


def test_attentions_with_eager_attention():
    model = tiny_model()
    model.set_attn_implementation("eager")
    out = model(random_bits(model), LABELS, output_attentions=True, **noise(model))
    slots = model.config.prefix_length + model.config.num_ar_steps
    assert len(out.attentions) == model.config.num_hidden_layers
    assert out.attentions[0].shape == (3, model.config.num_attention_heads, slots, slots)
    assert torch.equal(out.attentions[0].triu(1), torch.zeros_like(out.attentions[0]))  # causal
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, 4, slots))


def test_input_embeddings_for_peft_and_gradient_checkpointing():
    """The PEFT path: frozen base, reentrant checkpointing; grads reach a checkpointed layer only via the hook."""

    def layer_grad(enable_hook: bool):
        model = tiny_model().train()
        assert model.get_input_embeddings() is model.model.bit_embed
        assert model.model.get_input_embeddings() is model.model.bit_embed
        model.requires_grad_(False)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
        if enable_hook:
            model.enable_input_require_grads()
            assert model._require_grads_hooks  # found the embeddings (it only warns when it cannot)
        model.head.output_embed.weight.requires_grad_(True)
        adaln = model.model.layers[0].adaLN_modulation[1].weight
        adaln.requires_grad_(True)
        model(random_bits(model), LABELS, **noise(model)).loss.backward()
        return adaln.grad

    assert layer_grad(enable_hook=False) is None
    grad = layer_grad(enable_hook=True)
    assert grad is not None and grad.abs().sum() > 0
