"""Randomized argument fuzzing: every pipeline call / scheduler operation either succeeds with a valid
output or raises `ValueError` / `TypeError` naming the offending argument. No other exception, no silent garbage.

Derandomized (a fixed seed, no example database) so CI is reproducible; 700 pipeline calls + 2 × 250 scheduler
operations on a very small model (2×2 latent grid, 3 bits per token).
"""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from bar_hf import (
    BARBitScheduler,
    BARConfig,
    BARForCausalImageModeling,
    BARLogProbBitScheduler,
    BARPipeline,
    BARVQModel,
)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
NUM_CLASSES, NUM_BITS, SIZE = 4, 3, 8


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vqvae = BARVQModel(
        sample_size=SIZE, patch_size=4, num_bits=NUM_BITS, encoder_hidden_size=8, encoder_num_layers=1,
        encoder_num_heads=2, encoder_intermediate_size=8, encoder_num_position_embeddings=4, decoder_hidden_size=8,
        decoder_num_layers=1, decoder_num_heads=2, decoder_intermediate_size=8,
    ).eval()  # fmt: skip
    config = BARConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, latent_height=2, latent_width=2,
        num_bits=NUM_BITS, num_classes=NUM_CLASSES, num_class_tokens=1, head_hidden_size=8, head_num_layers=1,
        head_fourier_size=4,
    )  # fmt: skip
    pipe = BARPipeline(
        vqvae=vqvae,
        transformer=BARForCausalImageModeling(config).eval(),
        scheduler=BARBitScheduler(bits_per_token=NUM_BITS, num_inference_steps=2),
        id2label={0: "ant, Alpha", 1: "bee", 2: "Bee", 3: "cat"},  # "BEE" is ambiguous, "bee" / "Bee" exact
        guidance_scale=2.0,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------- strategies
def _scalar_variants(values):
    """Python numbers plus numpy / torch scalar wrappers of them."""
    return st.one_of(
        st.sampled_from(values),
        st.sampled_from(values).map(lambda v: np.float32(v) if isinstance(v, float) else np.int64(v)),
        st.sampled_from(values).map(torch.tensor),
    )


single_label = st.one_of(
    st.integers(-2, NUM_CLASSES + 1),
    st.sampled_from(["ant", "ALPHA", "bee", "Bee", "BEE", "cat", " Cat ", "dog", "", "2", "-1", "9"]),
    st.sampled_from([1.0, True, None, b"ant", 1 + 0j]),
    st.integers(0, NUM_CLASSES - 1).map(np.int64),
    st.integers(0, NUM_CLASSES - 1).map(torch.tensor),
)
label_list = st.lists(single_label, min_size=0, max_size=3)
class_labels = st.one_of(
    single_label,
    label_list,
    st.lists(label_list, max_size=2),  # DiT-style nested lists
    st.lists(st.integers(-1, NUM_CLASSES), min_size=0, max_size=3).map(np.array),
    st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=3).map(lambda v: torch.tensor(v)[:, None]),
    st.lists(st.floats(0, 3), min_size=1, max_size=2).map(np.array),
    st.sampled_from([set(), {1: 2}, object()]),
)
numbers_any = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    _scalar_variants([0.0, 0.5, 1.0, 2.0, 4.0, 0, 3]),
    st.sampled_from(["2", True, [1.0], float("nan"), -float("inf")]),
)
counts = st.one_of(
    _scalar_variants([1, 2]),
    st.sampled_from([0, -1, 1.0, 1.5, "2", True, None, 10**6]),
)
steps = st.one_of(st.none(), st.integers(-1, NUM_BITS + 1), _scalar_variants([1, 2, 3]), st.sampled_from([2.0, "2"]))
allocations = st.one_of(
    st.none(),
    st.lists(st.integers(-1, 3), min_size=0, max_size=4),
    st.lists(st.integers(1, 3), min_size=1, max_size=3).map(np.array),
    st.sampled_from(["[1, 2]", [1.0, 2.0], [True, 2], 3]),
)
tensor_inputs = st.one_of(
    st.none(), st.sampled_from([["bits"], ["bits", "conditions"], ["conditions"], ["latents"], "bits", 5, []])
)


