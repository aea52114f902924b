import pytest
import torch
from transformers import AutoConfig, AutoModel, DynamicCache

from bar_hf import BARConfig, BARForCausalImageModeling, BARModel
from bar_hf.bits import patchify_bits
from bar_hf.models.modeling_bar import (
    build_2d_rope_table,
    order_annealing_ratio,
    weight_decay_parameter_groups,
)


def tiny_config(**overrides):
    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        latent_height=4,
        latent_width=4,
        num_bits=5,
        patch_size=1,
        num_classes=7,
        num_class_tokens=3,
        head_hidden_size=24,
        head_num_layers=2,
        head_intermediate_size=29,
        head_fourier_size=8,
    )
    kwargs.update(overrides)
    return BARConfig(**kwargs)


def tiny_model(**overrides):
    torch.manual_seed(0)
    model = BARForCausalImageModeling(tiny_config(**overrides)).eval()
    with torch.no_grad():  # AdaLN-zero makes a fresh model ignore its inputs; wake the gates up for the tests
        for name, param in model.named_parameters():
            if "adaLN_modulation" in name:
                param.normal_(0, 0.05)
    return model


def random_bits(model, batch=3, seed=1):
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (batch, c.num_ar_steps, c.bits_per_token), generator=gen)


LABELS = torch.tensor([0, 3, 7])  # 7 = null class


def test_derived_values():
    c = tiny_config(patch_size=2)
    assert (c.num_ar_steps, c.bits_per_token, c.prefix_length, c.null_class_id) == (4, 20, 4, 7)
    b = BARConfig.from_preset("bar-b")
    assert (b.num_ar_steps, b.bits_per_token, b.prefix_length, b.intermediate_size) == (256, 16, 33, 2048)
    assert BARConfig.from_preset("bar-l").intermediate_size == 3413
    assert BARConfig.from_preset("bar-b").head_intermediate_size == 5461
    assert BARConfig.from_preset("bar-l-512").head_bit_embedding_size == 205


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(latent_height=5), "divisible by `patch_size`"),
        (dict(hidden_size=24, num_attention_heads=4), "divisible by 4"),
        (dict(hidden_size=30), "divisible by `num_attention_heads`"),
        (dict(head_type="conv"), "head_type"),
        (dict(num_bits=0), "num_bits"),
        (dict(class_dropout_prob=1.5), "class_dropout_prob"),
        (dict(head_type="linear", num_bits=5, patch_size=2, linear_head_max_bits=16), "linear_head_max_bits"),
        (dict(position_embedding_size=10), "position_embedding_size"),
    ],
)
def test_config_validation(kwargs, match):
    base = dict(patch_size=2) if "latent_height" in kwargs else {}
    with pytest.raises(ValueError, match=match):
        tiny_config(**{**base, **kwargs})


def test_preset_unknown():
    with pytest.raises(ValueError, match="bar-b"):
        BARConfig.from_preset("bar-xl")


# exact whole-generator and head parameter counts of docs/method.md §3.1, instantiated on the meta device
PRESET_COUNTS = {
    "bar-b-4": (415_752_223, 157_358_870),
    "bar-b-2": (415_076_098, 156_572_126),
    "bar-b": (415_322_158, 156_375_710),
    "bar-l": (1_107_798_990, 156_375_710),
    "bar-l-512": (1_110_727_993, 156_355_449),
}


@pytest.mark.parametrize("name", sorted(PRESET_COUNTS))
def test_preset_parameter_counts(name):
    with torch.device("meta"):
        model = BARForCausalImageModeling(BARConfig.from_preset(name))
    total, head = PRESET_COUNTS[name]
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.head.parameters()) == head
    c = model.config
    assert model.model.rope_cos.shape == (c.prefix_length + c.num_ar_steps, c.head_dim)