@st.composite
def callbacks(draw):
    kind = draw(
        mostly(
            st.sampled_from(["none", "none", "identity", "replace", "inplace", "drop"]),
            st.sampled_from(["return_none", "reshape", "float", "replace", "inplace"]),
        )
    )
    value = draw(mostly(st.integers(0, 1), st.integers(-1, 7)))
    if kind == "none":
        return None, kind, value

    def callback(p, i, t, kwargs):
        bits = kwargs.get("bits")
        if kind == "return_none":
            return None
        if bits is not None and kind == "replace":
            kwargs["bits"] = torch.full_like(bits, value)
        elif bits is not None and kind == "inplace":
            bits[:, -1] = value
        elif bits is not None and kind == "reshape":
            kwargs["bits"] = bits[:, :, :1]
        elif bits is not None and kind == "float":
            kwargs["bits"] = bits.float()
        elif kind == "drop":
            return {}
        return kwargs

    return callback, kind, value


def generators(batch_hint):
    return st.one_of(
        st.none(),
        st.integers(0, 3).map(lambda s: torch.Generator().manual_seed(s)),
        st.integers(0, 4).map(lambda n: [torch.Generator().manual_seed(i) for i in range(n)]),
        st.sampled_from([0, [None], "seed"]),
    )


def mostly(valid, invalid):
    """Valid values 9 times in 10: with 13 arguments a good share of calls succeed and every invalid kind is hit."""
    return st.integers(0, 9).flatmap(lambda r: invalid if r == 5 else valid)  # 5: not a boundary hypothesis favours


def tagged(valid, invalid):
    """As `mostly`, drawing `(value, drawn_from_valid)` so the test knows which arguments may be the offending ones."""
    return st.integers(0, 9).flatmap(
        lambda r: invalid.map(lambda v: (v, False)) if r == 5 else valid.map(lambda v: (v, True))
    )


valid_label = st.one_of(
    st.integers(0, NUM_CLASSES - 1),
    st.sampled_from(["ant", "ALPHA", " Alpha ", "bee", "Bee", "cat", "CAT", "2"]),
    st.integers(0, NUM_CLASSES - 1).map(np.int64),
    st.integers(0, NUM_CLASSES - 1).map(torch.tensor),
)
p_labels = tagged(
    st.one_of(
        valid_label,
        st.lists(valid_label, min_size=1, max_size=2),
        st.lists(st.lists(valid_label, min_size=1, max_size=1), min_size=1, max_size=2),  # DiT-style nested
        st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=2).map(np.array),
        st.lists(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=2).map(lambda v: torch.tensor(v)[:, None]),
    ),
    class_labels,
)
p_count = tagged(_scalar_variants([1, 2]), st.sampled_from([0, -1, 1.5, "2", True, None, 10**6]))
p_guidance = tagged(
    st.one_of(st.none(), st.floats(0, 6), _scalar_variants([0.0, 1.0, 3.0, 2])),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1.0, "2", True, [1.0], np.float32("nan")]),
)
p_schedule = tagged(st.sampled_from([None, "linear", "constant"]), st.sampled_from(["", "cosine", 1, "LINEAR"]))
p_steps = tagged(
    st.one_of(st.none(), st.integers(1, NUM_BITS), _scalar_variants([1, 2])), st.sampled_from([0, 4, -1, 2.0, "2"])
)
p_alloc = tagged(
    st.sampled_from([None, None, [1, 2], [3], [1, 1, 1], (1, 2)]).map(lambda v: v),
    st.one_of(st.sampled_from([[2, 1], [], [0, 3], [1.0, 2.0], "[1, 2]", 3, [1, 1]]), allocations),
)
p_temperature = tagged(
    st.one_of(st.none(), st.floats(0, 3), _scalar_variants([0.0, 1.0, 2])),
    st.sampled_from([float("nan"), float("inf"), -1.0, "1", True]),
)
p_generator = tagged(
    st.sampled_from([None, "single", "per_image"]),
    st.sampled_from([0, [None], "seed", "short_list", "long_list"]),
)
p_output = tagged(st.sampled_from(["latent", "latent", "np", "pt", "pil"]), st.sampled_from(["jpeg", None, "PIL"]))
p_return = tagged(st.booleans(), st.sampled_from([1, None, "yes"]))
p_cache = tagged(st.sampled_from(["dynamic", "static"]), st.sampled_from(["paged", None, 1]))
p_inputs = tagged(
    st.sampled_from([None, ["bits"], ["bits", "conditions"], ["conditions"], []]),
    st.sampled_from([["latents"], "bits", 5, ["bits", "latents"]]),
)


def _make_generator(kind, batch):
    if kind == "single":
        return torch.Generator().manual_seed(batch)
    if kind in ("per_image", "short_list", "long_list"):
        n = batch + {"per_image": 0, "short_list": -1, "long_list": 1}[kind]
        return [torch.Generator().manual_seed(i) for i in range(max(n, 0))]
    return kind