def test_shapes_and_loss_backward():
    model = tiny_model().train()
    out = model(random_bits(model), LABELS)
    assert out.conditions.shape == (3, 16, 24)
    assert out.bit_logits.shape == (3, 16, 5, 2)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.head.input_proj.weight.grad.abs().sum() > 0
    assert model.head.t_embedder.W.grad is None  # fixed random Fourier vector


@pytest.mark.parametrize("head_type", ["mbm", "bitwise", "linear"])
def test_all_heads_train(head_type):
    model = tiny_model(head_type=head_type).train()
    out = model(random_bits(model), LABELS)
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert model.model.input_merge.weight.grad.abs().sum() > 0
    states = torch.full((6, 5), 2)
    states[:, 0] = 1
    logits = model.head_logits(states, 0.8, torch.randn(6, 24))
    assert logits.shape == (6, 5, 2)


def test_linear_head_marginals_respect_fixed_bits():
    model = tiny_model(head_type="linear")
    conditions = torch.randn(2, 24)
    free = model.head_logits(torch.full((2, 5), 2), 1.0, conditions)
    # with nothing fixed, the bit marginals of the id softmax sum (in prob) to one per bit
    assert torch.allclose(
        free.logsumexp(-1), torch.logsumexp(model.head.id_logits(conditions), -1)[:, None].expand(2, 5)
    )
    fixed = torch.tensor([[1, 2, 2, 2, 2], [0, 2, 2, 2, 2]])
    cond = model.head_logits(fixed, 0.8, conditions)
    assert torch.isinf(cond[0, 0, 0]) and torch.isinf(cond[1, 0, 1])  # the fixed value is certain


def test_mbm_loss_weights_and_min_mask(monkeypatch):
    model = tiny_model()
    c = model.config
    conditions, targets = torch.randn(50, 24), torch.randint(0, 2, (50, 5))
    seen = {}

    def spy(states, ratio, cond):
        seen["states"], seen["ratio"] = states.clone(), ratio.clone()
        return torch.zeros(states.shape[0], c.bits_per_token, 2)

    monkeypatch.setattr(model.head, "forward", spy)
    loss, _ = model.head_loss(conditions, targets)
    masked = seen["states"] == 2
    assert masked.sum(-1).min() >= 1  # at least one masked bit per token
    assert (seen["ratio"] >= 1 / 5).all() and (seen["ratio"] <= 1).all()
    assert torch.allclose(loss, torch.log(torch.tensor(2.0)))  # uniform logits: CE = log 2 under any weighting
    assert torch.equal(seen["states"][~masked], targets[~masked])


def test_kv_cache_parity_step_by_step():
    model = tiny_model()
    bits = random_bits(model)
    full = model.compute_conditions(bits, LABELS).conditions
    cache = DynamicCache()
    out = model.compute_conditions(None, LABELS, cache=cache)
    conditions = [out.conditions]
    for i in range(model.config.num_ar_steps - 1):
        conditions.append(model.compute_conditions(bits[:, i : i + 1], LABELS, cache=cache).conditions)
    incremental = torch.cat(conditions, 1)
    assert incremental.shape == full.shape
    assert (incremental - full).abs().max() <= 1e-5
    # the last token's slot predicts nothing
    assert model.compute_conditions(bits[:, -1:], LABELS, cache=cache).conditions.shape[1] == 0


def test_kv_cache_parity_chunks_random_orders_and_eager():
    model = tiny_model(patch_size=2)
    bits = random_bits(model)
    orders = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    full = model.compute_conditions(bits, LABELS, orders=orders).conditions
    cache = DynamicCache()
    first = model.compute_conditions(bits[:, :2], LABELS, orders=orders, cache=cache).conditions
    second = model.compute_conditions(bits[:, 2:3], LABELS, orders=orders, cache=cache).conditions
    assert (torch.cat([first, second], 1) - full).abs().max() <= 1e-5
    model.config._attn_implementation = "eager"
    assert (model.compute_conditions(bits, LABELS, orders=orders).conditions - full).abs().max() <= 1e-5


def test_causality():
    model = tiny_model()
    bits = random_bits(model)
    changed = bits.clone()
    changed[:, 9] = 1 - changed[:, 9]
    a = model.compute_conditions(bits, LABELS).conditions
    b = model.compute_conditions(changed, LABELS).conditions
    # token 9 is the input of the slot predicting token 10: conditions 0..9 unchanged, later ones change
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_class_conditioning_and_null_class():
    model = tiny_model()
    bits = random_bits(model, batch=2)
    a = model.compute_conditions(bits, torch.tensor([1, 7])).conditions
    b = model.compute_conditions(bits, torch.tensor([2, 7])).conditions
    assert not torch.allclose(a[0], b[0])
    assert torch.equal(a[1], b[1])
    # the null class is row num_classes + 3 of the class table, class c is row c + 3
    assert model.model.class_embed.num_embeddings == 7 + 4
    assert model.model.class_rows(torch.tensor([0, 7])).tolist() == [3, 10]
    with pytest.raises(ValueError, match=r"class_labels.*\[0, 7\]"):
        model.compute_conditions(bits, torch.tensor([1, 8]))


def test_label_dropout_only_in_training():
    model = tiny_model()
    bits = random_bits(model)
    labels = torch.tensor([0, 1, 2])
    ref = model.compute_conditions(bits, labels).conditions
    out_eval = model(bits, labels)
    assert torch.equal(out_eval.conditions, ref)
    model.train()
    dropped = model(bits, labels, class_dropout_prob=0.9999)
    null = model.compute_conditions(bits, torch.full((3,), 7)).conditions
    assert torch.allclose(dropped.conditions, null)


def test_patchified_model_uses_bits_layout():
    model = tiny_model(patch_size=2)
    c = model.config
    latent = torch.randint(0, 2, (2, 16, 5), generator=torch.Generator().manual_seed(3))
    ar = patchify_bits(latent, (4, 4), 2)
    assert torch.equal(model.to_ar_bits(latent), ar)
    assert (c.num_ar_steps, c.bits_per_token) == (4, 20)
    a = model.compute_conditions(ar, torch.tensor([1, 2])).conditions
    labels = torch.tensor([1, 2])
    assert torch.equal(model(latent, labels).conditions, a)
    with pytest.raises(ValueError, match="bits"):
        model(torch.zeros(2, 16, 4, dtype=torch.long), labels)


def test_random_orders_and_annealing():
    model = tiny_model()
    orders = model.random_orders(64, 1.0, "cpu")
    assert torch.equal(orders.sort(-1).values, torch.arange(16).expand(64, 16))
    assert torch.equal(model.random_orders(4, 0.0, "cpu"), torch.arange(16).expand(4, 16))
    assert order_annealing_ratio(0, 10, 20) == 1.0
    assert order_annealing_ratio(15, 10, 20) == 0.5
    assert order_annealing_ratio(21, 10, 20) == 0.0
    out = model(random_bits(model), LABELS, random_order_ratio=1.0)
    assert out.orders.shape == (3, 16)


def test_rope_table_layout():
    cos, sin = build_2d_rope_table(2, 3, 8, prefix_length=2)
    assert cos.shape == (2 + 6, 8)
    assert torch.equal(cos[:2], torch.ones(2, 8)) and torch.equal(sin[:2], torch.zeros(2, 8))
    # cell (row 1, col 2) = table row 2 + 1*3 + 2; row half uses row index, column half uses column index,
    # frequencies 10000^(-2j/4) for j = 0, 1, each repeated for an interleaved pair
    freqs = torch.tensor([1.0, 1.0, 0.01, 0.01])
    assert torch.allclose(sin[2 + 5, :4], torch.sin(1 * freqs))
    assert torch.allclose(sin[2 + 5, 4:], torch.sin(2 * freqs))