# ---------------------------------------------------------------------------------------------------- checks
ARGUMENT_NAMES = (
    "class_labels", "num_images_per_label", "guidance_scale", "guidance_schedule", "num_inference_steps",
    "tokens_allocation", "temperature", "generator", "output_type", "return_dict", "callback_on_step_end",
    "callback_on_step_end_tensor_inputs", "cache_implementation",
)  # fmt: skip


def _named_argument(message: str) -> str | None:
    names = re.findall(r"`([a-z_]+)`", message)
    return next((n for n in names if n in ARGUMENT_NAMES), None)


def _check_output(images, kind, batch, return_dict):
    if not return_dict:
        assert isinstance(images, tuple) and len(images) == 1
        images = images[0]
    else:
        images = images.images
    if kind == "latent":
        assert images.shape == (batch, 4, NUM_BITS) and images.dtype == torch.int64
        assert set(images.unique().tolist()) <= {0, 1}
    elif kind == "pt":
        assert images.shape == (batch, 3, SIZE, SIZE) and torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
    elif kind == "np":
        assert images.shape == (batch, SIZE, SIZE, 3) and np.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1
    else:
        assert len(images) == batch and all(isinstance(i, Image.Image) and i.size == (SIZE, SIZE) for i in images)


def _must_fail(kwargs, callback_kind, callback_value) -> bool:
    """Arguments that can never give a valid result: a success with them would be silent garbage."""
    g = kwargs.get("guidance_scale")
    if isinstance(g, float) and not math.isfinite(g):
        return True
    if kwargs.get("num_images_per_label") in (0, -1, 10**6):
        return True
    if kwargs.get("guidance_schedule") == "":
        return True
    inputs = kwargs.get("callback_on_step_end_tensor_inputs") or ["bits"]
    if callback_kind == "return_none":
        return True
    if callback_kind in ("replace", "inplace") and callback_value not in (0, 1) and "bits" in inputs:
        return True
    return False


@settings(FUZZ, max_examples=700)
@given(
    labels=p_labels,
    count=p_count,
    guidance_scale=p_guidance,
    guidance_schedule=p_schedule,
    num_inference_steps=p_steps,
    tokens_allocation=p_alloc,
    temperature=p_temperature,
    generator=p_generator,
    output_type=p_output,
    return_dict=p_return,
    cache_implementation=p_cache,
    callback=callbacks(),
    inputs=p_inputs,
)
def test_fuzz_pipeline_call(
    pipe, labels, count, guidance_scale, guidance_schedule, num_inference_steps, tokens_allocation, temperature,
    generator, output_type, return_dict, cache_implementation, callback, inputs,
):  # fmt: skip
    args = dict(
        class_labels=labels, num_images_per_label=count, guidance_scale=guidance_scale,
        guidance_schedule=guidance_schedule, num_inference_steps=num_inference_steps,
        tokens_allocation=tokens_allocation, temperature=temperature, generator=generator, output_type=output_type,
        return_dict=return_dict, cache_implementation=cache_implementation,
        callback_on_step_end_tensor_inputs=inputs,
    )  # fmt: skip
    suspects = {name for name, (_, drawn_valid) in args.items() if not drawn_valid}  # may be the offending ones
    kwargs = {name: value for name, (value, _) in args.items()}
    callback_fn, callback_kind, callback_value = callback
    if _callback_is_bad(callback_kind, callback_value, kwargs["callback_on_step_end_tensor_inputs"]):
        suspects.add("callback_on_step_end")
    if num_inference_steps[0] is not None and tokens_allocation[0] is not None:
        suspects |= {"num_inference_steps", "tokens_allocation"}  # both valid alone, they may disagree
    labels = kwargs.pop("class_labels")
    try:
        batch_hint = len(pipe._resolve_labels(labels)) * int(kwargs["num_images_per_label"])
    except (ValueError, TypeError):
        batch_hint = 1
    kwargs["generator"] = _make_generator(kwargs["generator"], min(batch_hint, 8))
    try:
        out = pipe(labels, **kwargs, callback_on_step_end=callback_fn)
    except (ValueError, TypeError) as error:
        named = _named_argument(str(error))
        assert named, f"error names no argument: {type(error).__name__}: {error}"
        assert named in suspects, f"error names `{named}`, not one of the offending {sorted(suspects)}: {error}"
        event(f"{type(error).__name__} naming `{named}`")
        return
    event(f"success ({kwargs['output_type']})")
    assert not _must_fail(kwargs, callback_kind, callback_value), f"silently accepted {kwargs}"
    batch = len(pipe._resolve_labels(labels)) * int(kwargs["num_images_per_label"])
    _check_output(out, kwargs["output_type"], batch, kwargs["return_dict"])