def test_save_load_round_trip_and_auto_classes(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    loaded = BARForCausalImageModeling.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # non-persistent RoPE buffers are recreated by _init_weights (transformers 5 loads on the meta device)
    assert torch.equal(loaded.model.rope_cos, model.model.rope_cos)
    bits = random_bits(model)
    assert torch.equal(
        loaded.compute_conditions(bits, LABELS).conditions, model.compute_conditions(bits, LABELS).conditions
    )
    assert isinstance(AutoConfig.from_pretrained(tmp_path), BARConfig)
    backbone = AutoModel.from_pretrained(tmp_path)
    assert isinstance(backbone, BARModel)
    assert torch.equal(backbone.cls_token, model.model.cls_token)


def test_fresh_init_is_adaln_zero():
    torch.manual_seed(0)
    model = BARForCausalImageModeling(tiny_config())
    for name, param in model.named_parameters():
        if "adaLN_modulation" in name:
            assert torch.count_nonzero(param) == 0, name
    assert model.model.pos_embed.std() > 0.01


def test_gradient_checkpointing_same_grads():
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        torch.manual_seed(5)
        model(random_bits(model), LABELS, class_dropout_prob=0.0).loss.backward()
        grads.append(model.model.layers[0].mlp.w12.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_forward():
    model = tiny_model().to(torch.bfloat16)
    out = model.compute_conditions(random_bits(model), LABELS)
    assert out.conditions.dtype == torch.bfloat16 and torch.isfinite(out.conditions.float()).all()
    logits = model.head_logits(torch.full((3, 5), 2), 1.0, out.conditions[:, 0])
    assert logits.dtype == torch.bfloat16


def test_weight_decay_groups_follow_authors_rule():
    model = tiny_model()
    decay, no_decay = weight_decay_parameter_groups(model, 0.03)
    decayed = {id(p) for p in decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert "model.cls_token" in names  # 3-D, no matching substring
    assert "model.layers.0.attn.qkv.weight" in names
    assert "model.latent_condition_proj.weight" in names
    assert not any("adaLN" in n or "embed" in n or "norm" in n or n.endswith("bias") for n in names)


def test_bad_inputs():
    model = tiny_model()
    with pytest.raises(ValueError, match="bits"):
        model.compute_conditions(torch.full((3, 2, 5), 2), LABELS)
    with pytest.raises(ValueError, match="bits"):
        model.compute_conditions(torch.zeros(3, 2, 4, dtype=torch.long), LABELS)
    with pytest.raises(ValueError, match="orders"):
        model.compute_conditions(None, LABELS, orders=torch.zeros(3, 5, dtype=torch.long))
    cache = DynamicCache()
    model.compute_conditions(None, LABELS, cache=cache)
    with pytest.raises(ValueError, match="at least one new token"):
        model.compute_conditions(None, LABELS, cache=cache)
    with pytest.raises(ValueError, match="bit_states"):
        model.head_logits(torch.zeros(2, 4, dtype=torch.long), 1.0, torch.randn(2, 24))


def test_rope_table_stays_float32_after_dtype_cast():
    model = tiny_model().to(torch.bfloat16)
    cos, _ = model.model.compute_rope_table()
    assert model.model.rope_cos.dtype == torch.float32 and torch.equal(model.model.rope_cos, cos)


def test_static_cache_parity():
    from transformers.cache_utils import StaticCache

    model = tiny_model(patch_size=2)
    bits = random_bits(model)
    full = model.compute_conditions(bits, LABELS).conditions
    c = model.config
    cache = StaticCache(config=c, max_cache_len=c.prefix_length + c.num_ar_steps)
    steps = [model.compute_conditions(None, LABELS, cache=cache).conditions]
    for i in range(c.num_ar_steps - 1):
        steps.append(model.compute_conditions(bits[:, i : i + 1], LABELS, cache=cache).conditions)
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5