def _callback_is_bad(kind, value, tensor_inputs) -> bool:
    if kind == "return_none":
        return True
    receives_bits = not isinstance(tensor_inputs, list) or "bits" in (tensor_inputs or ["bits"])
    return receives_bits and (kind in ("reshape", "float") or (kind in ("replace", "inplace") and value not in (0, 1)))


# ---------------------------------------------------------------------------------------------------- scheduler
SCHEDULER_NAMES = (
    "bits_per_token", "num_inference_steps", "tokens_allocation", "temperature", "allocation_rule", "model_output",
    "sample", "timestep", "mask_ratio", "original_samples", "generator",
)  # fmt: skip


def _scheduler_error(error):
    names = re.findall(r"`([a-z_]+)`", str(error))
    assert any(n in SCHEDULER_NAMES for n in names), f"error names no argument: {type(error).__name__}: {error}"


@settings(FUZZ, max_examples=250)
@given(
    cls=st.sampled_from([BARBitScheduler, BARLogProbBitScheduler]),
    k=st.one_of(st.integers(-1, 6), st.sampled_from([2.0, True, np.int64(4)])),
    init_steps=st.one_of(st.integers(-1, 7), st.sampled_from([np.int64(2), 2.0])),
    init_alloc=allocations,
    init_temperature=numbers_any.filter(lambda v: v is not None),
    rule=st.sampled_from(["uniform", "cosine", "linear", None]),
    steps=steps,
    alloc=allocations,
    temperature=numbers_any,
)
def test_fuzz_scheduler_config_and_schedule(
    cls, k, init_steps, init_alloc, init_temperature, rule, steps, alloc, temperature
):
    try:
        scheduler = cls(
            bits_per_token=k, num_inference_steps=init_steps, tokens_allocation=init_alloc,
            temperature=init_temperature, allocation_rule=rule,
        )  # fmt: skip
        scheduler.set_timesteps(num_inference_steps=steps, tokens_allocation=alloc, temperature=temperature)
    except (ValueError, TypeError) as error:
        _scheduler_error(error)
        return
    allocation = scheduler.tokens_allocation
    assert sum(allocation) == scheduler.config.bits_per_token and min(allocation) >= 1
    assert allocation == sorted(allocation) and len(scheduler.timesteps) == len(allocation)
    assert all(math.isfinite(t) and t >= 0 for t in scheduler.temperatures)
    if alloc is None and steps is not None:
        assert len(allocation) == int(steps)


@settings(FUZZ, max_examples=250)
@given(
    cls=st.sampled_from([BARBitScheduler, BARLogProbBitScheduler]),
    k=st.integers(1, 6),
    data=st.data(),
)
def test_fuzz_scheduler_step_and_add_noise(cls, k, data):
    steps = data.draw(st.integers(1, k))
    scheduler = cls(bits_per_token=k, num_inference_steps=steps, temperature=data.draw(st.sampled_from([0.0, 1.0])))
    batch = data.draw(st.integers(0, 3))
    shape = data.draw(st.sampled_from([(batch, k, 2), (batch, k + 1, 2), (batch, k), (batch, k, 3)]))
    logits = torch.randn(shape) * data.draw(st.sampled_from([1.0, 1e30]))
    sample = torch.full(data.draw(st.sampled_from([(batch, k), (batch + 1, k)])), 2)
    timestep = data.draw(st.one_of(st.integers(-1, steps), st.sampled_from([torch.tensor(0), np.int64(0)])))
    generator = data.draw(generators(batch))
    try:
        for t in scheduler.timesteps if timestep == 0 else [timestep]:
            sample = scheduler.step(logits, t, sample, generator=generator).prev_sample
    except (ValueError, TypeError) as error:
        _scheduler_error(error)
    else:
        assert sample.shape == (batch, k) and set(sample.unique().tolist()) <= ({0, 1} if timestep == 0 else {0, 1, 2})
    ratio = data.draw(st.one_of(st.floats(-0.5, 1.5), st.sampled_from([float("nan"), 0.0, 1.0])))
    original = torch.randint(0, 2, data.draw(st.sampled_from([(batch, k), (batch, k + 1), (k,)])))
    try:
        noisy = scheduler.add_noise(original, torch.tensor(ratio), generator=generator)
    except (ValueError, TypeError) as error:
        _scheduler_error(error)
    else:
        assert 0 <= ratio <= 1, f"mask_ratio {ratio} accepted"
        masked = (noisy == 2).sum(-1)
        assert (masked == max(1, round(k * ratio))).all() and torch.equal(noisy[noisy != 2], original[noisy != 2])
